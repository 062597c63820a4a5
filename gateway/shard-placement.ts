import type { ShardPopulation } from "./pool-calls.ts";

/**
 * Where a joining agent goes: to a shard that has an agent of its name (it tells the two apart, as one
 * registry always did; an agent back from a restart usually finds its previous self there, not yet gone);
 * otherwise to the shard with the fewest agents; among those, one whose agents are expected back (the
 * requests waiting there are waiting for an agent like this one); among those, one at random, so that
 * agents joining at once (after a restart) spread even though each saw the same counts.
 */
export function leastPopulated(populations: readonly ShardPopulation[], random: () => number): number {
  const named = populations.findIndex((population) => population.named);
  if (named >= 0) return named;
  const rank = (population: ShardPopulation) => population.agents * 2 + (population.awaited ? 0 : 1);
  const best = Math.min(...populations.map(rank));
  const candidates = populations.flatMap((population, shard) => (rank(population) === best ? [shard] : []));
  return candidates[Math.floor(random() * candidates.length)] ?? 0;
}
