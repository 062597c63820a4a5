import { describe, expect, test } from "vitest";
import {
  BufferPool,
  poolable,
  poolableParts,
  recycleInputs,
  sizeClass,
} from "../../../backend/replica/buffer-pool.ts";

describe("the pool of request buffers", () => {
  test("sizes: small ones exact, large ones rounded up by at most a quarter", () => {
    expect(sizeClass(1000)).toBe(1000);
    expect(sizeClass(64 * 1024)).toBe(64 * 1024);
    expect(sizeClass(64 * 1024 + 1)).toBe(80 * 1024);
    const body = 3 * 640 * 640 * 4 + 200; // a PP-OCR image and its JSON header
    expect(sizeClass(body)).toBeGreaterThanOrEqual(body);
    expect(sizeClass(body)).toBeLessThanOrEqual(body * 1.25);
    for (let bytes = 70_000; bytes < 50_000_000; bytes = Math.ceil(bytes * 1.37)) {
      const size = sizeClass(bytes);
      expect(size).toBeGreaterThanOrEqual(bytes);
      // A size the pool hands out is its own class: it can come back.
      expect(sizeClass(size)).toBe(size);
    }
  });

  test("a buffer given back is handed out again, for any request of its size class", () => {
    const pool = new BufferPool(64 * 1024 * 1024);
    const first = pool.acquire(5_000_000);
    new Uint8Array(first)[0] = 42;
    pool.release(first);
    expect(pool.idleBytes).toBe(first.byteLength);
    const again = pool.acquire(4_900_000);
    expect(again).toBe(first);
    expect(pool.idleBytes).toBe(0);
    // Nothing idle: a fresh one.
    expect(pool.acquire(4_900_000)).not.toBe(first);
  });

  test("it keeps no more than its bound, and drops what it never hands out", () => {
    const pool = new BufferPool(10 * 1024 * 1024);
    const buffers = [pool.acquire(4_000_000), pool.acquire(4_000_000), pool.acquire(4_000_000)];
    for (const buffer of buffers) pool.release(buffer);
    expect(pool.idleBytes).toBe(2 * (buffers[0]?.byteLength ?? 0));
    pool.release(new ArrayBuffer(1000));
    pool.release(new ArrayBuffer(4_000_001));
    expect(pool.idleBytes).toBe(2 * (buffers[0]?.byteLength ?? 0));
  });
});

describe("handing an idle buffer to another thread's pool", () => {
  test("takeIdle gives one of the size class when one is idle, and never allocates", () => {
    const pool = new BufferPool(64 * 1024 * 1024);
    const bytes = 3 * 640 * 640 * 4 + 200;
    expect(pool.takeIdle(bytes)).toBeUndefined();
    const buffer = pool.acquire(bytes);
    pool.release(buffer);
    expect(pool.takeIdle(200_000)).toBeUndefined();
    expect(pool.takeIdle(bytes)).toBe(buffer);
    expect(pool.idleBytes).toBe(0);
    expect(pool.takeIdle(bytes)).toBeUndefined();
  });
});

describe("giving back a batch's inputs", () => {
  test("each buffer once, however many tensors view it; BYTES elements are not pooled", () => {
    const pool = new BufferPool(64 * 1024 * 1024);
    const body = pool.acquire(200_000);
    const other = pool.acquire(200_000);
    recycleInputs(
      [
        [
          { name: "a", datatype: "FP32", shape: [1, 4], data: new Float32Array(body, 0, 4) },
          { name: "b", datatype: "FP32", shape: [1, 4], data: new Float32Array(body, 64, 4) },
        ],
        [{ name: "a", datatype: "FP32", shape: [1, 4], data: new Float32Array(other, 0, 4) }],
        [{ name: "w", datatype: "BYTES", shape: [1], data: [new Uint8Array(10)] }],
      ],
      pool,
    );
    expect(pool.idleBytes).toBe(body.byteLength + other.byteLength);
    pool.release(body);
    expect(pool.idleBytes).toBe(body.byteLength + other.byteLength);
    const handedOut = new Set([pool.acquire(200_000), pool.acquire(200_000), pool.acquire(200_000)]);
    expect(handedOut.size).toBe(3);
  });
});

describe("what a session's thread gives back after a run (poolableParts)", () => {
  test("only the tensors whose buffers a pool would keep: of a pooled size, not BYTES, not small or odd-sized", () => {
    const pooled = new BufferPool(64 * 1024 * 1024).acquire(200_000);
    const oddSized = new ArrayBuffer(200_001);
    const small = new ArrayBuffer(64);
    expect([pooled, oddSized, small].map(poolable)).toEqual([true, false, false]);
    const kept = poolableParts([
      [
        { name: "a", datatype: "FP32", shape: [1, 4], data: new Float32Array(pooled, 0, 4) },
        { name: "b", datatype: "FP32", shape: [1, 4], data: new Float32Array(oddSized, 0, 4) },
      ],
      [{ name: "a", datatype: "FP32", shape: [1, 4], data: new Float32Array(small) }],
      [{ name: "w", datatype: "BYTES", shape: [1], data: [new Uint8Array(10)] }],
    ]);
    expect(kept.map((tensors) => tensors.map(({ name }) => name))).toEqual([["a"], [], []]);
    // What it keeps, a pool takes back; what it drops, a pool would have dropped.
    const pool = new BufferPool(64 * 1024 * 1024);
    recycleInputs(kept, pool);
    expect(pool.idleBytes).toBe(pooled.byteLength);
  });
});
