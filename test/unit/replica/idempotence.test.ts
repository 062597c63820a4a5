import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { openRepository } from "../../../backend/models/open-repository.ts";
import { Replica } from "../../../backend/replica/replica.ts";
import { MULTIPLEX_MODELS, REPO_DIR } from "../../fixtures/paths.ts";
import { tempDir } from "../models/temp-files.ts";

// What a replica tells the gateway about idempotence: a model whose config.json says `"idempotent": false`
// is reported so with its loaded entry, so that the gateway never runs such a request twice.

const replicas: Replica[] = [];
afterEach(async () => {
  await Promise.all(replicas.splice(0).map((replica) => replica.close()));
});

describe("idempotence in a replica's state", () => {
  test("a model marked not idempotent is reported so; others carry no flag (idempotent by default)", async () => {
    const onnx = readFileSync(join(REPO_DIR, MULTIPLEX_MODELS[0] ?? "", "1", "model.onnx"));
    const root = await tempDir({
      "charges/1/model.onnx": onnx,
      "charges/1/config.json": JSON.stringify({ idempotent: false }),
      "plain/1/model.onnx": onnx,
    });
    const replica = new Replica({
      id: "0",
      device: { kind: "cpu" },
      repository: openRepository(root, { cacheDir: await tempDir() }),
      maxModels: 3,
      maxModelBytes: 2 ** 30,
      keepAliveMs: 0,
      maxConcurrency: 2,
      intraOpThreads: 1,
    });
    replicas.push(replica);
    await replica.load("charges");
    await replica.load("plain");
    const loaded = Object.fromEntries(replica.state().loaded.map((model) => [model.name, model.idempotent]));
    expect(loaded).toEqual({ charges: false, plain: undefined });
  });
});
