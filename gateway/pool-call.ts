import { Deadline } from "../shared/deadline.ts";
import { outcomeOf, reportOf, UNREACHED } from "./agent-relay/run-outcome.ts";
import { DirectTargets, directKey } from "./direct-targets.ts";
import type { Env } from "./env.ts";
import { log } from "./log.ts";
import { relayStub } from "./object-bindings.ts";
import type {
  DirectRefused,
  Grant,
  RelayedRequest,
  RelayOutcome,
  RunOrder,
  RunOutcome,
  Tries,
} from "./pool-calls.ts";
import { registryOf } from "./pool-shards.ts";
import { askShards } from "./shard-walk.ts";

/** What a caller other than the synchronous route adds to a call (the managed queue does). */
export interface PoolCallOptions {
  /**
   * Times it already ran where it may have started (a managed-queue request that a gateway restart
   * interrupted, queue/request-queue.ts), so the retry rules never run it a third time.
   */
  priorReruns?: number;
  /** Told each time a try goes to a replica ("<agent>/<replica>"): the queue shows where it runs. */
  onDispatch?: (replica: string) => void;
  /** It yields to other requests while it waits in the pool (QUEUE_ASYNC_PRIORITY=below). */
  background?: boolean;
}

/** This isolate's guesses of where a model's next hit may go directly (direct-targets.ts). */
const targets = new DirectTargets();

/**
 * One inference through a pool, as the Worker drives it (pool-calls.ts has the picture): ask the pool's
 * registry (its shards, shard-walk.ts) for a slot, send the body to the granted agent's relay, and when the
 * run failed in a way the registry says may go elsewhere (a retry, or a rerun under the retry rules and
 * budget), ask again, the shard that granted the failed run last, for a replica other than those it failed
 * on when one can take it. A request whose model's last request here went well on a grant that opened the
 * direct path (Grant.direct) first goes straight to that replica's relay (a direct hit,
 * shared/routing/direct-hits.ts), which takes it or refuses it; refused, it asks as above. The Worker owns
 * the client's deadline; each object cuts its own part off by what is left of it.
 */
export async function inferThroughPool(
  env: Env,
  pool: string,
  call: RelayedRequest,
  options: PoolCallOptions = {},
): Promise<RelayOutcome> {
  const priorReruns = options.priorReruns ?? 0;
  const startedAt = Date.now();
  const deadline = Deadline.in(call.timeoutMs, startedAt, call.budgetMs);
  const key = directKey(pool, call);
  const timed = (outcome: RelayOutcome): RelayOutcome =>
    // The pool's share of the request: every ask and every run, measured on the Worker's clock.
    outcome.ok
      ? { ...outcome, timings: { ...outcome.timings, registryMs: Date.now() - startedAt } }
      : outcome;
  let tries: Tries = { attempts: 0, reruns: priorReruns };
  // Where it failed so far: asked again, it goes elsewhere when another replica can take it.
  const avoid: string[] = [];
  let queuedMs = 0;
  let failedAt: number | undefined;
  const target = targets.get(key, startedAt);
  if (target !== undefined) {
    // Its first try, as a grant's would be; a refusal tries nothing, and the asks start from none.
    options.onDispatch?.(target.replica);
    const ran = await run(
      env,
      deadline,
      target,
      {
        ...call,
        ...target,
        attempts: 1,
        reruns: tries.reruns,
        timeoutMs: deadline.remainingMs(),
        pool,
        queuedMs,
        ticket: `d-${crypto.randomUUID()}`,
      },
      true,
    );
    if (ran.kind === "done" && ran.outcome.ok) {
      targets.remember(key, target, Date.now());
      return timed(ran.outcome);
    }
    targets.forget(key);
    if (ran.kind === "done") return ran.outcome;
    if (ran.kind === "again") {
      tries = { attempts: ran.attempts, reruns: ran.reruns };
      failedAt = target.shard;
      avoid.push(target.replica);
    }
  }
  for (;;) {
    const askedAt = Date.now();
    const ask = {
      model: call.model,
      ...(call.version === undefined ? {} : { version: call.version }),
      ...(call.hint === undefined ? {} : { hint: call.hint }),
      ...(options.background === true ? { background: true as const } : {}),
      budgetMs: deadline.budgetMs,
      ...tries,
      ...(avoid.length === 0 ? {} : { avoid: [...avoid] }),
    };
    const { shard, answer } = await askShards(env, pool, deadline, ask, failedAt);
    queuedMs += Date.now() - askedAt;
    if (!answer.ok) return answer;
    tries = { ...tries, attempts: tries.attempts + 1 };
    const { grant } = answer;
    options.onDispatch?.(grant.replica);
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
    if (ran.kind === "refused") throw new Error("a relay refused a granted run as a direct hit");
    if (ran.kind === "again") {
      tries = { attempts: ran.attempts, reruns: ran.reruns };
      failedAt = shard;
      avoid.push(grant.replica);
      continue;
    }
    const outcome = ran.outcome;
    if (!outcome.ok) return outcome;
    // A first try went well where the registry opens the direct path: the model's next request here may go
    // there directly (never under a policy without direct hits, nor while anything waits).
    if (grant.direct === true && tries.attempts === 1 && tries.reruns === 0) {
      const { agentId, channel, replicaId, replica } = grant;
      targets.remember(key, { agentId, channel, replicaId, replica, shard }, Date.now());
    }
    return timed(outcome);
  }
}

/**
 * Sends the run to the agent's relay, as granted or (`direct`) as a direct hit it may refuse. A relay that
 * fails (reset while it held the run) may have passed it to the agent already: the registry decides, as for
 * an agent that died, whether it runs again.
 */
async function run(
  env: Env,
  deadline: Deadline,
  at: Pick<Grant, "channel" | "replica">,
  order: RunOrder,
  direct = false,
): Promise<RunOutcome | DirectRefused> {
  const { pool, shard } = order;
  try {
    const relay = relayStub(env.AGENT_RELAY, at.channel);
    return await (direct ? relay.runDirect(order) : relay.run(order));
  } catch (error) {
    log("relay-call-failed", { pool, replica: at.replica, direct, error: String(error) });
    const why = "the agent's relay failed";
    const lost = { kind: "lost", why, started: true } as const;
    const decision = await registryOf(env, pool, shard)
      .release(reportOf(order, lost, { deadlinePassed: deadline.passed(), totalMs: order.queuedMs }))
      .catch(() => UNREACHED);
    return outcomeOf(order, lost, decision);
  }
}
