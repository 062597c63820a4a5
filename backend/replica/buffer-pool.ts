/**
 * Reused memory for request bodies and stacked batches. A fresh multi-megabyte ArrayBuffer pays a page fault
 * for every page on first touch: filling a fresh 4.9 MB buffer and moving it to a session's thread took
 * 2.9 ms on the 2-core CI machine, a reused one 0.25 ms, and a 4 ms GPU run cannot hide that
 * (bench/results/hot-path-cuda.md shows what it did to whole requests). So the agent reads large bodies into
 * buffers from this pool; they move to the session's thread with the tensors that view them and come back
 * with its answer (session-worker.ts), or go back once a successful run copied them into its batch.
 *
 * A buffer is given back only once nothing can read or write it any more. Buffers that never come back (a
 * JSON request's arrays, a failed batch's bodies) are left to the garbage collector.
 */

import type { Tensor } from "../../shared/oip/tensor.ts";

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

  /**
   * An idle buffer of `byteLength`'s size class, or none: never allocates. For handing a buffer on to
   * another thread's pool (the standalone server's intake threads read bodies into their own).
   */
  takeIdle(byteLength: number): ArrayBuffer | undefined {
    const size = sizeClass(byteLength);
    const idle = this.#free.get(size)?.pop();
    if (idle !== undefined) this.#idleBytes -= size;
    return idle;
  }

  /** Takes a buffer back for reuse; one of another size than the pool hands out, or past its bound, is dropped. */
  release(buffer: ArrayBuffer): void {
    if (!poolable(buffer)) return;
    const size = buffer.byteLength;
    if (this.#idleBytes + size > this.#maxIdleBytes) return;
    let free = this.#free.get(size);
    if (free === undefined) {
      free = [];
      this.#free.set(size, free);
    }
    // Given back twice, it would be handed out twice: two requests writing into one buffer.
    if (free.includes(buffer)) return;
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

/** Whether a pool takes `buffer` back at all: one of the sizes it hands out (any other is dropped). */
export function poolable(buffer: ArrayBuffer): boolean {
  const size = buffer.byteLength;
  return size >= MIN_POOLED_BYTES && sizeClass(size) === size;
}

/**
 * The parts of a run that a pool could take back: each part's tensors whose buffers are of a pooled size.
 * What a session's thread returns after a run that went well (session-worker.ts): a buffer no pool keeps
 * (a body the gateway link received, a JSON request's arrays) is left to that thread's garbage collector
 * instead of moving back to become garbage on the main thread, which routes every request.
 */
export function poolableParts(parts: readonly (readonly Tensor[])[]): Tensor[][] {
  return parts.map((tensors) =>
    tensors.filter(
      ({ data }) => !Array.isArray(data) && data.buffer instanceof ArrayBuffer && poolable(data.buffer),
    ),
  );
}

/**
 * Gives back the buffers under requests' input tensors once a run copied them into its batch and no one
 * reads them again (each buffer once, however many tensors view it).
 */
export function recycleInputs(requests: readonly (readonly Tensor[])[], pool = requestBuffers): void {
  const buffers = new Set<ArrayBuffer>();
  for (const inputs of requests) {
    for (const { data } of inputs) {
      if (!Array.isArray(data) && data.buffer instanceof ArrayBuffer) buffers.add(data.buffer);
    }
  }
  for (const buffer of buffers) pool.release(buffer);
}

/**
 * The agent's one pool: bodies of every replica's requests, and their batches. 512 MiB idle at most: a few
 * dozen large bodies, against hosts with tens of GiB.
 */
export const requestBuffers = new BufferPool(512 * 1024 * 1024);
