import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it, vi } from "vitest";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { ADMIN_KEY, errorOf, freshPool, gatewayFetch, infer } from "./support/gateway.ts";
import { registry, waitForAgents, waitForQueued } from "./support/registry.ts";

const restart = (pool: string) =>
  gatewayFetch(`/admin/pools/${pool}/restart`, {
    method: "POST",
    headers: { Authorization: `Bearer ${ADMIN_KEY}` },
  });

describe("a registry that restarts", () => {
  it("drops every agent; a request in flight is sent again and served once the agent is back", async () => {
    const pool = freshPool();
    const before = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ loaded: ["m"] })] });
    const response = infer("m", { pool, headers: { "X-Request-Timeout": "30" } });
    const first = await before.nextInfer();

    const restarted = await restart(pool);
    expect(restarted.status).toBe(202);
    expect(await restarted.json()).toEqual({ pool, restarted: true });
    await before.closed;
    // Arriving while no agent is connected: it waits for the agent rather than failing.
    const arriving = infer("m", { pool, headers: { "X-Request-Timeout": "30" } });
    await waitForQueued(pool, 2);

    const after = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ loaded: ["m"] })] });
    const again = await after.nextInfer();
    // The same request (a new id: a new registry issued it), run again because the model is idempotent.
    expect(new TextDecoder().decode(again.body)).toBe(new TextDecoder().decode(first.body));
    after.answer(again);
    after.answer(await after.nextInfer());
    expect((await response).status).toBe(200);
    expect((await arriving).status).toBe(200);
    after.close();
  });

  it("does not run a model that is not idempotent again after the restart", async () => {
    const pool = freshPool();
    const state = replicaState({ loaded: ["once"] });
    for (const model of state.loaded) model.idempotent = false;
    const agent = await FakeAgent.connect(pool, { name: "a", replicas: [state] });
    const response = infer("once", { pool, headers: { "X-Request-Timeout": "30" } });
    await agent.nextInfer();
    expect((await restart(pool)).status).toBe(202);
    const answered = await response;
    expect(answered.status).toBe(503);
    expect(await errorOf(answered)).toMatch(
      /may or may not have run, and it was not run again: 'once' is not idempotent/,
    );
  });

  it("remembers, across an eviction, that its agents just left, so a request waits for them", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ loaded: ["m"] })] });
    agent.close();
    await waitForAgents(pool, 0);
    // (An eviction takes a couple of seconds here, within the 5 s grace of the test configuration.)
    await evictDurableObject(registry(pool));
    const response = infer("m", { pool, headers: { "X-Request-Timeout": "30" } });
    await waitForQueued(pool, 1);
    const back = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ loaded: ["m"] })] });
    back.answer(await back.nextInfer());
    expect((await response).status).toBe(200);
    back.close();
  });
});

describe("the registry's alarm", () => {
  it("is armed while a request is in flight, for when the agent would count as silent, and not when idle", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState({ loaded: ["m"] })] });
    const alarm = () => runInDurableObject(registry(pool), (_instance, state) => state.storage.getAlarm());
    expect(await alarm()).toBeNull();

    const armedAt = Date.now();
    const response = infer("m", { pool });
    const received = await agent.nextInfer();
    const at = await alarm();
    // Three missed heartbeats of 10 s after the agent was last heard from.
    expect(at).toBeGreaterThan(armedAt + 25_000);
    expect(at).toBeLessThan(armedAt + 31_000);

    // Early or not, running it closes no agent that is still heard from, and leaves the request alone.
    expect(await runDurableObjectAlarm(registry(pool))).toBe(true);
    expect(await alarm()).not.toBeNull();
    agent.answer(received);
    expect((await response).status).toBe(200);

    // Nothing in flight any more: the alarm that runs now arms no other one, and the idle pool sleeps. The
    // relay tells the registry the run ended after it answered the client: wait for the registry to know.
    await vi.waitFor(
      async () => {
        expect(await runDurableObjectAlarm(registry(pool))).toBe(true);
        expect(await alarm()).toBeNull();
      },
      { timeout: 5_000, interval: 50 },
    );
    await waitForAgents(pool, 1);
    agent.close();
  });
});
