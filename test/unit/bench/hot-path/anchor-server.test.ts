import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HttpLoad, requestHeaders } from "../../../../bench/hot-path/http-load.ts";
import { startAnchorTarget, type Target } from "../../../../bench/hot-path/targets.ts";
import { encodeMlp, MLP_INPUT, mlpForBytes, toBytes } from "../../../../scripts/lib/onnx-builder.ts";
import { decodeInferResponse, encodeInferRequest } from "../../../../shared/oip/codec.ts";

// The HTTP floor (anchor-server.ts --http-threads N --memo) answers a request whose inputs its HTTP thread
// sent on before from memory: its answers must still be the model's, input by input, or the benchmark's
// ceiling would be read from wrong answers.

const path = join(mkdtempSync(join(tmpdir(), "switchyard-anchor-")), "mlp.onnx");
let floor: Target;
let client: HttpLoad;
let session: ort.InferenceSession;

beforeAll(async () => {
  writeFileSync(path, toBytes(encodeMlp(mlpForBytes({ targetBytes: 16 * 1024, seed: 3, name: "mlp" }))));
  session = await ort.InferenceSession.create(path);
  floor = await startAnchorTarget("mlp", path, { kind: "cpu" }, 1, undefined, 2, true);
  client = new HttpLoad(floor.url, 4);
}, 120_000);

afterAll(async () => {
  client?.close();
  await floor?.stop();
  await session?.release();
});

/** The floor's answer to one row of inputs, and a direct run's. */
async function both(row: Float32Array): Promise<{ served: Float32Array; direct: Float32Array }> {
  const input = { name: MLP_INPUT, datatype: "FP32" as const, shape: [1, row.length], data: row };
  const encoded = encodeInferRequest({ inputs: [input] }, { binaryInputs: true, binaryOutputs: true });
  const answer = await client.send({
    path: "/v2/models/mlp/infer",
    body: encoded.body,
    headers: requestHeaders(encoded.headerLength),
  });
  const headerLength = Number(answer.headers["inference-header-content-length"]);
  const decoded = decodeInferResponse(new Uint8Array(answer.body), headerLength);
  const results = await session.run({ [MLP_INPUT]: new ort.Tensor("float32", row.slice(), [1, row.length]) });
  return {
    served: decoded.outputs[0]?.data as Float32Array,
    direct: Object.values(results)[0]?.data as Float32Array,
  };
}

describe("the hot-path benchmark's HTTP floor", () => {
  it("says it is the floor, and answers each input with the model's outputs for it, repeated or not", async () => {
    expect(floor.kind).toBe("http-floor");
    const rows = [1, 1, 2, 1, 3, 3].map((seed) =>
      Float32Array.from({ length: 16 }, (_, at) => seed * (at - 8)),
    );
    for (const row of rows) {
      const { served, direct } = await both(row);
      expect([...served]).toEqual([...direct]);
    }
    // Several at once, over both threads: each its own answer.
    const many = await Promise.all(
      Array.from({ length: 12 }, (_, index) => both(Float32Array.from({ length: 16 }, () => index % 3))),
    );
    for (const { served, direct } of many) expect([...served]).toEqual([...direct]);
  });
});
