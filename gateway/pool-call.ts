import { Deadline } from "../shared/deadline.ts";
import { outcomeOf, reportOf } from "./agent-relay/run-outcome.ts";
import type { Env } from "./env.ts";
import { log } from "./log.ts";
import { relayStub } from "./object-bindings.ts";
import type { Grant, RelayedRequest, RelayOutcome, RunOrder, RunOutcome, Tries } from "./pool-calls.ts";
import { registryOf } from "./pool-shards.ts";
import { askShards } from "./shard-walk.ts";

/**
 * One inference through a pool, as the Worker drives it (pool-calls.ts has the picture): ask the pool's
 * registry (its shards, shard-walk.ts) for a slot, send the body to the granted agent's relay, and when the
 * run failed in a way the registry says may go elsewhere (a retry, or a rerun under the retry rules and
 * budget), ask again, the shard that granted the failed run last. The Worker owns the client's deadline;
 * each object cuts its own part off by what is left of it.
 */
export async function inferThroughPool(env: Env, pool: string, call: RelayedRequest): Promise<RelayOutcome> {
  const startedAt = Date.now();
  const deadline = Deadline.in(call.timeoutMs, startedAt, call.budgetMs);
  let tries: Tries = { attempts: 0, reruns: 0 };
  let queuedMs = 0;
  let failedAt: number | undefined;
  for (;;) {
    const askedAt = Date.now();
    const ask = {
      model: call.model,
      ...(call.version === undefined ? {} : { version: call.version }),
      ...(call.hint === undefined ? {} : { hint: call.hint }),
      budgetMs: deadline.budgetMs,
      ...tries,
    };
    const { shard, answer } = await askShards(env, pool, deadline, ask, failedAt);
    queuedMs += Date.now() - askedAt;
    if (!answer.ok) return answer;
    tries = { ...tries, attempts: tries.attempts + 1 };
    const { grant } = answer;
    const ran = await run(env, deadline, grant, {
      ...call,
      timeoutMs: deadline.remainingMs(),
      pool,
      shard,
      ticket: grant.ticket,
      agentId: grant.agentId,
      channel: grant.channel,
      replicaId: grant.replicaId,
      replica: grant.replica,
      queuedMs,
      ...tries,
    });
    if (ran.kind === "again") {
      tries = { attempts: ran.attempts, reruns: ran.reruns };
      failedAt = shard;
      continue;
    }
    const outcome = ran.outcome;
    if (!outcome.ok) return outcome;
    // The pool's share of the request: every ask and every run, measured on the Worker's clock.
    return { ...outcome, timings: { ...outcome.timings, registryMs: Date.now() - startedAt } };
  }
}

/**
 * Sends the run to the agent's relay. A relay that fails (reset while it held the run) may have passed it to
 * the agent already: the registry decides, as for an agent that died, whether it runs again.
 */
async function run(env: Env, deadline: Deadline, grant: Grant, order: RunOrder): Promise<RunOutcome> {
  const { pool, shard } = order;
  try {
    return await relayStub(env.AGENT_RELAY, grant.channel).run(order);
  } catch (error) {
    log("relay-call-failed", { pool, replica: grant.replica, error: String(error) });
    const why = "the agent's relay failed";
    const lost = { kind: "lost", why, started: true } as const;
    const decision = await registryOf(env, pool, shard)
      .release(reportOf(order, lost, { deadlinePassed: deadline.passed(), totalMs: order.queuedMs }))
      .catch(() => ({ again: false as const, refusal: "the pool's registry could not be reached" }));
    return outcomeOf(order, lost, decision);
  }
}
