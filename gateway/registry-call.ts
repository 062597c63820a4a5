import { Deadline } from "../shared/deadline.ts";
import { SwitchyardError } from "../shared/errors.ts";
import type { Env } from "./env.ts";
import { log } from "./log.ts";
import { registryOf } from "./pool.ts";
import type { RelayedRequest, RelayOutcome } from "./registry/relay-types.ts";

/**
 * The Worker's call to a pool's registry for one inference. The registry answers every expected failure as
 * a value, so a thrown error means the registry itself failed: reset by a deploy or a crash, or restarted
 * by an admin, taking its memory and its agents' sockets with it. The call is made once more, to the fresh
 * instance (a new stub, as a broken one may stay broken), within what is left of the request's deadline.
 * It is flagged `maybeStarted`: the old instance may have sent it to an agent already, so the registry
 * refuses to rerun a model that is not idempotent. An overloaded registry is not called again; that would
 * only add to its load.
 */
export async function inferThroughRegistry(
  env: Env,
  pool: string,
  call: RelayedRequest,
): Promise<RelayOutcome> {
  const deadline = Deadline.in(call.timeoutMs, Date.now(), call.budgetMs);
  try {
    return await registryOf(env, pool).infer(call);
  } catch (error) {
    log("registry-call-failed", { pool, error: String(error), retry: !isOverloaded(error) });
    if (isOverloaded(error) || deadline.passed()) throw unavailable(error);
    try {
      return await registryOf(env, pool).infer({
        ...call,
        timeoutMs: deadline.remainingMs(),
        maybeStarted: true,
      });
    } catch (again) {
      log("registry-call-failed", { pool, error: String(again), retry: false });
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
