import { describe, expect, test } from "vitest";
import type { ShardPopulation } from "../../../gateway/pool-calls.ts";
import { leastPopulated } from "../../../gateway/shard-placement.ts";

const at = (value: number) => () => value;
const shard = (agents: number, extra: Partial<ShardPopulation> = {}): ShardPopulation => ({
  agents,
  awaited: false,
  named: false,
  ...extra,
});

describe("leastPopulated: the shard a joining agent goes to", () => {
  test("the shard with the fewest agents", () => {
    const populations = [shard(3), shard(1), shard(2)];
    expect(leastPopulated(populations, at(0))).toBe(1);
    expect(leastPopulated(populations, at(0.99))).toBe(1);
  });

  test("a shard with an agent of its name wins over an emptier one: that shard tells the two apart", () => {
    expect(leastPopulated([shard(0), shard(5, { named: true }), shard(0)], at(0))).toBe(1);
  });

  test("among the fewest, one whose agents are expected back (requests wait there for an agent)", () => {
    const populations = [shard(0), shard(0, { awaited: true }), shard(0)];
    expect(leastPopulated(populations, at(0))).toBe(1);
    expect(leastPopulated(populations, at(0.99))).toBe(1);
  });

  test("ties at random, so agents joining at once spread over the shards", () => {
    const populations = [shard(1), shard(0), shard(0), shard(0)];
    expect([0, 0.34, 0.67, 0.99].map((value) => leastPopulated(populations, at(value)))).toEqual([
      1, 2, 3, 3,
    ]);
  });

  test("an awaited shard with more agents does not win over an emptier one", () => {
    expect(leastPopulated([shard(1, { awaited: true }), shard(0)], at(0))).toBe(1);
  });
});
