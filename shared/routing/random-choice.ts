import type { RoutingContext } from "./types.ts";

// Random sampling as the anchors' policies draw it, always from the context's random (seeded in the
// simulator, so a replay draws the same choices).

/** One of `replicas`, uniformly at random (the context's random, seeded in the simulator). */
export function pickAtRandom<T>(items: readonly T[], context: RoutingContext): T | undefined {
  return items[Math.min(items.length - 1, Math.floor(context.random() * items.length))];
}

/**
 * Two distinct items at random, or the only one: the sample of the "power of two choices" (Mitzenmacher),
 * as Ray Serve's PowerOfTwoChoicesRequestRouter draws it.
 */
export function twoAtRandom<T>(items: readonly T[], context: RoutingContext): T[] {
  if (items.length <= 2) {
    const [first, second] = items;
    if (first === undefined) return [];
    if (second === undefined) return [first];
    return context.random() < 0.5 ? [first, second] : [second, first];
  }
  const i = Math.floor(context.random() * items.length);
  let j = Math.floor(context.random() * (items.length - 1));
  if (j >= i) j += 1;
  return [items[i], items[j]].filter((item): item is T => item !== undefined);
}
