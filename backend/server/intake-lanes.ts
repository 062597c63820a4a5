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
import type { ModelRef } from "../../shared/protocol/replica-state.ts";
import type { PooledInferCall, PooledOutcome } from "../pool/replica-pool.ts";
import { requestBuffers } from "../replica/buffer-pool.ts";
import type { LaneAnswer, LaneRequest } from "../replica/lane-protocol.ts";
import { fromWireError, toWireError } from "../wire-error.ts";
import { inputBuffers, type LaneGrantMessage, type LaneNotice } from "./intake-protocol.ts";
import { eachMessage, TickMailbox } from "./tick-mailbox.ts";

interface Lane {
  id: number;
  key: string;
  port: MessagePort;
  mailbox: TickMailbox<LaneRequest>;
  model: ModelRef;
  replica: string;
  retired: boolean;
  timer: ReturnType<typeof setTimeout>;
  nextId: number;
  /** Requests sent and not yet settled, by id. */
  waiting: Map<number, (answer: LaneAnswer | { type: "gone"; error: SwitchyardError }) => void>;
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
    const { key } = grant;
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
      retired: false,
      timer: setTimeout(() => this.#retire(lane), grant.lifetimeMs),
      nextId: 0,
      waiting: new Map(),
    };
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
      for (const settle of [...lane.waiting.values()]) settle({ type: "gone", error: gone });
      this.#closeIfDrained(lane);
    });
  }

  /** The main thread revoked it (its model is being unloaded). */
  revoke(laneId: number): void {
    const lane = this.#byId.get(laneId);
    if (lane !== undefined) this.#retire(lane);
  }

  /** Runs the call on its model's lane (has() said there is one). */
  infer(call: PooledInferCall): Promise<PooledOutcome> {
    const lane = this.#open.get(requestedModelKey(call.model, call.version)) as Lane;
    lane.nextId += 1;
    const id = lane.nextId;
    return new Promise<PooledOutcome>((resolve, reject) => {
      // At the deadline, or when the client leaves: the request is dropped there if it still waits.
      const late = call.deadline.watch(`'${call.model}' did not answer`, { follow: call.signal });
      const leave = () => {
        lane.mailbox.post({ type: "abort", id });
        settle({ type: "gone", error: SwitchyardError.from(late.signal.reason) });
      };
      late.signal.addEventListener("abort", leave, { once: true });
      const settle = (answer: LaneAnswer | { type: "gone"; error: SwitchyardError }) => {
        if (!lane.waiting.delete(id)) return;
        late.stop();
        late.signal.removeEventListener("abort", leave);
        if (answer.type === "outcome") {
          for (const spare of answer.spare) requestBuffers.release(spare);
          resolve({
            model: lane.model,
            replica: lane.replica,
            outputs: answer.outputs,
            cache: "hit",
            timings: {
              poolQueueMs: 0,
              queueMs: answer.timings.queueMs,
              loadMs: 0,
              inferMs: answer.timings.runMs,
              sessionMs: answer.timings.sessionMs,
            },
            batch: answer.batch,
          });
        } else reject(answer.type === "gone" ? answer.error : fromWireError(answer.error));
        this.#closeIfDrained(lane);
      };
      lane.waiting.set(id, settle);
      lane.mailbox.post(
        {
          type: "infer",
          id,
          inputs: call.inputs,
          ...(call.outputs === undefined ? {} : { outputs: call.outputs }),
          deadlineAt: call.deadline.at,
          budgetMs: call.deadline.budgetMs,
        },
        // The tensors were decoded for this request alone, from a body it owns: they move with it.
        inputBuffers(call.inputs),
      );
    });
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
    if (!lane.retired || lane.waiting.size > 0 || !this.#byId.has(lane.id)) return;
    this.#byId.delete(lane.id);
    // After what the mailbox still holds for it (aborts).
    lane.mailbox.flush();
    lane.port.close();
    this.#notify({ type: "lane-closed", laneId: lane.id });
  }
}
