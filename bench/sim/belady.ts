/**
 * Belady's offline optimum (MIN): on a miss, evict the cached item whose next request is furthest in the
 * future. Optimal for a cache bounded by count; for a cache bounded by bytes, evicting by furthest next
 * use until the newcomer fits is the standard estimate (the exact optimum is NP-hard). Loads take no time:
 * a bound no online policy can beat on the same request sequence.
 */
export function beladyHits(
  sequence: Int32Array,
  sizes: readonly number[],
  capacity: { items: number; bytes: number },
): number {
  const nextUse = new Float64Array(sequence.length);
  const lastSeen = new Map<number, number>();
  for (let i = sequence.length - 1; i >= 0; i -= 1) {
    const item = sequence[i] as number;
    nextUse[i] = lastSeen.get(item) ?? Infinity;
    lastSeen.set(item, i);
  }
  const cached = new Map<number, number>();
  let bytes = 0;
  let hits = 0;
  for (let i = 0; i < sequence.length; i += 1) {
    const item = sequence[i] as number;
    const size = sizes[item] ?? 0;
    if (cached.has(item)) {
      hits += 1;
      cached.set(item, nextUse[i] as number);
      continue;
    }
    if (size > capacity.bytes || capacity.items < 1) continue;
    cached.set(item, nextUse[i] as number);
    bytes += size;
    while (cached.size > capacity.items || bytes > capacity.bytes) {
      let victim = -1;
      let furthest = -1;
      for (const [candidate, next] of cached) {
        if (candidate !== item && next > furthest) {
          furthest = next;
          victim = candidate;
        }
      }
      if (victim < 0) break;
      cached.delete(victim);
      bytes -= sizes[victim] ?? 0;
    }
  }
  return hits;
}
