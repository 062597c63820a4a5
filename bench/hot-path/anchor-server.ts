/**
 * The anchor of the hot-path benchmark: the smallest Node server around one onnxruntime session that a
 * client of the OIP binary extension can use. It is the floor every Node server can reach: `node:http`, the
 * body gathered and split by hand, the session run on the main thread, the outputs written after a JSON
 * header. No routing, no validation beyond what the run needs, no worker thread. Run as its own process:
 *
 *   node bench/hot-path/anchor-server.ts --model <model.onnx> [--device cuda --gpu 0] [--threads N]
 *     [--max-batch N]
 *
 * With --max-batch, requests that arrive while a run is in flight are stacked along the first dimension
 * into the next run (the agent's own batcher, backend/replica/batcher.ts, with no queue delay and one batch
 * out at a time): the floor of a Node server that batches, one thread and no hop, against which the agent's
 * batched figures are read. One session for every batch size, so only for models without convolutions (on
 * CUDA a Conv re-plans at each new size).
 *
 * It prints "anchor listening <url>" once it serves.
 */
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { ModelBatcher } from "../../backend/replica/batcher.ts";
import { sessionOptions } from "../../backend/replica/session-options.ts";
import { splitRows, stackInputs } from "../../backend/replica/tensor-batch.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    device: { type: "string", default: "cpu" },
    gpu: { type: "string", default: "0" },
    threads: { type: "string" },
    "max-batch": { type: "string" },
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
    ? new ModelBatcher<Feeds, Record<string, ort.Tensor>>(
        { maxBatchSize: maxBatch, maxQueueDelayMs: 0, preferredBatchSizes: [] },
        runStacked,
        // Its runs stay in this process: one batch at a time lets the next grow while this one runs.
        { batchesOut: 1 },
      )
    : undefined;

const toOrt = (tensors: readonly Tensor[]) =>
  Object.fromEntries(
    tensors.map(({ name, data, shape }) => [name, new ort.Tensor("float32", data as Float32Array, shape)]),
  );

/**
 * One run for several requests, stacked along the first dimension and split back with the agent's own
 * tensor-batch.ts (the same copy into one buffer, the same views of the batch's outputs).
 */
async function runStacked(requests: Feeds[]): Promise<Record<string, ort.Tensor>[]> {
  const results = await session.run(toOrt(stackInputs(requests.map((request) => request.feeds))));
  const sizes = requests.map((request) => request.size);
  const split = Object.entries(results).map(([name, tensor]) =>
    splitRows({ name, datatype: "FP32", shape: [...tensor.dims], data: tensor.data as Float32Array }, sizes),
  );
  return requests.map((_, index) => toOrt(split.map((parts) => parts[index] as Tensor)));
}

interface InputHeader {
  name: string;
  shape: number[];
  datatype: string;
  data?: number[];
  parameters?: { binary_data_size?: number };
}

const server = createServer((request, response) => {
  const chunks: Buffer[] = [];
  request.on("data", (chunk: Buffer) => chunks.push(chunk));
  request.on("end", async () => {
    const body = Buffer.concat(chunks);
    const headerLength = Number(request.headers["inference-header-content-length"] ?? body.length);
    const header = JSON.parse(body.subarray(0, headerLength).toString()) as { inputs: InputHeader[] };
    let offset = headerLength;
    const feeds: Tensor[] = [];
    for (const input of header.inputs) {
      const size = input.parameters?.binary_data_size;
      const data =
        size === undefined
          ? Float32Array.from(input.data ?? [])
          : new Float32Array(body.buffer.slice(body.byteOffset + offset, body.byteOffset + offset + size));
      offset += size ?? 0;
      feeds.push({ name: input.name, datatype: "FP32", shape: input.shape, data });
    }
    const size = feeds[0]?.shape[0] ?? 1;
    const results =
      batcher === undefined || size > maxBatch
        ? await session.run(toOrt(feeds))
        : (await batcher.submit({ size, feeds }, "all")).result;
    const binary = headerLength < body.length;
    const outputs = Object.entries(results).map(([name, tensor]) => ({
      name,
      datatype: "FP32",
      shape: tensor.dims,
      ...(binary
        ? { parameters: { binary_data_size: (tensor.data as Float32Array).byteLength } }
        : { data: Array.from(tensor.data as Float32Array) }),
    }));
    const json = Buffer.from(JSON.stringify({ model_name: "anchor", outputs }));
    const parts = [json, ...(binary ? Object.values(results).map((tensor) => tensorBytes(tensor)) : [])];
    response.writeHead(200, {
      "Content-Type": binary ? "application/octet-stream" : "application/json",
      "Content-Length": parts.reduce((sum, part) => sum + part.byteLength, 0),
      ...(binary ? { "Inference-Header-Content-Length": json.byteLength } : {}),
    });
    for (const part of parts) response.write(part);
    response.end();
  });
});

function tensorBytes(tensor: ort.Tensor): Uint8Array {
  const data = tensor.data as Float32Array;
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  console.log(`anchor listening http://127.0.0.1:${port}`);
});
