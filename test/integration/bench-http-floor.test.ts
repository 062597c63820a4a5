import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MEMO_HEADER } from "../../bench/hot-path/anchor-http.ts";
import { HttpLoad, requestHeaders } from "../../bench/hot-path/http-load.ts";
import { startAnchorTarget, type Target } from "../../bench/hot-path/targets.ts";
import { encodeMlp, MLP_INPUT, mlpForBytes, toBytes } from "../../scripts/lib/onnx-builder.ts";
import { decodeInferResponse, encodeInferRequest } from "../../shared/oip/codec.ts";

// The hot-path benchmark's HTTP floor (anchor-server.ts --http-threads N --memo), a real anchor process: a
// request whose inputs equal the last one answered on its HTTP thread is answered from memory, every other
// one by the session, and either way with the model's outputs for its own inputs; or the benchmark's
// ceiling would be read from wrong answers, or from a server that never answered from memory at all.

const dir = mkdtempSync(join(tmpdir(), "switchyard-http-floor-"));
const path = join(dir, "mlp.onnx");
let floor: Target;
let session: ort.InferenceSession;
const clients: HttpLoad[] = [];

beforeAll(async () => {
  writeFileSync(path, toBytes(encodeMlp(mlpForBytes({ targetBytes: 16 * 1024, seed: 3, name: "mlp" }))));
  session = await ort.InferenceSession.create(path);
  floor = await startAnchorTarget("mlp", path, { kind: "cpu" }, 1, { httpThreads: 2, memo: true });
});

afterAll(async () => {
  for (const client of clients) client.close();
  await floor?.stop();
  await session?.release();
  rmSync(dir, { recursive: true, force: true });
});

function client(connections: number): HttpLoad {
  const made = new HttpLoad(floor.url, connections);
  clients.push(made);
  return made;
}

/** The floor's answer to one row of inputs (its outputs, and whether they came from memory) and a direct run's. */
async function ask(via: HttpLoad, row: Float32Array) {
  const input = { name: MLP_INPUT, datatype: "FP32" as const, shape: [1, row.length], data: row };
  const encoded = encodeInferRequest({ inputs: [input] }, { binaryInputs: true, binaryOutputs: true });
  const answer = await via.send({
    path: "/v2/models/mlp/infer",
    body: encoded.body,
    headers: requestHeaders(encoded.headerLength),
  });
  const headerLength = Number(answer.headers["inference-header-content-length"]);
  const decoded = decodeInferResponse(new Uint8Array(answer.body), headerLength);
  const results = await session.run({ [MLP_INPUT]: new ort.Tensor("float32", row.slice(), [1, row.length]) });
  return {
    memo: answer.headers[MEMO_HEADER],
    served: Array.from((decoded.outputs[0]?.data ?? []) as Float32Array),
    direct: Array.from((Object.values(results)[0]?.data ?? []) as Float32Array),
  };
}

const row = (seed: number) => Float32Array.from({ length: 16 }, (_, at) => seed * (at - 8));

describe("the hot-path benchmark's HTTP floor", () => {
  it("answers a request repeated on its thread from memory, any other from the session, each with its own outputs", async () => {
    // One connection: one HTTP thread, whose memory is the last answer it gave.
    const one = client(1);
    const seen: string[] = [];
    for (const seed of [1, 1, 2, 1, 3, 3, 3]) {
      const { memo, served, direct } = await ask(one, row(seed));
      expect(served).toEqual(direct);
      seen.push(`${seed}:${String(memo)}`);
    }
    expect(seen).toEqual(["1:miss", "1:hit", "2:miss", "1:miss", "3:miss", "3:hit", "3:hit"]);
  });

  it("gives each of many requests at once, on several connections, its own outputs", async () => {
    const many = client(4);
    const answers = await Promise.all(Array.from({ length: 24 }, (_, index) => ask(many, row(index % 3))));
    for (const { served, direct } of answers) expect(served).toEqual(direct);
  });
});
