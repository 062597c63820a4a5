/**
 * A seeded pseudo-random generator (sfc32, from PractRand's small fast chaotic family): the same seed gives
 * the same run, on any machine. Each consumer gets its own stream (`fork`), so that drawing one more
 * number in one place does not shift every draw elsewhere.
 */
export class Prng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    this.#a = 0x9e3779b9;
    this.#b = 0x243f6a88;
    this.#c = 0xb7e15162;
    this.#d = seed >>> 0;
    // Warm up: the first outputs of a fresh sfc32 state are poorly mixed.
    for (let i = 0; i < 15; i += 1) this.next();
  }

  /** Uniform in [0, 1). */
  next(): number {
    const a = this.#a;
    const b = this.#b;
    const c = this.#c;
    const d = this.#d;
    const t = (((a + b) | 0) + d) | 0;
    this.#d = (d + 1) | 0;
    this.#a = b ^ (b >>> 9);
    this.#b = (c + (c << 3)) | 0;
    this.#c = (((c << 21) | (c >>> 11)) + t) | 0;
    return (t >>> 0) / 4294967296;
  }

  /** An independent stream, named so that adding a stream does not disturb the others. */
  fork(label: string): Prng {
    let hash = this.#d ^ 0x811c9dc5;
    for (let i = 0; i < label.length; i += 1) hash = Math.imul(hash ^ label.charCodeAt(i), 0x01000193);
    return new Prng(hash >>> 0);
  }

  uniform(min: number, max: number): number {
    return min + (max - min) * this.next();
  }

  /** Exponentially distributed with this mean (inter-arrival times of a Poisson process). */
  exponential(mean: number): number {
    return -mean * Math.log(1 - this.next());
  }

  integer(below: number): number {
    return Math.min(below - 1, Math.floor(this.next() * below));
  }

  /** A uniformly random permutation of 0..n-1 (Fisher-Yates). */
  permutation(n: number): number[] {
    const order = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i -= 1) {
      const j = this.integer(i + 1);
      [order[i], order[j]] = [order[j] as number, order[i] as number];
    }
    return order;
  }
}
