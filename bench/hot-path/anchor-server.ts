/**
 * The anchor of the hot-path benchmark: the smallest Node server around one onnxruntime session that a
 * client of the OIP binary extension can use. It is the floor every Node server can reach: `node:http`, the
 * body gathered and split by hand, the session run on the main thread, the outputs written after a JSON
 * header. No routing, no validation beyond what the run needs, no worker thread. Run as its own process:
 *
 *   node bench/hot-path/anchor-server.ts --model <model.onnx> [--device cuda --gpu 0] [--threads N]
 *
 * It prints "anchor listening <url>" once it serves.
 */
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { sessionOptions } from "../../backend/replica/session-options.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    device: { type: "string", default: "cpu" },
    gpu: { type: "string", default: "0" },
    threads: { type: "string" },
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
    const results = await session.run(feeds);
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
