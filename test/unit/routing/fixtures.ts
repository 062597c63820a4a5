import type { LoadedModel, ReplicaState } from "../../../shared/protocol/replica-state.ts";
import { DemandTracker } from "../../../shared/routing/demand.ts";
import type {
  PendingLoad,
  PoolView,
  QueuedView,
  ReplicaView,
  RoutingContext,
} from "../../../shared/routing/types.ts";
import { loadedModel, replicaState } from "../../support/replica-state.ts";

// Hand-made pool states for the policies' tests: small, explicit, and read like the situation they stage.

export const GiB = 2 ** 30;

/** A loaded model: version "1", 1 GiB, idle and unused unless told otherwise. */
export const model = (name: string, fields: Partial<LoadedModel> = {}): LoadedModel =>
  loadedModel(name, { bytes: GiB, ...fields });

export interface ReplicaFields extends Partial<ReplicaState> {
  /** The dispatcher's count of requests in flight there. */
  busy?: number;
  hints?: string[];
  draining?: boolean;
  pendingLoads?: PendingLoad[];
}

/** A replica with 4 slots, room for 3 models and 8 GiB, holding nothing unless told otherwise. */
export function replica(address: string, fields: ReplicaFields = {}): ReplicaView {
  const { busy = 0, hints = [], draining = false, pendingLoads, ...state } = fields;
  const view: ReplicaView = {
    address,
    inFlight: busy,
    hints,
    draining,
    state: replicaState({
      id: address,
      maxConcurrency: 4,
      inFlight: busy,
      memoryBudgetBytes: 8 * GiB,
      ...state,
    }),
  };
  if (pendingLoads !== undefined) view.pendingLoads = pendingLoads;
  return view;
}

/** Timings as agents report them: every model loads in `loadMs` and runs in `inferMs` on this replica. */
export function timings(names: string[], loadMs = 2_000, inferMs = 50): ReplicaState["timings"] {
  return Object.fromEntries(names.map((name) => [`${name}:1`, { loadMs, inferMs, loads: 1, runs: 10 }]));
}

export const waiting = (model: string, enqueuedAt: number): QueuedView => ({
  request: { model },
  enqueuedAt,
});

/** The pool a policy decides on: these replicas, and the queue (oldest first), grouped by model as the dispatcher does. */
export function poolOf(replicas: readonly ReplicaView[], queue: readonly QueuedView[] = []): PoolView {
  const waitingByModel = new Map<string, QueuedView[]>();
  for (const queued of queue) {
    const line = waitingByModel.get(queued.request.model);
    if (line === undefined) waitingByModel.set(queued.request.model, [queued]);
    else line.push(queued);
  }
  return { replicas, queue, waitingByModel };
}

/**
 * A routing context at `now` whose random draws come from `draws` in turn (then 0.5), with demand as given
 * in requests per second (recorded as a steady stream over the last minute).
 */
export function contextAt(
  now: number,
  fields: {
    draws?: number[];
    demand?: Record<string, number>;
  } = {},
): RoutingContext {
  const draws = [...(fields.draws ?? [])];
  const context: RoutingContext = { now, random: () => draws.shift() ?? 0.5 };
  if (fields.demand !== undefined) {
    const tracker = new DemandTracker();
    for (const [name, perSecond] of Object.entries(fields.demand)) {
      const every = 1000 / perSecond;
      for (let at = now - 60_000; at <= now; at += every) tracker.record(name, at);
    }
    context.demand = tracker;
  }
  return context;
}

/** Where the decision sends the request, or its kind when it goes nowhere now. */
export function targetOf(decision: { kind: string; address?: string }): string {
  return decision.kind === "dispatch" && decision.address !== undefined ? decision.address : decision.kind;
}
