import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, test } from "vitest";
import { HotLoop, spinWindowMs } from "../../../backend/replica/hot-loop.ts";

/** How busy this thread's event loop was (0 to 1) over `ms` from now, while the test only waits. */
async function utilizationOver(ms: number): Promise<number> {
  const start = performance.eventLoopUtilization();
  await sleep(ms);
  return performance.eventLoopUtilization(start).utilization;
}

describe("spinWindowMs", () => {
  test("threads serving a GPU spin for --spin-ms; threads serving only CPUs never do", () => {
    expect(spinWindowMs(2, [{ kind: "cuda", deviceId: 0 }])).toBe(2);
    expect(spinWindowMs(2, [{ kind: "cpu" }, { kind: "cuda", deviceId: 1 }])).toBe(2);
    expect(spinWindowMs(2, [{ kind: "cpu" }])).toBe(0);
    expect(spinWindowMs(2, [])).toBe(0);
    expect(spinWindowMs(0, [{ kind: "cuda", deviceId: 0 }])).toBe(0);
  });
});

describe("HotLoop", () => {
  test("keeps the loop turning for its window after the last touch, then lets it sleep", async () => {
    const hot = new HotLoop(150);
    hot.touch();
    expect(hot.spinning).toBe(true);
    // Never blocking in its poll: the loop counts as busy the whole time it waits.
    expect(await utilizationOver(100)).toBeGreaterThan(0.7);
    await sleep(100);
    expect(hot.spinning).toBe(false);
    expect(await utilizationOver(100)).toBeLessThan(0.3);
  });

  test("each touch extends the window from that moment", async () => {
    const hot = new HotLoop(80);
    hot.touch();
    await sleep(60);
    hot.touch();
    await sleep(60);
    // 120 ms after the first touch, 60 after the second: still spinning.
    expect(hot.spinning).toBe(true);
    await sleep(60);
    expect(hot.spinning).toBe(false);
  });

  test("a window of 0 never spins", async () => {
    const hot = new HotLoop(0);
    hot.touch();
    expect(hot.spinning).toBe(false);
    expect(await utilizationOver(60)).toBeLessThan(0.3);
  });
});
