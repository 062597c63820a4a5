import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import type { Decision, RunOrder, RunOutcome, RunReport, RunResult } from "../pool-calls.ts";

/**
 * The decision for a run whose release could not reach its registry (twice, from the relay; once, from the
 * Worker when the relay itself failed): not asked again elsewhere, and no direct-hit permit.
 */
export const UNREACHED: Decision = { again: false, refusal: "the pool's registry could not be reached" };

/** What the Worker gets for a run that ended in `result`, given the registry's decision. */
export function outcomeOf(order: RunOrder, result: RunResult, decision: Decision): RunOutcome {
  if (decision.again) return { kind: "again", attempts: decision.attempts, reruns: decision.reruns };
  const because = decision.refusal === undefined ? "" : `: ${decision.refusal}`;
  switch (result.kind) {
    case "error":
      return {
        kind: "done",
        outcome: {
          ok: false,
          status: result.status,
          message: result.message,
          replica: order.replica,
          started: result.started,
          ...(result.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: result.retryAfterSeconds }),
        },
      };
    case "lost":
      return {
        kind: "done",
        outcome: result.started
          ? {
              ok: false,
              status: 503,
              code: "unavailable",
              message: `the agent serving this request disconnected (${result.why}); it may or may not have run, and it was not run again${because}`,
              replica: order.replica,
              started: true,
              retryAfterSeconds: 1,
            }
          : {
              ok: false,
              status: 503,
              code: "unavailable",
              message: `the request could not reach its agent (${result.why}) and was not sent elsewhere${because}`,
              replica: order.replica,
              retryAfterSeconds: 1,
            },
      };
    default:
      // Success, deadlines and freed slots are answered where they happen, never through a decision.
      throw new Error(`no decision is asked for a run that ended in '${result.kind}'`);
  }
}

/** The registry's report of a run that ended in `result` (from the relay, or the Worker when the relay failed). */
export function reportOf(
  order: RunOrder,
  result: RunResult,
  end: { deadlinePassed: boolean; totalMs: number; state?: ReplicaState },
): RunReport {
  return {
    ticket: order.ticket,
    channel: order.channel,
    agentId: order.agentId,
    replicaId: order.replicaId,
    replica: order.replica,
    model: order.model,
    ...(order.version === undefined ? {} : { version: order.version }),
    attempts: order.attempts,
    reruns: order.reruns,
    ...end,
    result,
  };
}
