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

/** One request's feeds and its rows along the first dimension. */
interface Feeds {
  size: number;
  feeds: Record<string, ort.Tensor>;
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

/** One run for several requests: each input concatenated along the first dimension, each output split back. */
async function runStacked(requests: Feeds[]): Promise<Record<string, ort.Tensor>[]> {
  if (requests.length === 1) return [await session.run((requests[0] as Feeds).feeds)];
  const rows = requests.reduce((sum, request) => sum + request.size, 0);
  const stacked: Record<string, ort.Tensor> = {};
  for (const [name, first] of Object.entries((requests[0] as Feeds).feeds)) {
    const data = new Float32Array(rows * (first.size / (first.dims[0] ?? 1)));
    let offset = 0;
    for (const request of requests) {
      const part = request.feeds[name]?.data as Float32Array;
      data.set(part, offset);
      offset += part.length;
    }
    stacked[name] = new ort.Tensor("float32", data, [rows, ...first.dims.slice(1)]);
  }
  const results = await session.run(stacked);
  let row = 0;
  return requests.map((request) => {
    const mine: Record<string, ort.Tensor> = {};
    for (const [name, tensor] of Object.entries(results)) {
      const perRow = tensor.size / (tensor.dims[0] ?? 1);
      const data = (tensor.data as Float32Array).subarray(row * perRow, (row + request.size) * perRow);
      mine[name] = new ort.Tensor("float32", data, [request.size, ...tensor.dims.slice(1)]);
    }
    row += request.size;
    return mine;
  });
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
    const feeds: Record<string, ort.Tensor> = {};
    for (const input of header.inputs) {
      const size = input.parameters?.binary_data_size;
      const data =
        size === undefined
          ? Float32Array.from(input.data ?? [])
          : new Float32Array(body.buffer.slice(body.byteOffset + offset, body.byteOffset + offset + size));
      offset += size ?? 0;
      feeds[input.name] = new ort.Tensor("float32", data, input.shape);
    }
    const size = Object.values(feeds)[0]?.dims[0] ?? 1;
    const results =
      batcher === undefined || size > maxBatch
        ? await session.run(feeds)
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
