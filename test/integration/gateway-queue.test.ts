import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { WebhookBody } from "../../gateway/queue/webhooks.ts";
import type { InferRequestToEncode } from "../../shared/oip/codec.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { QueueClient, type Submitted } from "../../shared/queue/queue-client.ts";
import { verifyWebhook } from "../../shared/queue/webhook-signature.ts";
import { DET_MODEL, MULTIPLEX_MODELS } from "../fixtures/paths.ts";
import { PPOCR_DET_DIMS, ppocrDetSampleInput } from "../fixtures/ppocr.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import { copyOf, temporaryRepository } from "./harness/behaviour-models.ts";
import { call, eventually, mlpRequest, waitForAgents } from "./harness/oip-client.ts";
import { describeOutcome, waitForMetric, withAgentFrozen } from "./harness/pool-probes.ts";
import { watchProcesses } from "./harness/processes-under-test.ts";
import { type GatewayProcess, REPO_ROOT, SECRETS, startGateway } from "./harness/wrangler-dev.ts";

// The managed queue (gateway/queue, gateway/routes/queue.ts) with a real `wrangler dev` (its Durable Object
// storage and local R2), real agents and the TypeScript client users get (shared/queue/queue-client.ts):
// what is submitted is answered later exactly as synchronous infer answers it, survives a gateway restart
// and agents that are not there yet, can be cancelled, and is only ever visible to the key that submitted it.

const MODEL = MULTIPLEX_MODELS[0] ?? "m000";
const OTHER_KEY = "another-client-key";
const WEBHOOK_SECRET = "local-webhook-secret";

let gateway: GatewayProcess;
const agents: AgentProcess[] = [];
/** "once": a copy of MODEL whose config.json says `"idempotent": false`; "again": an ordinary copy. */
let repository: string;

beforeAll(async () => {
  gateway = await startGateway({
    vars: {
      API_KEYS: `${SECRETS.apiKey},${OTHER_KEY}`,
      WEBHOOK_SECRET,
      // Two at a time, so that a burst leaves requests IN_QUEUE; a pool without agents gives up on its asks
      // soon, so that requests go back to the queue and wait there.
      QUEUE_IN_FLIGHT: "2",
      AGENT_GRACE_SECONDS: "1",
    },
  });
  agents.push(
    await startAgent({ gateway: gateway.wsUrl, name: "q1", pool: "queue", args: ["--preload", MODEL] }),
  );
  await waitForAgents(gateway.url, 1, "queue");
}, 120_000);

afterAll(async () => {
  await Promise.all(agents.map((agent) => agent.stop("SIGKILL").catch(() => undefined)));
  if (repository !== undefined) rmSync(repository, { recursive: true, force: true });
});

watchProcesses(() => ({ gateways: [gateway], agents }), "SIGTERM");

const client = (pool: string, apiKey: string = SECRETS.apiKey) =>
  new QueueClient({ baseUrl: gateway.url, apiKey, pool });

/** Polls for the result (undefined while pending), as a client that does not stream would. */
async function resultOf(queue: QueueClient, submitted: Submitted, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await queue.result(submitted);
    if (result !== undefined) return result;
    if (Date.now() > deadline)
      throw new Error(`no result for ${submitted.request_id} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** An MLP request as a JSON body. */
const mlpRequestJson = (seed: number) => ({
  inputs: [
    {
      name: "x",
      datatype: "FP32",
      shape: [1, 16],
      data: Array.from(mlpRequest(1, seed).inputs[0]?.data as Float32Array),
    },
  ],
});

/** `switchyard ...` as a user runs it, with the client key in its environment. */
async function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [join(REPO_ROOT, "backend/bin/switchyard.ts"), ...args], {
    env: { ...process.env, SWITCHYARD_API_KEY: SECRETS.apiKey },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  return { code, stdout, stderr };
}

const dataOf = (outputs: readonly Tensor[]) => Array.from(outputs[0]?.data as Float32Array);

async function syncOutputs(pool: string, model: string, request: InferRequestToEncode) {
  const outcome = await call(gateway.url, model, request, { pool, binaryInputs: true, binaryOutputs: true });
  if (!outcome.ok) throw new Error(`synchronous infer failed: ${outcome.status} ${outcome.message}`);
  return outcome.result.response.outputs;
}

/** A PP-OCRv4 det request (binary tensors); a run takes about a second on this machine's CPU. */
const image: InferRequestToEncode = {
  inputs: [{ name: "x", datatype: "FP32", shape: [...PPOCR_DET_DIMS], data: ppocrDetSampleInput() }],
};

/** An agent in `pool` with det loaded and one slot, so that requests run one at a time; joined. */
async function oneSlotDetAgent(name: string, pool: string): Promise<AgentProcess> {
  const agent = await startAgent({
    gateway: gateway.wsUrl,
    name,
    pool,
    args: ["--preload", DET_MODEL, "--max-concurrency", "1"],
  });
  agents.push(agent);
  await waitForAgents(gateway.url, 1, pool);
  return agent;
}

async function raw(path: string, init: RequestInit & { pool?: string; key?: string } = {}) {
  const { pool, key, headers, ...rest } = init;
  return fetch(`${gateway.url}${path}`, {
    ...rest,
    headers: {
      Authorization: `Bearer ${key ?? SECRETS.apiKey}`,
      ...(pool === undefined ? {} : { "X-Switchyard-Pool": pool }),
      ...(headers as Record<string, string>),
    },
  });
}

describe("managed queue", () => {
  test("submitted requests are answered later exactly as synchronous infer answers them", async () => {
    const queue = client("queue");
    const requests = Array.from({ length: 8 }, (_, index) => mlpRequest(2, 100 + index));
    const submitted = await Promise.all(requests.map((request) => queue.submit(MODEL, request)));
    for (const handle of submitted) {
      expect(["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]).toContain(handle.status);
      expect(handle.status_url).toBe(
        `${gateway.url}/v2/queue/models/${MODEL}/requests/${handle.request_id}/status?pool=queue`,
      );
      expect(handle.model).toBe(MODEL);
    }
    for (const [index, handle] of submitted.entries()) {
      const result = await resultOf(queue, handle);
      expect(result.status).toBe(200);
      expect(result.headers.get("x-request-id")).toBe(handle.request_id);
      expect(result.headers.get("x-switchyard-replica")).toMatch(/^q1\//);
      expect(result.headers.get("server-timing")).toMatch(/infer;dur=/);
      expect(dataOf(result.response.outputs)).toEqual(
        dataOf(await syncOutputs("queue", MODEL, requests[index] as InferRequestToEncode)),
      );
      const status = await queue.status(handle);
      expect(status).toMatchObject({
        status: "COMPLETED",
        response_status: 200,
        request_id: handle.request_id,
      });
      expect(Date.parse(status.finished_at ?? "")).toBeGreaterThanOrEqual(
        Date.parse(status.started_at ?? ""),
      );
      expect(Date.parse(status.expires_at ?? "")).toBeGreaterThan(Date.now() + 23 * 3600 * 1000);
    }
  });

  test("subscribe follows the status stream to the result; large binary bodies and results go through R2", async () => {
    const queue = client("queue");
    const seen: string[] = [];
    const result = await queue.subscribe(DET_MODEL, image, {
      binaryInputs: true,
      binaryOutputs: true,
      onQueueUpdate: (status) => seen.push(status.status),
    });
    expect(seen.at(-1)).toBe("COMPLETED");
    expect(seen[0]).not.toBe("COMPLETED");
    const expected = await syncOutputs("queue", DET_MODEL, image);
    // 4.9 MB in, 1.6 MB out: both above what the queue keeps in its own storage.
    const output = result.response.outputs[0]?.data as Float32Array;
    expect(output.byteLength).toBeGreaterThan(1024 * 1024);
    const bytesOf = (data: Float32Array) => Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    expect(bytesOf(output)).toEqual(bytesOf(expected[0]?.data as Float32Array));
  });

  test("requests wait for agents that are not there yet; cancel answers for each state", async () => {
    const pool = "later";
    const queue = client(pool);
    // No agent in this pool: two are handed to the pool (and come back when it has none), the third waits.
    const submitted: Submitted[] = [];
    for (let seed = 0; seed < 3; seed += 1) submitted.push(await queue.submit(MODEL, mlpRequest(1, seed)));
    const [first, second, third] = submitted as [Submitted, Submitted, Submitted];
    // The pool answers at once that it has no agent: handed over and back, they are IN_QUEUE or IN_PROGRESS.
    expect(["IN_QUEUE", "IN_PROGRESS"]).toContain(third.status);

    expect(await queue.cancel(third)).toBe("CANCELLATION_REQUESTED");
    expect(await queue.cancel(third)).toBe("CANCELLATION_REQUESTED");
    expect(await queue.status(third)).toMatchObject({ status: "CANCELLED" });
    const cancelledResult = await raw(new URL(third.response_url).pathname, { pool });
    expect(cancelledResult.status).toBe(409);
    expect(((await cancelledResult.json()) as { error: string }).error).toMatch(/cancelled/);

    // Nobody serves the pool for a while: the requests stay queued (deferred, not failed).
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    for (const handle of [first, second]) {
      expect(["IN_QUEUE", "IN_PROGRESS"]).toContain((await queue.status(handle)).status);
    }
    const agent = await startAgent({
      gateway: gateway.wsUrl,
      name: "late",
      pool,
      args: ["--preload", MODEL],
    });
    agents.push(agent);
    for (const [seed, handle] of [first, second].entries()) {
      const result = await resultOf(queue, handle);
      expect(dataOf(result.response.outputs)).toEqual(
        dataOf(await syncOutputs(pool, MODEL, mlpRequest(1, seed))),
      );
    }
    expect(await queue.cancel(first)).toBe("ALREADY_COMPLETED");
    expect((await queue.status(first)).status).toBe("COMPLETED");
    expect((await queue.status(third)).status).toBe("CANCELLED");
  });

  test("Prefer: wait on synchronous infer answers the result when it is ready in time, else 202 with the queue's handles", async () => {
    const request = JSON.stringify({
      inputs: [
        { name: "x", datatype: "FP32", shape: [1, 16], data: Array.from({ length: 16 }, (_, i) => i / 16) },
      ],
    });
    const infer = (pool: string, wait: string) =>
      raw(`/v2/models/${MODEL}/infer`, {
        method: "POST",
        pool,
        body: request,
        headers: { "Content-Type": "application/json", Prefer: wait },
      });
    const plain = await raw(`/v2/models/${MODEL}/infer`, {
      method: "POST",
      pool: "queue",
      body: request,
      headers: { "Content-Type": "application/json" },
    });
    const waited = await infer("queue", "wait=20");
    expect(waited.status).toBe(200);
    expect(waited.headers.get("x-switchyard-replica")).toMatch(/^q1\//);
    const outputs = (response: Response) =>
      response.json().then((body) => (body as { outputs: { data: number[] }[] }).outputs[0]?.data);
    expect(await outputs(waited)).toEqual(await outputs(plain));

    // Nobody serves this pool: after a second the client gets the handles, and the request stays queued.
    const started = Date.now();
    const deferred = await infer("nobody", "respond-async, wait=1");
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    expect(deferred.status).toBe(202);
    expect(deferred.headers.get("preference-applied")).toBe("wait=1");
    const handles = (await deferred.json()) as Submitted;
    expect(["IN_QUEUE", "IN_PROGRESS"]).toContain(handles.status);
    expect(await client("nobody").cancel(handles)).toBe("CANCELLATION_REQUESTED");
  });

  test("a webhook receiver gets every finished request, signed, and a failed delivery is tried again", async () => {
    // A receiver that fails its first delivery, as a receiver being deployed would.
    const received: { at: number; headers: Headers; body: Uint8Array; answered: number }[] = [];
    const receiver = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const answered = received.length === 0 ? 500 : 204;
        received.push({
          at: Date.now(),
          headers: new Headers(request.headers as Record<string, string>),
          body: new Uint8Array(Buffer.concat(chunks)),
          answered,
        });
        response.writeHead(answered).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = receiver.address() as AddressInfo;
      const hook = `http://127.0.0.1:${port}/hook`;
      const submitted = (await (
        await raw(`/v2/queue/models/${MODEL}/infer?webhook=${encodeURIComponent(hook)}`, {
          method: "POST",
          pool: "queue",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(mlpRequestJson(9)),
        })
      ).json()) as Submitted;
      await eventually("two deliveries", async () => received.length >= 2, 30_000);
      const [first, second] = received as [(typeof received)[0], (typeof received)[0]];
      expect(second.at - first.at).toBeGreaterThanOrEqual(1_500);
      for (const delivery of [first, second]) {
        expect(await verifyWebhook(WEBHOOK_SECRET, delivery.headers, delivery.body)).toBe(true);
        expect(await verifyWebhook("another-secret", delivery.headers, delivery.body)).toBe(false);
        const body = JSON.parse(new TextDecoder().decode(delivery.body)) as WebhookBody;
        expect(body).toMatchObject({
          request_id: submitted.request_id,
          status: "OK",
          queue_status: "COMPLETED",
          response_status: 200,
          response_url: submitted.response_url,
        });
        expect((body.payload as { outputs: unknown[] }).outputs).toHaveLength(1);
      }
      // Delivered once it was answered 2xx: no more tries.
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      expect(received).toHaveLength(2);

      for (const [url, message] of [
        ["not a url", /not a URL/],
        ["ftp://127.0.0.1/hook", /https/],
        ["http://example.com/hook", /https/],
        ["https://user:secret@example.com/hook", /credentials/],
      ] as const) {
        const refused = await raw(`/v2/queue/models/${MODEL}/infer?webhook=${encodeURIComponent(url)}`, {
          method: "POST",
          pool: "queue",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(mlpRequestJson(1)),
        });
        expect(refused.status).toBe(400);
        expect(((await refused.json()) as { error: string }).error).toMatch(message);
      }
    } finally {
      await new Promise((resolve) => receiver.close(resolve));
    }
  });

  test("the switchyard CLI submits, follows, fetches and cancels", async () => {
    const dir = mkdtempSync(join(tmpdir(), "switchyard-queue-cli-"));
    try {
      const file = join(dir, "request.json");
      writeFileSync(file, JSON.stringify(mlpRequestJson(11)));
      const cli = (...args: string[]) => runCli([...args, "--gateway", gateway.wsUrl, "--pool", "queue"]);
      const expected = dataOf(await syncOutputs("queue", MODEL, mlpRequest(1, 11)));

      const waited = await cli("queue", "submit", MODEL, file, "--wait");
      expect(waited.code).toBe(0);
      expect((JSON.parse(waited.stdout) as { outputs: { data: number[] }[] }).outputs[0]?.data).toEqual(
        expected,
      );

      const submitted = await cli("queue", "submit", MODEL, file);
      expect(submitted.code).toBe(0);
      const { request_id: id } = JSON.parse(submitted.stdout) as Submitted;
      await eventually("it completes", async () => {
        const status = await cli("queue", "status", MODEL, id);
        return (JSON.parse(status.stdout) as Submitted).status === "COMPLETED";
      });
      const result = await cli("queue", "result", MODEL, id);
      expect(result.code).toBe(0);
      expect((JSON.parse(result.stdout) as { outputs: { data: number[] }[] }).outputs[0]?.data).toEqual(
        expected,
      );
      expect((await cli("queue", "cancel", MODEL, id)).stdout.trim()).toBe("ALREADY_COMPLETED");

      const unknown = await cli("queue", "status", MODEL, crypto.randomUUID());
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toMatch(/^switchyard: request '.*' not found/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a request id is visible only to the key that submitted it; bad input answers a clear 4xx", async () => {
    const submitted = await client("queue").submit(MODEL, mlpRequest(1, 5));
    const path = new URL(submitted.status_url).pathname;
    const other = await raw(path, { pool: "queue", key: OTHER_KEY });
    expect(other.status).toBe(404);
    expect(((await other.json()) as { error: string }).error).toMatch(/not found/);
    expect(
      (await raw(path.replace("/status", "/cancel"), { method: "PUT", pool: "queue", key: OTHER_KEY }))
        .status,
    ).toBe(404);
    // Another pool, another model in the path, an id nobody was given, something that is no id at all.
    expect((await raw(path, { pool: "later" })).status).toBe(404);
    expect((await raw(path.replace(`/models/${MODEL}/`, "/models/other/"), { pool: "queue" })).status).toBe(
      404,
    );
    expect(
      (await raw(`/v2/queue/models/${MODEL}/requests/${crypto.randomUUID()}/status`, { pool: "queue" }))
        .status,
    ).toBe(404);
    const malformed = await raw(`/v2/queue/models/${MODEL}/requests/not-an-id/status`, { pool: "queue" });
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { error: string }).error).toMatch(/not a request id/);
    const noKey = await fetch(`${gateway.url}${path}`, { headers: { "X-Switchyard-Pool": "queue" } });
    expect(noKey.status).toBe(401);

    const submit = (
      body: string | Uint8Array<ArrayBuffer>,
      query = "",
      headers: Record<string, string> = {},
    ) =>
      raw(`/v2/queue/models/${MODEL}/infer${query}`, {
        method: "POST",
        pool: "queue",
        body,
        headers: { "Content-Type": "application/json", ...headers },
      });
    const valid = JSON.stringify({
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], data: Array(16).fill(0) }],
    });
    for (const [response, status, message] of [
      [await submit("{not json"), 400, /JSON|json/],
      [await submit(JSON.stringify({ inputs: "none" })), 400, /input/],
      [await submit(valid, "", { "X-Request-Timeout": "soon" }), 400, /X-Request-Timeout/i],
      [
        await submit(valid, "", { "Inference-Header-Content-Length": "999999" }),
        400,
        /Inference-Header-Content-Length|header/i,
      ],
    ] as const) {
      expect(`${response.status} ${message}`).toBe(`${status} ${message}`);
      expect(response.headers.get("content-type")).toMatch(/application\/json/);
      expect(((await response.json()) as { error: string }).error).toMatch(message);
    }
    expect((await client("queue").status(submitted)).request_id).toBe(submitted.request_id);
  });

  test("an agent killed while it runs queued requests: every request completes, with the right answer", async () => {
    const pool = "killed";
    const queue = client(pool);
    const first = await oneSlotDetAgent("doomed", pool);
    const submitted = await Promise.all(
      Array.from({ length: 4 }, () =>
        queue.submit(DET_MODEL, image, { binaryInputs: true, binaryOutputs: true }),
      ),
    );
    // SIGKILL while the queue has requests running there and others waiting; another agent takes over.
    await eventually(
      "a request runs on the doomed agent",
      async () => (await queue.status(submitted[0] as Submitted)).status !== "IN_QUEUE",
      30_000,
    );
    await first.stop("SIGKILL");
    agents.push(
      await startAgent({ gateway: gateway.wsUrl, name: "heir", pool, args: ["--preload", DET_MODEL] }),
    );
    const expected = (await syncOutputs(pool, DET_MODEL, image))[0]?.data as Float32Array;
    for (const handle of submitted) {
      const result = await resultOf(queue, handle, 90_000);
      const output = result.response.outputs[0]?.data as Float32Array;
      expect(Buffer.from(output.buffer, output.byteOffset, output.byteLength)).toEqual(
        Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength),
      );
      expect((await queue.status(handle)).status).toBe("COMPLETED");
    }
  });

  test("what was submitted survives a gateway restart: every request completes once agents are back", async () => {
    const pool = "durable";
    const queue = client(pool);
    // Submitted while the pool has no agent, so all of them are in the queue's storage when it restarts.
    const requests = Array.from({ length: 6 }, (_, index) => mlpRequest(1, 200 + index));
    const submitted = await Promise.all(requests.map((request) => queue.submit(MODEL, request)));
    await gateway.restart();
    agents.push(
      await startAgent({ gateway: gateway.wsUrl, name: "after", pool, args: ["--preload", MODEL] }),
    );
    await eventually(
      "the first request completes after the restart",
      async () => (await queue.status(submitted[0] as Submitted)).status === "COMPLETED",
      60_000,
    );
    for (const [index, handle] of submitted.entries()) {
      const result = await resultOf(queue, handle);
      expect(dataOf(result.response.outputs)).toEqual(
        dataOf(await syncOutputs(pool, MODEL, requests[index] as InferRequestToEncode)),
      );
      expect((await queue.status(handle)).status).toBe("COMPLETED");
    }
  });

  test("a synchronous request waiting in the pool goes before queued ones; IN_PROGRESS says where it runs", async () => {
    const pool = "priority";
    const queue = client(pool);
    const agent = await oneSlotDetAgent("p1", pool);
    const sync = () =>
      call(gateway.url, DET_MODEL, image, { pool, binaryInputs: true, binaryOutputs: true }).then(
        (outcome) => ({ outcome, at: Date.now() }),
      );
    // The agent's one slot is taken (frozen, it answers nothing yet); two queued requests go to the pool and
    // wait in the registry; then a synchronous one arrives behind them.
    const { first, late, submitted } = await withAgentFrozen(agent, async () => {
      const first = sync();
      await waitForMetric(gateway.url, pool, "switchyard_gateway_in_flight", 1);
      const submitted = [
        await queue.submit(DET_MODEL, image, { binaryInputs: true, binaryOutputs: true }),
        await queue.submit(DET_MODEL, image, { binaryInputs: true, binaryOutputs: true }),
      ];
      await waitForMetric(gateway.url, pool, "switchyard_gateway_queue_depth", 2);
      for (const handle of submitted) {
        const waiting = await queue.status(handle);
        // Handed to the pool, not on a replica yet: no replica, and no run time.
        expect(waiting.status).toBe("IN_PROGRESS");
        expect(waiting.replica).toBeUndefined();
        expect(waiting.timings?.queued_ms).toBeGreaterThanOrEqual(0);
        expect(waiting.timings?.run_ms).toBeUndefined();
      }
      const late = sync();
      await waitForMetric(gateway.url, pool, "switchyard_gateway_queue_depth", 3);
      return { first, late, submitted };
    });
    expect(describeOutcome((await first).outcome)).toMatch(/^200 p1\/0 /);
    const lateDone = await late;
    expect(describeOutcome(lateDone.outcome)).toMatch(/^200 p1\/0 /);
    const finished = [];
    for (const handle of submitted) {
      await resultOf(queue, handle, 90_000);
      finished.push(await queue.status(handle));
    }
    // One slot, one run at a time: the synchronous request ran before both queued ones (QUEUE_ASYNC_PRIORITY
    // below), although it reached the pool after them.
    for (const status of finished) {
      expect(status.status).toBe("COMPLETED");
      expect(status.replica).toBe("p1/0");
      expect(Date.parse(status.finished_at ?? "")).toBeGreaterThan(lateDone.at);
      const timings = status.timings;
      // Handed to the pool at once (two may run at a time); then it waited in the pool at least while the
      // late synchronous request ran there (a det run takes about a second here), and ran about as long.
      expect(timings?.queued_ms).toBeLessThan(1_000);
      expect(timings?.pool_ms).toBeGreaterThanOrEqual(100);
      expect(timings?.run_ms).toBeGreaterThanOrEqual(100);
    }
  });

  test("runs in progress when the registry restarts, and when the whole gateway does: an idempotent model's run again once, another's fail saying why", async () => {
    repository = temporaryRepository("queue-restart", [
      copyOf(MODEL, "once", { idempotent: false }),
      copyOf(MODEL, "again"),
    ]);
    const pool = "restarts";
    const queue = client(pool);
    const agent = await startAgent({
      gateway: gateway.wsUrl,
      name: "r1",
      pool,
      models: repository,
      args: ["--preload", "once,again"],
    });
    agents.push(agent);
    await waitForAgents(gateway.url, 1, pool);
    const requests = { once: mlpRequest(1, 400), again: mlpRequest(1, 401) };
    const expected = dataOf(await syncOutputs(pool, "again", requests.again));

    /** Submits one of each while the agent is frozen; `restart` happens while both run there. */
    async function interrupted(restart: () => Promise<void>) {
      const handles = await withAgentFrozen(agent, async () => {
        const handles = {
          once: await queue.submit("once", requests.once),
          again: await queue.submit("again", requests.again),
        };
        for (const handle of Object.values(handles)) {
          await eventually(
            "the request is on the agent's replica",
            async () => (await queue.status(handle)).replica !== undefined,
            30_000,
          );
          const running = await queue.status(handle);
          expect(running.status).toBe("IN_PROGRESS");
          expect(running.replica).toBe("r1/0");
          expect(running.timings?.pool_ms).toBeGreaterThanOrEqual(0);
          expect(running.timings?.run_ms).toBeGreaterThanOrEqual(0);
        }
        await restart();
        return handles;
      });
      const again = await resultOf(queue, handles.again, 90_000);
      expect(dataOf(again.response.outputs)).toEqual(expected);
      const againStatus = await queue.status(handles.again);
      expect(againStatus.status).toBe("COMPLETED");
      return { once: await queue.status(handles.once), again: againStatus, handles };
    }

    // The registry alone (an admin restart): the queue's runs fail at the relay as "may have started", and the
    // registry's retry rules decide, as for a synchronous request.
    const admin = await interrupted(async () => {
      const restarted = await fetch(`${gateway.url}/admin/pools/${pool}/restart`, {
        method: "POST",
        headers: { Authorization: `Bearer ${SECRETS.adminKey}` },
      });
      expect(restarted.status).toBe(202);
    });
    expect(admin.once.status).toBe("FAILED");
    expect(admin.once.response_status).toBe(503);
    expect(admin.once.error).toMatch(/it was not run again: 'once' is not idempotent/);
    await waitForAgents(gateway.url, 1, pool);

    // The whole gateway (a deploy): the queue itself restarts and finds both IN_PROGRESS.
    const whole = await interrupted(() => gateway.restart());
    expect(whole.again.reruns).toBe(1);
    expect(whole.once.status).toBe("FAILED");
    expect(whole.once.response_status).toBe(503);
    expect(whole.once.error).toBe(
      "a gateway restart interrupted it while it ran, and it was not run again: 'once' is not idempotent (its config.json says so)",
    );
    const refused = await raw(`/v2/queue/models/once/requests/${whole.handles.once.request_id}`, { pool });
    expect(refused.status).toBe(503);
  });
});
