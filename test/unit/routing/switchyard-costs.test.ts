import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  ABSORBABLE_UTILIZATION,
  EVICTION_HORIZON_MS,
  SwitchyardCosts,
} from "../../../shared/routing/switchyard-costs.ts";
import type { DemandView, QueuedView, ReplicaView } from "../../../shared/routing/types.ts";
import { WaitingLine } from "../../../shared/routing/waiting-line.ts";
import { contextAt, GiB, model, poolOf, replica, timings, waiting } from "./fixtures.ts";

// The expected costs Switchyard weighs, in milliseconds of somebody's waiting. Each test stages a small
// pool with the figures its agents reported, and checks a number the router would act on.

const NOW = 60_000;

/** Demand exactly as given, in requests per second (the fixtures' measured stream only approximates it). */
const demandOf = (perSecond: Record<string, number>): DemandView => ({
  ratePerSecond: (name) => perSecond[name] ?? 0,
});

/** The costs of one decision on this pool, at NOW, with the queue (oldest first) and demand given. */
function costsOf(
  replicas: readonly ReplicaView[],
  fields: { demand?: Record<string, number>; queue?: QueuedView[]; modelBytes?: Map<string, number> } = {},
): SwitchyardCosts {
  const context = contextAt(NOW);
  if (fields.demand !== undefined) context.demand = demandOf(fields.demand);
  if (fields.modelBytes !== undefined) context.modelBytes = fields.modelBytes;
  return new SwitchyardCosts(poolOf(replicas, fields.queue), context);
}

/** `count` requests for `name`, one a millisecond from `since`. */
const waitingFor = (name: string, count: number, since = NOW - 1_000) =>
  Array.from({ length: count }, (_, index) => waiting(name, since + index));

const summary = (costs: SwitchyardCosts) =>
  costs.waiting().map(({ oldest, count }) => `${oldest.request.model}@${oldest.enqueuedAt} x${count}`);

const addresses = (replicas: readonly ReplicaView[]) => replicas.map((each) => each.address);

/** A replica holding three idle models, "a" the least recently used, then "c", then "b"; all load in 2 s. */
const full = (address = "full", fields: Parameters<typeof replica>[1] = {}) =>
  replica(address, {
    loaded: [model("a", { idleMs: 30_000 }), model("b", { idleMs: 10_000 }), model("c", { idleMs: 20_000 })],
    timings: timings(["a", "b", "c"], 2_000, 50),
    ...fields,
  });

/** A replica holding `names`, running each in 50 ms on 4 slots: 80 requests a second. */
function serving(address: string, names: string[], fields: Parameters<typeof replica>[1] = {}): ReplicaView {
  return replica(address, {
    loaded: names.map((name) => model(name)),
    timings: timings(names, 2_000, 50),
    ...fields,
  });
}

describe("SwitchyardCosts: who waits", () => {
  const queue = [
    waiting("ocr", 10_000),
    waiting("det", 20_000),
    waiting("ocr", 30_000),
    waiting("cls", 40_000),
  ];

  test("the models waiting, in the order of their oldest request, with how many wait for each", () => {
    expect(summary(costsOf([], { queue }))).toEqual(["ocr@10000 x2", "det@20000 x1", "cls@40000 x1"]);
    expect(costsOf([]).waiting()).toEqual([]);
  });

  test("with the dispatcher's index, the order is still that of the oldest request, however the index lists models", () => {
    const line = new WaitingLine<QueuedView>();
    for (const request of [waiting("det", 1_000), waiting("ocr", 2_000), waiting("det", 3_000)])
      line.push(request);
    line.removeAt(0); // det's oldest left: det now waits since 3 s, ocr since 2 s, but the index lists det first
    expect([...line.byModel.keys()]).toEqual(["det", "ocr"]);
    const pool = { replicas: [], queue: line.items, waitingByModel: line.byModel };
    expect(summary(new SwitchyardCosts(pool, contextAt(NOW)))).toEqual(["ocr@2000 x1", "det@3000 x1"]);
  });

  test("how long a model's requests have waited: together, and the longest of them", () => {
    const costs = costsOf([], { queue });
    expect(costs.waitedFor("ocr")).toBe(50_000 + 30_000);
    expect(costs.waitedLongest("ocr")).toBe(50_000);
    expect(costs.waitingFor("ocr")).toBe(2);
    expect(costs.waitedFor("det")).toBe(40_000);
    expect(costs.waitedFor("nobody")).toBe(0);
    expect(costs.waitedLongest("nobody")).toBe(0);
    expect(costs.waitingFor("nobody")).toBe(0);
  });

  test("demand per millisecond, as measured per second; nothing measured is no demand", () => {
    const costs = costsOf([], { demand: { det: 5 } });
    expect(costs.ratePerMs("det")).toBe(0.005);
    expect(costs.ratePerMs("ocr")).toBe(0);
    expect(costsOf([]).ratePerMs("det")).toBe(0);
  });
});

describe("SwitchyardCosts: copies of a model", () => {
  test("holders are the serving replicas with the version asked; a draining one is no copy", () => {
    const replicas = [
      replica("v1", { loaded: [model("det")] }),
      replica("v2", { loaded: [model("det", { version: "2" })] }),
      replica("draining", { loaded: [model("det")], draining: true }),
      replica("other", { loaded: [model("ocr")] }),
    ];
    const costs = costsOf(replicas);
    expect(addresses(costs.holdersOf({ model: "det" }))).toEqual(["v1", "v2"]);
    expect(addresses(costs.holdersOf({ model: "det", version: "2" }))).toEqual(["v2"]);
    expect(costs.heldAnywhere({ model: "det", version: "3" })).toBe(false);
    expect(costs.heldAnywhere({ model: "cls" })).toBe(false);
  });

  test("a load under way counts by the replica's report or by the load the dispatcher sent there", () => {
    const reported = replica("reported", { loading: [{ name: "det", version: "1" }] });
    const sent = replica("sent", { pendingLoads: [{ model: "ocr", since: NOW - 100 }] });
    const costs = costsOf([reported, sent, replica("idle")]);
    expect(costs.loadingAnywhere({ model: "det" })).toBe(true);
    expect(costs.loadingAnywhere({ model: "ocr" })).toBe(true);
    expect(costs.loadingAnywhere({ model: "cls" })).toBe(false);
    // Another version loading is not the one asked for.
    expect(costs.loadingAnywhere({ model: "det", version: "2" })).toBe(false);
  });

  test("a draining replica's load will serve nobody: it does not count", () => {
    const draining = replica("draining", { draining: true, loading: [{ name: "det", version: "1" }] });
    expect(costsOf([draining, replica("idle")]).loadingAnywhere({ model: "det" })).toBe(false);
  });

  test("the copies of a model: its holders, then the replicas loading it", () => {
    const replicas = [
      replica("loading", { loading: [{ name: "det", version: "1" }] }),
      replica("holder", { loaded: [model("det")] }),
      replica("other", { loaded: [model("ocr")] }),
    ];
    const costs = costsOf(replicas);
    expect(addresses(costs.copiesOf({ model: "det" }))).toEqual(["holder", "loading"]);
    expect(addresses(costs.copiesOf({ model: "cls" }))).toEqual([]);
  });
});

describe("SwitchyardCosts: the wait for a copy", () => {
  // 4 slots, every request holding one for 50 ms.
  const holder = (busy: number) =>
    replica("holder", {
      busy,
      loaded: [model("det"), model("ocr")],
      timings: timings(["det", "ocr"], 2_000, 50),
    });

  test("a holder with a free slot and nobody waiting for it starts the request at once", () => {
    expect(costsOf([holder(0)]).waitOnCopy(holder(0), { model: "det" })).toBe(0);
    // Two running, one waiting: the one waiting takes the third slot, a request arriving now the fourth.
    const twoBusy = holder(2);
    expect(costsOf([twoBusy], { queue: waitingFor("det", 1) }).waitOnCopy(twoBusy, { model: "det" })).toBe(0);
  });

  test("a full holder: the requests ahead (running, and waiting for the models it holds) share its slots", () => {
    const busy = holder(4);
    // Only the running ones: one slot must free, a quarter of a run on 4 slots.
    expect(costsOf([busy]).waitOnCopy(busy, { model: "det" })).toBe(12.5);
    // 3 wait for det and 2 for ocr, which it also holds (a freed slot takes those first); cls it does not hold.
    const queue = [...waitingFor("det", 3), ...waitingFor("ocr", 2), ...waitingFor("cls", 5)];
    // 4 running + 5 waiting - 4 slots + this one = 6 ahead, at 50 ms over 4 slots.
    expect(costsOf([busy], { queue }).waitOnCopy(busy, { model: "det" })).toBe(75);
  });

  test("a replica loading the model: the rest of its load, half a load when the dispatcher did not start it", () => {
    const loading = replica("loading", {
      loading: [{ name: "det", version: "1" }],
      timings: timings(["det"], 2_000, 50),
    });
    const costs = costsOf([loading]);
    expect(costs.remainingLoadMs(loading, { model: "det" })).toBe(1_000);
    expect(costs.waitOnCopy(loading, { model: "det" })).toBe(1_000);
  });

  test("a load the dispatcher started is measured from its start, and is never less than nothing", () => {
    const started = (since: number) =>
      replica("sent", {
        busy: 1,
        pendingLoads: [{ model: "det", since }],
        timings: timings(["det"], 2_000, 50),
      });
    const recent = started(NOW - 500);
    expect(costsOf([recent]).remainingLoadMs(recent, { model: "det" })).toBe(1_500);
    expect(costsOf([recent]).waitOnCopy(recent, { model: "det" })).toBe(1_500);
    const overdue = started(NOW - 5_000);
    expect(costsOf([overdue]).remainingLoadMs(overdue, { model: "det" })).toBe(0);
  });

  test("a load nearly done on a full replica: the slot wait is what remains", () => {
    const busy = replica("sent", {
      busy: 4,
      pendingLoads: [{ model: "det", since: NOW - 1_990 }],
      timings: timings(["det"], 2_000, 50),
    });
    // 10 ms of load left, 12.5 ms until a slot frees.
    expect(costsOf([busy]).waitOnCopy(busy, { model: "det" })).toBe(12.5);
  });

  test("the wait for a copy is the shortest over every copy; without a copy it never ends", () => {
    const loading = replica("loading", {
      loading: [{ name: "det", version: "1" }],
      timings: timings(["det"], 2_000, 50),
    });
    const busy = holder(4);
    expect(costsOf([loading, busy]).waitForCopy({ model: "det" })).toBe(12.5);
    expect(costsOf([loading]).waitForCopy({ model: "det" })).toBe(1_000);
    expect(costsOf([busy]).waitForCopy({ model: "cls" })).toBe(Number.POSITIVE_INFINITY);
  });
});

describe("SwitchyardCosts: what a load evicts", () => {
  test("a replica with room evicts nothing, and harms nobody", () => {
    const room = replica("room", { loaded: [model("a")], timings: timings(["a"]) });
    const costs = costsOf([room], { demand: { a: 10 } });
    expect(costs.victimsOf(room, { model: "new" })).toEqual([]);
    expect(costs.evictionHarm(room, { model: "new" })).toBe(0);
  });

  test("a full replica evicts its least recently used model, as its own cache would", () => {
    const target = full();
    expect(costsOf([target]).victimsOf(target, { model: "new" })).toEqual(["a"]);
  });

  test("a bigger newcomer evicts as many models as its size needs, least recently used first", () => {
    const target = full();
    // 7 GiB (seen before) into 8 GiB holding three of 1 GiB.
    const costs = costsOf([target], { modelBytes: new Map([["llm", 7 * GiB]]) });
    expect(costs.victimsOf(target, { model: "llm" })).toEqual(["a", "c"]);
  });

  test("models running a request or pinned are never evicted", () => {
    const target = full("full", {
      loaded: [
        model("a", { idleMs: 30_000, inFlight: 1 }),
        model("b", { idleMs: 10_000 }),
        model("c", { idleMs: 20_000, pinned: true }),
      ],
    });
    expect(costsOf([target]).victimsOf(target, { model: "new" })).toEqual(["b"]);
  });

  test("no room now (work in flight holds it) or ever (pinned models hold it): no victims, and an infinite harm", () => {
    const inUse = full("in-use", { loaded: ["a", "b", "c"].map((name) => model(name, { inFlight: 1 })) });
    const pinned = full("pinned", { loaded: ["a", "b", "c"].map((name) => model(name, { pinned: true })) });
    const costs = costsOf([inUse, pinned]);
    for (const target of [inUse, pinned]) {
      expect(costs.victimsOf(target, { model: "new" })).toBeUndefined();
      expect(costs.evictionHarm(target, { model: "new" })).toBe(Number.POSITIVE_INFINITY);
      expect(costs.admits(target, { model: "new" }, 30_000)).toBe(false);
    }
  });

  test("a load under way takes its room too", () => {
    const target = full("busy", {
      loaded: [model("a", { idleMs: 30_000 }), model("b", { idleMs: 10_000 })],
      pendingLoads: [{ model: "c", since: NOW - 100 }],
    });
    expect(costsOf([target]).victimsOf(target, { model: "new" })).toEqual(["a"]);
  });

  test("the harm of an eviction: if asked again within the horizon, a full load, and half of one for those arriving meanwhile", () => {
    const target = full();
    // "a" loads in 2 s. At 1 request a second it is surely asked again within a minute: the next request
    // waits 2 s, and the 2 arriving meanwhile wait 1 s on average: 4 s.
    expect(costsOf([target], { demand: { a: 1 } }).victimHarm("a", target)).toBe(4_000);
    // At one request every 100 s it comes back within the minute with probability 1 - e^(-0.6).
    const rare = costsOf([target], { demand: { a: 0.01 } }).victimHarm("a", target);
    expect(rare).toBeCloseTo((1 - Math.exp(-0.6)) * 2_000 * (1 + 0.01), 6);
    // Nobody asks for it: nobody is harmed.
    expect(costsOf([target]).victimHarm("a", target)).toBe(0);
  });

  test("the harm of a load adds up the harm of each of its victims", () => {
    const target = full();
    const costs = costsOf([target], { demand: { a: 1, c: 0.01 }, modelBytes: new Map([["llm", 7 * GiB]]) });
    expect(costs.evictionHarm(target, { model: "llm" })).toBeCloseTo(
      costs.victimHarm("a", target) + costs.victimHarm("c", target),
      6,
    );
    expect(costs.evictionHarm(target, { model: "llm" })).toBeCloseTo(4_000 + (1 - Math.exp(-0.6)) * 2_020, 6);
  });

  test("evicting a copy the other copies can stand in for harms nobody", () => {
    const target = full();
    const spare = serving("spare", ["a"]);
    const costs = costsOf([target, spare], { demand: { a: 1 } });
    expect(costs.victimHarm("a", target)).toBe(0);
    expect(costs.evictionHarm(target, { model: "new" })).toBe(0);
  });
});

describe("SwitchyardCosts: other copies absorb a model's demand", () => {
  test("when the demand keeps the other copies' slots at most half busy", () => {
    const here = serving("here", ["a"]);
    const other = serving("other", ["a"]);
    // The other copy takes 80 requests a second; half of that is comfortable.
    expect(80 * ABSORBABLE_UTILIZATION).toBe(40);
    expect(costsOf([here, other], { demand: { a: 40 } }).othersAbsorb("a", here)).toBe(true);
    expect(costsOf([here, other], { demand: { a: 41 } }).othersAbsorb("a", here)).toBe(false);
    // Two other copies take twice as much.
    const third = serving("third", ["a"]);
    expect(costsOf([here, other, third], { demand: { a: 80 } }).othersAbsorb("a", here)).toBe(true);
  });

  test("the replica's own copy does not count, nor does a draining one, whatever the demand", () => {
    const here = serving("here", ["a"]);
    expect(costsOf([here], { demand: { a: 1 } }).othersAbsorb("a", here)).toBe(false);
    expect(costsOf([here]).othersAbsorb("a", here)).toBe(false);
    const draining = serving("draining", ["a"], { draining: true });
    expect(costsOf([here, draining], { demand: { a: 1 } }).othersAbsorb("a", here)).toBe(false);
  });
});

describe("SwitchyardCosts: admission by frequency", () => {
  // "full" would evict "a" (2 requests a second) for "new" (1 a second).
  const target = full();
  const demand = { a: 2, new: 1 };

  test("a newcomer wanted less than its victim is refused", () => {
    expect(costsOf([target], { demand }).admits(target, { model: "new" }, 30_000)).toBe(false);
  });

  test("its waiting requests count as demand over the backlog: enough of them and it is wanted as much", () => {
    // 30 waiting over 30 s is another request a second: 2 a second, as much as "a" (ties admit).
    const thirty = costsOf([target], { demand, queue: waitingFor("new", 30) });
    expect(thirty.admits(target, { model: "new" }, 30_000)).toBe(true);
    const twentyNine = costsOf([target], { demand, queue: waitingFor("new", 29) });
    expect(twentyNine.admits(target, { model: "new" }, 30_000)).toBe(false);
    // A shorter backlog makes the same waiting weigh more.
    expect(twentyNine.admits(target, { model: "new" }, 5_000)).toBe(true);
  });

  test("a popular victim that other copies can stand in for does not stand in the way", () => {
    const spare = serving("spare", ["a"]);
    expect(costsOf([target, spare], { demand }).admits(target, { model: "new" }, 30_000)).toBe(true);
  });

  test("a replica with room admits anything: there is no victim", () => {
    const room = serving("room", ["a"]);
    expect(costsOf([room], { demand: { a: 100 } }).admits(room, { model: "new" }, 30_000)).toBe(true);
  });
});

describe("SwitchyardCosts: the pool", () => {
  test("utilization is the share of the serving replicas' slots in use", () => {
    const replicas = [
      replica("half", { busy: 2 }),
      replica("over", { busy: 6 }), // more dispatched than slots: all 4 in use, not 6
      replica("draining", { busy: 4, draining: true }),
      replica("idle"),
    ];
    expect(costsOf(replicas).utilization()).toBe((2 + 4) / 12);
    // No serving slot at all: nothing to spare.
    expect(costsOf([]).utilization()).toBe(1);
    expect(costsOf([replica("draining", { draining: true })]).utilization()).toBe(1);
  });

  test("replicas with a free slot: serving, and not full", () => {
    const replicas = [
      replica("half", { busy: 2 }),
      replica("full", { busy: 4 }),
      replica("draining", { draining: true }),
      replica("idle"),
    ];
    expect(addresses(costsOf(replicas).withFreeSlot())).toEqual(["half", "idle"]);
  });
});

describe("SwitchyardCosts properties", () => {
  const pool = fc.array(
    fc.record({
      maxConcurrency: fc.integer({ min: 1, max: 8 }),
      busy: fc.nat({ max: 12 }),
      draining: fc.boolean(),
    }),
    { maxLength: 6 },
  );

  test("utilization is a share: between 0 and 1, and 1 exactly when no serving slot is free", () => {
    fc.assert(
      fc.property(pool, (fields) => {
        const replicas = fields.map((each, index) => replica(`r${index}`, each));
        const costs = costsOf(replicas);
        const utilization = costs.utilization();
        expect(utilization).toBeGreaterThanOrEqual(0);
        expect(utilization).toBeLessThanOrEqual(1);
        expect(utilization === 1).toBe(costs.withFreeSlot().length === 0);
        for (const free of costs.withFreeSlot())
          expect(!free.draining && free.inFlight < free.state.maxConcurrency).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  test("for any line, oldest first: one entry per model, ordered by its oldest request, counting every request", () => {
    const line = fc
      .array(fc.record({ name: fc.constantFrom("det", "ocr", "cls"), gap: fc.nat({ max: 5_000 }) }), {
        maxLength: 30,
      })
      .map((requests) => {
        let at = 0;
        return requests.map(({ name, gap }) => {
          at += gap;
          return waiting(name, at);
        });
      });
    fc.assert(
      fc.property(line, (queue) => {
        const costs = costsOf([], { queue });
        const entries = costs.waiting();
        expect(entries.reduce((sum, entry) => sum + entry.count, 0)).toBe(queue.length);
        expect(new Set(entries.map((entry) => entry.oldest.request.model)).size).toBe(entries.length);
        for (const [index, entry] of entries.entries()) {
          const name = entry.oldest.request.model;
          expect(entry.oldest).toBe(queue.find((request) => request.request.model === name));
          expect(entry.oldest.enqueuedAt).toBeGreaterThanOrEqual(entries[index - 1]?.oldest.enqueuedAt ?? 0);
          const theirs = queue.filter((request) => request.request.model === name);
          expect(costs.waitedFor(name)).toBe(
            theirs.reduce((sum, request) => sum + NOW - request.enqueuedAt, 0),
          );
          expect(costs.waitedLongest(name)).toBe(NOW - entry.oldest.enqueuedAt);
        }
      }),
      { numRuns: 300 },
    );
  });

  test("an eviction harms more the more its model is asked for and the longer it takes to load", () => {
    const rate = fc.double({ min: 0, max: 50, noNaN: true });
    const loadMs = fc.integer({ min: 1, max: 120_000 });
    fc.assert(
      fc.property(rate, rate, loadMs, loadMs, (rate1, rate2, load1, load2) => {
        const harm = (perSecond: number, load: number) => {
          const victim = full("full", { timings: timings(["a", "b", "c"], load) });
          return costsOf([victim], { demand: { a: perSecond } }).victimHarm("a", victim);
        };
        const [low, high] = rate1 <= rate2 ? [rate1, rate2] : [rate2, rate1];
        const [short, long] = load1 <= load2 ? [load1, load2] : [load2, load1];
        expect(harm(0, long)).toBe(0);
        expect(harm(low, short)).toBeGreaterThanOrEqual(0);
        expect(harm(high, short)).toBeGreaterThanOrEqual(harm(low, short));
        expect(harm(low, long)).toBeGreaterThanOrEqual(harm(low, short));
        // Whenever it is likely asked again at all, the harm is at least that chance times a load.
        const askedAgain = 1 - Math.exp((-low / 1000) * EVICTION_HORIZON_MS);
        expect(harm(low, short)).toBeGreaterThanOrEqual(askedAgain * short * (1 - 1e-12));
      }),
      { numRuns: 300 },
    );
  });

  test("more requests waiting for a holder's models never shorten the wait on it", () => {
    const busy = fc.nat({ max: 6 });
    const queued = fc.array(fc.constantFrom("det", "ocr", "cls"), { maxLength: 12 });
    fc.assert(
      fc.property(busy, queued, fc.constantFrom("det", "ocr", "cls"), (inFlight, names, extra) => {
        const holder = replica("holder", {
          busy: inFlight,
          loaded: [model("det"), model("ocr")],
          timings: timings(["det", "ocr"], 2_000, 50),
        });
        const queue = names.map((name, index) => waiting(name, index));
        const before = costsOf([holder], { queue }).waitOnCopy(holder, { model: "det" });
        const after = costsOf([holder], { queue: [...queue, waiting(extra, 100)] }).waitOnCopy(holder, {
          model: "det",
        });
        expect(before).toBeGreaterThanOrEqual(0);
        expect(after).toBeGreaterThanOrEqual(before);
      }),
      { numRuns: 300 },
    );
  });
});
