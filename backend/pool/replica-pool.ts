import type { Deadline } from "../../shared/deadline.ts";
import { SwitchyardError } from "../../shared/errors.ts";
import { whyNotServable } from "../../shared/models/servability.ts";
import { type ModelStatistics, mergeStatistics } from "../../shared/oip/statistics.ts";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import { Dispatcher } from "../../shared/routing/dispatcher.ts";
import { placementOrder } from "../../shared/routing/placement.ts";
import { routeOf } from "../../shared/routing/route-request.ts";
import { idlePool, type RoutingPolicy } from "../../shared/routing/types.ts";
import { withRequestId } from "../log.ts";
import type { InferCall, InferOutcome, LaneGrant, Replica } from "../replica/replica.ts";

export interface PooledInferCall extends InferCall {
  hint?: string;
  /**
   * The request asks classes of an output: its outcome, where it crosses to another thread, carries the
   * model's labels (without, only whether the model batches: a thousand labels cost ~70 us a message).
   */
  withLabels?: true;
  /** At it, the request is answered 504, whether it still waits for a replica or runs there. */
  deadline: Deadline;
}

export interface PooledOutcome extends InferOutcome {
  replica: string;
  timings: InferOutcome["timings"] & { poolQueueMs: number };
}

interface Pending {
  call: PooledInferCall;
  start: (address: string, queuedMs: number) => void;
  fail: (error: SwitchyardError) => void;
}

/**
 * The agent's replicas behind one door, for standalone mode: requests are routed with the same policy and
 * dispatcher the gateway uses, and wait in the same kind of bounded queue when every replica is busy.
 */
export class ReplicaPool {
  readonly replicas: readonly Replica[];
  readonly #byId = new Map<string, Replica>();
  readonly #dispatcher: Dispatcher<Pending>;
  readonly #maxQueue: number;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(replicas: readonly Replica[], options: { policy: RoutingPolicy; maxQueue: number }) {
    this.replicas = replicas;
    this.#maxQueue = options.maxQueue;
    this.#dispatcher = new Dispatcher<Pending>({
      policy: options.policy,
      maxQueue: options.maxQueue,
      now: Date.now,
    });
    for (const replica of replicas) {
      this.#byId.set(replica.id, replica);
      this.#dispatcher.upsertReplica(replica.id, replica.state());
      replica.onChange((state) => this.#startAll(this.#dispatcher.upsertReplica(replica.id, state)));
    }
  }

  /**
   * A lane to a model's session for an HTTP intake thread (backend/replica/lane-protocol.ts), when this pool
   * has one replica: with several, the router places every request, and only it may. Its queue bound is the
   * pool's.
   */
  async openLane(
    model: string,
    version: string | undefined,
    options: { revoke: () => void },
  ): Promise<(LaneGrant & { replica: string }) | undefined> {
    const [only, ...others] = this.replicas;
    if (only === undefined || others.length > 0) return undefined;
    const grant = await only.openLane(model, version, { maxQueue: this.#maxQueue, revoke: options.revoke });
    return grant === undefined ? undefined : { ...grant, replica: only.id };
  }

  states(): ReplicaState[] {
    return this.replicas.map((replica) => replica.state());
  }

  get queueLength(): number {
    return this.#dispatcher.queueLength;
  }

  /**
   * Runs a request on the replica the policy picks, waiting in the queue while every one is busy. At the
   * request's deadline it is answered 504 wherever it is: taken out of the queue, out of its replica's line
   * (the replica stops waiting for a slot, a batch or a load for it), or, while its run goes on (a run cannot
   * be interrupted), left to finish with its slot still taken and its answer dropped. When the call's signal
   * aborts (its client went away) it fails with the signal's reason the same way, and one waiting in the
   * queue gives its place to the next.
   */
  infer(call: PooledInferCall): Promise<PooledOutcome> {
    return new Promise<PooledOutcome>((resolve, reject) => {
      const { signal: caller } = call;
      if (caller?.aborted) return reject(caller.reason);
      // A deadline already passed on arrival (a gRPC call that expired on its way): 504 before it takes a
      // slot, rather than dispatched to a free replica ahead of the timer that would answer it.
      if (call.deadline.passed()) return reject(call.deadline.exceeded(`'${call.model}' did not answer`));
      /** While it waits in the queue: its caller leaving takes it out. */
      const leave = () => {
        if (this.#dispatcher.cancel((waiting) => waiting === pending) === undefined) return;
        reject(caller?.reason);
        this.#armTimer();
      };
      const pending: Pending = {
        call,
        fail: (error) => {
          caller?.removeEventListener("abort", leave);
          reject(error);
        },
        start: (address, queuedMs) => {
          caller?.removeEventListener("abort", leave);
          const replica = this.#byId.get(address);
          if (replica === undefined) return reject(new SwitchyardError("unavailable", "replica went away"));
          // Aborts at the deadline, or when the caller's signal does.
          const late = call.deadline.watch(`'${call.model}' did not answer`, { follow: caller });
          const { signal } = late;
          signal.addEventListener("abort", () => reject(signal.reason), { once: true });
          // Started by whichever request freed the slot: the log lines of this one's run carry its own id.
          withRequestId(call.requestId, () => replica.infer({ ...call, signal }))
            .then(
              (outcome) =>
                resolve({
                  ...outcome,
                  replica: address,
                  timings: { ...outcome.timings, poolQueueMs: queuedMs },
                }),
              reject,
            )
            .finally(() => {
              late.stop();
              this.#startAll(this.#dispatcher.release(address, request));
            });
        },
      };
      const request = routeOf(call);
      const result = this.#dispatcher.submit(request, pending, call.deadline.at);
      if (result.kind === "dispatched") pending.start(result.dispatch.address, 0);
      else if (result.kind === "queued") {
        caller?.addEventListener("abort", leave, { once: true });
        this.#armTimer();
      } else reject(result.error);
    });
  }

  /**
   * Loads a model on `copies` replicas (1 by default): the one the policy would send its next request to,
   * then those that hold it already, then those with the most free memory. With `pin` the copies stay
   * loaded until an unload (model control's load). Resolves once every copy is loaded.
   */
  async load(
    name: string,
    version?: string,
    options: { copies?: number; pin?: boolean } = {},
  ): Promise<ModelSignature> {
    const copies = options.copies ?? 1;
    if (copies > this.replicas.length) {
      throw new SwitchyardError(
        "bad_input",
        `${copies} copies of '${name}' asked for, but this agent has ${this.replicas.length} replica(s)`,
      );
    }
    const targets = this.#placement(name, version).slice(0, copies);
    if (targets.length < copies) {
      throw new SwitchyardError(
        "unavailable",
        `only ${targets.length} of ${copies} copies of '${name}' fit beside what is pinned on this agent`,
        { retryAfterSeconds: 5 },
      );
    }
    const pin = options.pin === true;
    const [first] = await Promise.all(targets.map((replica) => replica.load(name, version, { pin })));
    if (first === undefined) throw new SwitchyardError("unavailable", "the agent has no replica");
    return first;
  }

  /** Loads a model on the replica the gateway chose (its own placement of copies). */
  loadOn(
    replicaId: string,
    name: string,
    version: string | undefined,
    options: { pin: boolean },
  ): Promise<ModelSignature> {
    return this.replica(replicaId).load(name, version, options);
  }

  /** The replica with this id; 404 when there is none. */
  replica(replicaId: string): Replica {
    const replica = this.#byId.get(replicaId);
    if (replica === undefined) {
      throw new SwitchyardError(
        "not_found",
        `this agent has no replica '${replicaId}' (it has ${[...this.#byId.keys()].join(", ")})`,
      );
    }
    return replica;
  }

  /** Replicas in the order copies of a model are placed on them. */
  #placement(name: string, version: string | undefined): Replica[] {
    const decision = this.#dispatcher.policy.route(
      { model: name, ...(version === undefined ? {} : { version }) },
      idlePool(this.#dispatcher.replicas().map((replica) => ({ ...replica, inFlight: 0 }))),
      { now: Date.now(), random: Math.random },
    );
    const chosen = decision.kind === "dispatch" ? this.#byId.get(decision.address) : undefined;
    const rest = placementOrder(
      this.replicas
        .filter((replica) => replica !== chosen)
        .map((replica) => ({ replica, state: replica.state() })),
      { name, version },
    ).map(({ replica }) => replica);
    return chosen === undefined ? rest : [chosen, ...rest];
  }

  /** Unloads the model (every version, or the one given) from every replica (or one), pinned or not. */
  async unload(name: string, version?: string, replicaId?: string): Promise<boolean> {
    const results = await Promise.all(
      this.#targets(replicaId).map((replica) => replica.unload(name, version)),
    );
    return results.some(Boolean);
  }

  /** Lets the model be evicted again on every replica (or one): a pin the gateway no longer wants. */
  unpin(name: string, version?: string, replicaId?: string): boolean {
    return this.#targets(replicaId)
      .map((replica) => replica.unpin(name, version))
      .some(Boolean);
  }

  /** The gateway's keep-alive for a model on every replica (undefined: back to its own). */
  setKeepAlive(name: string, keepAliveMs: number | undefined): void {
    for (const replica of this.replicas) replica.setKeepAlive(name, keepAliveMs);
  }

  #targets(replicaId: string | undefined): readonly Replica[] {
    return replicaId === undefined ? this.replicas : [this.replica(replicaId)];
  }

  /** Resolves once every replica counted what its lanes answered so far (Replica.lanesReported). */
  async lanesReported(): Promise<void> {
    await Promise.all(this.replicas.map((replica) => replica.lanesReported()));
  }

  /**
   * The replicas' inference statistics, summed per model version; await lanesReported() first to count every
   * request answered so far.
   */
  statistics(name?: string, version?: string): ModelStatistics[] {
    return mergeStatistics(this.replicas.flatMap((replica) => replica.statistics(name, version)));
  }

  /**
   * Why a model of the repository could not be served here now, or undefined when a request for it would
   * be: it must fit some replica's memory budget, and its last load must not have failed on every replica.
   */
  whyNotServable(model: { name: string; version: string; bytes?: number | undefined }): string | undefined {
    return whyNotServable(model, this.states());
  }

  async close(): Promise<void> {
    clearTimeout(this.#timer);
    await Promise.all(this.replicas.map((replica) => replica.close()));
  }

  /** Starts what the dispatcher decided, then sets the timer for what it wants next. */
  #startAll(dispatches: ReturnType<Dispatcher<Pending>["release"]>): void {
    for (const dispatch of dispatches) dispatch.payload.start(dispatch.address, dispatch.queuedMs);
    this.#armTimer();
  }

  /**
   * One timer for the earlier of the queue's next deadline (those requests fail with 504) and the policy's
   * next wakeup (a bounded wait of switchyard's ran out: free slots are offered to the queue again).
   */
  #armTimer(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const deadline = this.#dispatcher.nextDeadline();
    const wakeup = this.#dispatcher.nextWakeup();
    const next = Math.min(deadline ?? Infinity, wakeup ?? Infinity);
    if (!Number.isFinite(next)) return;
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        for (const pending of this.#dispatcher.expire()) {
          pending.fail(pending.call.deadline.exceeded(`no replica for '${pending.call.model}' became free`));
        }
        this.#startAll(this.#dispatcher.tick());
      },
      Math.max(0, next - Date.now()),
    );
    this.#timer.unref?.();
  }
}
