/**
 * Which loaded models a replica must evict to make room for another one. Pure and isomorphic on purpose:
 * the agent's model cache, the gateway's router and the discrete-event simulator all decide with this very
 * code, so their pictures of a replica can never drift apart.
 */

export interface CacheEntryView {
  key: string;
  bytes: number;
  lastUsedAt: number;
  /** Leases outstanding: requests running on the model, or waiting for its load. */
  inFlight: number;
  state: "loaded" | "loading";
  /** Kept loaded on purpose (an OIP `load` through the model control API): never a victim, never expires. */
  pinned?: boolean;
  /** This model's own keep-alive (its config.json's `keep_alive_s`), instead of the replica's; 0: never. */
  keepAliveMs?: number;
}

/** Bounds of one replica's cache; `Infinity` leaves a bound open. */
export interface CacheLimits {
  maxModels: number;
  maxBytes: number;
}

export type AdmissionPlan =
  /** Evict these (in this order), then load. */
  | { kind: "admit"; evict: string[] }
  /** Does not fit yet, but will once in-flight or loading work ends. */
  | { kind: "wait" }
  /**
   * Cannot fit, whatever is evicted: for good (`size`: it is bigger than the cache), or until models pinned
   * here are unloaded (`pins`).
   */
  | { kind: "reject"; reason: string; cause: "size" | "pins" };

/** Sorts evictable entries, first victim first. */
export type VictimOrder = (a: CacheEntryView, b: CacheEntryView) => number;

export const leastRecentlyUsedFirst: VictimOrder = (a, b) => a.lastUsedAt - b.lastUsedAt;

/**
 * Plans room for `incoming`. Only idle loaded entries can be evicted; loading and in-flight ones count
 * toward both limits but stay. Victims are taken in `victimOrder` (least recently used first by default),
 * as few as it takes: the shortest prefix of that order that makes room, so the order is the whole policy.
 * `entries` should not hold the incoming key: the caller plans only for models it does not have.
 */
export function planAdmission(
  entries: readonly CacheEntryView[],
  incoming: { key: string; bytes: number },
  limits: CacheLimits,
  victimOrder: VictimOrder = leastRecentlyUsedFirst,
): AdmissionPlan {
  if (limits.maxModels < 1) {
    return {
      kind: "reject",
      reason: `this cache holds no models (maxModels ${limits.maxModels})`,
      cause: "size",
    };
  }
  if (!(incoming.bytes >= 0)) {
    return {
      kind: "reject",
      reason: `model "${incoming.key}" has no valid size (${incoming.bytes} bytes)`,
      cause: "size",
    };
  }
  if (incoming.bytes > limits.maxBytes) {
    return {
      kind: "reject",
      reason: `model "${incoming.key}" takes ${incoming.bytes} bytes, more than the cache's budget of ${limits.maxBytes} bytes`,
      cause: "size",
    };
  }
  const { evict, fits } = victimsToFit(entries, { models: 1, bytes: incoming.bytes }, limits, victimOrder);
  if (fits) return { kind: "admit", evict };
  // Pinned models stay until someone unpins them: if they alone leave no room, waiting would never end.
  const pinned = entries.filter((entry) => entry.pinned === true);
  const pinnedBytes = pinned.reduce((sum, entry) => sum + entry.bytes, 0);
  if (pinned.length + 1 > limits.maxModels || pinnedBytes + incoming.bytes > limits.maxBytes) {
    return {
      kind: "reject",
      reason: `model "${incoming.key}" does not fit beside the ${pinned.length} model(s) pinned here (${pinnedBytes} of ${limits.maxBytes} bytes, ${pinned.length} of ${limits.maxModels} models); unload one to make room`,
      cause: "pins",
    };
  }
  // Evicting every idle entry was not enough, so work in flight holds the room; it is bounded, and the model
  // fits beside what is pinned, so the room comes once that work ends.
  return { kind: "wait" };
}

/**
 * Idle entries to evict, in `victimOrder`, to bring the cache back within its limits after a load turned
 * out bigger than its estimate. When pinned entries alone overflow, every idle entry goes: that is as close
 * to the budget as the cache can get until the pinned work ends.
 */
export function overflowVictims(
  entries: readonly CacheEntryView[],
  limits: CacheLimits,
  victimOrder: VictimOrder = leastRecentlyUsedFirst,
): string[] {
  return victimsToFit(entries, { models: 0, bytes: 0 }, limits, victimOrder).evict;
}

/**
 * Idle loaded entries unused for at least their keep-alive at `now`, least recently used first: the entry's
 * own (`keepAliveMs`) where it has one, else the replica's. A keep-alive of 0 means never.
 */
export function expiredEntries(
  entries: readonly CacheEntryView[],
  now: number,
  keepAliveMs: number,
): string[] {
  return entries
    .filter((entry) => {
      const expiresAt = expiryOf(entry, keepAliveMs);
      return expiresAt !== undefined && isEvictable(entry) && now >= expiresAt;
    })
    .sort(leastRecentlyUsedFirst)
    .map((entry) => entry.key);
}

/** When an idle entry expires under `keepAliveMs` (the replica's) or its own; undefined: never. */
export function expiryOf(entry: CacheEntryView, keepAliveMs: number): number | undefined {
  const aliveMs = entry.keepAliveMs ?? keepAliveMs;
  return aliveMs > 0 ? entry.lastUsedAt + aliveMs : undefined;
}

export function isEvictable(entry: CacheEntryView): boolean {
  return entry.state === "loaded" && entry.inFlight === 0 && entry.pinned !== true;
}

function victimsToFit(
  entries: readonly CacheEntryView[],
  extra: { models: number; bytes: number },
  limits: CacheLimits,
  victimOrder: VictimOrder,
): { evict: string[]; fits: boolean } {
  let models = entries.length + extra.models;
  let bytes = extra.bytes;
  for (const entry of entries) bytes += entry.bytes;
  const fitsNow = () => models <= limits.maxModels && bytes <= limits.maxBytes;

  const evict: string[] = [];
  // Array.prototype.sort is stable: entries the order ties on keep the order the caller gave them.
  const candidates = entries.filter(isEvictable).sort(victimOrder);
  for (const candidate of candidates) {
    if (fitsNow()) break;
    evict.push(candidate.key);
    models -= 1;
    bytes -= candidate.bytes;
  }
  return { evict, fits: fitsNow() };
}
