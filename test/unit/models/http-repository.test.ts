import { readFile, rm, truncate, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { openRepository } from "../../../backend/models/open-repository.ts";
import type { DownloadProgress } from "../../../backend/models/repository.ts";
import { SwitchyardError } from "../../../shared/errors.ts";
import { fakeModel, listFiles, sha256Hex, tempDir } from "./temp-files.ts";

const TOKEN = "Bearer test-token";

interface Behaviour {
  /** Extra response headers for a path (such as digests). */
  headers?: (path: string, body: Buffer) => OutgoingHttpHeaders;
  /** Send half of this path's body, then drop the connection. */
  truncate?: { path: string; chunked: boolean };
}

/** A real HTTP server on 127.0.0.1 serving `root` under /models/, counting what it is asked for. */
async function serve(root: string, behaviour: Behaviour = {}) {
  const requests: string[] = [];
  const authorizations = new Set<string | undefined>();

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const path = decodeURIComponent(new URL(request.url ?? "/", "http://localhost").pathname).replace(
      /^\/models\//,
      "",
    );
    requests.push(path);
    authorizations.add(request.headers.authorization);
    let body: Buffer;
    try {
      body = await readFile(join(root, path));
    } catch {
      response.writeHead(404).end();
      return;
    }
    const truncated = behaviour.truncate?.path === path ? behaviour.truncate : undefined;
    const headers: OutgoingHttpHeaders = {
      "content-type": "application/octet-stream",
      ...behaviour.headers?.(path, body),
    };
    if (!truncated?.chunked) headers["content-length"] = body.length;
    response.writeHead(200, headers);
    if (truncated) {
      response.write(body.subarray(0, body.length / 2), () => response.socket?.destroy());
      return;
    }
    response.end(body);
  }

  const server = createServer((request, response) => {
    handle(request, response).catch(() => response.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  servers.push(server);
  return {
    url: `http://127.0.0.1:${port}/models`,
    requests,
    authorizations,
    count: (path: string) => requests.filter((requested) => requested === path).length,
  };
}

const servers: ReturnType<typeof createServer>[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

type ManifestFiles = Record<string, { size?: number; sha256?: string }>;

/** repository.json describing the given (name, version) directories of `root` as they are on disk. */
async function writeManifest(
  root: string,
  versions: [string, string][],
  alter?: (files: ManifestFiles) => void,
) {
  const models = [];
  for (const [name, version] of versions) {
    const files: ManifestFiles = {};
    const referenced = [];
    for (const kind of ["warmup", "labels"]) {
      for (const path of await listFiles(join(root, name, version, kind))) referenced.push(`${kind}/${path}`);
    }
    for (const file of ["model.onnx", "config.json", ...referenced]) {
      const bytes = await readFile(join(root, name, version, file)).catch(() => undefined);
      if (bytes) files[file] = { size: bytes.length, sha256: sha256Hex(bytes) };
    }
    alter?.(files);
    models.push({ name, version, files });
  }
  await writeFile(join(root, "repository.json"), JSON.stringify({ models }));
}

async function setUp(files: Record<string, string | Uint8Array>, behaviour?: Behaviour) {
  const served = await tempDir(files);
  const cacheDir = await tempDir();
  const server = await serve(served, behaviour);
  const progress: DownloadProgress[] = [];
  const open = () =>
    openRepository(server.url, {
      cacheDir,
      headers: { Authorization: TOKEN },
      onProgress: (p) => progress.push(p),
    });
  return { served, cacheDir, server, progress, repository: open(), open };
}

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

const modelFilesIn = async (cacheDir: string) =>
  (await listFiles(cacheDir)).filter((file) => file.includes("model.onnx") || file.endsWith("config.json"));

describe("with repository.json", () => {
  test("index lists it; resolve downloads, verifies and caches model and config", async () => {
    const bytes = fakeModel(6000);
    const config = JSON.stringify({ description: "detector", max_batch_size: 4, team: "vision" });
    const { served, cacheDir, server, repository } = await setUp({
      "det/1/model.onnx": fakeModel(),
      "det/2/model.onnx": bytes,
      "det/2/config.json": config,
      "rec/1/model.onnx": fakeModel(),
    });
    await writeManifest(served, [
      ["det", "1"],
      ["det", "2"],
      ["rec", "1"],
    ]);

    // With the sizes repository.json gives.
    expect(await repository.index()).toEqual([
      { name: "det", version: "1", bytes: 4096 },
      { name: "det", version: "2", bytes: 6000 },
      { name: "rec", version: "1", bytes: 4096 },
    ]);
    const resolved = await repository.resolve("det");
    expect(resolved).toMatchObject({ name: "det", version: "2", bytes: 6000, sha256: sha256Hex(bytes) });
    expect(resolved.config).toEqual({
      description: "detector",
      max_batch_size: 4,
      team: "vision",
      idempotent: true,
    });
    expect(resolved.path.startsWith(cacheDir)).toBe(true);
    expect(new Uint8Array(await readFile(resolved.path))).toEqual(new Uint8Array(bytes));
    expect(await modelFilesIn(cacheDir)).toEqual(
      ["config.json", "model.onnx", "model.onnx.sha256"].map((file) =>
        expect.stringMatching(`det/2/${file}$`),
      ),
    );
    expect(server.authorizations).toEqual(new Set([TOKEN]));
  });

  test("manifest entries with unsafe or invalid names are ignored and never fetched", async () => {
    const { served, server, repository } = await setUp({ "det/1/model.onnx": fakeModel() });
    const models = [
      { name: "det", version: "1" },
      { name: "..", version: "1" },
      { name: "../../etc", version: "1" },
      { name: "det", version: "01" },
    ];
    await writeFile(join(served, "repository.json"), JSON.stringify({ models }));
    expect(await repository.index()).toEqual([{ name: "det", version: "1" }]);
    expect((await failure(repository.resolve("..", "1"))).status).toBe(400);
    expect(server.requests.filter((path) => path.includes(".."))).toEqual([]);
  });

  test("a malformed repository.json is an error, not an empty repository", async () => {
    const { served, repository } = await setUp({ "det/1/model.onnx": fakeModel() });
    await writeFile(join(served, "repository.json"), JSON.stringify({ models: [{ name: "det" }] }));
    const error = await failure(repository.index());
    expect(error.code).toBe("unavailable");
    expect(error.message).toContain("repository.json is malformed");
  });

  test("config.json is not requested when the manifest says there is none", async () => {
    const { served, server, repository } = await setUp({ "det/1/model.onnx": fakeModel() });
    await writeManifest(served, [["det", "1"]]);
    expect((await repository.resolve("det", "1")).config).toEqual({ idempotent: true });
    expect(server.count("det/1/config.json")).toBe(0);
  });

  test("a model or version missing from the manifest is a 404 without downloading anything", async () => {
    const { served, server, repository } = await setUp({
      "det/1/model.onnx": fakeModel(),
      "det/2/model.onnx": fakeModel(),
    });
    await writeManifest(served, [["det", "1"]]);
    expect((await failure(repository.resolve("det", "2"))).status).toBe(404);
    expect((await failure(repository.resolve("rec"))).status).toBe(404);
    expect(server.requests.filter((path) => path.endsWith("model.onnx"))).toEqual([]);
  });

  test("a wrong sha256 fails the resolve and caches nothing; a fixed manifest then works", async () => {
    const { served, cacheDir, repository } = await setUp({ "det/1/model.onnx": fakeModel() });
    await writeManifest(served, [["det", "1"]], (files) => {
      if (files["model.onnx"]) files["model.onnx"].sha256 = sha256Hex("a different model");
    });
    const error = await failure(repository.resolve("det", "1"));
    expect(error.code).toBe("model_load_failed");
    expect(error.message).toContain("sha256 mismatch");
    expect(error.message).toContain("repository.json");
    expect(await modelFilesIn(cacheDir)).toEqual([]);

    await writeManifest(served, [["det", "1"]]);
    expect((await repository.resolve("det", "1")).version).toBe("1");
  });

  test("a size that is not what the manifest says fails the resolve", async () => {
    const { served, cacheDir, repository } = await setUp({ "det/1/model.onnx": fakeModel(4096) });
    await writeManifest(served, [["det", "1"]], (files) => {
      files["model.onnx"] = { size: 4000 };
    });
    const error = await failure(repository.resolve("det", "1"));
    expect(error.code).toBe("model_load_failed");
    expect(error.message).toContain("4000");
    expect(await modelFilesIn(cacheDir)).toEqual([]);
  });

  test("a sha256 in the remote config.json is checked too", async () => {
    const { served, cacheDir, server, repository } = await setUp({
      "det/1/model.onnx": fakeModel(),
      "det/1/config.json": JSON.stringify({ sha256: sha256Hex("not this model") }),
    });
    await writeManifest(served, [["det", "1"]]);
    const error = await failure(repository.resolve("det", "1"));
    expect(error.message).toContain("config.json says");
    expect(server.count("det/1/model.onnx")).toBe(1);
    expect(await modelFilesIn(cacheDir)).toEqual([]);
  });

  test("a malformed remote config.json fails that model before its model.onnx is downloaded", async () => {
    const { served, server, repository } = await setUp({
      "det/1/model.onnx": fakeModel(),
      "det/1/config.json": JSON.stringify({ max_concurrency: 0 }),
      "rec/1/model.onnx": fakeModel(),
    });
    await writeManifest(served, [
      ["det", "1"],
      ["rec", "1"],
    ]);
    const error = await failure(repository.resolve("det"));
    expect(error.code).toBe("model_load_failed");
    expect(error.message).toContain("det/1/config.json");
    expect(server.count("det/1/model.onnx")).toBe(0);
    expect((await repository.resolve("rec")).version).toBe("1");
  });
});

describe("the files config.json names: model_warmup's data, outputs' labels", () => {
  const warmupConfig = JSON.stringify({
    model_warmup: [
      { name: "a", inputs: { x: { dims: [4], input_data_file: "row.bin" } } },
      { name: "b", inputs: { x: { dims: [4], input_data_file: "pages/one page.bin" } } },
    ],
    output: [{ name: "y", label_filename: "labels.txt" }],
  });
  const rows: Record<string, Uint8Array> = {
    "row.bin": fakeModel(16),
    "pages/one page.bin": fakeModel(16),
    "unused.bin": fakeModel(16),
  };
  const withWarmup = {
    "det/1/model.onnx": fakeModel(),
    "det/1/config.json": warmupConfig,
    "det/1/labels/labels.txt": "cat\ndog\n",
    ...Object.fromEntries(Object.entries(rows).map(([file, bytes]) => [`det/1/warmup/${file}`, bytes])),
  };

  test("they are fetched before model.onnx, verified, and land in warmupDir and labelsDir", async () => {
    const { served, server, repository } = await setUp(withWarmup);
    await writeManifest(served, [["det", "1"]]);
    const resolved = await repository.resolve("det", "1");
    for (const file of ["row.bin", "pages/one page.bin"]) {
      expect(new Uint8Array(await readFile(join(resolved.warmupDir, file))), file).toEqual(
        new Uint8Array(rows[file] ?? []),
      );
    }
    expect(await listFiles(resolved.warmupDir)).toEqual(["pages/one page.bin", "row.bin"]);
    expect(await readFile(join(resolved.labelsDir, "labels.txt"), "utf8")).toBe("cat\ndog\n");
    expect(server.requests.filter((path) => path.startsWith("det/"))).toEqual([
      "det/1/config.json",
      "det/1/warmup/row.bin",
      "det/1/warmup/pages/one page.bin",
      "det/1/labels/labels.txt",
      "det/1/model.onnx",
    ]);
  });

  test("a file that is not what repository.json says fails the resolve before the model is fetched", async () => {
    const { served, cacheDir, server, repository } = await setUp(withWarmup);
    await writeManifest(served, [["det", "1"]], (files) => {
      files["warmup/row.bin"] = { size: 16, sha256: sha256Hex("other bytes") };
    });
    const error = await failure(repository.resolve("det", "1"));
    expect(error.code).toBe("model_load_failed");
    expect(error.message).toContain("det/1/warmup/row.bin");
    expect(server.count("det/1/model.onnx")).toBe(0);
    expect((await listFiles(cacheDir)).filter((file) => file.includes("row.bin"))).toEqual([]);
  });

  test("one the repository lacks is left out, and not asked for where repository.json's files omit it", async () => {
    const lacking = {
      "det/1/model.onnx": fakeModel(),
      "det/1/config.json": warmupConfig,
      "det/1/warmup/row.bin": fakeModel(16),
    };
    // Without a listing it is asked for, and the 404 leaves it out.
    const unlisted = await setUp(lacking);
    const fromUnlisted = await unlisted.repository.resolve("det", "1");
    expect(await listFiles(fromUnlisted.warmupDir)).toEqual(["row.bin"]);
    expect(unlisted.server.count("det/1/warmup/pages/one page.bin")).toBe(1);
    // Versions are immutable: the cached version resolves again without asking for it, or anything, again.
    const asked = unlisted.server.requests.length;
    await unlisted.repository.resolve("det", "1");
    expect(unlisted.server.requests.length).toBe(asked);

    const listed = await setUp(lacking);
    await writeManifest(listed.served, [["det", "1"]]);
    const fromListed = await listed.repository.resolve("det", "1");
    expect(await listFiles(fromListed.warmupDir)).toEqual(["row.bin"]);
    expect(listed.server.count("det/1/warmup/pages/one page.bin")).toBe(0);
  });

  test("a cached version fetches only the files it lacks, and nothing when it has them all", async () => {
    const { served, server, repository, open } = await setUp(withWarmup);
    await writeManifest(served, [["det", "1"]]);
    const first = await repository.resolve("det", "1");
    const asked = server.requests.length;
    expect(await open().resolve("det", "1")).toEqual(first);
    expect(server.requests.length).toBe(asked);

    // As a cache written before warm-up files were fetched would be.
    await rm(join(first.warmupDir, "row.bin"));
    expect(await open().resolve("det", "1")).toEqual(first);
    expect(server.requests.slice(asked)).toEqual(["repository.json", "det/1/warmup/row.bin"]);
    expect(server.count("det/1/model.onnx")).toBe(1);
  });
});

describe("without repository.json", () => {
  test.each([
    ["Repr-Digest", (body: Buffer) => `sha-256=:${hash64(body)}:, sha-512=:AAAA:`],
    ["Digest", (body: Buffer) => `md5=AAAA, SHA-256=${hash64(body)}`],
    ["X-Checksum-Sha256", (body: Buffer) => sha256Hex(body)],
  ])("a %s header verifies the download", async (header, value) => {
    const bytes = fakeModel();
    const { repository } = await setUp(
      { "det/1/model.onnx": bytes },
      { headers: (path, body) => (path.endsWith("model.onnx") ? { [header]: value(body) } : {}) },
    );
    expect((await repository.resolve("det", "1")).sha256).toBe(sha256Hex(bytes));
  });

  test.each(["Repr-Digest", "X-Checksum-Sha256"])("a wrong %s header fails the download", async (header) => {
    const wrong = header === "Repr-Digest" ? `sha-256=:${hash64(Buffer.from("x"))}:` : sha256Hex("x");
    const { cacheDir, repository } = await setUp(
      { "det/1/model.onnx": fakeModel() },
      { headers: (path) => (path.endsWith("model.onnx") ? { [header]: wrong } : {}) },
    );
    const error = await failure(repository.resolve("det", "1"));
    expect(error.code).toBe("model_load_failed");
    expect(error.message).toContain(header);
    expect(await modelFilesIn(cacheDir)).toEqual([]);
  });

  test("with no digest anywhere, the size is checked and the computed sha256 is recorded", async () => {
    const bytes = fakeModel(5000);
    const { server, repository, progress } = await setUp({ "det/1/model.onnx": bytes });
    const resolved = await repository.resolve("det", "1");
    expect(resolved).toMatchObject({ bytes: 5000, sha256: sha256Hex(bytes), config: { idempotent: true } });
    expect(server.count("det/1/config.json")).toBe(1);
    expect(progress.at(-1)).toEqual({ name: "det", version: "1", received: 5000, total: 5000 });
  });

  test("index lists what is cached; resolve without a version tries version 1, then the highest cached", async () => {
    const { repository } = await setUp({ "det/1/model.onnx": fakeModel(), "det/3/model.onnx": fakeModel() });
    expect(await repository.index()).toEqual([]);
    expect((await repository.resolve("det")).version).toBe("1");
    await repository.resolve("det", "3");
    expect(await repository.index()).toEqual([
      { name: "det", version: "1" },
      { name: "det", version: "3" },
    ]);
    expect((await repository.resolve("det")).version).toBe("3");
  });

  test("a model the server does not have is a 404", async () => {
    const { repository } = await setUp({ "det/1/model.onnx": fakeModel() });
    expect((await failure(repository.resolve("rec"))).status).toBe(404);
    expect((await failure(repository.resolve("det", "2"))).status).toBe(404);
  });
});

describe("interrupted downloads", () => {
  test.each([false, true])(
    "a body cut short (chunked: %s) fails and leaves nothing in the cache",
    async (chunked) => {
      const { cacheDir, server, repository } = await setUp(
        { "det/1/model.onnx": fakeModel(64 * 1024) },
        { truncate: { path: "det/1/model.onnx", chunked } },
      );
      const error = await failure(repository.resolve("det", "1"));
      expect(error.code).toBe("unavailable");
      expect(error.message).toContain("interrupted");
      expect(await modelFilesIn(cacheDir)).toEqual([]);
      expect(server.count("det/1/model.onnx")).toBe(1);
    },
  );

  test("an unreachable repository is unavailable", async () => {
    const { url } = await serve(await tempDir());
    for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
    const repository = openRepository(url, { cacheDir: await tempDir() });
    expect((await failure(repository.resolve("det", "1"))).code).toBe("unavailable");
    expect((await failure(repository.index())).code).toBe("unavailable");
  });
});

describe("the cache", () => {
  test("concurrent resolves of one version share one download", async () => {
    const { server, repository } = await setUp({ "det/1/model.onnx": fakeModel(256 * 1024) });
    const resolved = await Promise.all(Array.from({ length: 5 }, () => repository.resolve("det", "1")));
    expect(new Set(resolved.map((model) => model.path)).size).toBe(1);
    expect(server.count("det/1/model.onnx")).toBe(1);
  });

  test("a cached version is served without asking the server, also after a restart", async () => {
    const { served, server, repository, open } = await setUp({
      "det/1/model.onnx": fakeModel(),
      "det/1/config.json": JSON.stringify({ max_concurrency: 3 }),
    });
    await writeManifest(served, [["det", "1"]]);
    const first = await repository.resolve("det", "1");
    const requestsAfterFirst = server.requests.length;

    expect(await repository.resolve("det", "1")).toEqual(first);
    expect(await open().resolve("det", "1")).toEqual(first);
    expect(server.requests.length).toBe(requestsAfterFirst);
  });

  test("a cached file that no longer has its recorded size is downloaded again", async () => {
    const bytes = fakeModel();
    const { server, repository } = await setUp({ "det/1/model.onnx": bytes });
    const first = await repository.resolve("det", "1");
    await truncate(first.path, 100);
    const again = await repository.resolve("det", "1");
    expect(server.count("det/1/model.onnx")).toBe(2);
    expect(new Uint8Array(await readFile(again.path))).toEqual(new Uint8Array(bytes));
  });
});

function hash64(body: Buffer): string {
  return Buffer.from(sha256Hex(body), "hex").toString("base64");
}
