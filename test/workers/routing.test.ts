import { describe, expect, it } from "vitest";
import { PROTOCOL_VERSION } from "../../shared/protocol/frames.ts";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent, type ReceivedInfer } from "./support/fake-agent.ts";
import { errorOf, freshPool, infer } from "./support/gateway.ts";
import { waitFor, waitForQueued } from "./support/registry.ts";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

describe("routing through the registry", () => {
  it("relays an inference to the agent and returns its body with the routing headers", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, {
      name: "gpu-a",
      replicas: [replicaState({ loaded: ["m"] })],
    });
    expect(agent.welcome).toMatchObject({
      type: "welcome",
      protocol: PROTOCOL_VERSION,
      agentId: "gpu-a",
      heartbeatMs: 10_000,
    });

    const body = JSON.stringify({
      id: "req-42",
      inputs: [{ name: "x", shape: [1], datatype: "FP32", data: [1] }],
    });
    const response = infer("m", {
      pool,
      body,
      headers: { "X-Runner-Hint": "adapter-7", "X-Request-Timeout": "30" },
    });
    const received = await agent.nextInfer();
    expect(received.header).toMatchObject({ type: "infer", replica: "0", model: "m", hint: "adapter-7" });
    expect(received.header.timeoutMs).toBeGreaterThan(29_000);
    expect(received.header.timeoutMs).toBeLessThanOrEqual(30_000);
    expect(text(received.body)).toBe(body);
    agent.answer(received, { body: '{"model_name":"m","outputs":[]}', cache: "miss" });

    const answered = await response;
    expect(answered.status).toBe(200);
    expect(await answered.text()).toBe('{"model_name":"m","outputs":[]}');
    expect(answered.headers.get("X-Switchyard-Replica")).toBe("gpu-a/0");
    expect(answered.headers.get("X-Switchyard-Cache")).toBe("miss");
    expect(answered.headers.get("Content-Type")).toBe("application/json");
    expect(answered.headers.get("X-Request-Id")).toBe("req-42");
    expect(answered.headers.get("Server-Timing")).toMatch(
      /^queue;dur=[\d.]+, load;dur=5\.00, infer;dur=2\.00, registry;dur=[\d.]+, roundtrip;dur=[\d.]+, total;dur=[\d.]+$/,
    );
    agent.close();
  });

  it("passes binary bodies through untouched, with Inference-Header-Content-Length both ways", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState({ loaded: ["m"] })] });
    const json = JSON.stringify({
      inputs: [{ name: "x", shape: [2], datatype: "FP32", parameters: { binary_data_size: 8 } }],
    });
    const request = new Uint8Array([...new TextEncoder().encode(json), 0, 0, 128, 63, 0, 0, 0, 64]);
    const response = infer("m", {
      pool,
      body: request,
      headers: {
        "Inference-Header-Content-Length": String(json.length),
        "Content-Type": "application/octet-stream",
      },
    });
    const received = await agent.nextInfer();
    expect(received.header.headerLength).toBe(json.length);
    expect([...received.body]).toEqual([...request]);
    agent.data.send(
      (await import("../../shared/protocol/frames.ts")).encodeBinaryFrame(
        {
          type: "result",
          id: received.header.id,
          replica: "0",
          model: { name: "m", version: "1" },
          cache: "hit",
          timings: { queueMs: 0, loadMs: 0, inferMs: 1 },
          contentType: "application/octet-stream",
          headerLength: 3,
        },
        new Uint8Array([123, 125, 32, 1, 2, 3]),
      ),
    );
    const answered = await response;
    expect(answered.status).toBe(200);
    expect(answered.headers.get("Inference-Header-Content-Length")).toBe("3");
    expect(answered.headers.get("Content-Type")).toBe("application/octet-stream");
    expect([...new Uint8Array(await answered.arrayBuffer())]).toEqual([123, 125, 32, 1, 2, 3]);
    agent.close();
  });

  it("sends each request to the replica that holds its model", async () => {
    const pool = freshPool();
    const a = await FakeAgent.connect(pool, {
      name: "a",
      replicas: [replicaState({ loaded: ["m1"], maxConcurrency: 4 })],
    });
    const b = await FakeAgent.connect(pool, {
      name: "b",
      replicas: [replicaState({ loaded: ["m2"], maxConcurrency: 4 })],
    });
    for (const [model, holder] of [
      ["m2", b],
      ["m1", a],
      ["m2", b],
    ] as const) {
      const response = infer(model, { pool });
      const received = await holder.nextInfer();
      expect(received.header.model).toBe(model);
      holder.answer(received);
      expect((await response).headers.get("X-Switchyard-Replica")).toBe(model === "m1" ? "a/0" : "b/0");
    }
    expect(a.pendingInfers + b.pendingInfers).toBe(0);
    a.close();
    b.close();
  });

  it("prefers the agent that advertises the request's hint", async () => {
    const pool = freshPool();
    const plain = await FakeAgent.connect(pool, {
      name: "plain",
      replicas: [replicaState({ loaded: ["m"], maxConcurrency: 8 })],
    });
    const hinted = await FakeAgent.connect(pool, {
      name: "hinted",
      hints: ["lora-1"],
      replicas: [replicaState({ loaded: ["m"], maxConcurrency: 1 })],
    });
    for (const header of ["X-Runner-Hint", "X-Fal-Runner-Hint", "serve_multiplexed_model_id"]) {
      const response = infer("m", { pool, headers: { [header]: "lora-1" } });
      const received = await hinted.nextInfer();
      expect(received.header.hint).toBe("lora-1");
      hinted.answer(received);
      expect((await response).headers.get("X-Switchyard-Replica")).toBe("hinted/0");
    }
    expect(plain.pendingInfers).toBe(0);
    plain.close();
    hinted.close();
  });

  it("queues at capacity; a freed slot takes the oldest request for a model its replica holds, else the oldest", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, {
      replicas: [replicaState({ loaded: ["held"], maxConcurrency: 1 })],
    });
    const first = infer("held", { pool });
    const running = await agent.nextInfer();

    const other1 = infer("other", { pool });
    await waitForQueued(pool, 1);
    const other2 = infer("other", { pool });
    await waitForQueued(pool, 2);
    const held = infer("held", { pool });
    await waitForQueued(pool, 3);
    expect(agent.pendingInfers).toBe(0);

    const order: string[] = [];
    let current: ReceivedInfer = running;
    const responses = [first, held, other1, other2];
    for (let step = 0; step < 4; step += 1) {
      agent.answer(current, { body: `{"step":${step}}` });
      if (step < 3) {
        current = await agent.nextInfer();
        order.push(current.header.model);
      }
    }
    expect(order).toEqual(["held", "other", "other"]);
    const bodies = await Promise.all(responses.map(async (response) => (await response).text()));
    expect(bodies).toEqual(['{"step":0}', '{"step":1}', '{"step":2}', '{"step":3}']);
    agent.close();
  });

  it("uses fresh state from results: a model loaded by one request attracts the next", async () => {
    const pool = freshPool();
    const a = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ maxConcurrency: 2 })] });
    const b = await FakeAgent.connect(pool, { name: "b", replicas: [replicaState({ maxConcurrency: 2 })] });
    const firstResponse = infer("fresh", { pool });
    const first = await Promise.race([
      a.nextInfer().then((received) => ({ agent: a, received })),
      b.nextInfer().then((received) => ({ agent: b, received })),
    ]);
    first.agent.answer(first.received, {
      cache: "miss",
      state: replicaState({ maxConcurrency: 2, loaded: ["fresh"] }),
    });
    const servedBy = (await firstResponse).headers.get("X-Switchyard-Replica");
    for (let round = 0; round < 3; round += 1) {
      const response = infer("fresh", { pool });
      first.agent.answer(await first.agent.nextInfer(), {
        state: replicaState({ maxConcurrency: 2, loaded: ["fresh"] }),
      });
      expect((await response).headers.get("X-Switchyard-Replica")).toBe(servedBy);
    }
    a.close();
    b.close();
  });

  it("retries on another replica when the agent says it never started", async () => {
    const pool = freshPool();
    const broken = await FakeAgent.connect(pool, {
      name: "broken",
      replicas: [replicaState({ loaded: ["m"], maxConcurrency: 4 })],
    });
    const healthy = await FakeAgent.connect(pool, {
      name: "healthy",
      replicas: [replicaState({ maxConcurrency: 1 })],
    });
    const response = infer("m", { pool });
    const received = await broken.nextInfer();
    broken.fail(received, {
      status: 500,
      message: "load failed",
      started: false,
      state: {
        ...replicaState({ maxConcurrency: 4 }),
        failed: [{ name: "m", version: "1", reason: "load failed" }],
      },
    });
    const retried = await healthy.nextInfer();
    expect(retried.header.model).toBe("m");
    expect(retried.header.requestId).toBe(received.header.requestId);
    healthy.answer(retried);
    const answered = await response;
    expect(answered.status).toBe(200);
    expect(answered.headers.get("X-Switchyard-Replica")).toBe("healthy/0");
    broken.close();
    healthy.close();
  });

  it("retries elsewhere though the replica it failed on still holds the model with slots free (a drain the registry has not read yet)", async () => {
    const pool = freshPool();
    const draining = await FakeAgent.connect(pool, {
      name: "draining",
      replicas: [replicaState({ loaded: ["m"], maxConcurrency: 4 })],
    });
    const cold = await FakeAgent.connect(pool, {
      name: "cold",
      replicas: [replicaState({ maxConcurrency: 1 })],
    });
    const response = infer("m", { pool });
    // What an agent answers to an infer frame that crossed its drain frame; its state has not changed.
    draining.fail(await draining.nextInfer(), {
      status: 503,
      message: "the agent is draining",
      started: false,
    });
    cold.answer(await cold.nextInfer());
    const answered = await response;
    expect(answered.status).toBe(200);
    expect(answered.headers.get("X-Switchyard-Replica")).toBe("cold/0");
    expect(draining.pendingInfers).toBe(0);
    draining.close();
    cold.close();
  });

  it("does not retry a 400 elsewhere, though the agent never started it: it is the request's fault anywhere", async () => {
    const pool = freshPool();
    const a = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ loaded: ["m"] })] });
    const b = await FakeAgent.connect(pool, { name: "b", replicas: [replicaState({ loaded: ["m"] })] });
    const response = infer("m", { pool });
    const [holder, received] = await FakeAgent.firstInfer([a, b]);
    holder.fail(received, { status: 400, message: "input 'x' must be FP16", started: false });
    const answered = await response;
    expect(answered.status).toBe(400);
    expect(await errorOf(answered)).toBe("input 'x' must be FP16");
    expect(a.pendingInfers + b.pendingInfers).toBe(0);
    a.close();
    b.close();
  });

  it("returns the agent's error when the request had started", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ loaded: ["m"] })] });
    const response = infer("m", { pool });
    agent.fail(await agent.nextInfer(), {
      status: 400,
      message: "input 'x' has the wrong shape",
      started: true,
    });
    const answered = await response;
    expect(answered.status).toBe(400);
    expect(await answered.json()).toEqual({ error: "input 'x' has the wrong shape" });
    expect(answered.headers.get("X-Switchyard-Replica")).toBe("a/0");
    // The slot was released: the next request is dispatched at once.
    const next = infer("m", { pool });
    agent.answer(await agent.nextInfer());
    expect((await next).status).toBe(200);
    agent.close();
  });

  it("skips draining agents; when every agent drains, requests wait for a fresh agent", async () => {
    const pool = freshPool();
    const a = await FakeAgent.connect(pool, {
      name: "a",
      replicas: [replicaState({ loaded: ["m"], maxConcurrency: 4 })],
    });
    const b = await FakeAgent.connect(pool, { name: "b", replicas: [replicaState({ maxConcurrency: 4 })] });
    a.sendJson({ type: "drain" });
    a.sendJson({
      type: "state",
      replicas: [replicaState({ loaded: ["m"], maxConcurrency: 4 })],
      signatures: [],
    });
    await waitFor(pool, (agents) => agents.some((agent) => agent.id === "a" && agent.draining));
    const response = infer("m", { pool });
    b.answer(await b.nextInfer());
    expect((await response).headers.get("X-Switchyard-Replica")).toBe("b/0");
    b.sendJson({ type: "drain" });
    await waitFor(pool, (agents) => agents.every((agent) => agent.draining));
    // A rolling restart: the drained agents will be back, so the request waits rather than failing.
    const waiting = infer("m", { pool });
    await waitForQueued(pool, 1);
    a.close();
    b.close();
    const fresh = await FakeAgent.connect(pool, {
      name: "fresh",
      replicas: [replicaState({ loaded: ["m"] })],
    });
    fresh.answer(await fresh.nextInfer());
    expect((await waiting).headers.get("X-Switchyard-Replica")).toBe("fresh/0");
    fresh.close();
  });
});

describe("refusals", () => {
  it("answers 503 with Retry-After when no agent is connected", async () => {
    const response = await infer("m", { pool: freshPool() });
    expect(response.status).toBe(503);
    expect(response.headers.get("Retry-After")).toBe("1");
    expect(await response.json()).toEqual({ error: "no backend can serve 'm': no agent is connected" });
  });

  it("answers 504 when no slot frees before the deadline, and the queue forgets the request", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState({ loaded: ["m"] })] });
    const busy = infer("m", { pool });
    const running = await agent.nextInfer();
    const started = Date.now();
    const late = await infer("m", { pool, headers: { "X-Request-Timeout": "0.3" } });
    expect(late.status).toBe(504);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(await errorOf(late)).toMatch(/deadline of 300 ms/);
    await waitForQueued(pool, 0);
    agent.answer(running);
    expect((await busy).status).toBe(200);
    agent.close();
  });

  it("answers 504 when the agent does not answer in time, cancels it there, and accepts its late answer", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState({ loaded: ["m"] })] });
    const response = infer("m", {
      pool,
      body: JSON.stringify({ inputs: [], parameters: { timeout: 200_000 } }),
    });
    const received = await agent.nextInfer();
    expect(received.header.timeoutMs).toBeLessThanOrEqual(200);
    expect((await response).status).toBe(504);
    expect(await agent.nextDataText()).toEqual({ type: "cancel", id: received.header.id });
    // The slot stays taken until the agent answers the cancelled request...
    const next = infer("m", { pool, headers: { "X-Request-Timeout": "5" } });
    await waitForQueued(pool, 1);
    agent.fail(received, { status: 504, message: "cancelled by the gateway", started: true });
    // ...then the waiting request takes it; the late answer was no protocol violation.
    agent.answer(await agent.nextInfer());
    expect((await next).status).toBe(200);
    agent.close();
  });

  it("answers 429 with Retry-After once the queue is full", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState({ loaded: ["m"] })] });
    const running = infer("m", { pool });
    const first = await agent.nextInfer();
    // QUEUE_LIMIT is 4 in the workers test configuration.
    const waiting = [];
    for (let index = 0; index < 4; index += 1) {
      waiting.push(infer("m", { pool }));
      await waitForQueued(pool, index + 1);
    }
    const refused = await infer("m", { pool });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("Retry-After")).toBe("1");
    expect(await errorOf(refused)).toMatch(/4 requests are already waiting/);
    let current = first;
    for (let index = 0; index < 4; index += 1) {
      agent.answer(current);
      current = await agent.nextInfer();
    }
    agent.answer(current);
    const statuses = await Promise.all(
      [running, ...waiting].map(async (response) => (await response).status),
    );
    expect(statuses).toEqual([200, 200, 200, 200, 200]);
    agent.close();
  });
});
