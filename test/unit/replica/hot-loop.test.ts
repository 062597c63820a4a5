import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, test } from "vitest";
import { HotLoop, spinWindowMs } from "../../../backend/replica/hot-loop.ts";
import { utilizationOver } from "../../support/event-loop-utilization.ts";

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
    new HotLoop(150).touch();
    // Never blocking in its poll: the loop counts as busy the whole time it waits.
    expect(await utilizationOver(100)).toBeGreaterThan(0.7);
    await sleep(100);
    expect(await utilizationOver(100)).toBeLessThan(0.3);
  });

  test("each touch extends the window from that moment", async () => {
    const hot = new HotLoop(100);
    hot.touch();
    await sleep(60);
    hot.touch();
    // From 60 to 140 ms after the first touch: past its window, inside the second's.
    expect(await utilizationOver(80)).toBeGreaterThan(0.7);
    await sleep(60);
    expect(await utilizationOver(80)).toBeLessThan(0.3);
  });

  test("a window of 0 never spins", async () => {
    new HotLoop(0).touch();
    expect(await utilizationOver(60)).toBeLessThan(0.3);
  });
});
