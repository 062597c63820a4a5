/**
 * The anchor of the hot-path benchmark: the smallest Node server around one onnxruntime session that a
 * client of the OIP binary extension can use. It is the floor every Node server can reach: `node:http`, the
 * body gathered and split by hand, the session run on the main thread, the outputs written after a JSON
 * header (anchor-http.ts). No routing, no validation beyond what the run needs. Run as its own process:
 *
 *   node bench/hot-path/anchor-server.ts --model <model.onnx> [--device cuda --gpu 0] [--threads N]
 *     [--max-batch N] [--http-threads N [--memo]]
 *
 * With --max-batch, requests that arrive while a run is in flight are stacked along the first dimension
 * into the next run (the agent's own batcher, backend/replica/batcher.ts, with no queue delay and one batch
 * out at a time): the floor of a Node server that batches, against which the agent's batched figures are
 * read. One session for every batch size, so only for models without convolutions (on CUDA a Conv re-plans
 * at each new size).
 *
 * With --http-threads N, N threads serve the HTTP (anchor-http-thread.ts) and this one only runs the
 * session: the floor of a server whose HTTP is spread over threads, with the two hops between them that it
 * takes (the agent's intake threads make four: to its main thread, the session's, and back). With --memo too,
 * each HTTP thread answers a request whose inputs equal those of the last one answered there from memory
 * (anchor-http-thread.ts): the HTTP floor, what HTTP alone costs on the host with as many threads.
 *
 * With --relay <ws url>, it serves no HTTP: it dials the relay anchor (relay-anchor/worker.ts) at that URL
 * and answers the requests relayed over that socket, decoded and encoded as over HTTP: the peer of the
 * floor of a gateway that relays to a process that dialed in.
 *
 * With --grpc, it serves no HTTP but gRPC: ModelInfer alone, on @grpc/grpc-js with the protocol's .proto
 * (the agent's copy, backend/server/grpc/inference.proto), the inputs read from raw_input_contents and the
 * outputs answered in raw_output_contents: what a general Node gRPC library costs around the session (the
 * agent's own transport, backend/server/grpc/grpc-transport.ts, is measured against it).
 *
 * It prints "anchor listening <url>" once it serves (with --relay, once its socket is open; with --grpc,
 * grpc://host:port).
 */
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { type handleUnaryCall, Server, ServerCredentials, status } from "@grpc/grpc-js";
import * as ort from "onnxruntime-node";
import WebSocket from "ws";
import { ModelBatcher } from "../../backend/replica/batcher.ts";
import { sessionOptions } from "../../backend/replica/session-options.ts";
import { splitRows, stackInputs } from "../../backend/replica/tensor-batch.ts";
import type {
  ModelInferRequestMessage,
  ModelInferResponseMessage,
} from "../../backend/server/grpc/grpc-messages.ts";
import { inferenceService } from "../../backend/server/grpc/grpc-proto.ts";
import { TickMailbox } from "../../backend/server/tick-mailbox.ts";
import { workerEntryUrl } from "../../backend/worker-entry-url.ts";
import { freePort } from "../../scripts/lib/free-port.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import {
  type AnchorAnswer,
  type AnchorAsk,
  type AnchorOutput,
  type AnchorThreadData,
  anchorListener,
  answerBytes,
  readFeeds,
} from "./anchor-http.ts";
import { decodeAnchorFrame, encodeAnchorFrame } from "./relay-anchor/anchor-frames.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    device: { type: "string", default: "cpu" },
    gpu: { type: "string", default: "0" },
    threads: { type: "string" },
    "max-batch": { type: "string" },
    "http-threads": { type: "string", default: "0" },
    relay: { type: "string" },
    memo: { type: "boolean", default: false },
    grpc: { type: "boolean", default: false },
  },
});
if (values.model === undefined) throw new Error("--model <model.onnx> is required");
const device =
  values.device === "cuda"
    ? { kind: "cuda" as const, deviceId: Number(values.gpu) }
    : { kind: "cpu" as const };
// The agent's own session options, so that the two differ only in what surrounds the session.
const session = await ort.InferenceSession.create(
  values.model,
  sessionOptions(device, values.threads === undefined ? {} : { intraOpThreads: Number(values.threads) }),
);

/** One request's feeds (OIP tensors, FP32) and its rows along the first dimension. */
interface Feeds {
  size: number;
  feeds: Tensor[];
}

const maxBatch = Number(values["max-batch"] ?? 1);
const batcher =
  maxBatch > 1
    ? new ModelBatcher<Feeds, AnchorOutput[]>(
        { maxBatchSize: maxBatch, maxQueueDelayMs: 0, preferredBatchSizes: [] },
        runStacked,
        // Its runs stay in this thread: one batch at a time lets the next grow while this one runs.
        { batchesOut: 1 },
      )
    : undefined;

const toOrt = (tensors: readonly Tensor[]) =>
  Object.fromEntries(
    tensors.map(({ name, data, shape }) => [name, new ort.Tensor("float32", data as Float32Array, shape)]),
  );

const fromOrt = (results: ort.InferenceSession.OnnxValueMapType): AnchorOutput[] =>
  Object.entries(results).map(([name, tensor]) => ({
    name,
    dims: tensor.dims,
    data: tensor.data as Float32Array,
  }));

/**
 * One run for several requests, stacked along the first dimension and split back with the agent's own
 * tensor-batch.ts (the same copy into one buffer, the same views of the batch's outputs).
 */
async function runStacked(requests: Feeds[]): Promise<AnchorOutput[][]> {
  const results = await session.run(toOrt(stackInputs(requests.map((request) => request.feeds))));
  const sizes = requests.map((request) => request.size);
  const split = fromOrt(results).map(({ name, dims, data }) =>
    splitRows({ name, datatype: "FP32", shape: [...dims], data }, sizes),
  );
  return requests.map((_, index) =>
    split.map((parts) => {
      const { name, shape, data } = parts[index] as Tensor;
      return { name, dims: shape, data: data as Float32Array };
    }),
  );
}

async function run(feeds: Tensor[]): Promise<AnchorOutput[]> {
  const size = feeds[0]?.shape[0] ?? 1;
  if (batcher === undefined || size > maxBatch) return fromOrt(await session.run(toOrt(feeds)));
  return (await batcher.submit({ size, feeds }, "all")).result;
}

const host = "127.0.0.1";
const httpThreads = Number(values["http-threads"]);
if (values.memo && (httpThreads === 0 || values.relay !== undefined || values["max-batch"] !== undefined))
  throw new Error(
    "--memo is for the HTTP threads, unbatched: give --http-threads, and neither --relay nor --max-batch",
  );
if (values.relay !== undefined) {
  await serveRelay(values.relay);
  console.log(`anchor listening ${values.relay}`);
} else if (values.grpc) {
  console.log(`anchor listening grpc://${host}:${await serveGrpc()}`);
} else {
  let port: number;
  if (httpThreads > 0) {
    port = await freePort();
    await Promise.all(Array.from({ length: httpThreads }, () => startThread(port)));
  } else {
    const server = createServer(anchorListener(run));
    port = await new Promise<number>((resolve) =>
      server.listen(0, host, () => {
        const address = server.address();
        resolve(typeof address === "object" && address !== null ? address.port : 0);
      }),
    );
  }
  console.log(`anchor listening http://${host}:${port}`);
}

/** ModelInfer over gRPC on a free port (its number): each raw input copied into a buffer of its own. */
async function serveGrpc(): Promise<number> {
  const server = new Server({ "grpc.max_receive_message_length": -1, "grpc.max_send_message_length": -1 });
  const modelInfer: handleUnaryCall<ModelInferRequestMessage, ModelInferResponseMessage> = (
    call,
    callback,
  ) => {
    const feeds = call.request.inputs.map(
      (input, index): Tensor => ({
        name: input.name,
        datatype: "FP32",
        shape: input.shape.map(Number),
        data: new Float32Array(new Uint8Array(call.request.raw_input_contents[index] ?? []).buffer),
      }),
    );
    run(feeds).then(
      (outputs) =>
        callback(null, {
          model_name: "anchor",
          model_version: "",
          id: call.request.id,
          outputs: outputs.map(({ name, dims }) => ({ name, datatype: "FP32", shape: [...dims] })),
          raw_output_contents: outputs.map(
            ({ data }) => new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
          ),
        }),
      (error: unknown) => callback({ code: status.INTERNAL, details: String(error) }),
    );
  };
  server.addService(inferenceService(), { ModelInfer: modelInfer });
  return new Promise((resolve, reject) =>
    server.bindAsync(`${host}:0`, ServerCredentials.createInsecure(), (error, port) =>
      error === null ? resolve(port) : reject(error),
    ),
  );
}

/** Dials the relay anchor and answers what comes down the socket; resolves once it is open. */
function serveRelay(url: string): Promise<void> {
  const socket = new WebSocket(url, { perMessageDeflate: false });
  socket.on("message", (data: Buffer) => {
    const frame = decodeAnchorFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    const body = Buffer.from(frame.body.buffer, frame.body.byteOffset, frame.body.byteLength);
    void run(readFeeds(body, frame.headerLength ?? body.byteLength)).then((outputs) => {
      const answer = answerBytes(outputs, frame.headerLength !== undefined);
      socket.send(encodeAnchorFrame(frame.id, answer.headerLength, answer.parts));
    });
  });
  // The benchmark stops this process when it is done; a socket that ends before is a failure.
  socket.on("close", (code) => {
    console.error(`anchor: the relay's socket closed (${code})`);
    process.exit(1);
  });
  return new Promise((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("error", reject);
  });
}

/** An HTTP thread on the shared port; its requests run here, and their answers go back by transfer. */
function startThread(shared: number): Promise<void> {
  const worker = new Worker(workerEntryUrl(import.meta.url, "anchor-http-thread"), {
    workerData: { host, port: shared, memo: values.memo } satisfies AnchorThreadData,
  });
  const toThread = new TickMailbox<AnchorAnswer>(worker, (_message, error) => {
    throw error;
  });
  return new Promise((resolve, reject) => {
    worker.once("error", reject);
    worker.on("message", (message: AnchorAsk[] | { listening: true }) => {
      if (!Array.isArray(message)) return resolve();
      for (const ask of message) {
        void run(ask.feeds).then((outputs) => {
          // A batch's outputs are views of one buffer: each request's rows are copied into its own to move.
          const owned = outputs.map((output) =>
            output.data.byteLength === output.data.buffer.byteLength
              ? output
              : { ...output, data: output.data.slice() },
          );
          toThread.post(
            { id: ask.id, outputs: owned },
            owned.map((output) => output.data.buffer as ArrayBuffer),
          );
        });
      }
    });
  });
}
