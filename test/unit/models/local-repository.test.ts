import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { openRepository } from "../../../backend/models/open-repository.ts";
import { SwitchyardError } from "../../../shared/errors.ts";
import { fakeModel, sha256Hex, tempDir, writeFiles } from "./temp-files.ts";

async function failure(promise: Promise<unknown>): Promise<SwitchyardError> {
  const error = await promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(SwitchyardError);
  return error as SwitchyardError;
}

async function localRepository(files: Record<string, string | Uint8Array>) {
  const root = await tempDir(files);
  return { root, repository: openRepository(root, { cacheDir: join(root, "..", "unused-cache") }) };
}

describe("local repository layout", () => {
  test("versioned, flat and mixed models are all indexed; stray entries are not", async () => {
    const { repository } = await localRepository({
      "det/1/model.onnx": fakeModel(),
      "det/2/model.onnx": fakeModel(),
      "det/10/model.onnx": fakeModel(),
      "flat/model.onnx": fakeModel(),
      "mixed/model.onnx": fakeModel(),
      "mixed/3/model.onnx": fakeModel(),
      "empty/4/README.md": "no model here",
      "det/01/model.onnx": fakeModel(),
      "det/latest/model.onnx": fakeModel(),
      ".git/1/model.onnx": fakeModel(),
      "notes.txt": "not a model",
    });
    // Each with the size of its model.onnx (fakeModel's default).
    expect(await repository.index()).toEqual([
      { name: "det", version: "1", bytes: 4096 },
      { name: "det", version: "2", bytes: 4096 },
      { name: "det", version: "10", bytes: 4096 },
      { name: "flat", version: "1", bytes: 4096 },
      { name: "mixed", version: "1", bytes: 4096 },
      { name: "mixed", version: "3", bytes: 4096 },
    ]);
  });

  test("resolve without a version picks the numerically highest", async () => {
    const { root, repository } = await localRepository({
      "det/2/model.onnx": fakeModel(100),
      "det/10/model.onnx": fakeModel(300),
      "det/9/model.onnx": fakeModel(200),
    });
    const resolved = await repository.resolve("det");
    expect(resolved).toMatchObject({
      name: "det",
      version: "10",
      bytes: 300,
      path: join(root, "det/10/model.onnx"),
    });
    expect((await repository.resolve("det", "9")).bytes).toBe(200);
  });

  test("a flat model.onnx is version 1, and a 1/ directory takes precedence over it", async () => {
    const flat = fakeModel(111);
    const versioned = fakeModel(222);
    const { root, repository } = await localRepository({ "flat/model.onnx": flat, "both/model.onnx": flat });
    expect(await repository.resolve("flat")).toMatchObject({
      version: "1",
      path: join(root, "flat/model.onnx"),
    });
    expect((await repository.resolve("both", "1")).bytes).toBe(111);
    await writeFiles(root, { "both/1/model.onnx": versioned });
    expect((await repository.resolve("both", "1")).bytes).toBe(222);
  });

  test("models copied in while running appear without reopening the repository", async () => {
    const { root, repository } = await localRepository({ "det/1/model.onnx": fakeModel() });
    expect(await repository.index()).toHaveLength(1);
    await writeFiles(root, { "rec/1/model.onnx": fakeModel(), "det/2/model.onnx": fakeModel() });
    expect(await repository.index()).toHaveLength(3);
    expect((await repository.resolve("det")).version).toBe("2");
  });

  test("the path handed back is the real file", async () => {
    const bytes = fakeModel(2048);
    const { repository } = await localRepository({ "det/1/model.onnx": bytes });
    const resolved = await repository.resolve("det", "1");
    expect(new Uint8Array(await readFile(resolved.path))).toEqual(new Uint8Array(bytes));
  });
});

describe("config.json", () => {
  test("defaults when there is none", async () => {
    const { repository } = await localRepository({ "det/1/model.onnx": fakeModel() });
    const resolved = await repository.resolve("det");
    expect(resolved.config).toEqual({ idempotent: true });
    expect(resolved.sha256).toBeUndefined();
  });

  test("the model directory's config applies to every version; a version's own config replaces it", async () => {
    const { repository } = await localRepository({
      "det/config.json": JSON.stringify({ description: "shared", max_batch_size: 8, owner: "vision-team" }),
      "det/1/model.onnx": fakeModel(),
      "det/2/model.onnx": fakeModel(),
      "det/2/config.json": JSON.stringify({
        description: "v2",
        idempotent: false,
        dynamic_batching: { max_queue_delay_microseconds: 500, preferred_batch_size: [4, 8] },
        parameters: { threshold: 0.3 },
      }),
    });
    const v1 = await repository.resolve("det", "1");
    expect(v1.config).toEqual({
      description: "shared",
      max_batch_size: 8,
      owner: "vision-team",
      idempotent: true,
    });
    const v2 = await repository.resolve("det", "2");
    expect(v2.config).toEqual({
      description: "v2",
      idempotent: false,
      dynamic_batching: { max_queue_delay_microseconds: 500, preferred_batch_size: [4, 8] },
      parameters: { threshold: 0.3 },
    });
  });

  test("a flat model reads the config.json beside it", async () => {
    const { repository } = await localRepository({
      "flat/model.onnx": fakeModel(),
      "flat/config.json": JSON.stringify({ max_concurrency: 2 }),
    });
    expect((await repository.resolve("flat")).config.max_concurrency).toBe(2);
  });

  test("a malformed config.json fails its own model only, naming the file", async () => {
    const { repository } = await localRepository({
      "good/1/model.onnx": fakeModel(),
      "broken/1/model.onnx": fakeModel(),
      "broken/1/config.json": "{ not json",
      "invalid/1/model.onnx": fakeModel(),
      "invalid/config.json": JSON.stringify({ max_batch_size: -1 }),
    });
    expect(await repository.index()).toHaveLength(3);
    expect((await repository.resolve("good")).version).toBe("1");

    const broken = await failure(repository.resolve("broken"));
    expect(broken.code).toBe("model_load_failed");
    expect(broken.message).toContain("broken/1/config.json");

    const invalid = await failure(repository.resolve("invalid"));
    expect(invalid.code).toBe("model_load_failed");
    expect(invalid.message).toContain("invalid/config.json");
    expect(invalid.message).toContain("max_batch_size");
  });

  test("a sha256 in config.json is verified against model.onnx", async () => {
    const bytes = fakeModel();
    const { root, repository } = await localRepository({
      "det/1/model.onnx": bytes,
      "det/1/config.json": JSON.stringify({ sha256: sha256Hex(bytes).toUpperCase() }),
      "bad/1/model.onnx": bytes,
      "bad/1/config.json": JSON.stringify({ sha256: sha256Hex("something else") }),
    });
    expect((await repository.resolve("det")).sha256).toBe(sha256Hex(bytes));

    const mismatch = await failure(repository.resolve("bad"));
    expect(mismatch.code).toBe("model_load_failed");
    expect(mismatch.message).toContain("sha256");

    // Replacing the file is noticed even though its hash was remembered.
    await writeFiles(root, { "det/1/model.onnx": fakeModel(5000) });
    expect((await failure(repository.resolve("det"))).code).toBe("model_load_failed");
  });
});

describe("absent and invalid models", () => {
  test("an unknown model or version is a 404", async () => {
    const { repository } = await localRepository({
      "det/1/model.onnx": fakeModel(),
      "det/2/model.onnx": fakeModel(),
    });
    const unknownModel = await failure(repository.resolve("rec"));
    expect(unknownModel.status).toBe(404);
    const unknownVersion = await failure(repository.resolve("det", "3"));
    expect(unknownVersion.status).toBe(404);
    expect(unknownVersion.message).toBe("model 'det' has no version 3 (versions: 1, 2)");
  });

  test("names and versions that could leave the repository are a 400, even when the target exists", async () => {
    const parent = await tempDir({
      "outside/1/model.onnx": fakeModel(),
      "repo/det/1/model.onnx": fakeModel(),
    });
    const repository = openRepository(join(parent, "repo"), { cacheDir: join(parent, "cache") });
    for (const name of [
      "..",
      "../outside",
      "/abs",
      join(parent, "outside"),
      "a/b",
      "%2e%2e",
      "det\u0000",
      "a".repeat(200),
    ]) {
      expect((await failure(repository.resolve(name))).status).toBe(400);
    }
    for (const version of ["..", "../1", "0", "01", "1/"]) {
      expect((await failure(repository.resolve("det", version))).status).toBe(400);
    }
  });

  test("a repository directory that does not exist says so", async () => {
    const parent = await tempDir();
    const repository = openRepository(join(parent, "missing"), { cacheDir: parent });
    const error = await failure(repository.index());
    expect(error.code).toBe("unavailable");
    expect(error.message).toContain(join(parent, "missing"));
    expect((await failure(repository.resolve("det"))).code).toBe("unavailable");
  });
});

test("openRepository refuses schemes it cannot serve", () => {
  expect(() => openRepository("s3://bucket/models", { cacheDir: "/tmp" })).toThrow(
    /unsupported model repository/,
  );
  expect(openRepository("https://models.example.com/v2", { cacheDir: "/tmp" }).source).toBe(
    "https://models.example.com/v2/",
  );
});
