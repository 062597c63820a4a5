import { describe, expect, it } from "vitest";
import type { TensorMetadata } from "../../shared/oip/schemas.ts";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { ADMIN_KEY, errorOf, freshPool, gatewayFetch } from "./support/gateway.ts";
import { tinyOnnx } from "./support/tiny-onnx.ts";

const X: TensorMetadata = { name: "x", datatype: "FP32", shape: [-1, 4] };
const Y: TensorMetadata = { name: "y", datatype: "FP32", shape: [-1, 2] };

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
      keep_alive_s: null,
      config: { min_copies: null, max_copies: null },
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
      [{ keep_alive_s: -1 }, 400, /keep_alive_s/],
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

  it("a config.json's min_copies and max_copies are the pool's defaults; the admin's values override them until DELETE", async () => {
    const pool = freshPool();
    const model = `cfg-${crypto.randomUUID().slice(0, 8)}`;
    const upload = (path: string, body: BodyInit) =>
      gatewayFetch(path, { method: "PUT", headers: { Authorization: `Bearer ${ADMIN_KEY}` }, body });
    expect((await upload(`/admin/models/${model}/1`, tinyOnnx([X], [Y]))).status).toBe(201);
    const refused = await upload(
      `/admin/models/${model}/1?file=config.json`,
      '{"min_copies": 3, "max_copies": 2}',
    );
    expect(refused.status).toBe(400);
    expect(await errorOf(refused)).toMatch(/min_copies must not exceed max_copies/);
    expect((await upload(`/admin/models/${model}/1?file=config.json`, '{"max_copies": 2}')).status).toBe(201);
    await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ maxConcurrency: 1 })] });

    expect(await (await policy(pool, model)).json()).toMatchObject({
      min_copies: 0,
      max_copies: 2,
      config: { min_copies: null, max_copies: 2 },
    });
    expect(await (await policy(pool, model, { max_copies: 5 })).json()).toMatchObject({ max_copies: 5 });
    expect(await (await policy(pool, model, { max_copies: null })).json()).toMatchObject({
      max_copies: null,
    });
    const cleared = await gatewayFetch(`/admin/models/${model}/policy`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${ADMIN_KEY}`, "X-Switchyard-Pool": pool },
    });
    expect(await cleared.json()).toMatchObject({ max_copies: 2, config: { max_copies: 2 } });
  });
});
