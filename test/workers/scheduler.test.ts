import { describe, expect, it } from "vitest";
import type { RequestRecord } from "../../gateway/metrics/pool-counters.ts";
import type { DirectRun, Grant, RunReport, RunResult, SlotAsk } from "../../gateway/pool-calls.ts";
import type { AgentLink } from "../../gateway/registry/agent-link.ts";
import { Scheduler } from "../../gateway/registry/scheduler.ts";
import { baselinePolicy } from "../../shared/routing/baseline.ts";
import { switchyardPolicy } from "../../shared/routing/switchyard.ts";
import type { RoutingPolicy } from "../../shared/routing/types.ts";
import { replicaState } from "../support/replica-state.ts";
import { ASK_M, joinScheduler } from "./support/scheduler-agents.ts";

// The registry's side of a run's end (pool-calls.ts): what a release does to the slot, the metrics and the
// replica's state, driven directly with real sockets (the workers tests drive it through relays).

const ask = ASK_M;

/** A scheduler on the baseline policy (or `policy`), and what it reports: requests finished, asks passed on. */
function scheduled(policy: RoutingPolicy = baselinePolicy) {
  const finished: RequestRecord[] = [];
  const passes: string[] = [];
  let direct = 0;
  const scheduler = new Scheduler({
    policy,
    maxQueue: 10,
    heartbeatMs: 1000,
    onAgentChanged: () => {},
    onAgentGone: () => {},
    onFinished: (request) => finished.push(request),
    onPassed: (why) => passes.push(why),
    onDirect: () => {
      direct += 1;
    },
  });
  return { scheduler, finished, passes, directRuns: () => direct };
}

function pool(policy?: RoutingPolicy) {
  const { scheduler, finished, directRuns } = scheduled(policy);
  const connect = (name: string) =>
    joinScheduler(scheduler, name, [replicaState({ loaded: ["m"], maxConcurrency: 1 })]);
  const grant = async (): Promise<Grant> => {
    const answer = await scheduler.reserve(ask);
    if (answer.ok !== true) throw new Error(JSON.stringify(answer));
    return answer.grant;
  };
  const report = (granted: Grant, result: RunResult, extra: Partial<RunReport> = {}): RunReport => ({
    ticket: granted.ticket,
    channel: granted.channel,
    agentId: granted.agentId,
    replicaId: granted.replicaId,
    replica: granted.replica,
    model: "m",
    attempts: 1,
    reruns: 0,
    deadlinePassed: false,
    totalMs: 5,
    result,
    ...extra,
  });
  return { scheduler, finished, connect, grant, report, directRuns };
}

describe("a run's release at the registry", () => {
  it("a run its relay got after the deadline counts as a 504 and frees its slot at once", async () => {
    const { scheduler, finished, connect, grant, report } = pool();
    connect("a");
    const first = await grant();
    const waiting = scheduler.reserve(ask);
    expect(scheduler.release(report(first, { kind: "expired" }, { deadlinePassed: true }))).toEqual({
      again: false,
    });
    expect(finished).toEqual([{ model: "m", status: 504, totalMs: 5 }]);
    // The one slot went to the request that waited for it.
    expect(await waiting).toMatchObject({ ok: true, grant: { agentId: "a" } });
  });

  it("a timed-out run keeps its slot until its agent has answered", async () => {
    const { scheduler, connect, grant, report } = pool();
    connect("a");
    const first = await grant();
    scheduler.release(report(first, { kind: "timed-out" }, { deadlinePassed: true }));
    expect(scheduler.snapshot().agents[0]?.inFlight).toEqual({ "0": 1 });
    scheduler.release(report(first, { kind: "freed" }));
    expect(scheduler.snapshot().agents[0]?.inFlight).toEqual({ "0": 0 });
  });

  it("a replica's state older than one applied is dropped, whichever socket it came on", async () => {
    const { scheduler, connect, grant, report } = pool();
    const link = connect("a");
    const granted = await grant();
    const names = () => scheduler.snapshot().agents[0]?.replicas[0]?.loaded.map((model) => model.name);
    // The result's state (on the data socket, through the relay) arrives first...
    scheduler.release(
      report(
        granted,
        {
          kind: "ok",
          model: { name: "m", version: "1" },
          cache: "hit",
          phases: { queueMs: 0, loadMs: 0, inferMs: 1 },
        },
        { state: replicaState({ seq: 5, loaded: ["m", "n"], maxConcurrency: 1 }) },
      ),
    );
    // ...then a state frame (on the control socket) the agent had sent before it.
    scheduler.updateState(link, [replicaState({ seq: 4, loaded: ["m"], maxConcurrency: 1 })]);
    expect(names()).toEqual(["m", "n"]);
    scheduler.updateState(link, [replicaState({ seq: 6, loaded: ["m"], maxConcurrency: 1 })]);
    expect(names()).toEqual(["m"]);
  });

  it("a replica's timings outlive the reports that leave them out, and an older report's never undo a newer one's", async () => {
    const { scheduler, grant, report } = pool();
    const figures = (loads: number, runs: number) => ({ loads, runs, loadMs: 10 * loads, inferMs: runs });
    // The hello carries every model the replica measured: "m" (loaded) and "gone" (evicted before it joined).
    const link = joinScheduler(scheduler, "a", [
      replicaState({ loaded: ["m"], timings: { "m:1": figures(1, 3), "gone:1": figures(2, 4) } }),
    ]);
    const timings = () => link.record.replicas[0]?.timings;
    const ok = {
      kind: "ok",
      model: { name: "m", version: "1" },
      cache: "hit",
      phases: { queueMs: 0, loadMs: 0, inferMs: 1 },
    } as const;
    // A result's state carries only what it holds and what changed since the previous one.
    scheduler.release(
      report(await grant(), ok, {
        state: replicaState({ seq: 5, loaded: ["m"], timings: { "m:1": figures(1, 4) } }),
      }),
    );
    expect(timings()).toEqual({ "m:1": figures(1, 4), "gone:1": figures(2, 4) });
    // A state frame taken before it arrives late: dropped as a state, but the model it last ran there ("n",
    // evicted since) is news; its older figures of "m" are not. The state the registry keeps is then a new
    // object, so that the router's estimates (memoised per state object) are computed again.
    const before = link.record.replicas[0];
    scheduler.updateState(link, [
      replicaState({ seq: 4, loaded: ["n"], timings: { "n:1": figures(1, 1), "m:1": figures(1, 3) } }),
    ]);
    expect(link.record.replicas[0]?.loaded.map((model) => model.name)).toEqual(["m"]);
    expect(timings()).toEqual({ "m:1": figures(1, 4), "gone:1": figures(2, 4), "n:1": figures(1, 1) });
    expect(link.record.replicas[0]).not.toBe(before);
    // The same late news again changes nothing, not even the object.
    const refreshed = link.record.replicas[0];
    scheduler.updateState(link, [replicaState({ seq: 4, loaded: ["n"], timings: { "n:1": figures(1, 1) } })]);
    expect(link.record.replicas[0]).toBe(refreshed);
    // A late result's state (through its relay) is taken in the same way.
    scheduler.release(
      report(await grant(), ok, {
        state: replicaState({ seq: 3, loaded: ["gone"], timings: { "gone:1": figures(2, 5) } }),
      }),
    );
    expect(timings()?.["gone:1"]).toEqual(figures(2, 5));
    expect(link.record.replicas[0]?.loaded.map((model) => model.name)).toEqual(["m"]);
    scheduler.updateState(link, [replicaState({ seq: 6, loaded: ["m"], timings: {} })]);
    expect(timings()).toEqual({ "m:1": figures(1, 4), "gone:1": figures(2, 5), "n:1": figures(1, 1) });
  });

  it("the state a release carries applies only to the connection the run was granted on", async () => {
    const { scheduler, connect, grant, report } = pool();
    const old = connect("a");
    const granted = await grant();
    scheduler.disconnect(old, "closed");
    // The same host back under the same id, on a new channel: the old run's late report is not about it.
    connect("a");
    const stale = replicaState({ loaded: ["m", "stale"], maxConcurrency: 1 });
    scheduler.release(report(granted, { kind: "lost", why: "closed", started: true }, { state: stale }));
    expect(scheduler.snapshot().agents[0]?.replicas[0]?.loaded.map((model) => model.name)).toEqual(["m"]);
  });
});

describe("an ask in a sharded pool, which may be passed on to the model's next shard", () => {
  const shard = scheduled;
  const asking = (pass: SlotAsk["pass"], extra: Partial<SlotAsk> = {}): SlotAsk => ({
    ...ask,
    pass,
    ...extra,
  });

  it("a shard with no agent passes at once instead of answering 503; told to keep it, it answers as one registry", async () => {
    const { scheduler, passes, finished } = shard();
    expect(await scheduler.reserve(asking("unmatched"))).toEqual({ ok: "passed", why: "no-agents" });
    expect(await scheduler.reserve(asking("never"))).toMatchObject({ ok: false, status: 503 });
    expect(passes).toEqual(["no-agents"]);
    // A passed ask is no request of this shard's: only the refusal counts.
    expect(finished.map((request) => request.status)).toEqual([503]);
  });

  it("a shard that holds no copy passes it as cold; one that holds it grants it", async () => {
    const { scheduler } = shard();
    joinScheduler(scheduler, "a", [replicaState({ loaded: ["m"], maxConcurrency: 1 })]);
    expect(await scheduler.reserve(asking("unmatched", { model: "other" }))).toEqual({
      ok: "passed",
      why: "cold",
    });
    expect(await scheduler.reserve(asking("unmatched"))).toMatchObject({ ok: true, grant: { agentId: "a" } });
  });

  it("looking for a hint, a shard that holds the model but not the hint passes it as a hit", async () => {
    const { scheduler } = shard();
    joinScheduler(scheduler, "a", [replicaState({ loaded: ["m"], maxConcurrency: 4 })]);
    expect(await scheduler.reserve(asking("unhinted", { hint: "lora-1" }))).toEqual({
      ok: "passed",
      why: "hit",
    });
    expect(await scheduler.reserve(asking("unmatched", { hint: "lora-1" }))).toMatchObject({ ok: true });
  });

  it("a backlogged shard passes the ask on; an ask told to keep it still queues there", async () => {
    const { scheduler } = shard();
    joinScheduler(scheduler, "a", [replicaState({ loaded: ["m"], maxConcurrency: 1 })]);
    expect(await scheduler.reserve(asking("unmatched"))).toMatchObject({ ok: true });
    // One slot: two asks may wait behind it before the shard counts as backlogged.
    void scheduler.reserve(asking("unmatched"));
    void scheduler.reserve(asking("unmatched"));
    expect(await scheduler.reserve(asking("unmatched"))).toEqual({ ok: "passed", why: "backlogged" });
    expect(scheduler.snapshot().queued).toBe(2);
    void scheduler.reserve(asking("never"));
    expect(scheduler.snapshot().queued).toBe(3);
  });
});

describe("direct hits at the registry (shared/routing/direct-hits.ts)", () => {
  const ok: RunResult = {
    kind: "ok",
    model: { name: "m", version: "1" },
    cache: "hit",
    phases: { queueMs: 0, loadMs: 0, inferMs: 1 },
  };

  /** A direct hit on the agent's replica "0" for model "m", as its relay would tell the registry. */
  const directRun = (link: AgentLink, ticket: string): DirectRun => ({
    ticket,
    agentId: link.record.id,
    channel: link.record.channel,
    replicaId: "0",
    model: "m",
    timeoutMs: 10_000,
  });

  it("a run that went well while nothing waits gives its relay a permit for the replica's slots; anchors' policies never do", async () => {
    const { connect, grant, report, scheduler } = pool(switchyardPolicy);
    connect("a");
    expect(scheduler.release(report(await grant(), ok))).toEqual({ again: false, direct: { capacity: 1 } });
    const anchor = pool(baselinePolicy);
    anchor.connect("a");
    expect(anchor.scheduler.release(anchor.report(await anchor.grant(), ok))).toEqual({ again: false });
  });

  it("a hit granted while nothing waits opens the direct path (Grant.direct); not under an anchor's policy, nor while asks wait", async () => {
    const { connect, grant, report, scheduler } = pool(switchyardPolicy);
    connect("a");
    const first = await grant();
    expect(first.direct).toBe(true);
    // Its one slot freed while two asks wait: the first of them is granted, the other still waits.
    const second = scheduler.reserve(ask);
    void scheduler.reserve(ask);
    scheduler.release(report(first, ok));
    const granted = await second;
    expect(granted).toMatchObject({ ok: true });
    expect((granted as { grant: Grant }).grant.direct).toBeUndefined();
    const anchor = pool(baselinePolicy);
    anchor.connect("a");
    expect((await anchor.grant()).direct).toBeUndefined();
  });

  it("an adopt that puts the replica over its capacity (a grant raced it for the last slot) says so", async () => {
    const { connect, grant, scheduler } = pool(switchyardPolicy);
    const link = connect("a");
    scheduler.updateState(link, [replicaState({ seq: 1, loaded: ["m"], maxConcurrency: 2 })]);
    expect(scheduler.adopt(directRun(link, "d-3"))).toBe("taken");
    await grant();
    expect(scheduler.adopt(directRun(link, "d-4"))).toBe("over");
    expect(scheduler.snapshot().agents[0]?.inFlight).toEqual({ "0": 3 });
  });

  it("no permit for a draining agent's replica", async () => {
    const { connect, grant, report, scheduler } = pool(switchyardPolicy);
    const link = connect("a");
    const granted = await grant();
    scheduler.drain(link);
    expect(scheduler.release(report(granted, ok))).toEqual({ again: false });
  });

  it("no permit when the freed slot went to a request that waited for it", async () => {
    const { connect, grant, report, scheduler } = pool(switchyardPolicy);
    connect("a");
    const first = await grant();
    const waiting = scheduler.reserve(ask);
    expect(scheduler.release(report(first, ok))).toEqual({ again: false });
    expect(await waiting).toMatchObject({ ok: true });
  });

  it("an adopted run takes its slot (a request queues behind it) until its release, and counts", async () => {
    const { connect, scheduler, directRuns } = pool(switchyardPolicy);
    const link = connect("a");
    const run = directRun(link, "d-1");
    expect(scheduler.adopt(run)).toBe("taken");
    expect(scheduler.adopt(run)).toBe("refused");
    expect(directRuns()).toBe(1);
    expect(scheduler.snapshot().agents[0]?.inFlight).toEqual({ "0": 1 });
    const waiting = scheduler.reserve(ask);
    expect(scheduler.snapshot().queued).toBe(1);
    scheduler.release({
      ...run,
      replica: `${link.record.id}/0`,
      attempts: 1,
      reruns: 0,
      deadlinePassed: false,
      totalMs: 3,
      result: ok,
    });
    expect(await waiting).toMatchObject({ ok: true, grant: { agentId: link.record.id } });
  });

  it("a run of an agent it does not know as it is (another channel, gone, draining) is not adopted", () => {
    const { connect, scheduler, directRuns } = pool(switchyardPolicy);
    const link = connect("a");
    const run = directRun(link, "d-2");
    expect(scheduler.adopt({ ...run, channel: "another" })).toBe("refused");
    expect(scheduler.adopt({ ...run, agentId: "nobody" })).toBe("refused");
    expect(scheduler.adopt({ ...run, replicaId: "9" })).toBe("refused");
    scheduler.drain(link);
    expect(scheduler.adopt(run)).toBe("refused");
    expect(directRuns()).toBe(0);
    expect(scheduler.snapshot().agents[0]?.inFlight).toEqual({ "0": 0 });
  });
});
