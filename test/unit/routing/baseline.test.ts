import fc from "fast-check";
import { describe, expect, test } from "vitest";
import type { LoadedModel, ModelRef } from "../../../shared/protocol/replica-state.ts";
import { baselinePolicy } from "../../../shared/routing/baseline.ts";
import type { QueuedView, ReplicaView, RouteRequest, RoutingContext } from "../../../shared/routing/types.ts";
import { GiB, model as loadedModel, poolOf, replica } from "./fixtures.ts";

const context: RoutingContext = { now: 0, random: () => 0.5 };

/** A loaded model: version "1", 100 bytes, idle and unused unless told otherwise. */
const model = (name: string, fields: Partial<LoadedModel> = {}): LoadedModel =>
  loadedModel(name, { bytes: 100, ...fields });

const ref = (name: string, version = "1"): ModelRef => ({ name, version });

const route = (request: RouteRequest, replicas: ReplicaView[]) =>
  baselinePolicy.route(request, poolOf(replicas), context);

/** Where the request goes, or the decision's kind when it goes nowhere now. */
function target(request: RouteRequest, replicas: ReplicaView[]): string {
  const decision = route(request, replicas);
  return decision.kind === "dispatch" ? decision.address : decision.kind;
}

/** The same answer whichever order the registry lists its replicas in. */
function targetInAnyOrder(request: RouteRequest, replicas: ReplicaView[]): string {
  const forward = target(request, replicas);
  expect(target(request, [...replicas].reverse())).toBe(forward);
  return forward;
}

describe("baselinePolicy.route: the model is already loaded somewhere", () => {
  test("a holder with a free slot wins over an idle replica that would have to load it", () => {
    const replicas = [replica("empty"), replica("holder", { loaded: [model("resnet")], busy: 3 })];
    expect(route({ model: "resnet" }, replicas)).toEqual({
      kind: "dispatch",
      address: "holder",
      expect: "hit",
    });
    expect(targetInAnyOrder({ model: "resnet" }, replicas)).toBe("holder");
  });

  test("among holders, the one with the most free slots", () => {
    const replicas = [
      replica("busy", { loaded: [model("resnet")], busy: 3 }),
      replica("calm", { loaded: [model("resnet")], busy: 1 }),
      replica("half", { loaded: [model("resnet")], busy: 2 }),
    ];
    expect(targetInAnyOrder({ model: "resnet" }, replicas)).toBe("calm");
  });

  test("free slots count against each replica's own maxConcurrency", () => {
    const replicas = [
      replica("small", { loaded: [model("resnet")], maxConcurrency: 2, busy: 0 }),
      replica("big", { loaded: [model("resnet")], maxConcurrency: 8, busy: 5 }),
    ];
    expect(targetInAnyOrder({ model: "resnet" }, replicas)).toBe("big");
  });

  test("a full holder is skipped: the request loads the model on a replica with a free slot", () => {
    const replicas = [replica("holder", { loaded: [model("resnet")], busy: 4 }), replica("empty")];
    expect(route({ model: "resnet" }, replicas)).toEqual({
      kind: "dispatch",
      address: "empty",
      expect: "load",
    });
  });

  test("a hint match is preferred among holders, even with fewer free slots", () => {
    const replicas = [
      replica("plain", { loaded: [model("llm")], busy: 0 }),
      replica("tuned", { loaded: [model("llm")], busy: 3, hints: ["adapter-7"] }),
    ];
    expect(targetInAnyOrder({ model: "llm", hint: "adapter-7" }, replicas)).toBe("tuned");
    expect(targetInAnyOrder({ model: "llm" }, replicas)).toBe("plain");
  });

  test("a hint is best effort: no match, or a full match, still goes to a holder with room", () => {
    const unknownHint = [
      replica("a", { loaded: [model("llm")], busy: 2 }),
      replica("b", { loaded: [model("llm")], busy: 1 }),
    ];
    expect(targetInAnyOrder({ model: "llm", hint: "nobody-has-this" }, unknownHint)).toBe("b");

    const matchIsFull = [
      replica("plain", { loaded: [model("llm")], busy: 1 }),
      replica("tuned", { loaded: [model("llm")], busy: 4, hints: ["adapter-7"] }),
    ];
    expect(targetInAnyOrder({ model: "llm", hint: "adapter-7" }, matchIsFull)).toBe("plain");
  });

  test("a hint does not pull a request away from the model: a holder beats a hinted non-holder", () => {
    const replicas = [
      replica("hinted", { hints: ["adapter-7"] }),
      replica("holder", { loaded: [model("llm")] }),
    ];
    expect(targetInAnyOrder({ model: "llm", hint: "adapter-7" }, replicas)).toBe("holder");
  });
});

describe("baselinePolicy.route: the model is not loaded anywhere", () => {
  test("a replica already loading the model beats starting a fresh load elsewhere", () => {
    const replicas = [replica("idle"), replica("loading", { loading: [ref("bert")], busy: 3 })];
    expect(route({ model: "bert" }, replicas)).toEqual({
      kind: "dispatch",
      address: "loading",
      expect: "loading",
    });
    expect(targetInAnyOrder({ model: "bert" }, replicas)).toBe("loading");
  });

  test("a holder beats a replica still loading the model", () => {
    const replicas = [
      replica("loading", { loading: [ref("bert")] }),
      replica("holder", { loaded: [model("bert")], busy: 3 }),
    ];
    expect(targetInAnyOrder({ model: "bert" }, replicas)).toBe("holder");
  });

  test("a full replica loading the model is skipped for a fresh load on one with room", () => {
    const replicas = [replica("loading", { loading: [ref("bert")], busy: 4 }), replica("idle")];
    expect(route({ model: "bert" }, replicas)).toEqual({ kind: "dispatch", address: "idle", expect: "load" });
  });

  test("a load goes first where there is room for another model (no eviction), even with less free memory", () => {
    const replicas = [
      replica("full-of-models", { loaded: [model("a"), model("b"), model("c")], memoryUsedBytes: 1 * GiB }),
      replica("room", { loaded: [model("a")], memoryUsedBytes: 6 * GiB }),
    ];
    expect(route({ model: "new" }, replicas)).toEqual({ kind: "dispatch", address: "room", expect: "load" });
    expect(targetInAnyOrder({ model: "new" }, replicas)).toBe("room");
  });

  test("models still loading take a model slot too", () => {
    const replicas = [
      replica("two-plus-one-loading", {
        loaded: [model("a"), model("b")],
        loading: [ref("c")],
        memoryUsedBytes: 0,
      }),
      replica("two", { loaded: [model("a"), model("b")], memoryUsedBytes: 4 * GiB }),
    ];
    expect(targetInAnyOrder({ model: "new" }, replicas)).toBe("two");
  });

  test("with room on both, the replica with the most free memory", () => {
    const replicas = [
      replica("tight", { loaded: [model("a")], memoryUsedBytes: 6 * GiB }),
      replica("roomy", { loaded: [model("a"), model("b")], memoryUsedBytes: 2 * GiB }),
    ];
    expect(targetInAnyOrder({ model: "new" }, replicas)).toBe("roomy");
  });

  test("free memory is the budget minus the usage: a bigger budget counts", () => {
    const replicas = [
      replica("small-gpu", { memoryBudgetBytes: 4 * GiB, memoryUsedBytes: 1 * GiB }),
      replica("big-gpu", { memoryBudgetBytes: 16 * GiB, memoryUsedBytes: 8 * GiB }),
    ];
    expect(targetInAnyOrder({ model: "new" }, replicas)).toBe("big-gpu");
  });

  test("with equal free memory, the replica with the fewest models", () => {
    const replicas = [
      replica("two", { loaded: [model("a"), model("b")], memoryUsedBytes: 2 * GiB }),
      replica("one", { loaded: [model("a")], memoryUsedBytes: 2 * GiB }),
    ];
    expect(targetInAnyOrder({ model: "new" }, replicas)).toBe("one");
  });

  test("when a model must be evicted anyway, the replica whose victim has been idle longest", () => {
    const full = (idle: number[]) => ({
      loaded: idle.map((idleMs, index) => model(`m${index}`, { idleMs })),
      memoryUsedBytes: 3 * GiB,
    });
    const replicas = [
      replica("recent", full([1_000, 5_000, 2_000])),
      replica("stale", full([1_000, 60_000, 2_000])),
    ];
    expect(targetInAnyOrder({ model: "new" }, replicas)).toBe("stale");
  });

  test("a model with requests in flight is no victim, however long ago it was last picked", () => {
    const replicas = [
      replica("busy-old", {
        loaded: [model("a", { idleMs: 90_000, inFlight: 1 }), model("b", { idleMs: 1_000 }), model("c")],
        memoryUsedBytes: 3 * GiB,
      }),
      replica("idle", {
        loaded: [model("a", { idleMs: 30_000 }), model("b", { idleMs: 1_000 }), model("c")],
        memoryUsedBytes: 3 * GiB,
      }),
    ];
    expect(targetInAnyOrder({ model: "new" }, replicas)).toBe("idle");
  });

  test("busy replicas with a slot left can still take a load; full ones cannot", () => {
    const replicas = [replica("full", { maxConcurrency: 1, busy: 1 }), replica("one-left", { busy: 3 })];
    expect(target({ model: "new" }, replicas)).toBe("one-left");
  });
});

describe("baselinePolicy.route: queue and unavailable", () => {
  test("every replica full: the request waits in the queue, holder or not", () => {
    const replicas = [
      replica("holder", { loaded: [model("resnet")], busy: 4 }),
      replica("other", { busy: 4 }),
    ];
    expect(route({ model: "resnet" }, replicas)).toEqual({ kind: "queue" });
    expect(route({ model: "never-seen" }, replicas)).toEqual({ kind: "queue" });
  });

  test("a draining replica is never chosen, even holding the model with every slot free", () => {
    const replicas = [
      replica("draining", { loaded: [model("resnet")], draining: true }),
      replica("other", { busy: 3 }),
    ];
    expect(route({ model: "resnet" }, replicas)).toEqual({
      kind: "dispatch",
      address: "other",
      expect: "load",
    });
    expect(
      targetInAnyOrder({ model: "resnet", hint: "x" }, [
        ...replicas,
        replica("hinted-draining", { hints: ["x"], draining: true }),
      ]),
    ).toBe("other");
  });

  test("a draining replica does not take a request while the others are full: it waits", () => {
    const replicas = [
      replica("draining", { loaded: [model("resnet")], draining: true }),
      replica("full", { busy: 4 }),
    ];
    expect(route({ model: "resnet" }, replicas)).toEqual({ kind: "queue" });
  });

  test("no replicas: unavailable, with a reason", () => {
    const decision = route({ model: "resnet" }, []);
    expect(decision.kind).toBe("unavailable");
    expect(decision.kind === "unavailable" && decision.reason).toMatch(/no agent/);
  });

  test("every replica draining: unavailable, saying so", () => {
    const replicas = [
      replica("a", { loaded: [model("resnet")], draining: true }),
      replica("b", { draining: true }),
    ];
    const decision = route({ model: "resnet" }, replicas);
    expect(decision.kind).toBe("unavailable");
    expect(decision.kind === "unavailable" && decision.reason).toMatch(/draining/);
  });
});

describe("baselinePolicy.route: failed loads", () => {
  const failedBert = { failed: [{ ...ref("bert"), reason: "out of memory" }] };

  test("a replica whose last load of the model failed is avoided while another can serve", () => {
    const replicas = [
      replica("failed", { ...failedBert }),
      replica("fine", { busy: 3, memoryUsedBytes: 7 * GiB }),
    ];
    expect(targetInAnyOrder({ model: "bert" }, replicas)).toBe("fine");
  });

  test("it is avoided even when it is loading the model again", () => {
    const replicas = [replica("failed", { ...failedBert, loading: [ref("bert")] }), replica("fine")];
    expect(targetInAnyOrder({ model: "bert" }, replicas)).toBe("fine");
  });

  test("it is used when it is the only replica that can take the request", () => {
    expect(route({ model: "bert" }, [replica("failed", { ...failedBert })])).toEqual({
      kind: "dispatch",
      address: "failed",
      expect: "load",
    });
  });

  test("the failure is per model: other models still go there", () => {
    const replicas = [replica("failed", { ...failedBert, loaded: [model("resnet")] }), replica("fine")];
    expect(targetInAnyOrder({ model: "resnet" }, replicas)).toBe("failed");
  });

  test("the failure is per version: another version of the model is not avoided", () => {
    const replicas = [
      replica("failed-v1", { ...failedBert }),
      replica("fuller", { memoryUsedBytes: 7 * GiB }),
    ];
    expect(targetInAnyOrder({ model: "bert", version: "2" }, replicas)).toBe("failed-v1");
    expect(targetInAnyOrder({ model: "bert", version: "1" }, replicas)).toBe("fuller");
  });
});

describe("baselinePolicy.route: versions", () => {
  const replicas = [
    replica("v1", { loaded: [model("bert", { version: "1" })], busy: 0 }),
    replica("v2", { loaded: [model("bert", { version: "2" })], busy: 3 }),
  ];

  test("a version-specific request only counts holders of that version", () => {
    expect(route({ model: "bert", version: "2" }, replicas)).toEqual({
      kind: "dispatch",
      address: "v2",
      expect: "hit",
    });
    expect(targetInAnyOrder({ model: "bert", version: "1" }, replicas)).toBe("v1");
  });

  test("a version nobody holds is a load, not a hit", () => {
    const decision = route({ model: "bert", version: "3" }, replicas);
    expect(decision).toMatchObject({ kind: "dispatch", expect: "load" });
  });

  test("a version-specific request does not wait on a load of another version", () => {
    const loadingV1 = [replica("loading-v1", { loading: [ref("bert", "1")] }), replica("idle", { busy: 2 })];
    expect(route({ model: "bert", version: "2" }, loadingV1)).toMatchObject({
      kind: "dispatch",
      expect: "load",
    });
    expect(route({ model: "bert" }, loadingV1)).toEqual({
      kind: "dispatch",
      address: "loading-v1",
      expect: "loading",
    });
  });

  test("an unversioned request matches any version held", () => {
    expect(route({ model: "bert" }, replicas)).toEqual({ kind: "dispatch", address: "v1", expect: "hit" });
    expect(route({ model: "bert" }, [replicas[1] as ReplicaView, replica("empty")])).toEqual({
      kind: "dispatch",
      address: "v2",
      expect: "hit",
    });
  });

  test("a model name is matched exactly, not by prefix", () => {
    const decision = route({ model: "bert" }, [
      replica("large", { loaded: [model("bert-large")], busy: 0 }),
      replica("b", { busy: 3 }),
    ]);
    expect(decision).toMatchObject({ expect: "load" });
  });
});

describe("baselinePolicy.route: properties", () => {
  const arbitraryReplica = fc.record({
    maxConcurrency: fc.integer({ min: 1, max: 4 }),
    busy: fc.integer({ min: 0, max: 5 }),
    draining: fc.boolean(),
    loaded: fc.subarray(["a", "b", "c"]),
    loading: fc.subarray(["a", "b", "c"]),
    failed: fc.subarray(["a", "b", "c"]),
    hints: fc.subarray(["h1", "h2"]),
    memoryUsedBytes: fc.integer({ min: 0, max: 8 * GiB }),
  });

  test("a dispatch goes only to a non-draining replica with a free slot; queue only when none has one", () => {
    fc.assert(
      fc.property(
        fc.array(arbitraryReplica, { maxLength: 5 }),
        fc.constantFrom("a", "b", "c", "d"),
        fc.option(fc.constantFrom("h1", "h2"), { nil: undefined }),
        (specs, name, hint) => {
          const replicas = specs.map((spec, index) =>
            replica(`r${index}`, {
              maxConcurrency: spec.maxConcurrency,
              busy: spec.busy,
              draining: spec.draining,
              hints: spec.hints,
              loaded: spec.loaded.map((each) => model(each)),
              loading: spec.loading.map((each) => ref(each)),
              failed: spec.failed.map((each) => ({ ...ref(each), reason: "boom" })),
              memoryUsedBytes: spec.memoryUsedBytes,
            }),
          );
          const request: RouteRequest = hint === undefined ? { model: name } : { model: name, hint };
          const decision = route(request, replicas);
          const open = replicas.filter((each) => !each.draining && each.inFlight < each.state.maxConcurrency);
          if (decision.kind === "dispatch") {
            expect(open.map((each) => each.address)).toContain(decision.address);
            const chosen = open.find((each) => each.address === decision.address);
            const holds = chosen?.state.loaded.some((each) => each.name === name) ?? false;
            expect(decision.expect === "hit").toBe(holds);
          } else if (decision.kind === "queue") {
            expect(open).toEqual([]);
            expect(replicas.some((each) => !each.draining)).toBe(true);
          } else {
            expect(replicas.every((each) => each.draining)).toBe(true);
          }
        },
      ),
    );
  });
});

describe("baselinePolicy.pickQueued", () => {
  const waiting = (model: string, enqueuedAt: number, version?: string): QueuedView => ({
    request: version === undefined ? { model } : { model, version },
    enqueuedAt,
  });

  test("the oldest request for a model the replica holds goes first, even if another is older", () => {
    const queue = [waiting("b", 1), waiting("a", 2), waiting("c", 3), waiting("a", 4)];
    expect(
      baselinePolicy.pickQueued(
        replica("r", { loaded: [model("a")] }),
        poolOf([replica("r", { loaded: [model("a")] })], queue),
        context,
      ),
    ).toBe(1);
  });

  test("nothing held is waited for: the oldest request", () => {
    const queue = [waiting("b", 1), waiting("a", 2)];
    expect(
      baselinePolicy.pickQueued(
        replica("r", { loaded: [model("z")] }),
        poolOf([replica("r", { loaded: [model("z")] })], queue),
        context,
      ),
    ).toBe(0);
    expect(baselinePolicy.pickQueued(replica("empty"), poolOf([replica("empty")], queue), context)).toBe(0);
  });

  test("a held model counts only for requests of a version it has (or of no version)", () => {
    const holderV1 = replica("r", { loaded: [model("a", { version: "1" })] });
    expect(
      baselinePolicy.pickQueued(
        holderV1,
        poolOf([holderV1], [waiting("x", 0), waiting("a", 1, "2"), waiting("a", 2, "1")]),
        context,
      ),
    ).toBe(2);
    expect(
      baselinePolicy.pickQueued(
        holderV1,
        poolOf([holderV1], [waiting("x", 0), waiting("a", 1, "2"), waiting("a", 2)]),
        context,
      ),
    ).toBe(2);
  });

  test("an empty queue leaves the slot empty", () => {
    expect(
      baselinePolicy.pickQueued(
        replica("r", { loaded: [model("a")] }),
        poolOf([replica("r", { loaded: [model("a")] })], []),
        context,
      ),
    ).toBe(-1);
  });

  test("a draining replica takes nothing from the queue", () => {
    const queue = [waiting("a", 1), waiting("b", 2)];
    expect(
      baselinePolicy.pickQueued(
        replica("r", { loaded: [model("a")], draining: true }),
        poolOf([replica("r", { loaded: [model("a")], draining: true })], queue),
        context,
      ),
    ).toBe(-1);
  });
});
