import { DIRECT_PERMIT_MS } from "../shared/routing/direct-hits.ts";
import type { Grant } from "./pool-calls.ts";

/** Where a direct hit goes: the replica, and the registry shard whose books it is kept in. */
export type DirectTarget = Pick<Grant, "agentId" | "replicaId" | "replica" | "channel"> & { shard: number };

/** Bounds this isolate's memory whatever the number of models and hints its clients name. */
const MAX_TARGETS = 1_000;

/**
 * Per Worker isolate: for each pool, model, version and hint, the replica whose last request went well
 * without waiting, where the next one is sent directly (shared/routing/direct-hits.ts). Only a guess: the
 * relay admits or refuses it, and a refused or failed one is forgotten here, so the next request asks the
 * registry. Kept no longer than a relay's permit lasts, past which the relay would refuse anyway.
 */
export class DirectTargets {
  readonly #targets = new Map<string, DirectTarget & { at: number }>();

  get(key: string, now: number): DirectTarget | undefined {
    const known = this.#targets.get(key);
    if (known === undefined) return undefined;
    const { at, ...target } = known;
    if (now - at <= DIRECT_PERMIT_MS) return target;
    this.#targets.delete(key);
    return undefined;
  }

  remember(key: string, target: DirectTarget, now: number): void {
    // Re-inserted, so that the map's order is by last use and the oldest goes first.
    this.#targets.delete(key);
    this.#targets.set(key, { ...target, at: now });
    if (this.#targets.size > MAX_TARGETS) {
      const oldest = this.#targets.keys().next().value;
      if (oldest !== undefined) this.#targets.delete(oldest);
    }
  }

  forget(key: string): void {
    this.#targets.delete(key);
  }

  get size(): number {
    return this.#targets.size;
  }
}

/** The key of a request's direct target: the pool, and what the registry routes by. */
export const directKey = (pool: string, request: { model: string; version?: string; hint?: string }) =>
  JSON.stringify([pool, request.model, request.version ?? null, request.hint ?? null]);
