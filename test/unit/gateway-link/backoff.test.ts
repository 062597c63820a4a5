import { describe, expect, it } from "vitest";
import { Backoff } from "../../../backend/gateway-link/backoff.ts";

describe("reconnect backoff", () => {
  const options = { initialMs: 500, maxMs: 30_000, stableMs: 60_000 };

  it("doubles its ceiling up to the maximum, and waits a uniform pick below it (full jitter)", () => {
    const top = new Backoff({ ...options, random: () => 0.999_999 });
    const ceilings = Array.from({ length: 9 }, () => top.next());
    expect(ceilings).toEqual([500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
    const bottom = new Backoff({ ...options, random: () => 0 });
    expect(Array.from({ length: 3 }, () => bottom.next())).toEqual([0, 0, 0]);
    // A fleet cut off at once spreads out: waits of agents with different luck differ.
    const secondWaits = Array.from({ length: 50 }, () => {
      const backoff = new Backoff(options);
      backoff.next();
      return backoff.next();
    });
    const spread = new Set(secondWaits);
    expect(spread.size).toBeGreaterThan(40);
  });

  it("starts over after a connection that stayed up for the stable period, not after a short one", () => {
    const backoff = new Backoff({ ...options, random: () => 0.999_999 });
    for (let index = 0; index < 6; index += 1) backoff.next();
    backoff.connectionEnded(59_999);
    expect(backoff.next()).toBe(30_000);
    backoff.connectionEnded(60_000);
    expect(backoff.next()).toBe(500);
    expect(backoff.next()).toBe(1000);
  });
});
