import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import { type DirectPermit, directRefusal } from "../../shared/routing/direct-hits.ts";
import { routeOf } from "../../shared/routing/route-request.ts";
import type { AdoptAnswer, Decision, RunOrder, RunResult } from "../pool-calls.ts";

/**
 * What an agent's relay knows to admit direct hits (shared/routing/direct-hits.ts): each replica's last
 * state as its agent reported it with a result, and the permits the registry gave with its releases, per
 * replica and model. Every release of a model's run renews or withdraws that model's permit there.
 */
export class DirectAdmission {
  readonly #states = new Map<string, ReplicaState>();
  readonly #permits = new Map<string, DirectPermit & { at: number }>();

  /** A replica's state from a result or error frame; an older snapshot (ReplicaState.seq) is ignored. */
  noteState(state: ReplicaState): void {
    const known = this.#states.get(state.id);
    if (known === undefined || known.seq <= state.seq) this.#states.set(state.id, state);
  }

  /** The registry's answer to a run's release: a permit for its model there, or none any more. */
  noteDecision(order: RunOrder, result: RunResult, decision: Decision, now: number): void {
    const key = permitKey(order.replicaId, order.model);
    if (result.kind === "ok" && !decision.again && decision.direct !== undefined) {
      this.#permits.set(key, { ...decision.direct, at: now });
    } else if (result.kind !== "freed") {
      this.#permits.delete(key);
    }
  }

  /**
   * The registry's answer to a direct hit's adopt: `refused` (it does not know this agent as it is) withdraws
   * every permit; `over` (the replica holds more than its capacity there: grants on their way here raced with
   * direct hits) those of that replica, until a release renews them.
   */
  noteAdopt(replicaId: string, answer: AdoptAnswer): void {
    if (answer === "refused") this.#permits.clear();
    if (answer !== "over") return;
    for (const key of this.#permits.keys())
      if (key.startsWith(permitKey(replicaId, ""))) this.#permits.delete(key);
  }

  /** Why this relay will not take `order` directly now, given the models of its runs out there; undefined when it will. */
  refusal(order: RunOrder, running: readonly string[], now: number): string | undefined {
    return directRefusal({
      request: routeOf(order),
      state: this.#states.get(order.replicaId),
      running,
      permit: this.#permits.get(permitKey(order.replicaId, order.model)),
      now,
    });
  }
}

/** Replica ids contain no "/" (the registry refuses them), so a replica's keys share its prefix. */
const permitKey = (replicaId: string, model: string) => `${replicaId}/${model}`;
