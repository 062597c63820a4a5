import type { Deadline } from "../shared/deadline.ts";
import { SwitchyardError } from "../shared/errors.ts";
import type { Env } from "./env.ts";
import { log } from "./log.ts";
import { PASS_REASONS, type Passed, type PassReason, type SlotAnswer, type SlotAsk } from "./pool-calls.ts";
import { askOrder, registryOf } from "./pool-shards.ts";
import { UnadvertisedHints } from "./unadvertised-hints.ts";

/**
 * Shards with agents that an ask visits looking for one that holds its model (or its hint) before it
 * settles for the best it saw: a model's copies are made in its first shards (the walk loads where it
 * settles), so a copy is almost always among them, and a model nobody holds costs this many asks, not one
 * per shard of a large pool.
 */
const SEEK_SHARDS = 4;

/**
 * A model backlogged in this many shards stops looking further and settles: a hot model spills from its
 * home to another shard, and an overloaded pool does not pay a walk over all of its shards per request.
 */
const BACKLOGGED_SHARDS = 2;

/** Hints this isolate found no shard advertising (this Worker isolate's memory; see unadvertised-hints.ts). */
const unadvertised = new UnadvertisedHints();

type Answered = Exclude<SlotAnswer, Passed>;

/**
 * Asks a pool's registry shards for a slot for one request. With one shard: one ask, which may wait, as it
 * always did. With more, the model's shards in their order (its home first, shared/routing/shard-order.ts;
 * `last` at the end: the shard that granted a failed try, so that a retry goes elsewhere first), each
 * allowed to pass the ask on: a shard that holds the model (or advertises the request's hint) and is not
 * backlogged takes it; one that does not, has no agent for it, or is backlogged says why and the next is
 * asked. When every shard asked passed (up to SEEK_SHARDS with agents), the best of them by its reason
 * (PASS_REASONS) is asked again and may not pass: a cold one loads the model, a backlogged one queues it, one
 * whose agents are coming back waits for them, and the answers are an unsharded registry's (404, 503).
 * Each ask gets what is left of the deadline.
 */
export async function askShards(
  env: Env,
  pool: string,
  deadline: Deadline,
  ask: Omit<SlotAsk, "pass" | "timeoutMs">,
  last?: number,
): Promise<{ shard: number; answer: Answered }> {
  const order = askOrder(env, ask.model);
  if (order.length === 1) return { shard: 0, answer: await settle(env, pool, 0, deadline, ask) };
  const visit = last === undefined ? order : [...order.filter((shard) => shard !== last), last];
  const { hint } = ask;
  const seekingHint = hint !== undefined && !unadvertised.has(hint, Date.now());
  const pass = seekingHint ? "unhinted" : "unmatched";
  const passed: Array<{ shard: number; why: PassReason }> = [];
  const count = (...reasons: PassReason[]) => passed.filter((each) => reasons.includes(each.why)).length;
  for (const shard of visit) {
    // A shard that fails (a deploy, a crash: asked twice already) counts as one with no agent: the walk goes on.
    const answer = await reserve(env, pool, shard, deadline, {
      ...ask,
      pass,
      timeoutMs: deadline.remainingMs(),
    }).catch((): Passed => ({ ok: "passed", why: "no-agents" }));
    if (answer.ok !== "passed") return { shard, answer };
    passed.push({ shard, why: answer.why });
    if (count("backlogged") >= BACKLOGGED_SHARDS) break;
    if (count("hit", "cold", "backlogged", "not-served") >= SEEK_SHARDS) break;
  }
  // No shard asked (up to SEEK_SHARDS with agents) advertises the hint, unless a backlogged one does: later
  // asks stop looking for it a while.
  if (seekingHint && hint !== undefined && count("backlogged") === 0) unadvertised.add(hint, Date.now());
  const rank = (why: PassReason) => PASS_REASONS.indexOf(why);
  const best = passed.reduce((chosen, each) => (rank(each.why) < rank(chosen.why) ? each : chosen));
  return { shard: best.shard, answer: await settle(env, pool, best.shard, deadline, ask) };
}

/** The ask that may not pass: its shard answers as the one registry of an unsharded pool would. */
async function settle(
  env: Env,
  pool: string,
  shard: number,
  deadline: Deadline,
  ask: Omit<SlotAsk, "pass" | "timeoutMs">,
): Promise<Answered> {
  const answer = await reserve(env, pool, shard, deadline, {
    ...ask,
    pass: "never",
    timeoutMs: deadline.remainingMs(),
  });
  if (answer.ok === "passed") throw new Error("a registry shard passed on an ask it was told to keep");
  return answer;
}

/**
 * Asks one registry shard for a slot. A thrown error means the registry itself failed (reset by a deploy or
 * a crash, or restarted by an admin): it is asked once more, on a fresh stub (a broken one may stay broken),
 * within what is left of the deadline. Nothing was sent to an agent on this request's behalf by an ask, so
 * asking again cannot run it twice. An overloaded registry is not asked again; that would only add to its
 * load.
 */
async function reserve(
  env: Env,
  pool: string,
  shard: number,
  deadline: Deadline,
  ask: SlotAsk,
): Promise<SlotAnswer> {
  try {
    return await registryOf(env, pool, shard).reserve(ask);
  } catch (error) {
    log("registry-call-failed", { pool, shard, error: String(error), retry: !isOverloaded(error) });
    if (isOverloaded(error) || deadline.passed()) throw unavailable(error);
    try {
      return await registryOf(env, pool, shard).reserve({ ...ask, timeoutMs: deadline.remainingMs() });
    } catch (again) {
      log("registry-call-failed", { pool, shard, error: String(again), retry: false });
      throw unavailable(again);
    }
  }
}

function isOverloaded(error: unknown): boolean {
  return (
    typeof error === "object" && error !== null && (error as { overloaded?: unknown }).overloaded === true
  );
}

function unavailable(cause: unknown): SwitchyardError {
  return new SwitchyardError("unavailable", "the pool's registry is unavailable; retry shortly", {
    retryAfterSeconds: 1,
    cause,
  });
}
