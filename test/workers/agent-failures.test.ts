import { describe, expect, it } from "vitest";
import { encodeBinaryFrame } from "../../shared/protocol/frames.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { errorOf, freshPool, infer } from "./support/gateway.ts";
import { snapshot, waitForAgents } from "./support/registry.ts";
import { replicaState } from "./support/replica-state.ts";

describe("agents that disconnect", () => {
  it("fails a request whose agent disconnects mid-request with a clear 503, without waiting for the deadline", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, {
      name: "flaky",
      replicas: [replicaState({ loaded: ["m"] })],
    });
    const started = Date.now();
    const response = infer("m", { pool, headers: { "X-Request-Timeout": "30" } });
    await agent.nextInfer();
    agent.close(1001, "going away");
    const answered = await response;
    expect(answered.status).toBe(503);
    expect(answered.headers.get("X-Switchyard-Replica")).toBe("flaky/0");
    expect(await errorOf(answered)).toMatch(/^the agent serving this request disconnected/);
    expect(Date.now() - started).toBeLessThan(5000);
    await waitForAgents(pool, 0);
  });

  it("keeps queued requests for the agents that remain", async () => {
    const pool = freshPool();
    const leaving = await FakeAgent.connect(pool, {
      name: "leaving",
      replicas: [replicaState({ loaded: ["m"] })],
    });
    const staying = await FakeAgent.connect(pool, {
      name: "staying",
      replicas: [replicaState({ loaded: ["m"] })],
    });
    const one = infer("m", { pool });
    const two = infer("m", { pool });
    const [first, second] = await Promise.all([leaving.nextInfer(), staying.nextInfer()]);
    const queued = infer("m", { pool });
    leaving.close();
    staying.answer(second);
    staying.answer(await staying.nextInfer());
    const statuses = await Promise.all([one, two, queued].map(async (response) => (await response).status));
    expect(statuses).toEqual([503, 200, 200]);
    expect(first.header.model).toBe("m");
    staying.close();
  });

  it("answers heartbeats", async () => {
    const agent = await FakeAgent.connect(freshPool(), { replicas: [replicaState()] });
    agent.socket.send("ping");
    expect(await agent.nextText()).toBe("pong");
    agent.close();
  });
});

describe("agents that break the protocol", () => {
  const hostile: [
    string,
    (agent: FakeAgent, infer: () => Promise<{ header: { id: string } }>) => Promise<void>,
  ][] = [
    ["a text frame that is not JSON", async (agent) => agent.socket.send("{not json")],
    ["a frame of an unknown type", async (agent) => agent.sendJson({ type: "gossip" })],
    [
      "a state frame that breaks its schema",
      async (agent) => agent.sendJson({ type: "state", replicas: [{ id: 1 }] }),
    ],
    [
      "a second hello",
      async (agent) =>
        agent.sendJson({
          type: "hello",
          protocol: 1,
          agent: { name: "x", version: "1" },
          replicas: [replicaState()],
        }),
    ],
    [
      "a binary frame with a garbage header",
      async (agent) => agent.socket.send(new Uint8Array([200, 0, 0, 0, 1, 2])),
    ],
    [
      "a result for an unknown request id",
      async (agent) =>
        agent.socket.send(
          encodeBinaryFrame(
            {
              type: "result",
              id: "made-up",
              replica: "0",
              model: { name: "m", version: "1" },
              cache: "hit",
              timings: { queueMs: 0, loadMs: 0, inferMs: 0 },
              contentType: "application/json",
            },
            new Uint8Array(),
          ),
        ),
    ],
    [
      "an error for an unknown request id",
      async (agent) =>
        agent.sendJson({ type: "error", id: "nope", replica: "0", status: 500, message: "x", started: true }),
    ],
    [
      "a text frame over 1 MiB",
      async (agent) => agent.socket.send(`{"type":"state","pad":"${"x".repeat(1024 * 1024)}"}`),
    ],
  ];

  for (const [what, misbehave] of hostile) {
    it(`closes only the socket that sends ${what}`, async () => {
      const pool = freshPool();
      const bad = await FakeAgent.connect(pool, {
        name: "bad",
        replicas: [replicaState({ loaded: ["m"], maxConcurrency: 4 })],
      });
      const good = await FakeAgent.connect(pool, {
        name: "good",
        replicas: [replicaState({ loaded: ["m"], maxConcurrency: 4 })],
      });
      await misbehave(bad, () => bad.nextInfer());
      const closed = await bad.closed;
      expect(closed.code).toBe(what.includes("1 MiB") ? 1009 : 1008);
      expect(closed.reason.length).toBeGreaterThan(0);
      await waitForAgents(pool, 1);
      expect((await snapshot(pool)).agents.map((agent) => agent.id)).toEqual(["good"]);
      const response = infer("m", { pool });
      good.answer(await good.nextInfer());
      expect((await response).status).toBe(200);
      good.close();
    });
  }

  it("closes an agent that answers a request another agent holds, and fails only that agent's requests", async () => {
    const pool = freshPool();
    const a = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ loaded: ["m"] })] });
    const b = await FakeAgent.connect(pool, { name: "b", replicas: [replicaState({ loaded: ["m"] })] });
    const forA = infer("m", { pool });
    const forB = infer("m", { pool });
    const [atA, atB] = await Promise.all([a.nextInfer(), b.nextInfer()]);
    // b answers a's request.
    b.answer(atA);
    expect((await b.closed).code).toBe(1008);
    expect((await forB).status).toBe(503);
    // a's request is untouched: a answers it.
    a.answer(atA);
    const responseA = await forA;
    expect(responseA.status).toBe(200);
    expect(responseA.headers.get("X-Switchyard-Replica")).toBe("a/0");
    expect(atB.header.model).toBe("m");
    a.close();
  });

  it("closes a socket that sends anything but hello first", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.open(pool, [replicaState()]);
    agent.sendJson({ type: "state", replicas: [replicaState()] });
    const closed = await agent.closed;
    expect(closed).toEqual({ code: 1008, reason: "state frame before hello" });
    expect((await snapshot(pool)).agents).toEqual([]);
  });

  it("refuses an agent speaking another protocol version", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.open(pool, [replicaState()]);
    agent.sendJson({
      type: "hello",
      protocol: 2,
      agent: { name: "future", version: "9" },
      replicas: [replicaState()],
    });
    expect((await agent.closed).code).toBe(1008);
  });
});
