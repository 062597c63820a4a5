import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { relayName } from "../../gateway/object-bindings.ts";
import { PERSIST_DELAY_MS } from "../../gateway/registry/agent-store.ts";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { freshPool, infer } from "./support/gateway.ts";
import { registry, snapshot, waitForAgents } from "./support/registry.ts";

async function serve(agent: FakeAgent, response: Promise<Response>): Promise<string | null> {
  agent.answer(await agent.nextInfer(), { state: agent.replicas[0] });
  const answered = await response;
  expect(answered.status).toBe(200);
  return answered.headers.get("X-Switchyard-Replica");
}

describe("hibernation and eviction", () => {
  it("rebuilds the pool from its hibernated websockets and keeps routing on what agents last reported", async () => {
    const pool = freshPool();
    const a = await FakeAgent.connect(pool, {
      name: "a",
      replicas: [replicaState({ loaded: ["m1"], maxConcurrency: 2 })],
    });
    const b = await FakeAgent.connect(pool, {
      name: "b",
      hints: ["lora"],
      replicas: [replicaState({ maxConcurrency: 2 })],
    });
    // b learns a model through a result's piggybacked state (not a hello).
    const first = infer("m2", { pool, headers: { "X-Runner-Hint": "lora" } });
    b.replicas = [replicaState({ loaded: ["m2"], maxConcurrency: 2 })];
    expect(await serve(b, first)).toBe("b/0");
    // A replica's state from a result is kept a moment later (agent-store.ts); the runtime only hibernates
    // an object that has been idle for longer than that.
    await new Promise((resolve) => setTimeout(resolve, PERSIST_DELAY_MS + 100));
    const before = await snapshot(pool);
    const instances = new Set<object>();
    await runInDurableObject(registry(pool), (instance) => {
      instances.add(instance);
    });

    await evictDurableObject(registry(pool));
    await runInDurableObject(registry(pool), (instance, state) => {
      // A new instance (memory gone), with the same sockets.
      expect(instances.has(instance)).toBe(false);
      expect(state.getWebSockets().length).toBe(2);
    });

    const after = await snapshot(pool);
    expect(after.agents).toEqual(before.agents.map((agent) => ({ ...agent, inFlight: { "0": 0 } })));
    expect(await serve(a, infer("m1", { pool }))).toBe("a/0");
    expect(await serve(b, infer("m2", { pool }))).toBe("b/0");
    // The same sockets still carry heartbeats and frames.
    a.socket.send("ping");
    expect(await a.nextText()).toBe("pong");
    a.close();
    b.close();
  });

  it("keeps a change of membership at once: a drain survives an eviction right after it", async () => {
    const pool = freshPool();
    const a = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ loaded: ["m"] })] });
    a.sendJson({ type: "drain" });
    await expect
      .poll(async () => (await snapshot(pool)).agents.find((agent) => agent.id === "a")?.draining)
      .toBe(true);
    // No wait: replica states are kept a moment later, membership is not.
    await evictDurableObject(registry(pool));
    expect((await snapshot(pool)).agents.find((agent) => agent.id === "a")?.draining).toBe(true);
    a.close();
  });

  it("keeps a record too big for an attachment in storage, and drops it when the agent leaves", async () => {
    const pool = freshPool();
    const hints = Array.from({ length: 200 }, (_, index) => `hint-${index}-${"x".repeat(100)}`);
    const big = await FakeAgent.connect(pool, {
      name: "big",
      hints,
      replicas: [replicaState({ maxConcurrency: 2 })],
    });
    const small = await FakeAgent.connect(pool, {
      name: "small",
      replicas: [replicaState({ maxConcurrency: 2 })],
    });
    await runInDurableObject(registry(pool), (_instance, state) => {
      expect(state.storage.kv.get("agent:big")).toMatchObject({ id: "big", hints });
      expect(state.storage.kv.get("agent:small")).toBeUndefined();
    });

    await evictDurableObject(registry(pool));

    expect((await snapshot(pool)).agents.find((agent) => agent.id === "big")?.hints).toEqual(hints);
    expect(await serve(big, infer("m", { pool, headers: { "X-Runner-Hint": hints[150] ?? "" } }))).toBe(
      "big/0",
    );
    big.close();
    await waitForAgents(pool, 1);
    await runInDurableObject(registry(pool), (_instance, state) => {
      expect(state.storage.kv.get("agent:big")).toBeUndefined();
    });
    small.close();
  });

  it("serves through an agent's relay after the relay was evicted: its data socket hibernated", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ loaded: ["m"] })] });
    expect(await serve(agent, infer("m", { pool }))).toBe("a/0");
    await evictDurableObject(env.AGENT_RELAY.getByName(relayName(agent.channel)));
    expect(await serve(agent, infer("m", { pool }))).toBe("a/0");
    // Its heartbeats are still answered, by the runtime.
    agent.data.send("ping");
    agent.close();
  });
});
