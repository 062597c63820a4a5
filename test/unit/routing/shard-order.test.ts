import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { shardOrder } from "../../../shared/routing/shard-order.ts";

const modelName = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$/);

describe("shardOrder", () => {
  test("one shard: every model's only shard is 0", () => {
    expect(shardOrder("anything", 1)).toEqual([0]);
  });

  test("each model visits every shard once, in the same order every time", () => {
    fc.assert(
      fc.property(modelName, fc.integer({ min: 1, max: 64 }), (model, shards) => {
        const order = shardOrder(model, shards);
        expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: shards }, (_, index) => index));
        expect(shardOrder(model, shards)).toEqual(order);
      }),
    );
  });

  test("homes spread evenly: 20,000 model names over 8 shards, each home to 12.5 % +- 1.5 %", () => {
    const homes = new Array<number>(8).fill(0);
    for (let index = 0; index < 20_000; index++) {
      const home = shardOrder(`model-${index}`, 8)[0] ?? -1;
      homes[home] = (homes[home] ?? 0) + 1;
    }
    for (const count of homes) expect(Math.abs(count / 20_000 - 0.125)).toBeLessThan(0.015);
  });

  test("the next shard is spread too: a backlogged home spills evenly, not onto one neighbour", () => {
    const seconds = new Map<number, number>();
    for (let index = 0; index < 20_000; index++) {
      const [home, next] = shardOrder(`model-${index}`, 4);
      if (home !== 0 || next === undefined) continue;
      seconds.set(next, (seconds.get(next) ?? 0) + 1);
    }
    const counts = [...seconds.values()];
    expect(counts).toHaveLength(3);
    const total = counts.reduce((sum, count) => sum + count, 0);
    for (const count of counts) expect(Math.abs(count / total - 1 / 3)).toBeLessThan(0.03);
  });

  test("adding a shard moves only the models the new shard now homes (rendezvous hashing)", () => {
    fc.assert(
      fc.property(
        fc.array(modelName, { minLength: 1, maxLength: 50 }),
        fc.integer({ min: 1, max: 63 }),
        (models, shards) => {
          for (const model of models) {
            const before = shardOrder(model, shards)[0];
            const after = shardOrder(model, shards + 1)[0];
            if (after !== before) expect(after).toBe(shards);
          }
        },
      ),
    );
  });

  test("a shard count that is not a positive integer is a mistake", () => {
    expect(() => shardOrder("m", 0)).toThrow(RangeError);
    expect(() => shardOrder("m", 1.5)).toThrow(RangeError);
  });
});
