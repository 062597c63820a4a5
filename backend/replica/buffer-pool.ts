/**
 * Reused memory for request bodies and stacked batches. A fresh multi-megabyte ArrayBuffer pays a page fault
 * for every page on first touch: filling a fresh 4.9 MB buffer and moving it to a session's thread took
 * 2.9 ms here, a reused one 0.25 ms (.scratch-free numbers: bench/results/hot-path-*.md), and a 4 ms GPU run
 * cannot hide that. So the agent reads large bodies into buffers from this pool; they move to the session's
 * thread with the tensors that view them, and come back with its answer (session-worker.ts), to be reused.
 *
 * A buffer is released only once nothing can read or write it any more: the worker gives it back after its
 * run. Buffers that never come back (a JSON request's arrays, a body copied into a batch) are left to the
 * garbage collector; the pool never relies on them.
 */

/** Below this, a fresh buffer costs next to nothing: not pooled. */
const MIN_POOLED_BYTES = 64 * 1024;

export class BufferPool {
  readonly #free = new Map<number, ArrayBuffer[]>();
  readonly #maxIdleBytes: number;
  #idleBytes = 0;

  /** `maxIdleBytes`: the most memory the pool keeps while nobody uses it. */
  constructor(maxIdleBytes: number) {
    this.#maxIdleBytes = maxIdleBytes;
  }

  /** A buffer of at least `byteLength` bytes (its size is the pool's size class for it); contents undefined. */
  acquire(byteLength: number): ArrayBuffer {
    const size = sizeClass(byteLength);
    const reused = this.#free.get(size)?.pop();
    if (reused === undefined) return new ArrayBuffer(size);
    this.#idleBytes -= size;
    return reused;
  }

  /** Takes a buffer back for reuse; one of another size than the pool hands out, or past its bound, is dropped. */
  release(buffer: ArrayBuffer): void {
    const size = buffer.byteLength;
    if (size < MIN_POOLED_BYTES || sizeClass(size) !== size) return;
    if (this.#idleBytes + size > this.#maxIdleBytes) return;
    let free = this.#free.get(size);
    if (free === undefined) {
      free = [];
      this.#free.set(size, free);
    }
    free.push(buffer);
    this.#idleBytes += size;
  }

  /** Bytes kept for reuse now. */
  get idleBytes(): number {
    return this.#idleBytes;
  }
}

/**
 * The size handed out for `byteLength`: itself below MIN_POOLED_BYTES, else rounded up to a quarter step of
 * its power of two (64, 80, 96, 112, 128, 160 KiB, ...), so no more than a quarter is wasted.
 */
export function sizeClass(byteLength: number): number {
  if (byteLength <= MIN_POOLED_BYTES) return byteLength;
  const step = 2 ** Math.floor(Math.log2(byteLength)) / 4;
  return Math.ceil(byteLength / step) * step;
}

/**
 * The agent's one pool: bodies of every replica's requests, and their batches. 512 MiB idle at most: a few
 * dozen large bodies, against hosts with tens of GiB.
 */
export const requestBuffers = new BufferPool(512 * 1024 * 1024);
