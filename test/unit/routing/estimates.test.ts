import fc from "fast-check";
import { describe, expect, test } from "vitest";
import type { ModelTimings } from "../../../shared/protocol/replica-state.ts";
import { DEFAULT_INFER_MS, DEFAULT_LOAD_MS, PoolEstimates } from "../../../shared/routing/estimates.ts";
import type { ReplicaView } from "../../../shared/routing/types.ts";
import { GiB, model, replica, timings } from "./fixtures.ts";

// How long a model takes to load and to run, as the router guesses it: what this replica measured, else
// what the pool measured for that model, else the pool's averages, else the defaults.

/** One entry of a report's timings: what the agent measured (absent: never measured). */
const measured = (loadMs: number | undefined, inferMs: number | undefined): ModelTimings => ({
  ...(loadMs === undefined ? {} : { loadMs }),
  ...(inferMs === undefined ? {} : { inferMs }),
  loads: loadMs === undefined ? 0 : 1,
  runs: inferMs === undefined ? 0 : 10,
});

describe("PoolEstimates: nothing measured yet", () => {
  test("a pool that measured nothing plans with the defaults", () => {
    const fresh = replica("fresh");
    const estimates = new PoolEstimates([fresh]);
    expect(estimates.loadMs(fresh, { model: "det" })).toBe(DEFAULT_LOAD_MS);
    expect(estimates.loadMs(undefined, { model: "det" })).toBe(DEFAULT_LOAD_MS);
    expect(estimates.inferMs(fresh, { model: "det" })).toBe(DEFAULT_INFER_MS);
    expect(estimates.inferMs(undefined, { model: "det" })).toBe(DEFAULT_INFER_MS);
    expect(estimates.slotMs(fresh)).toBe(DEFAULT_INFER_MS);
    expect(estimates.bytes({ model: "det" })).toBeUndefined();
  });
});

describe("PoolEstimates: what was measured for the model", () => {
  // A fast GPU and a slow CPU both ran "det"; a third replica never did.
  const gpu = replica("gpu", { timings: timings(["det"], 1_000, 40) });
  const cpu = replica("cpu", { timings: timings(["det"], 3_000, 80) });
  const newcomer = replica("newcomer");
  const estimates = new PoolEstimates([gpu, cpu, newcomer]);

  test("a replica's own measurement wins over the pool's mean", () => {
    expect(estimates.loadMs(gpu, { model: "det" })).toBe(1_000);
    expect(estimates.loadMs(cpu, { model: "det" })).toBe(3_000);
    expect(estimates.inferMs(gpu, { model: "det" })).toBe(40);
    expect(estimates.inferMs(cpu, { model: "det" })).toBe(80);
  });

  test("a replica that never ran the model gets the pool's mean for it; so does the pool as a whole", () => {
    expect(estimates.loadMs(newcomer, { model: "det" })).toBe(2_000);
    expect(estimates.inferMs(newcomer, { model: "det" })).toBe(60);
    expect(estimates.loadMs(undefined, { model: "det" })).toBe(2_000);
    expect(estimates.inferMs(undefined, { model: "det" })).toBe(60);
  });

  test("the pool's figure is the model's own, not the mean over every model the pool ran", () => {
    const withBigModel = replica("big", { timings: timings(["llm"], 60_000, 900) });
    const pool = new PoolEstimates([gpu, withBigModel, newcomer]);
    expect(pool.loadMs(newcomer, { model: "det" })).toBe(1_000);
    expect(pool.inferMs(newcomer, { model: "det" })).toBe(40);
  });

  test("a replica that ran the model but never measured a load takes the pool's load time and its own run time", () => {
    const preloaded = replica("preloaded", { timings: { "det:1": measured(undefined, 20) } });
    const pool = new PoolEstimates([gpu, cpu, preloaded]);
    expect(pool.loadMs(preloaded, { model: "det" })).toBe(2_000);
    expect(pool.inferMs(preloaded, { model: "det" })).toBe(20);
  });
});

describe("PoolEstimates: per version", () => {
  // Version 2 of "det" is a bigger network: it loads and runs slower than version 1.
  const both = replica("both", { timings: { "det:1": measured(1_000, 40), "det:2": measured(4_000, 100) } });
  const onlyV2 = replica("only-v2", { timings: { "det:2": measured(6_000, 140) } });
  const newcomer = replica("newcomer");
  const estimates = new PoolEstimates([both, onlyV2, newcomer]);

  test("a version asked for is estimated from that version's measurements only", () => {
    expect(estimates.loadMs(both, { model: "det", version: "1" })).toBe(1_000);
    expect(estimates.loadMs(both, { model: "det", version: "2" })).toBe(4_000);
    expect(estimates.inferMs(both, { model: "det", version: "2" })).toBe(100);
    // The newcomer gets the pool's mean for that version.
    expect(estimates.loadMs(newcomer, { model: "det", version: "1" })).toBe(1_000);
    expect(estimates.loadMs(newcomer, { model: "det", version: "2" })).toBe(5_000);
    expect(estimates.inferMs(newcomer, { model: "det", version: "2" })).toBe(120);
  });

  test("a replica that measured another version only takes the pool's figure for the version asked", () => {
    expect(estimates.loadMs(onlyV2, { model: "det", version: "1" })).toBe(1_000);
    expect(estimates.inferMs(onlyV2, { model: "det", version: "1" })).toBe(40);
  });

  test("no version asked: whatever version serves, so every version's measurement counts", () => {
    expect(estimates.loadMs(both, { model: "det" })).toBe(2_500);
    expect(estimates.loadMs(newcomer, { model: "det" })).toBe((1_000 + 4_000 + 6_000) / 3);
  });

  test("a version nobody measured falls back to the pool's mean over every model", () => {
    expect(estimates.loadMs(both, { model: "det", version: "3" })).toBe((1_000 + 4_000 + 6_000) / 3);
    expect(estimates.inferMs(both, { model: "det", version: "3" })).toBe((40 + 100 + 140) / 3);
  });
});

describe("PoolEstimates: a model nobody measured", () => {
  test("loads at its size times the pool's measured milliseconds per byte", () => {
    // "det" (1 GiB) took 2 s to load: 2 s per GiB.
    const measuredHere = replica("a", {
      loaded: [model("det", { bytes: GiB })],
      timings: timings(["det"], 2_000),
    });
    // "ocr" is held (2 GiB) where nothing was measured; "llm" (4 GiB) was seen before and evicted.
    const holder = replica("b", { loaded: [model("ocr", { bytes: 2 * GiB })] });
    const estimates = new PoolEstimates([measuredHere, holder], new Map([["llm", 4 * GiB]]));
    expect(estimates.loadMs(holder, { model: "ocr" })).toBe(4_000);
    expect(estimates.loadMs(measuredHere, { model: "llm" })).toBe(8_000);
    // Never seen: planned as a typical model, the mean of the sizes seen (1, 2 and 4 GiB).
    expect(estimates.loadMs(holder, { model: "new" })).toBeCloseTo((7 / 3) * 2_000, 6);
  });

  test("the rate per byte is measured on models of known size, whether held now or seen before", () => {
    // "det" was evicted since its load was measured: its remembered size still gives the rate.
    const a = replica("a", { timings: timings(["det"], 3_000) });
    const holder = replica("b", { loaded: [model("ocr", { bytes: 2 * GiB })] });
    const estimates = new PoolEstimates([a, holder], new Map([["det", GiB]]));
    expect(estimates.loadMs(holder, { model: "ocr" })).toBe(6_000);
  });

  test("without sizes to go by, a load takes the pool's mean load over every model", () => {
    const a = replica("a", { timings: { "det:1": measured(1_000, 10), "ocr:1": measured(3_000, 30) } });
    const estimates = new PoolEstimates([a]);
    expect(estimates.loadMs(a, { model: "new" })).toBe(2_000);
    expect(estimates.loadMs(undefined, { model: "new" })).toBe(2_000);
    // Sizes of models whose loads nobody measured give no rate either.
    const holder = replica("b", { loaded: [model("cls", { bytes: 5 * GiB })] });
    expect(new PoolEstimates([a, holder]).loadMs(holder, { model: "cls" })).toBe(2_000);
  });

  test("runs in the pool's mean inference time over every model", () => {
    const a = replica("a", { timings: { "det:1": measured(1_000, 10), "ocr:1": measured(3_000, 30) } });
    const b = replica("b", { timings: { "cls:1": measured(undefined, 50) } });
    const estimates = new PoolEstimates([a, b]);
    expect(estimates.inferMs(a, { model: "new" })).toBe(30);
    expect(estimates.inferMs(undefined, { model: "new" })).toBe(30);
  });
});

describe("PoolEstimates: slots and sizes", () => {
  test("a request holds a slot for the replica's mean run time over the models it ran", () => {
    const busy = replica("busy", { timings: { "det:1": measured(1_000, 40), "ocr:1": measured(2_000, 80) } });
    const fast = replica("fast", { timings: { "cls:1": measured(500, 6) } });
    const fresh = replica("fresh");
    const estimates = new PoolEstimates([busy, fast, fresh]);
    expect(estimates.slotMs(busy)).toBe(60);
    expect(estimates.slotMs(fast)).toBe(6);
    // A replica that ran nothing yet: the pool's mean over every run.
    expect(estimates.slotMs(fresh)).toBe((40 + 80 + 6) / 3);
  });

  test("a model's size: as a replica holds it, else as it was last seen, else a typical model's", () => {
    const a = replica("a", { loaded: [model("det", { bytes: 2 * GiB })] });
    const estimates = new PoolEstimates([a], new Map([["ocr", 6 * GiB]]));
    expect(estimates.bytes({ model: "det" })).toBe(2 * GiB);
    expect(estimates.bytes({ model: "ocr" })).toBe(6 * GiB);
    expect(estimates.bytes({ model: "new" })).toBe(4 * GiB);
    // Remembered at 1 GiB, held now at 2 GiB (a new version, say): planned at its size now.
    const reloaded = new PoolEstimates([a], new Map([["det", GiB]]));
    expect(reloaded.bytes({ model: "det" })).toBe(2 * GiB);
  });
});

describe("PoolEstimates properties", () => {
  const MODELS = ["det", "ocr"];
  const VERSIONS = ["1", "2"];
  const figure = fc.option(fc.integer({ min: 1, max: 10_000 }), { nil: undefined });
  const report = fc.dictionary(
    fc.constantFrom(...MODELS.flatMap((name) => VERSIONS.map((version) => `${name}:${version}`))),
    fc.record({ loadMs: figure, inferMs: figure }).map(({ loadMs, inferMs }) => measured(loadMs, inferMs)),
  );
  const request = fc.record({
    model: fc.constantFrom(...MODELS),
    version: fc.option(fc.constantFrom(...VERSIONS), { nil: undefined }),
  });

  /** Every figure these replicas measured for the request's model (and version, when it names one). */
  function figures(replicas: readonly ReplicaView[], asked: { model: string; version?: string | undefined }) {
    const loads: number[] = [];
    const infers: number[] = [];
    for (const each of replicas) {
      for (const [key, timing] of Object.entries(each.state.timings)) {
        const [name, version] = key.split(":");
        if (name !== asked.model || (asked.version !== undefined && asked.version !== version)) continue;
        if (timing.loadMs !== undefined) loads.push(timing.loadMs);
        if (timing.inferMs !== undefined) infers.push(timing.inferMs);
      }
    }
    return { loads, infers };
  }
  const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;

  test("what a replica measured wins, else the pool's measurements of the model; estimates are positive figures", () => {
    fc.assert(
      fc.property(fc.array(report, { minLength: 1, maxLength: 4 }), request, (reports, rawAsked) => {
        const asked = rawAsked.version === undefined ? { model: rawAsked.model } : rawAsked;
        const replicas = reports.map((each, index) => replica(`r${index}`, { timings: each }));
        const estimates = new PoolEstimates(replicas);
        const pool = figures(replicas, asked);
        for (const each of replicas) {
          const own = figures([each], asked);
          const load = estimates.loadMs(each, asked);
          const infer = estimates.inferMs(each, asked);
          if (own.loads.length > 0) expect(load).toBeCloseTo(mean(own.loads), 9);
          else if (pool.loads.length > 0) expect(load).toBeCloseTo(mean(pool.loads), 9);
          if (own.infers.length > 0) expect(infer).toBeCloseTo(mean(own.infers), 9);
          else if (pool.infers.length > 0) expect(infer).toBeCloseTo(mean(pool.infers), 9);
          for (const estimate of [load, infer, estimates.slotMs(each)]) {
            expect(Number.isFinite(estimate) && estimate > 0).toBe(true);
          }
        }
        if (pool.loads.length > 0)
          expect(estimates.loadMs(undefined, asked)).toBeCloseTo(mean(pool.loads), 9);
      }),
      { numRuns: 300 },
    );
  });
});
