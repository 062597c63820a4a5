import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { beforeAll, describe, expect, test } from "vitest";
import WebSocket from "ws";
import { agentConnectUrl } from "../../backend/gateway-link/gateway-urls.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { MLP_INPUT, seededFloats } from "../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS, repoModelPath } from "../fixtures/paths.ts";
import { expectAllClose } from "../support/close-to.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import { call, mlpRequest, statusOf, waitForAgents } from "./harness/oip-client.ts";
import { watchProcesses } from "./harness/processes-under-test.ts";
import { type GatewayProcess, SECRETS, startGateway } from "./harness/wrangler-dev.ts";

// Who may call what (three kinds of secret, each good for its own routes only), and models that reach
// agents through the gateway: uploaded with the admin key, stored in local R2, downloaded and verified by
// an agent that has no model directory of its own.

let gateway: GatewayProcess;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  gateway = await startGateway();
});

watchProcesses(() => ({ gateways: [gateway], agents }));

type Kind = "client" | "agent" | "admin";
/** Routes that take no key (health probes) answer whatever key is presented, or none. */
type RouteKind = Kind | "public";
const KEYS: Record<Kind, string> = {
  client: SECRETS.apiKey,
  agent: SECRETS.agentToken,
  admin: SECRETS.adminKey,
};

/** Every way to knock: no key, a made-up key, and each kind of key. */
const CREDENTIALS: ReadonlyArray<{ label: string; header?: string; kind?: Kind }> = [
  { label: "no key" },
  { label: "a wrong key", header: "Bearer not-a-key" },
  { label: "a malformed header", header: "Basic dXNlcjpwYXNz" },
  { label: "the client key", header: `Bearer ${KEYS.client}`, kind: "client" },
  { label: "the agent token", header: `Bearer ${KEYS.agent}`, kind: "agent" },
  { label: "the admin key", header: `Bearer ${KEYS.admin}`, kind: "admin" },
];

const ROUTES: ReadonlyArray<{ kind: RouteKind; method: string; path: string; body?: string }> = [
  { kind: "client", method: "GET", path: "/v2" },
  { kind: "public", method: "GET", path: "/v2/health/ready" },
  { kind: "client", method: "GET", path: `/v2/models/${MULTIPLEX_MODELS[0]}/config` },
  { kind: "client", method: "GET", path: "/v2/models/stats" },
  { kind: "admin", method: "POST", path: `/v2/repository/models/${MULTIPLEX_MODELS[0]}/unload`, body: "{}" },
  { kind: "client", method: "POST", path: `/v2/models/${MULTIPLEX_MODELS[0]}/infer`, body: "{}" },
  { kind: "agent", method: "GET", path: "/agent/models/repository.json" },
  { kind: "agent", method: "GET", path: "/agent/connect" },
  { kind: "admin", method: "GET", path: "/admin/models" },
  { kind: "admin", method: "PUT", path: "/admin/models/auth_probe/1", body: "not a model" },
];

describe("the auth matrix", () => {
  test.each(ROUTES)("$method $path takes the $kind secret and nothing else", async (route) => {
    const seen: Record<string, number> = {};
    for (const credential of CREDENTIALS) {
      const response = await fetch(`${gateway.url}${route.path}`, {
        method: route.method,
        headers: credential.header === undefined ? {} : { Authorization: credential.header },
        ...(route.body === undefined ? {} : { body: route.body }),
      });
      const text = await response.text();
      seen[credential.label] = response.status;
      if (response.status === 401 || response.status === 403) {
        expect(JSON.parse(text)).toEqual({ error: expect.any(String) });
        // A refusal never echoes the key it was given.
        for (const key of Object.values(KEYS)) expect(text).not.toContain(key);
      }
    }
    const expected = Object.fromEntries(
      CREDENTIALS.map((credential) => [
        credential.label,
        route.kind === "public"
          ? "accepted"
          : credential.header === undefined || credential.label === "a malformed header"
            ? 401
            : credential.kind === route.kind
              ? "accepted"
              : 403,
      ]),
    );
    const actual = Object.fromEntries(
      Object.entries(seen).map(([label, status]) => [
        label,
        status === 401 || status === 403 ? status : "accepted",
      ]),
    );
    expect(actual).toEqual(expected);
  });

  test("the agent websocket opens with the agent token only", async () => {
    const statusFor = (authorization: string | undefined) =>
      new Promise<number>((resolve, reject) => {
        const socket = new WebSocket(agentConnectUrl(gateway.wsUrl, undefined, "auth-probe"), {
          headers: authorization === undefined ? {} : { Authorization: authorization },
        });
        socket.once("open", () => {
          socket.terminate();
          resolve(101);
        });
        socket.once("unexpected-response", (request, response) => {
          request.destroy();
          resolve(response.statusCode ?? 0);
        });
        socket.once("error", reject);
      });
    expect({
      none: await statusFor(undefined),
      wrong: await statusFor("Bearer nope"),
      client: await statusFor(`Bearer ${KEYS.client}`),
      admin: await statusFor(`Bearer ${KEYS.admin}`),
      agent: await statusFor(`Bearer ${KEYS.agent}`),
    }).toEqual({ none: 401, wrong: 403, client: 403, admin: 403, agent: 101 });
  });

  test("an agent started with a wrong token says so and never joins the pool", async () => {
    const intruder = await startAgent({
      gateway: gateway.wsUrl,
      name: "intruder",
      pool: "guarded",
      token: KEYS.client,
      waitConnected: false,
    });
    agents.push(intruder);
    await intruder.process.waitForOutput(/refused the agent token \(403\): check --token/, 30_000);
    expect(await statusOf(gateway.url, "/v2/health/ready", "guarded")).toBe(503);
    expect(intruder.process.output()).not.toContain(KEYS.client);
  });
});

describe("models from the gateway's repository", () => {
  const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
  // Two versions of one uploaded model, with different weights: version 2 is the newest.
  const uploads = [
    { version: "1", path: repoModelPath(MULTIPLEX_MODELS[5] ?? "") },
    { version: "2", path: repoModelPath(MULTIPLEX_MODELS[6] ?? "") },
  ].map((upload) => ({ ...upload, bytes: readFileSync(upload.path) }));

  test("uploaded with the admin key, listed with their sha256", async () => {
    for (const upload of uploads) {
      const response = await fetch(`${gateway.url}/admin/models/uploaded/${upload.version}`, {
        method: "PUT",
        headers: { Authorization: `Bearer ${KEYS.admin}` },
        body: upload.bytes,
      });
      expect(response.status).toBe(201);
      expect(await response.json()).toMatchObject({
        name: "uploaded",
        version: upload.version,
        sha256: sha256(upload.bytes),
      });
    }
    const listing = await fetch(`${gateway.url}/agent/models/repository.json`, {
      headers: { Authorization: `Bearer ${KEYS.agent}` },
    });
    const { models } = (await listing.json()) as {
      models: Array<{ name: string; version: string; files: Record<string, { sha256?: string }> }>;
    };
    const uploaded = models.filter((model) => model.name === "uploaded");
    expect(uploaded.map((model) => [model.version, model.files["model.onnx"]?.sha256])).toEqual(
      uploads.map((upload) => [upload.version, sha256(upload.bytes)]),
    );
  });

  test("an agent without --models downloads them from the gateway, verified, and serves each version", async () => {
    const fetcher = await startAgent({ gateway: gateway.wsUrl, name: "fetcher", pool: "r2", models: null });
    agents.push(fetcher);
    await waitForAgents(gateway.url, 1, "r2");
    const x = seededFloats(11, 3 * 16);
    const request = { inputs: [{ name: MLP_INPUT, datatype: "FP32" as const, shape: [3, 16], data: x }] };

    for (const [version, upload] of [
      [undefined, uploads[1]],
      ["1", uploads[0]],
    ] as const) {
      const session = await ort.InferenceSession.create(upload?.path ?? "", { intraOpNumThreads: 1 });
      const direct = Object.values(
        await session.run({ [MLP_INPUT]: new ort.Tensor("float32", x, [3, 16]) }),
      )[0];
      await session.release();
      const outcome = await call(gateway.url, "uploaded", request, {
        pool: "r2",
        ...(version === undefined ? {} : { version }),
      });
      expect(outcome.ok ? "ok" : `${outcome.status} ${outcome.message}`).toBe("ok");
      if (!outcome.ok) return;
      expect(outcome.result.response.model_version).toBe(upload?.version);
      expect(outcome.result.headers.get("x-switchyard-cache")).toBe("miss");
      const output = outcome.result.response.outputs[0] as Tensor;
      expectAllClose(output.data as Float32Array, (direct as ort.Tensor).data as Float32Array, 1e-6);
    }
    // What the agent keeps on disk is byte for byte what was uploaded.
    const cached = findFiles(fetcher.cacheDir, "model.onnx").map((path) => sha256(readFileSync(path)));
    expect(cached.sort()).toEqual(uploads.map((upload) => sha256(upload.bytes)).sort());

    const hit = await call(gateway.url, "uploaded", request, { pool: "r2" });
    expect(hit.ok && hit.result.headers.get("x-switchyard-cache")).toBe("hit");
    const missing = await call(gateway.url, "never_uploaded", mlpRequest(1), { pool: "r2" });
    expect(missing.ok ? 200 : missing.status).toBe(404);
  });
});

function findFiles(dir: string, name: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name === name)
    .map((entry) => join(entry.parentPath, entry.name));
}
