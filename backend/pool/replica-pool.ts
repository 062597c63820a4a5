import { SwitchyardError } from "../../shared/errors.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import { Dispatcher } from "../../shared/routing/dispatcher.ts";
import type { RoutingPolicy } from "../../shared/routing/types.ts";
import type { InferCall, InferOutcome, ModelSignature, Replica } from "../replica/replica.ts";

export interface PooledInferCall extends InferCall {
  hint?: string;
  /** Epoch milliseconds after which a request still waiting for a replica fails with 504. */
  deadline: number;
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
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(replicas: readonly Replica[], options: { policy: RoutingPolicy; maxQueue: number }) {
    this.replicas = replicas;
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

  states(): ReplicaState[] {
    return this.replicas.map((replica) => replica.state());
  }

  get queueLength(): number {
    return this.#dispatcher.queueLength;
  }

  infer(call: PooledInferCall): Promise<PooledOutcome> {
    return new Promise<PooledOutcome>((resolve, reject) => {
      const pending: Pending = {
        call,
        fail: reject,
        start: (address, queuedMs) => {
          const replica = this.#byId.get(address);
          if (replica === undefined) return reject(new SwitchyardError("unavailable", "replica went away"));
          replica
            .infer(call)
            .then(
              (outcome) =>
                resolve({
                  ...outcome,
                  replica: address,
                  timings: { ...outcome.timings, poolQueueMs: queuedMs },
                }),
              reject,
            )
            .finally(() => this.#startAll(this.#dispatcher.release(address, request)));
        },
      };
      const request = {
        model: call.model,
        ...(call.version === undefined ? {} : { version: call.version }),
        ...(call.hint === undefined ? {} : { hint: call.hint }),
      };
      try {
        const result = this.#dispatcher.submit(request, pending, call.deadline);
        if ("address" in result) pending.start(result.address, 0);
        else this.#armTimer();
      } catch (error) {
        reject(SwitchyardError.from(error));
      }
    });
  }

  /** Loads a model on the replica the policy would send its next request to. */
  async load(name: string, version?: string): Promise<ModelSignature> {
    const decision = this.#dispatcher.policy.route(
      { model: name, ...(version === undefined ? {} : { version }) },
      this.#dispatcher.replicas().map((replica) => ({ ...replica, inFlight: 0 })),
      { now: Date.now(), random: Math.random },
    );
    const target = decision.kind === "dispatch" ? this.#byId.get(decision.address) : this.replicas[0];
    if (target === undefined) throw new SwitchyardError("unavailable", "the agent has no replica");
    return target.load(name, version);
  }

  async unload(name: string, version?: string): Promise<boolean> {
    const results = await Promise.all(this.replicas.map((replica) => replica.unload(name, version)));
    return results.some(Boolean);
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
          pending.fail(
            new SwitchyardError(
              "deadline_exceeded",
              `no replica was free for '${pending.call.model}' before the deadline`,
            ),
          );
        }
        this.#startAll(this.#dispatcher.tick());
      },
      Math.max(0, next - Date.now()),
    );
    this.#timer.unref?.();
  }
}
