import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { type ModelTimings, mergeTimings } from "../../../shared/protocol/replica-state.ts";

// The gateway's copy of a replica's timings, made from reports that each carry only part of them and that
// may arrive in any order (two sockets).

const figures = (loads: number, runs: number): ModelTimings => ({
  loads,
  runs,
  loadMs: loads,
  inferMs: runs,
});

describe("mergeTimings", () => {
  test("takes a model's newer figures and new models, keeps the rest, says whether it took anything", () => {
    const known = { "a:1": figures(1, 5), "b:1": figures(1, 1) };
    expect(mergeTimings(known, { "a:1": figures(1, 6), "c:1": figures(1, 0) })).toBe(true);
    expect(known).toEqual({ "a:1": figures(1, 6), "b:1": figures(1, 1), "c:1": figures(1, 0) });
    // An older report's figures (fewer loads and runs) and the same ones again change nothing.
    expect(mergeTimings(known, { "a:1": figures(1, 4), "b:1": figures(1, 1) })).toBe(false);
    expect(known["a:1"]).toEqual(figures(1, 6));
  });

  test("whatever order the reports arrive in, the gateway ends with the replica's latest figures of every model reported", () => {
    // A replica's history: each step loads or runs one model; after each step it may send a report of some
    // models' figures as they were then; the reports arrive shuffled.
    const step = fc.record({
      model: fc.integer({ min: 0, max: 4 }),
      load: fc.boolean(),
      reported: fc.uniqueArray(fc.integer({ min: 0, max: 4 })),
    });
    fc.assert(
      fc.property(fc.array(step, { maxLength: 30 }), fc.infiniteStream(fc.nat()), (steps, keys) => {
        const table = new Map<string, ModelTimings>();
        const reports: Record<string, ModelTimings>[] = [];
        const latest: Record<string, ModelTimings> = {};
        for (const { model, load, reported } of steps) {
          const key = `m${model}:1`;
          const before = table.get(key) ?? { loads: 0, runs: 0 };
          table.set(
            key,
            load ? figures(before.loads + 1, before.runs) : figures(before.loads, before.runs + 1),
          );
          const report: Record<string, ModelTimings> = {};
          // The changed model always goes (as takeReport sends it), and some others as they are.
          for (const each of new Set([model, ...reported])) {
            const figuresNow = table.get(`m${each}:1`);
            if (figuresNow !== undefined) report[`m${each}:1`] = { ...figuresNow };
          }
          reports.push(report);
          Object.assign(latest, report);
        }
        const order = reports.map((report, index) => ({ report, key: keys.next().value ?? index }));
        order.sort((a, b) => a.key - b.key);
        const known: Record<string, ModelTimings> = {};
        for (const { report } of order) mergeTimings(known, report);
        expect(known).toEqual(latest);
      }),
    );
  });
});
