import { type Dispatch, Dispatcher } from "../../shared/routing/dispatcher.ts";
import type { RoutingPolicy } from "../../shared/routing/types.ts";
import { EventQueue } from "./event-queue.ts";
import { OUTCOME, type RunRecord, type RunSummary, summarise, summariseFocus } from "./metrics.ts";
import { Prng } from "./prng.ts";
import { replicaBehaviour } from "./replica-profiles.ts";
import type { ModelSpec, Scenario } from "./scenario.ts";
import { type ReplicaBehaviour, SimReplica, type SimRequest } from "./sim-replica.ts";
import type { Trace } from "./trace.ts";

export interface SimulateOptions {
  /** Every replica holds every model from the start, with no cache bound (the no-miss bound). */
  noMisses?: boolean;
  /**
   * Serving policies (PUT /admin/models/{m}/policy): `minCopies` pinned copies loaded on as many replicas from
   * the start (as the gateway places them when agents join), never evicted; `maxCopies` given with every
   * request, as the registry does.
   */
  policies?: Readonly<Record<string, { minCopies?: number; maxCopies?: number }>>;
  /** A model whose own figures the summary gives beside the rest's (RunSummary.focus). */
  focus?: string;
}

/**
 * Runs one policy on one scenario's trace, in virtual time: requests go through the real Dispatcher and
 * policy (the gateway's), replicas follow the agent's cache logic, and replica reports reach the dispatcher
 * at every change, as the agent sends them. Deterministic: the scenario's seed fixes every draw.
 */
export function simulate(
  scenario: Scenario,
  trace: Trace,
  policy: RoutingPolicy,
  options: SimulateOptions = {},
): RunSummary {
  const events = new EventQueue();
  let now = 0;
  const root = new Prng(scenario.seed).fork(`run:${policy.name}`);
  const routeRandom = root.fork("route");
  const dispatcher = new Dispatcher<SimRequest>({
    policy,
    maxQueue: scenario.maxQueue,
    now: () => now,
    random: () => routeRandom.next(),
  });

  const n = trace.arrivals.length;
  const record: RunRecord = {
    latency: new Float64Array(n),
    outcome: new Uint8Array(n),
    hit: new Uint8Array(n),
    deadlineMs: scenario.deadlineMs,
    firstArrival: n > 0 ? (trace.arrivals[0] as number) : 0,
    lastAnswer: 0,
    loadMs: 0,
    loads: 0,
  };
  const end = (request: SimRequest, outcome: number, hit = false) => {
    if (record.outcome[request.id] !== OUTCOME.pending) return;
    const late = outcome === OUTCOME.ok && now > request.deadline;
    record.outcome[request.id] = late ? OUTCOME.timedOut : outcome;
    record.latency[request.id] = Math.min(now, request.deadline) - request.arrivedAt;
    record.hit[request.id] = hit && !late ? 1 : 0;
    record.lastAnswer = Math.max(record.lastAnswer, Math.min(now, request.deadline));
  };

  const catalogue = new Map<string, ModelSpec>(scenario.models.map((model) => [model.name, model]));
  const dirty = new Set<SimReplica>();
  const releases: string[] = [];
  const behaviour: ReplicaBehaviour = options.noMisses
    ? { ...replicaBehaviour("baseline", scenario), limits: { maxModels: Infinity, maxBytes: Infinity } }
    : replicaBehaviour(policy.name, scenario);
  const replicas = new Map<string, SimReplica>();
  for (let index = 0; index < scenario.replicas; index += 1) {
    const replica: SimReplica = new SimReplica(
      `agent-${index}/0`,
      behaviour,
      catalogue,
      root.fork(`replica-${index}`),
      {
        now: () => now,
        schedule: (at, run) => events.schedule(at, run),
        finished: (request, hit) => {
          // A request answered after its deadline got its 504 at the deadline; its slot was busy anyway.
          if (record.outcome[request.id] === OUTCOME.pending) end(request, OUTCOME.ok, hit);
          releases.push(replica.address);
        },
        changed: () => dirty.add(replica),
      },
    );
    if (options.noMisses) for (const model of scenario.models) replica.preload(model.name);
    replicas.set(replica.address, replica);
  }
  const policies = Object.entries(options.policies ?? {});
  for (const [model, { minCopies = 0 }] of policies) {
    for (const replica of [...replicas.values()].slice(0, minCopies))
      replica.preload(model, { pinned: true });
  }
  const maxCopiesOf = new Map(
    policies.flatMap(([model, { maxCopies }]) =>
      maxCopies === undefined ? [] : [[model, maxCopies] as const],
    ),
  );

  const deliver = (dispatches: readonly Dispatch<SimRequest>[]) => {
    for (const dispatch of dispatches) replicas.get(dispatch.address)?.accept(dispatch.payload);
  };
  /** Reports and releases reach the dispatcher, whose answers may change replicas again. */
  const flush = () => {
    while (dirty.size > 0 || releases.length > 0) {
      for (const replica of [...dirty]) {
        dirty.delete(replica);
        deliver(dispatcher.upsertReplica(replica.address, replica.state()));
      }
      const address = releases.shift();
      if (address !== undefined) deliver(dispatcher.release(address));
    }
  };

  let expiryAt: number | undefined;
  let wakeAt: number | undefined;
  /** One timer each for the earliest deadline and the policy's next wakeup, as a Durable Object arms alarms. */
  const armTimers = () => {
    const deadline = dispatcher.nextDeadline();
    if (deadline !== undefined && (expiryAt === undefined || deadline < expiryAt || expiryAt < now)) {
      expiryAt = deadline;
      events.schedule(deadline, () => {
        if (expiryAt === deadline) expiryAt = undefined;
        for (const request of dispatcher.expire()) end(request, OUTCOME.timedOut);
      });
    }
    const wake = dispatcher.nextWakeup();
    if (wake !== undefined && (wakeAt === undefined || wake < wakeAt || wakeAt < now)) {
      wakeAt = wake;
      events.schedule(Math.max(wake, now), () => {
        if (wakeAt === wake) wakeAt = undefined;
        deliver(dispatcher.tick());
      });
    }
  };

  const arrive = (id: number) => {
    const model = scenario.models[trace.models[id] as number];
    if (model === undefined) throw new Error(`trace names model ${trace.models[id]}, not in the catalogue`);
    const request: SimRequest = {
      id,
      model: model.name,
      arrivedAt: now,
      deadline: now + scenario.deadlineMs,
    };
    const maxCopies = maxCopiesOf.get(model.name);
    const route = maxCopies === undefined ? { model: model.name } : { model: model.name, maxCopies };
    const result = dispatcher.submit(route, request, request.deadline);
    if (result.kind === "dispatched") deliver([result.dispatch]);
    else if (result.kind === "queue_full") end(request, OUTCOME.rejected);
    else if (result.kind === "unavailable" || result.kind === "not_found") end(request, OUTCOME.unavailable);
    if (id + 1 < n) events.schedule(trace.arrivals[id + 1] as number, () => arrive(id + 1));
  };

  for (const replica of replicas.values()) dispatcher.upsertReplica(replica.address, replica.state());
  if (n > 0) events.schedule(trace.arrivals[0] as number, () => arrive(0));
  for (let event = events.pop(); event !== undefined; event = events.pop()) {
    now = event.at;
    event.run();
    flush();
    armTimers();
  }

  for (const replica of replicas.values()) {
    record.loadMs += replica.loadingMs;
    record.loads += replica.loads;
  }
  const summary = summarise(options.noMisses ? "no misses" : policy.name, record);
  const { focus } = options;
  if (focus === undefined) return summary;
  const index = scenario.models.findIndex((model) => model.name === focus);
  return { ...summary, focus: summariseFocus(focus, record, (request) => trace.models[request] === index) };
}
