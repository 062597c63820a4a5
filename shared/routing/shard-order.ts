/**
 * Which of a pool's registry shards a model's requests ask, in order: rendezvous (highest random weight)
 * hashing of the model's name with each shard's index. The first is the model's home; the others are where
 * it goes when its home has no agent that can serve it or is backlogged (gateway/shard-walk.ts). Rendezvous
 * hashing needs no shared table, spreads models evenly, and when the number of shards changes only the
 * models whose new shard wins move (about 1/K of them). Pure: the Worker, the tests and the benchmarks
 * rank the same way.
 */
export function shardOrder(model: string, shards: number): number[] {
  if (!Number.isInteger(shards) || shards < 1) throw new RangeError(`shards must be a positive integer`);
  if (shards === 1) return [0];
  const key = fnv1a(model);
  return Array.from({ length: shards }, (_, shard) => ({ shard, weight: mix(key, shard) }))
    .sort((a, b) => b.weight - a.weight || a.shard - b.shard)
    .map((ranked) => ranked.shard);
}

/** 32-bit FNV-1a of a string's UTF-16 code units: model names are short ASCII. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/**
 * The weight of (model, shard): murmur3's 32-bit finalizer over the two combined, so that neighbouring
 * shard indices give unrelated weights (FNV alone would rank shards almost in index order).
 */
function mix(key: number, shard: number): number {
  let h = (key ^ Math.imul(shard + 1, 0x9e3779b1)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
