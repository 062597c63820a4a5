import { describe, expect, it } from "vitest";
import type { RequestRecord } from "../../gateway/metrics/pool-counters.ts";
import type { Grant, RunReport, RunResult, SlotAsk } from "../../gateway/pool-calls.ts";
import { Scheduler } from "../../gateway/registry/scheduler.ts";
import { baselinePolicy } from "../../shared/routing/baseline.ts";
import { replicaState } from "../support/replica-state.ts";
import { joinScheduler } from "./support/scheduler-agents.ts";

// The registry's side of a run's end (pool-calls.ts): what a release does to the slot, the metrics and the
// replica's state, driven directly with real sockets (the workers tests drive it through relays).

const ask: SlotAsk = { model: "m", timeoutMs: 60_000, budgetMs: 60_000, attempts: 0, reruns: 0 };

function pool() {
  const finished: RequestRecord[] = [];
  const scheduler = new Scheduler({
    policy: baselinePolicy,
    maxQueue: 10,
    heartbeatMs: 1000,
    onAgentChanged: () => {},
    onAgentGone: () => {},
    onFinished: (request) => finished.push(request),
  });
  const connect = (name: string) =>
    joinScheduler(scheduler, name, [replicaState({ loaded: ["m"], maxConcurrency: 1 })]);
  const grant = async (): Promise<Grant> => {
    const answer = await scheduler.reserve(ask);
    if (!answer.ok) throw new Error(answer.message);
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
  return { scheduler, finished, connect, grant, report };
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
