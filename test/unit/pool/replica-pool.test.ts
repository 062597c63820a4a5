import { describe, expect, test } from "vitest";
import { ReplicaPool } from "../../../backend/pool/replica-pool.ts";
import { Deadline } from "../../../shared/deadline.ts";
import { SwitchyardError } from "../../../shared/errors.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import { routingPolicy } from "../../../shared/routing/policies.ts";
import { BIG_MODEL, MULTIPLEX_MODELS } from "../../fixtures/paths.ts";
import { useTestReplicas } from "../replica/test-replicas.ts";

// The standalone agent's pool on real CPU replicas, with the default policy (switchyard): its bounded waits
// end on the pool's own timer, and a request never waits for a load that ended.

const replicaWith = useTestReplicas();

const model = (index: number) => MULTIPLEX_MODELS[index] ?? "";
const input: Tensor = {
  name: "x",
  datatype: "FP32",
  shape: [1, 16],
  data: Float32Array.from({ length: 16 }, (_, index) => Math.cos(index)),
};

function poolOf(...replicas: ReturnType<typeof replicaWith>[]) {
  return new ReplicaPool(replicas, { policy: routingPolicy(undefined), maxQueue: 16 });
}

const inSeconds = (seconds: number) => Deadline.in(seconds * 1000);

async function failureOf(promise: Promise<unknown>): Promise<SwitchyardError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SwitchyardError) return error;
    throw error;
  }
  throw new Error("expected the request to fail");
}

describe("ReplicaPool with the default policy", () => {
  test("the default policy is switchyard", () => {
    expect(routingPolicy(undefined).name).toBe("switchyard");
  });

  // Twenty real inferences, two loads and a hold that grows with the measured load time: on a busy 2-core
  // machine this took over vitest's default 5 s; nothing here is timed, so it gets room.
  test("a request held back so as not to evict a model in demand runs once its wait has paid, with no other event", {
    timeout: 60_000,
  }, async () => {
    const pool = poolOf(replicaWith({ maxModels: 1, maxConcurrency: 2 }));
    // Demand for m000, and its measured load time: evicting it now would cost its next requests a reload.
    for (let i = 0; i < 20; i += 1)
      await pool.infer({ model: model(0), inputs: [input], deadline: inSeconds(5) });
    // While m000 runs, m001 (held nowhere, so a load that evicts m000) waits instead of loading at once.
    const running = pool.infer({ model: model(0), inputs: [input], deadline: inSeconds(5) });
    // Its hold lasts as long as its waiting takes to pay for the eviction, which grows with the measured load
    // time, up to the policy's MAX_WAIT_MS (20 s): on a busy machine that passed a 5 s deadline (twice), so this
    // one has room for the whole bound.
    const held = pool.infer({ model: model(1), inputs: [input], deadline: inSeconds(50) });
    expect(pool.queueLength).toBe(1);
    await running;
    // Nothing else arrives or ends: only the pool's timer (the policy's nextWakeup) can start it.
    const outcome = await held;
    expect(outcome.cache).toBe("miss");
    expect(outcome.timings.poolQueueMs).toBeGreaterThan(0);
    expect(pool.queueLength).toBe(0);
    await pool.close();
  });

  test("a request whose client goes away fails with the client's reason, and the pool goes on serving", async () => {
    const pool = poolOf(replicaWith({ maxConcurrency: 1 }));
    const gone = (why: string) => {
      const client = new AbortController();
      return { client, reason: new SwitchyardError("unavailable", why) };
    };
    // Its model is not loaded yet: the client leaves while the request waits for the load, on the replica.
    const loading = gone("left during the load");
    const first = failureOf(
      pool.infer({
        model: model(2),
        inputs: [input],
        deadline: inSeconds(20),
        signal: loading.client.signal,
      }),
    );
    // The one slot is taken: this one waits in the pool's queue, and leaves it.
    const queued = gone("left the queue");
    const second = failureOf(
      pool.infer({ model: model(2), inputs: [input], deadline: inSeconds(20), signal: queued.client.signal }),
    );
    expect(pool.queueLength).toBe(1);
    queued.client.abort(queued.reason);
    expect(pool.queueLength).toBe(0);
    expect((await second).message).toBe("left the queue");
    loading.client.abort(loading.reason);
    expect((await first).message).toBe("left during the load");
    // Gone before it was sent: it never takes a slot.
    const before = gone("gone before it was sent");
    before.client.abort(before.reason);
    const third = await failureOf(
      pool.infer({ model: model(2), inputs: [input], deadline: inSeconds(20), signal: before.client.signal }),
    );
    expect(third.message).toBe("gone before it was sent");
    expect(pool.queueLength).toBe(0);
    const served = await pool.infer({ model: model(2), inputs: [input], deadline: inSeconds(20) });
    expect(served.outputs[0]?.shape).toEqual([1, 8]);
    await pool.close();
  });

  test("a request whose deadline passed before it arrived is answered 504 at once and never runs", async () => {
    const pool = poolOf(replicaWith());
    const late = await failureOf(
      pool.infer({ model: model(0), inputs: [input], deadline: Deadline.in(0, Date.now() - 5) }),
    );
    expect(late.status).toBe(504);
    // Nothing was loaded or run for it, then or later.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(pool.states()[0]?.loaded).toEqual([]);
    expect(pool.statistics(model(0)).reduce((sum, record) => sum + record.execution_count, 0)).toBe(0);
    await pool.close();
  });

  test("requests for a model the repository lacks all get 404 at once, none waits for a load that failed", async () => {
    const pool = poolOf(replicaWith(), replicaWith({ id: "1" }));
    const attempts = Array.from({ length: 3 }, () =>
      failureOf(pool.infer({ model: "no-such-model", inputs: [input], deadline: inSeconds(20) })),
    );
    const started = Date.now();
    const failures = await Promise.all(attempts);
    expect(failures.map((failure) => failure.status)).toEqual([404, 404, 404]);
    // Well before their deadlines (20 s), which is what they would reach waiting for a load never shown.
    expect(Date.now() - started).toBeLessThan(10_000);
    await pool.close();
  });

  test("a request still running at its deadline is answered 504 then; its replica serves the next one once done", async () => {
    const pool = poolOf(replicaWith({ maxConcurrency: 1 }));
    const bigInput: Tensor = { ...input, data: Float32Array.from({ length: 16 }, (_, index) => index) };
    // BIG takes tens of milliseconds to load: the deadline passes while the request runs (its load).
    const started = Date.now();
    const late = await failureOf(
      pool.infer({ model: BIG_MODEL, inputs: [bigInput], deadline: Deadline.in(5) }),
    );
    expect(late.status).toBe(504);
    expect(late.message).toBe(`'${BIG_MODEL}' did not answer within the request's deadline of 5 ms`);
    expect(Date.now() - started).toBeLessThan(1_000);
    const next = await pool.infer({ model: BIG_MODEL, inputs: [bigInput], deadline: inSeconds(30) });
    expect(next.outputs).toHaveLength(1);
    await pool.close();
  });
});
