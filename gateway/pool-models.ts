import { SwitchyardError } from "../shared/errors.ts";
import { type CatalogEntry, mergeCatalogs } from "../shared/models/model-catalog.ts";
import { type ModelStatistics, mergeStatistics } from "../shared/oip/statistics.ts";
import type { TritonModelConfig } from "../shared/oip/triton-model-config.ts";
import type { ModelSignature } from "../shared/protocol/model-signatures.ts";
import type { Env } from "./env.ts";
import type { ModelAnswer, ModelReadiness } from "./pool-calls.ts";
import { askOrder, everyShard, registryOf } from "./pool-shards.ts";

/**
 * The OIP model endpoints over a pool's registry shards. Each shard knows the gateway's repository and its
 * own agents (their offers, signatures, loaded models and statistics), so a pool's answer is the union of
 * theirs: the index and statistics are merged, a model is ready when any shard has it ready, metadata comes
 * from the first shard in the model's order that knows it, and unload reaches every shard. A pin (`load`)
 * lives in the first shard in the model's order that can take it, where the model's requests go first; a
 * model's serving policy (routes/admin-policies.ts) is set in every shard, its pin in one. With one shard
 * each is that registry's answer as it is.
 */
type Registry = ReturnType<typeof registryOf>;

export async function modelIndex(env: Env, pool: string): Promise<ModelAnswer<CatalogEntry[]>> {
  const answers = await fromEveryShard(env, pool, (registry) => registry.modelIndex());
  const failed = answers.find((answer) => !answer.ok);
  if (failed !== undefined) return failed;
  return { ok: true, value: mergeCatalogs(answers.flatMap((answer) => (answer.ok ? [answer.value] : []))) };
}

export function modelMetadata(
  env: Env,
  pool: string,
  name: string,
  version: string | undefined,
): Promise<ModelAnswer<{ versions: string[]; signature: ModelSignature }>> {
  return firstKnowing(env, pool, name, (registry) => registry.modelMetadata(name, version));
}

export function modelConfig(
  env: Env,
  pool: string,
  name: string,
  version: string | undefined,
): Promise<ModelAnswer<TritonModelConfig>> {
  return firstKnowing(env, pool, name, (registry) => registry.modelConfig(name, version));
}

/**
 * Ready when a shard has it ready; otherwise the reason of the first shard, in the model's order, that has
 * agents (why they cannot serve it), else the first shard's (no agent at all).
 */
export async function modelReadiness(
  env: Env,
  pool: string,
  name: string,
  version: string | undefined,
): Promise<ModelAnswer<ModelReadiness>> {
  const answers = await inModelOrder(env, pool, name, (registry) => registry.modelReadiness(name, version));
  return (
    answers.find((answer) => answer.ok && answer.value.ready) ??
    answers.find((answer) => answer.ok && answer.value.agents > 0) ??
    firstOk(answers)
  );
}

/** Statistics summed over the shards that know the model (all models when none is named). */
export async function modelStatistics(
  env: Env,
  pool: string,
  name?: string,
  version?: string,
): Promise<ModelAnswer<ModelStatistics[]>> {
  const answers = await fromEveryShard(env, pool, (registry) => registry.modelStatistics(name, version));
  const known = answers.flatMap((answer) => (answer.ok ? answer.value : []));
  if (!answers.some((answer) => answer.ok)) return firstOk(answers);
  return { ok: true, value: mergeStatistics(known) };
}

/**
 * Pins the model in the first shard, in its order, whose replicas can take every copy. When none can, the
 * answer is the most telling refusal: a client's mistake (too many copies) before "nothing can load it now".
 */
export async function loadModel(
  env: Env,
  pool: string,
  name: string,
  version: string | undefined,
  copies: number,
): Promise<ModelAnswer<Record<string, never>>> {
  const refusals: ModelAnswer<Record<string, never>>[] = [];
  const order = askOrder(env, name);
  for (const shard of order) {
    const answer = await registryOf(env, pool, shard).loadModel(name, version, copies);
    if (!answer.ok) {
      refusals.push(answer);
      continue;
    }
    // The pin lives in this shard alone: the others drop theirs (and keep min_copies 0 over config.json's).
    const others = order.filter((other) => other !== shard);
    await Promise.all(others.map((other) => registryOf(env, pool, other).unpinModel(name)));
    return answer;
  }
  return firstOk([...refusals.filter((refusal) => !refusal.ok && refusal.status !== 503), ...refusals]);
}

/** Unpins and unloads the model in every shard; unknown only when no shard knew it. */
export async function unloadModel(
  env: Env,
  pool: string,
  name: string,
): Promise<ModelAnswer<Record<string, never>>> {
  const answers = await inModelOrder(env, pool, name, (registry) => registry.unloadModel(name));
  return firstOk(answers);
}

function fromEveryShard<T>(
  env: Env,
  pool: string,
  call: (registry: Registry) => Promise<ModelAnswer<T>>,
): Promise<ModelAnswer<T>[]> {
  return Promise.all(everyShard(env, pool).map(call));
}

/** Every shard's answer, in the model's order (its home's first). */
function inModelOrder<T>(
  env: Env,
  pool: string,
  model: string,
  call: (registry: Registry) => Promise<ModelAnswer<T>>,
): Promise<ModelAnswer<T>[]> {
  return Promise.all(askOrder(env, model).map((shard) => call(registryOf(env, pool, shard))));
}

async function firstKnowing<T>(
  env: Env,
  pool: string,
  model: string,
  call: (registry: Registry) => Promise<ModelAnswer<T>>,
): Promise<ModelAnswer<T>> {
  return firstOk(await inModelOrder(env, pool, model, call));
}

/** The first answer that is a value, else the first failure (the home shard's, in model order). */
function firstOk<T>(answers: readonly ModelAnswer<T>[]): ModelAnswer<T> {
  const answer = answers.find((each) => each.ok) ?? answers[0];
  if (answer === undefined) throw new Error("a pool has at least one registry shard");
  return answer;
}

/** A model's serving policy over the pool's shards (routes/admin-policies.ts). */
export interface PoolPolicy {
  min_copies: number;
  max_copies: number | null;
  copies: number;
  /** Seconds idle copies stay loaded, as the admin set it (null: config.json's keep_alive_s, or --keep-alive). */
  keep_alive_s: number | null;
  /** What its config.json sets, which the admin's values override. */
  config: { min_copies: number | null; max_copies: number | null };
}

/** The policy as the shards hold it: the pin's copies (in one shard), the cap (the same in each), copies summed. */
export async function modelPolicy(env: Env, pool: string, name: string): Promise<ModelAnswer<PoolPolicy>> {
  const answers = await inModelOrder(env, pool, name, (registry) => registry.modelPolicy(name));
  const known = answers.flatMap((answer) => (answer.ok ? [answer.value] : []));
  const failure = answers.find((answer) => !answer.ok);
  if (known.length === 0 && failure !== undefined && !failure.ok) return failure;
  return {
    ok: true,
    value: {
      min_copies: known.reduce((sum, shard) => sum + shard.minCopies, 0),
      max_copies: known[0]?.maxCopies ?? null,
      copies: known.reduce((sum, shard) => sum + shard.copies, 0),
      keep_alive_s: known[0]?.keepAliveS ?? null,
      config: {
        min_copies: known[0]?.defaults.minCopies ?? null,
        max_copies: known[0]?.defaults.maxCopies ?? null,
      },
    },
  };
}

/** Drops the admin's overrides in every shard: the model's config.json policy applies again. */
export async function clearModelPolicy(
  env: Env,
  pool: string,
  name: string,
): Promise<ModelAnswer<Record<string, never>>> {
  return firstOk(await inModelOrder(env, pool, name, (registry) => registry.clearModelPolicy(name)));
}

/**
 * Sets what the policy names: max_copies in every shard (each enforces it for the requests it decides),
 * min_copies as the model's pin (`load`'s copies, waiting until they are loaded; 0 drops the pin and keeps
 * the copies as cache entries). The cap first, so that the pin's loads are placed under it.
 */
export async function setModelPolicy(
  env: Env,
  pool: string,
  name: string,
  policy: {
    min_copies?: number | undefined;
    max_copies?: number | null | undefined;
    keep_alive_s?: number | null | undefined;
  },
): Promise<ModelAnswer<Record<string, never>>> {
  const { min_copies: minCopies, max_copies: maxCopies, keep_alive_s: keepAliveS } = policy;
  if (keepAliveS !== undefined) {
    const keepAliveMs = keepAliveS === null ? null : Math.round(keepAliveS * 1000);
    const answers = await fromEveryShard(env, pool, (registry) => registry.setKeepAlive(name, keepAliveMs));
    const failed = answers.find((answer) => !answer.ok);
    if (failed !== undefined) return failed;
  }
  if (maxCopies !== undefined) {
    const answers = await fromEveryShard(env, pool, (registry) => registry.setMaxCopies(name, maxCopies));
    const failed = answers.find((answer) => !answer.ok);
    if (failed !== undefined) return failed;
  }
  if (minCopies === undefined) return { ok: true, value: {} };
  if (minCopies > 0) return loadModel(env, pool, name, undefined, minCopies);
  return firstOk(await fromEveryShard(env, pool, (registry) => registry.unpinModel(name)));
}

/** A pool's answer, or its failure thrown as the one error type. */
export function unwrap<T>(answer: ModelAnswer<T>): T {
  if (answer.ok) return answer.value;
  throw SwitchyardError.fromStatus(
    answer.status,
    answer.message,
    answer.retryAfterSeconds === undefined ? undefined : { retryAfterSeconds: answer.retryAfterSeconds },
  );
}
