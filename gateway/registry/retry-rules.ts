/**
 * When a request is sent again, as pure rules over what is known of it; the scheduler asks them and then takes
 * from the pool's retry budget (retry-budget.ts), the one stateful part, only when they allow it.
 *
 * Two cases differ in what the client risks:
 * - a retry: the agent said it never started the request (a load that failed, a replica that was full), so
 *   running it elsewhere cannot run it twice;
 * - a rerun: the agent died while the request may have been running there, so running it elsewhere may run
 *   it twice. Only idempotent models are rerun, and only once (Envoy's retry on reset does the same).
 */

/** A request its agents never started may be tried this many times in all. */
export const MAX_ATTEMPTS = 3;
/** A request that may have started is run again at most this often. */
export const MAX_RERUNS = 1;

/** Whether an agent's error frame lets the request go to another replica (the budget aside). */
export function retriesAfterError(
  error: { started: boolean; status: number },
  request: { attempts: number; deadlinePassed: boolean },
): boolean {
  // Only failures another replica could avoid: a 400 is the request's own fault anywhere.
  const elsewhereMayDiffer = error.status >= 500 || error.status === 404;
  return !error.started && elsewhereMayDiffer && request.attempts < MAX_ATTEMPTS && !request.deadlinePassed;
}

/** Why a request that may have started must not run again (the budget aside); undefined when it may. */
export function rerunRefusal(request: {
  model: string;
  reruns: number;
  idempotent: boolean;
  deadlinePassed: boolean;
}): string | undefined {
  if (request.reruns >= MAX_RERUNS) return "it had been run again once already";
  if (!request.idempotent) return `'${request.model}' is not idempotent (its config.json says so)`;
  if (request.deadlinePassed) return "its deadline has passed";
  return undefined;
}

/** The refusal when every rule allows a rerun but the pool's retry budget is spent. */
export const BUDGET_SPENT = "the pool's retry budget is spent (too many retries lately)";
