import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HttpLoad, requestHeaders } from "../../bench/hot-path/http-load.ts";
import { startRelayAnchorTarget, type Target } from "../../bench/hot-path/targets.ts";
import { encodeMlp, MLP_INPUT, mlpForBytes, toBytes } from "../../scripts/lib/onnx-builder.ts";
import { decodeInferResponse, encodeInferRequest } from "../../shared/oip/codec.ts";

// The hot-path benchmark's relay anchor (bench/hot-path/relay-anchor/worker.ts) in a real wrangler dev, with a
// real anchor server dialed in: it relays a request to its peer and back unchanged, and its two stops take
// the whole body and answer as many bytes as asked. The report splits the relay's cost by subtracting these
// paths from one another; a stop that read less, or answered less, would make that split read low.

const dir = mkdtempSync(join(tmpdir(), "switchyard-relay-anchor-"));
const path = join(dir, "mlp.onnx");
let relay: Target;
let session: ort.InferenceSession;
let client: HttpLoad;

beforeAll(async () => {
  writeFileSync(path, toBytes(encodeMlp(mlpForBytes({ targetBytes: 16 * 1024, seed: 5, name: "mlp" }))));
  session = await ort.InferenceSession.create(path);
  relay = await startRelayAnchorTarget([{ name: "mlp", path }], { kind: "cpu" }, 1);
  client = new HttpLoad(relay.url, 1);
}, 180_000);

afterAll(async () => {
  client?.close();
  await relay?.stop();
  await session?.release();
  rmSync(dir, { recursive: true, force: true });
});

const row = Float32Array.from({ length: 16 }, (_, at) => (at - 7) / 3);

describe("the hot-path benchmark's relay anchor", () => {
  it("relays a binary request to the dialed-in anchor and answers its outputs bit for bit", async () => {
    const input = { name: MLP_INPUT, datatype: "FP32" as const, shape: [1, row.length], data: row };
    const encoded = encodeInferRequest({ inputs: [input] }, { binaryInputs: true, binaryOutputs: true });
    const answer = await client.send({
      path: "/v2/models/mlp/infer",
      body: encoded.body,
      headers: requestHeaders(encoded.headerLength),
    });
    const decoded = decodeInferResponse(
      new Uint8Array(answer.body),
      Number(answer.headers["inference-header-content-length"]),
    );
    const direct = await session.run({
      [MLP_INPUT]: new ort.Tensor("float32", row.slice(), [1, row.length]),
    });
    expect(Array.from(decoded.outputs[0]?.data as Float32Array)).toEqual(
      Array.from(Object.values(direct)[0]?.data as Float32Array),
    );
  });

  it.each(["worker", "object"])(
    "stopped at its %s: takes the whole body and answers the bytes asked",
    async (stop) => {
      const body = new Uint8Array(3 * 2 ** 20 + 17).fill(9);
      const answer = await client.send({
        path: `/stop-at/${stop}/1638400`,
        body,
        headers: requestHeaders(undefined),
      });
      expect(answer.headers["x-received-bytes"]).toBe(String(body.byteLength));
      expect(answer.body.byteLength).toBe(1638400);
    },
  );
});
