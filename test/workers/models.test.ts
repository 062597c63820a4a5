import { describe, expect, it } from "vitest";
import type { TensorMetadata } from "../../shared/oip/schemas.ts";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { ADMIN_KEY, AGENT_TOKEN, CLIENT_KEY, errorOf, freshPool, gatewayFetch } from "./support/gateway.ts";
import { tinyOnnx } from "./support/tiny-onnx.ts";

const admin = (path: string, init: RequestInit = {}) =>
  gatewayFetch(path, { ...init, headers: { Authorization: `Bearer ${ADMIN_KEY}`, ...init.headers } });
const asAgent = (path: string) => gatewayFetch(path, { headers: { Authorization: `Bearer ${AGENT_TOKEN}` } });
const asClient = (path: string, pool: string, init: RequestInit = {}) =>
  gatewayFetch(path, {
    ...init,
    headers: { Authorization: `Bearer ${CLIENT_KEY}`, "X-Switchyard-Pool": pool, ...init.headers },
  });

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

const X: TensorMetadata = { name: "x", datatype: "FP32", shape: [-1, 4] };
const Y: TensorMetadata = { name: "y", datatype: "FP32", shape: [-1, 2] };
const onnx = tinyOnnx([X], [Y]);

describe("models in R2", () => {
  it("uploads, lists, serves with digests, and deletes model versions", async () => {
    const uploaded = await admin("/admin/models/det/2", { method: "PUT", body: onnx });
    expect(uploaded.status).toBe(201);
    const sha256 = await sha256Hex(onnx);
    expect(await uploaded.json()).toMatchObject({
      name: "det",
      version: "2",
      file: "model.onnx",
      size: onnx.byteLength,
      sha256,
    });
    const config = '{"max_batch_size": 8}';
    expect(
      (await admin("/admin/models/det/2?file=config.json", { method: "PUT", body: config })).status,
    ).toBe(201);
    expect((await admin("/admin/models/det/10", { method: "PUT", body: onnx })).status).toBe(201);

    const listing = (await (await admin("/admin/models")).json()) as {
      models: { name: string; version: string }[];
    };
    expect(listing.models.map((model) => `${model.name}/${model.version}`)).toEqual(["det/2", "det/10"]);

    const manifest = await asAgent("/agent/models/repository.json");
    expect(await manifest.json()).toEqual({
      models: [
        {
          name: "det",
          version: "2",
          files: {
            "model.onnx": { size: onnx.byteLength, sha256 },
            "config.json": { size: config.length, sha256: await sha256Hex(new TextEncoder().encode(config)) },
          },
        },
        { name: "det", version: "10", files: { "model.onnx": { size: onnx.byteLength, sha256 } } },
      ],
    });

    const file = await asAgent("/agent/models/det/2/model.onnx");
    expect(file.status).toBe(200);
    expect([...new Uint8Array(await file.arrayBuffer())]).toEqual([...onnx]);
    const digest = file.headers.get("Repr-Digest") ?? "";
    const base64 = /^sha-256=:(.+):$/.exec(digest)?.[1] ?? "";
    expect([...atob(base64)].map((char) => char.charCodeAt(0).toString(16).padStart(2, "0")).join("")).toBe(
      sha256,
    );
    expect(await (await asAgent("/agent/models/det/2/config.json")).text()).toBe(config);
    expect((await asAgent("/agent/models/det/10/config.json")).status).toBe(404);
    expect((await asAgent("/agent/models/det/3/model.onnx")).status).toBe(404);
    expect((await asAgent("/agent/models/det/2/secrets.txt")).status).toBe(404);

    const deleted = await admin("/admin/models/det/2", { method: "DELETE" });
    expect(await deleted.json()).toEqual({
      name: "det",
      version: "2",
      deleted: ["config.json", "model.onnx"],
    });
    expect((await admin("/admin/models/det/2", { method: "DELETE" })).status).toBe(404);
    expect((await asAgent("/agent/models/det/2/model.onnx")).status).toBe(404);
  });

  it("keeps the files config.json names (warm-up data, labels) beside the version, serves and deletes them with it", async () => {
    const row = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    const page = new Uint8Array([9, 9, 9, 9]);
    expect((await admin("/admin/models/warm/1", { method: "PUT", body: onnx })).status).toBe(201);
    const put = await admin("/admin/models/warm/1?file=warmup/row.bin", { method: "PUT", body: row });
    expect(put.status).toBe(201);
    expect(await put.json()).toMatchObject({ file: "warmup/row.bin", size: 8, sha256: await sha256Hex(row) });
    const nested = `/admin/models/warm/1?file=${encodeURIComponent("warmup/pages/one page.bin")}`;
    expect((await admin(nested, { method: "PUT", body: page })).status).toBe(201);
    const labels = "cat\ndog\n";
    expect(
      (await admin("/admin/models/warm/1?file=labels/classes.txt", { method: "PUT", body: labels })).status,
    ).toBe(201);
    const servedLabels = await asAgent("/agent/models/warm/1/labels/classes.txt");
    expect(servedLabels.headers.get("Content-Type")).toBe("text/plain; charset=utf-8");
    expect(await servedLabels.text()).toBe(labels);

    const listing = (await (await admin("/admin/models")).json()) as {
      models: { name: string; files: Record<string, unknown> }[];
    };
    expect(Object.keys(listing.models.find((model) => model.name === "warm")?.files ?? {}).sort()).toEqual([
      "labels/classes.txt",
      "model.onnx",
      "warmup/pages/one page.bin",
      "warmup/row.bin",
    ]);
    const manifest = (await (await asAgent("/agent/models/repository.json")).json()) as {
      models: { name: string; files: Record<string, unknown> }[];
    };
    expect(manifest.models.find((model) => model.name === "warm")?.files["warmup/row.bin"]).toEqual({
      size: 8,
      sha256: await sha256Hex(row),
    });

    // The path an http repository asks for: each segment encoded.
    const served = await asAgent("/agent/models/warm/1/warmup/pages/one%20page.bin");
    expect(served.status).toBe(200);
    expect(served.headers.get("Repr-Digest")).toMatch(/^sha-256=:/);
    expect([...new Uint8Array(await served.arrayBuffer())]).toEqual([...page]);
    expect((await asAgent("/agent/models/warm/1/warmup/gone.bin")).status).toBe(404);
    const outside = await asAgent("/agent/models/warm/1/warmup/..%2Fmodel.onnx");
    expect(outside.status).toBe(404);
    expect(await errorOf(outside)).toMatch(/^no such model file 'warmup\/\.\.\/model\.onnx'/);

    expect((await admin("/admin/models/warm/1?file=warmup/row.bin", { method: "DELETE" })).status).toBe(200);
    expect((await asAgent("/agent/models/warm/1/warmup/row.bin")).status).toBe(404);
    const deleted = await admin("/admin/models/warm/1", { method: "DELETE" });
    expect(await deleted.json()).toEqual({
      name: "warm",
      version: "1",
      deleted: ["labels/classes.txt", "model.onnx", "warmup/pages/one page.bin"],
    });
    expect((await asAgent("/agent/models/warm/1/warmup/pages/one%20page.bin")).status).toBe(404);
  });

  it("refuses bad names, files and configs", async () => {
    for (const path of [
      "/admin/models/..%2F..%2Fx/1",
      "/admin/models/.hidden/1",
      "/admin/models/m/01",
      "/admin/models/m/v1",
    ]) {
      const response = await admin(path, { method: "PUT", body: onnx });
      expect(response.status, path).toBe(400);
    }
    for (const file of [
      "evil.sh",
      "warmup/",
      "warmup/../model.onnx",
      "warmup//x",
      "models/warmup/x",
      "labels",
    ]) {
      const response = await admin(`/admin/models/m/1?file=${encodeURIComponent(file)}`, {
        method: "PUT",
        body: onnx,
      });
      expect(response.status, file).toBe(400);
    }
    const outside = await admin("/admin/models/m/1?file=config.json", {
      method: "PUT",
      body: JSON.stringify({ model_warmup: [{ inputs: { x: { dims: [4], input_data_file: "../x.bin" } } }] }),
    });
    expect(outside.status).toBe(400);
    expect(await errorOf(outside)).toMatch(
      /input_data_file: must be a path inside the model's warmup\/ directory/,
    );
    expect((await admin("/admin/models/m/1?file=config.json", { method: "PUT", body: "{nope" })).status).toBe(
      400,
    );
    expect((await admin("/admin/models/m/1?file=config.json", { method: "PUT", body: "[1]" })).status).toBe(
      400,
    );
    const badLimit = await admin("/admin/models/m/1?file=config.json", {
      method: "PUT",
      body: '{"max_batch_size": -1}',
    });
    expect(badLimit.status).toBe(400);
    expect(await errorOf(badLimit)).toMatch(/max_batch_size/);
    expect((await admin("/admin/models/m/1", { method: "PUT", body: "" })).status).toBe(400);
    const notAModel = await admin("/admin/models/m/1", { method: "PUT", body: "not a model" });
    expect(notAModel.status).toBe(400);
    expect(await errorOf(notAModel)).toMatch(/^model.onnx is not an ONNX model/);
  });
});

describe("OIP model endpoints", () => {
  it("answers metadata from the signature kept at upload, before any agent has loaded the model", async () => {
    const pool = freshPool();
    await admin("/admin/models/uploaded/1", { method: "PUT", body: onnx });
    await admin("/admin/models/uploaded/1?file=config.json", {
      method: "PUT",
      body: '{"max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [4, 8]}}',
    });
    expect(await (await asClient("/v2/models/uploaded", pool)).json()).toEqual({
      name: "uploaded",
      versions: ["1"],
      platform: "onnxruntime_onnx",
      inputs: [X],
      outputs: [Y],
    });
    // Triton's configuration: with max_batch_size the batch dimension leaves the dims.
    const config = (await (await asClient("/v2/models/uploaded/config", pool)).json()) as Record<
      string,
      unknown
    >;
    expect(config).toMatchObject({
      name: "uploaded",
      platform: "onnxruntime_onnx",
      max_batch_size: 8,
      input: [{ name: "x", data_type: "TYPE_FP32", dims: [4] }],
      output: [{ name: "y", data_type: "TYPE_FP32", dims: [2] }],
      dynamic_batching: { preferred_batch_size: [4, 8], max_queue_delay_microseconds: 0 },
      instance_group: [],
    });
    // No agent yet: known, described, but not ready.
    const notReady = await asClient("/v2/models/uploaded/ready", pool);
    expect(notReady.status).toBe(400);
    expect(await errorOf(notReady)).toBe("model 'uploaded' version 1 is not ready: no agent is connected");
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState()] });
    expect((await asClient("/v2/models/uploaded/ready", pool)).status).toBe(200);
    agent.close();
  });

  it("answers metadata from signatures agents report, readiness from what they can load, and the index from both", async () => {
    const pool = freshPool();
    await admin("/admin/models/stored/1", { method: "PUT", body: onnx });
    const signature: ModelSignature = {
      name: "m",
      version: "3",
      inputs: [X],
      outputs: [Y],
      batching: { max_batch_size: 0, dynamic_batching: null },
    };
    const agent = await FakeAgent.connect(pool, {
      replicas: [
        {
          ...replicaState({ loading: ["stored"] }),
          loaded: [{ name: "m", version: "3", bytes: 1, inFlight: 0, idleMs: 0, pinned: false }],
        },
      ],
      signatures: [signature],
      repository: { kind: "own", models: [{ name: "m", version: "3", bytes: 1 }] },
    });

    const metadata = await asClient("/v2/models/m", pool);
    expect(await metadata.json()).toEqual({
      name: "m",
      versions: ["3"],
      platform: "onnxruntime_onnx",
      inputs: signature.inputs,
      outputs: signature.outputs,
    });
    expect((await asClient("/v2/models/m/versions/3", pool)).status).toBe(200);
    const noVersion = await asClient("/v2/models/m/versions/4", pool);
    expect(noVersion.status).toBe(404);
    expect(await errorOf(noVersion)).toBe("model 'm' has no version 4 (versions: 3)");
    const nobody = await asClient("/v2/models/nobody", pool);
    expect(nobody.status).toBe(404);
    expect(await errorOf(nobody)).toBe("model 'nobody' not found");

    expect(await (await asClient("/v2/models/m/ready", pool)).json()).toEqual({
      name: "m",
      version: "3",
      ready: true,
    });
    // In R2, but this agent serves its own repository only.
    const notReady = await asClient("/v2/models/stored/versions/1/ready", pool);
    expect(notReady.status).toBe(400);
    expect(await errorOf(notReady)).toMatch(/no connected agent can load it/);

    // R2 is shared by the tests of this file: look at this test's models only.
    const mine = async (response: Promise<Response>) =>
      ((await (await response).json()) as { name: string }[]).filter((entry) =>
        ["m", "stored"].includes(entry.name),
      );
    const index = asClient("/v2/repository/index", pool, { method: "POST", body: "{}" });
    expect(await mine(index)).toEqual([
      { name: "m", version: "3", state: "READY", reason: "" },
      { name: "stored", version: "1", state: "LOADING", reason: "loading" },
    ]);
    const ready = asClient("/v2/repository/index", pool, { method: "POST", body: '{"ready":true}' });
    expect(await mine(ready)).toEqual([{ name: "m", version: "3", state: "READY", reason: "" }]);
    expect((await asClient("/v2/repository/index", pool, { method: "POST", body: "[" })).status).toBe(400);
    agent.close();
  });

  it("reports server metadata; liveness and readiness need no key", async () => {
    const pool = freshPool();
    expect(await (await asClient("/v2", pool)).json()).toEqual({
      name: "switchyard",
      version: "0.1.0",
      extensions: ["binary_tensor_data", "model_repository", "statistics", "parameters", "classification"],
    });
    const noKey = (path: string, headers: Record<string, string> = {}) =>
      gatewayFetch(path, { headers: { "X-Switchyard-Pool": pool, ...headers } });
    expect((await noKey("/v2/health/live")).status).toBe(200);
    expect((await noKey("/v2/health/live", { Authorization: "Bearer wrong" })).status).toBe(200);
    const notReady = await noKey("/v2/health/ready");
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ error: `pool '${pool}' is not ready: no agent is connected` });
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState()] });
    expect(await (await noKey("/v2/health/ready")).json()).toEqual({ ready: true });
    expect(await (await asClient("/v2/health/ready", pool)).json()).toEqual({ ready: true, agents: 1 });
    agent.close();
  });
});
