import { describe, expect, it } from "vitest";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { ADMIN_KEY, AGENT_TOKEN, CLIENT_KEY, errorOf, freshPool, gatewayFetch } from "./support/gateway.ts";
import { replicaState } from "./support/replica-state.ts";

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

const onnx = new Uint8Array([8, 7, 18, 4, 116, 101, 115, 116]);

describe("models in R2", () => {
  it("uploads, lists, serves with digests, and deletes model versions", async () => {
    const uploaded = await admin("/admin/models/det/2", { method: "PUT", body: onnx });
    expect(uploaded.status).toBe(201);
    const sha256 = await sha256Hex(onnx);
    expect(await uploaded.json()).toMatchObject({
      name: "det",
      version: "2",
      file: "model.onnx",
      size: 8,
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
            "model.onnx": { size: 8, sha256 },
            "config.json": { size: config.length, sha256: await sha256Hex(new TextEncoder().encode(config)) },
          },
        },
        { name: "det", version: "10", files: { "model.onnx": { size: 8, sha256 } } },
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
      deleted: ["model.onnx", "config.json"],
    });
    expect((await admin("/admin/models/det/2", { method: "DELETE" })).status).toBe(404);
    expect((await asAgent("/agent/models/det/2/model.onnx")).status).toBe(404);
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
    expect((await admin("/admin/models/m/1?file=evil.sh", { method: "PUT", body: onnx })).status).toBe(400);
    expect((await admin("/admin/models/m/1?file=config.json", { method: "PUT", body: "{nope" })).status).toBe(
      400,
    );
    expect((await admin("/admin/models/m/1?file=config.json", { method: "PUT", body: "[1]" })).status).toBe(
      400,
    );
    expect((await admin("/admin/models/m/1", { method: "PUT", body: "" })).status).toBe(400);
  });
});

describe("OIP model endpoints", () => {
  it("answers metadata from signatures agents report, readiness from their loaded models, and the index from both", async () => {
    const pool = freshPool();
    await admin("/admin/models/stored/1", { method: "PUT", body: onnx });
    const signature: ModelSignature = {
      name: "m",
      version: "3",
      inputs: [{ name: "x", datatype: "FP32", shape: [-1, 4] }],
      outputs: [{ name: "y", datatype: "FP32", shape: [-1, 2] }],
    };
    const agent = await FakeAgent.connect(pool, {
      replicas: [
        {
          ...replicaState({ loading: ["stored"] }),
          loaded: [{ name: "m", version: "3", bytes: 1, inFlight: 0, idleMs: 0 }],
        },
      ],
      signatures: [signature],
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
    expect((await asClient("/v2/models/m/versions/4", pool)).status).toBe(404);
    expect((await asClient("/v2/models/nobody", pool)).status).toBe(404);
    const unknownSignature = await asClient("/v2/models/stored", pool);
    expect(unknownSignature.status).toBe(503);
    expect(await errorOf(unknownSignature)).toMatch(/not known yet/);

    expect(await (await asClient("/v2/models/m/ready", pool)).json()).toEqual({
      name: "m",
      version: "3",
      ready: true,
    });
    const notReady = await asClient("/v2/models/stored/versions/1/ready", pool);
    expect(notReady.status).toBe(400);
    expect(await errorOf(notReady)).toMatch(/loading/);

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

  it("reports server metadata, liveness and readiness", async () => {
    const pool = freshPool();
    expect(await (await asClient("/v2", pool)).json()).toEqual({
      name: "switchyard",
      version: "0.1.0",
      extensions: ["binary_tensor_data", "model_repository", "parameters"],
    });
    expect((await asClient("/v2/health/live", pool)).status).toBe(200);
    const notReady = await asClient("/v2/health/ready", pool);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ error: `pool '${pool}' is not ready: no agent is connected` });
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState()] });
    expect((await asClient("/v2/health/ready", pool)).status).toBe(200);
    agent.close();
  });
});
