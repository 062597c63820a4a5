/**
 * An intake thread's lanes (backend/replica/lane-protocol.ts): the ports to sessions' threads that the main
 * thread granted it, by the model key requests name. A request for a model with an open lane goes down it;
 * any other goes to the main thread. A lane is retired when its lifetime ends or the main thread revokes it
 * (its model is being unloaded): no new request takes it, and it closes once its requests are answered,
 * which ends its lease on the session.
 */

import type { MessagePort } from "node:worker_threads";
import { SwitchyardError } from "../../shared/errors.ts";
import { requestedModelKey } from "../../shared/model-names.ts";
import type { OutputClasses } from "../../shared/oip/classification.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import type { ModelRef } from "../../shared/protocol/replica-state.ts";
import type { PooledInferCall, PooledOutcome } from "../pool/replica-pool.ts";
import { requestBuffers } from "../replica/buffer-pool.ts";
import type { LaneAnswer, LaneRequest } from "../replica/lane-protocol.ts";
import { fromWireError, toWireError } from "../wire-error.ts";
import { inputBuffers, type LaneGrantMessage, type LaneNotice } from "./intake-protocol.ts";
import { type GroupLane, LaneGroups, type LaneSettlement } from "./lane-groups.ts";
import { eachMessage, TickMailbox } from "./tick-mailbox.ts";

interface Lane {
  id: number;
  key: string;
  port: MessagePort;
  mailbox: TickMailbox<LaneRequest>;
  model: ModelRef;
  replica: string;
  classes: OutputClasses;
  retired: boolean;
  timer: ReturnType<typeof setTimeout>;
  nextId: number;
  /** Requests sent and not yet settled, by id: each hears its answer, or that the lane ended. */
  waiting: Map<number, (arrival: LaneAnswer | Extract<LaneSettlement, { type: "gone" }>) => void>;
  /** With a batching model: its requests gathered here and sent as groups (lane-groups.ts). */
  groups: LaneGroups | undefined;
}

export class IntakeLanes {
  readonly #notify: (notice: LaneNotice) => void;
  /** Lanes that take requests, by the key requests name their model with (name, or name:version). */
  readonly #open = new Map<string, Lane>();
  readonly #byId = new Map<number, Lane>();

  constructor(notify: (notice: LaneNotice) => void) {
    this.#notify = notify;
  }

  /** Requests that carry no routing hint, for a model with an open lane, take it. */
  has(call: PooledInferCall): boolean {
    return call.hint === undefined && this.#open.has(requestedModelKey(call.model, call.version));
  }

  open(grant: LaneGrantMessage): void {
    const { key, settings } = grant;
    const lane: Lane = {
      id: grant.laneId,
      key,
      port: grant.port,
      mailbox: new TickMailbox<LaneRequest>(grant.port, (request, error) => {
        if (request.type === "infer")
          lane.waiting.get(request.id)?.({ type: "failure", id: request.id, error: toWireError(error) });
      }),
      model: grant.model,
      replica: grant.replica,
      classes: grant.classes,
      retired: false,
      timer: setTimeout(() => this.#retire(lane), grant.lifetimeMs),
      nextId: 0,
      waiting: new Map(),
      groups: undefined,
    };
    const maxRows = settings.batching?.maxBatchSize;
    if (maxRows !== undefined) lane.groups = new LaneGroups(this.#groupLane(lane), settings, maxRows);
    lane.timer.unref();
    // A lane granted while an older one for the key still drains replaces it for new requests.
    const older = this.#open.get(key);
    if (older !== undefined) this.#retire(older);
    this.#open.set(key, lane);
    this.#byId.set(lane.id, lane);
    grant.port.on(
      "message",
      eachMessage((answer: LaneAnswer) => lane.waiting.get(answer.id)?.(answer)),
    );
    // The session's thread is gone (its model was released, or its worker died): nothing more will answer.
    grant.port.once("close", () => {
      this.#retire(lane);
      const gone = new SwitchyardError("unavailable", `the session of '${lane.model.name}' went away`);
      lane.groups?.fail(gone);
      for (const settle of [...lane.waiting.values()]) settle({ type: "gone", error: gone });
      this.#closeIfDrained(lane);
    });
  }

  /** The main thread revoked it (its model is being unloaded). */
  revoke(laneId: number): void {
    const lane = this.#byId.get(laneId);
    if (lane !== undefined) this.#retire(lane);
  }

  /** Runs the call on its model's lane (has() said there is one): in a group when its model batches. */
  infer(call: PooledInferCall): Promise<PooledOutcome> {
    const lane = this.#open.get(requestedModelKey(call.model, call.version)) as Lane;
    if (lane.groups?.takes(call)) return lane.groups.add(call);
    return this.#alone(lane, call);
  }

  /** The call as a lane request of its own. */
  #alone(lane: Lane, call: PooledInferCall): Promise<PooledOutcome> {
    return new Promise<PooledOutcome>((resolve, reject) => {
      // At the deadline, or when the client leaves: the request is dropped there if it still waits.
      const late = call.deadline.watch(`'${call.model}' did not answer`, { follow: call.signal });
      if (late.signal.aborted) return reject(SwitchyardError.from(late.signal.reason));
      const leave = () => {
        lane.mailbox.post({ type: "abort", id });
        lane.waiting.get(id)?.({ type: "gone", error: SwitchyardError.from(late.signal.reason) });
      };
      late.signal.addEventListener("abort", leave, { once: true });
      const id = this.#send(
        lane,
        {
          requests: 1,
          requestIds: [call.requestId ?? ""],
          inputs: call.inputs,
          ...(call.outputs === undefined ? {} : { outputs: call.outputs }),
          deadlineAt: call.deadline.at,
          budgetMs: call.deadline.budgetMs,
        },
        // The tensors were decoded for this request alone, from a body it owns: they move with it.
        inputBuffers(call.inputs),
        (settlement) => {
          late.stop();
          late.signal.removeEventListener("abort", leave);
          if (settlement.type === "outcome") {
            for (const spare of settlement.spare) requestBuffers.release(spare);
            resolve(outcomeOf(lane, settlement, settlement.outputs, 0));
          } else reject(settlement.type === "gone" ? settlement.error : fromWireError(settlement.error));
        },
      );
    });
  }

  /** Sends an infer request down the lane; `settle` hears how it ended, once. Returns its id. */
  #send(
    lane: Lane,
    request: Omit<Extract<LaneRequest, { type: "infer" }>, "type" | "id">,
    transfer: ArrayBuffer[],
    settle: (settlement: LaneSettlement) => void,
  ): number {
    lane.nextId += 1;
    const id = lane.nextId;
    const sentAt = performance.now();
    lane.waiting.set(id, (settlement) => {
      if (!lane.waiting.delete(id)) return;
      settle(
        settlement.type === "outcome"
          ? { ...settlement, roundTripMs: performance.now() - sentAt }
          : settlement,
      );
      this.#closeIfDrained(lane);
    });
    lane.mailbox.post({ type: "infer", id, ...request }, transfer);
    return id;
  }

  #groupLane(lane: Lane): GroupLane {
    return {
      send: (request, transfer, settle) => this.#send(lane, request, transfer, settle),
      abort: (id) => lane.mailbox.post({ type: "abort", id }),
      flush: () => lane.mailbox.flush(),
      alone: (call) => this.#alone(lane, call),
      outcome: (answer, outputs, waitedMs) => outcomeOf(lane, answer, outputs, waitedMs),
      changed: () => this.#closeIfDrained(lane),
    };
  }

  #retire(lane: Lane): void {
    if (lane.retired) return;
    lane.retired = true;
    clearTimeout(lane.timer);
    if (this.#open.get(lane.key) === lane) this.#open.delete(lane.key);
    this.#notify({ type: "lane-retired", laneId: lane.id });
    this.#closeIfDrained(lane);
  }

  #closeIfDrained(lane: Lane): void {
    if (!lane.retired || lane.waiting.size > 0 || lane.groups?.busy || !this.#byId.has(lane.id)) return;
    this.#byId.delete(lane.id);
    // After what the mailbox still holds for it (aborts).
    lane.mailbox.flush();
    lane.port.close();
    this.#notify({ type: "lane-closed", laneId: lane.id });
  }
}

/**
 * What a request's client gets from its lane's answer: `waitedMs` is its wait on this thread for a group.
 * Its infer is the lane's round trip less its wait in the session's line: the way to the session's thread
 * and back is in it (this thread's wait to post the request and to read the answer included), as the
 * replica's infer holds the way from the main thread and back; `run` is onnxruntime's part.
 */
function outcomeOf(
  lane: Lane,
  answer: Extract<LaneSettlement, { type: "outcome" }>,
  outputs: Tensor[],
  waitedMs: number,
): PooledOutcome {
  return {
    model: lane.model,
    replica: lane.replica,
    outputs,
    cache: "hit",
    timings: {
      poolQueueMs: 0,
      queueMs: waitedMs + answer.timings.queueMs,
      loadMs: 0,
      inferMs: Math.max(answer.timings.runMs, answer.roundTripMs - answer.timings.queueMs),
      sessionMs: answer.timings.sessionMs,
    },
    batch: answer.batch,
    classes: lane.classes,
  };
}
