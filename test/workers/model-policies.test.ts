import { describe, expect, it } from "vitest";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { ADMIN_KEY, errorOf, freshPool, gatewayFetch } from "./support/gateway.ts";

// A model's serving policy through the admin API (routes/admin-policies.ts), on the real Worker and
// registry, with test peers for agents: what it reads and what it refuses (routing under it: the
// Dispatcher's unit tests and test/integration/gateway-model-policies.test.ts).

const policy = (pool: string, model: string, body?: unknown) =>
  gatewayFetch(`/admin/models/${model}/policy`, {
    method: body === undefined ? "GET" : "PUT",
    headers: { Authorization: `Bearer ${ADMIN_KEY}`, "X-Switchyard-Pool": pool },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });

/** An agent with a repository of its own offering "m" (so the registry knows the model), holding `loaded`. */
const agentWith = (pool: string, name: string, loaded: string[]) =>
  FakeAgent.connect(pool, {
    name,
    replicas: [replicaState({ loaded, maxConcurrency: 1 })],
    repository: { kind: "own", models: [{ name: "m", version: "1", bytes: 1 }] },
  });

describe("a model's serving policy (admin API)", () => {
  it("reads the defaults, sets max_copies, and keeps it across reads", async () => {
    const pool = freshPool();
    await agentWith(pool, "a", ["m"]);
    expect(await (await policy(pool, "m")).json()).toEqual({
      model: "m",
      pool,
      min_copies: 0,
      max_copies: null,
      copies: 1,
    });
    const set = await policy(pool, "m", { max_copies: 1 });
    expect(set.status).toBe(200);
    expect(await set.json()).toMatchObject({ max_copies: 1, min_copies: 0 });
    expect(await (await policy(pool, "m")).json()).toMatchObject({ max_copies: 1 });
    expect(await (await policy(pool, "m", { max_copies: null })).json()).toMatchObject({ max_copies: null });
  });

  it("refuses what it cannot apply, with a 4xx saying why", async () => {
    const pool = freshPool();
    await agentWith(pool, "a", ["m"]);
    const cases: Array<[unknown, number, RegExp]> = [
      ["{not json", 400, /JSON object/],
      [{ max_copies: 0 }, 400, /max_copies/],
      [{ min_copies: -1 }, 400, /min_copies/],
      [{ keep_alive: 3 }, 400, /keep_alive/],
      [{ min_copies: 2, max_copies: 1 }, 400, /min_copies 2 exceeds the model's max_copies 1/],
      // One replica can hold it: two pinned copies cannot be placed, and nothing is half done.
      [{ min_copies: 2 }, 400, /2 copies of 'm' asked for, but 1 replica\(s\) can load it/],
    ];
    for (const [body, status, message] of cases) {
      const response = await policy(pool, "m", body);
      expect(response.status, JSON.stringify(body)).toBe(status);
      expect(await errorOf(response)).toMatch(message);
    }
    expect(await (await policy(pool, "m")).json()).toMatchObject({ min_copies: 0, max_copies: null });
    const unknown = await policy(pool, "nobody", { max_copies: 1 });
    expect(unknown.status).toBe(404);
  });
});
