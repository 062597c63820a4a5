import { modelKey, parseModelKey } from "../../shared/model-names.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";

/**
 * Outlier ejection (Envoy's consecutive_5xx): a replica whose runs of a model fail with a server error
 * several times in a row is taken out of routing for that model for a while. Agents report the models whose
 * load failed themselves (ReplicaState.failed); this catches what they cannot see, a replica whose runs
 * crash. An ejection is shown to the routing policies as one more entry in the replica's `failed` list, so
 * every policy steers around it as it does around a failed load, and still uses it when nothing else can
 * serve the model: the client then gets the actual error, not a refusal.
 */
export interface OutlierOptions {
  /** Server errors in a row that eject. */
  consecutiveErrors: number;
  ejectionMs: number;
}

export const DEFAULT_OUTLIERS: OutlierOptions = { consecutiveErrors: 3, ejectionMs: 30_000 };

interface Streak {
  errors: number;
  ejectedUntil?: number;
  reason?: string;
}

const keyOf = (address: string, model: string, version: string) =>
  `${address}\n${modelKey({ name: model, version })}`;

export class OutlierEjection {
  readonly #options: OutlierOptions;
  readonly #streaks = new Map<string, Streak>();

  constructor(options: OutlierOptions = DEFAULT_OUTLIERS) {
    this.#options = options;
  }

  /** A run of `model` on `address` ended: ok, or with a status. Returns true when this ejects it. */
  record(
    address: string,
    model: { name: string; version: string },
    status: number,
    message: string,
    now: number,
  ) {
    const key = keyOf(address, model.name, model.version);
    // Only the replica's own failures count: not the client's (4xx), a deadline (504) or a refusal (503).
    if (status !== 500) {
      if (status < 400) this.#streaks.delete(key);
      return false;
    }
    const streak = this.#streaks.get(key) ?? { errors: 0 };
    streak.errors += 1;
    this.#streaks.set(key, streak);
    if (streak.errors < this.#options.consecutiveErrors) return false;
    streak.errors = 0;
    streak.ejectedUntil = now + this.#options.ejectionMs;
    streak.reason = `taken out of routing after ${this.#options.consecutiveErrors} server errors in a row: ${message}`;
    return true;
  }

  /** The replica's state as the router should see it: its own failures plus its current ejections. */
  view(address: string, state: ReplicaState, now: number): ReplicaState {
    const ejected: ReplicaState["failed"] = [];
    for (const [key, streak] of this.#streaks) {
      if (streak.ejectedUntil === undefined || !key.startsWith(`${address}\n`)) continue;
      if (streak.ejectedUntil <= now) {
        delete streak.ejectedUntil;
        continue;
      }
      ejected.push({ ...parseModelKey(key.slice(address.length + 1)), reason: streak.reason ?? "" });
    }
    return ejected.length === 0 ? state : { ...state, failed: [...state.failed, ...ejected] };
  }

  /** When the earliest ejection ends (for re-offering the replica), if any. */
  nextExpiry(): number | undefined {
    let earliest: number | undefined;
    for (const streak of this.#streaks.values()) {
      if (streak.ejectedUntil !== undefined && (earliest === undefined || streak.ejectedUntil < earliest))
        earliest = streak.ejectedUntil;
    }
    return earliest;
  }

  /** The replica is gone: its history goes too. */
  forget(address: string): void {
    for (const key of [...this.#streaks.keys()])
      if (key.startsWith(`${address}\n`)) this.#streaks.delete(key);
  }
}
