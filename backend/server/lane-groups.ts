/**
 * A batching model's requests on one intake thread's lane, gathered there and sent as one lane request: their
 * inputs stacked along the first dimension, their outputs split back into each request's rows when the
 * answer comes. The session's thread runs every lane's requests one after another, and what it did per
 * request (a message to clone, a check, a place in its batcher, an answer to copy and post) was half of its
 * busy time under load on the H200 while onnxruntime had the other half
 * (bench/results/hot-path-cuda-lane-groups.md); grouped, it does that once per group, and the intake
 * threads, several of them, each do their share of the per-request work.
 *
 * A group goes when fewer than GROUPS_OUT of the lane's groups that went that way are out (so a request that
 * finds the lane idle goes at once, alone: no wait at low load), or as soon as it is full (the model's max
 * batch size; it counts nothing against the others); what arrives meanwhile gathers into the next. Each
 * request is checked against the model before it joins (tensor-checks.ts), so a bad one fails alone; when the
 * run of a group still fails on its inputs, each of its requests runs again alone, on its own inputs (kept
 * here until the group is answered, then their bodies go back to the buffer pool), as the batcher does with
 * a failed batch. A request whose client leaves or whose deadline passes is answered at once; its rows are
 * computed with its group's and dropped.
 */
import { SwitchyardError } from "../../shared/errors.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import type { PooledInferCall, PooledOutcome } from "../pool/replica-pool.ts";
import { requestBuffers } from "../replica/buffer-pool.ts";
import type { LaneAnswer, LaneRequest, LaneSettings } from "../replica/lane-protocol.ts";
import { batchSizeOf, splitRows, stackInputs, stackingKey } from "../replica/tensor-batch.ts";
import { checkInputs, wantedOutputs } from "../replica/tensor-checks.ts";
import { fromWireError } from "../wire-error.ts";
import { inputBuffers } from "./intake-protocol.ts";

/**
 * A lane's groups out at once: one at the session, and the next on its way or waiting there, so the
 * session's batcher has the next group when a run ends (bench/results/hot-path-cuda-lane-groups.md).
 */
const GROUPS_OUT = 2;

/**
 * The largest request that joins a group. Stacking copies a request's inputs once more than running it alone
 * does (the session stacks its batch anyway), which for a small request costs less than the session's fixed
 * work per request, and for a 4.9 MB image more (about half a millisecond): such requests go alone, as before.
 */
const GROUP_MAX_REQUEST_BYTES = 64 * 1024;

/**
 * What a lane request came to: its answer, with the time from its send to the answer's arrival here (the way
 * there and back included), or the lane's end (the session went away).
 */
export type LaneSettlement =
  | (Extract<LaneAnswer, { type: "outcome" }> & { roundTripMs: number })
  | Extract<LaneAnswer, { type: "failure" }>
  | { type: "gone"; error: SwitchyardError };

/** The lane underneath (intake-lanes.ts). */
export interface GroupLane {
  /** Sends one infer request down the lane; `settle` hears how it ended. Returns its id there. */
  send(
    request: Omit<Extract<LaneRequest, { type: "infer" }>, "type" | "id">,
    transfer: ArrayBuffer[],
    settle: (settlement: LaneSettlement) => void,
  ): number;
  /** Drops a request the lane still has waiting (every request of a group left). */
  abort(id: number): void;
  /** Posts what was sent in this turn now, not in the next turn's check phase. */
  flush(): void;
  /** A request run alone on the lane, as one that cannot join a group is (after its group failed). */
  alone(call: PooledInferCall): Promise<PooledOutcome>;
  /** The outcome a request's client gets from an answer: its outputs, timings with `waitedMs` added. */
  outcome(
    answer: Extract<LaneSettlement, { type: "outcome" }>,
    outputs: Tensor[],
    waitedMs: number,
  ): PooledOutcome;
  /** Something changed that may let the lane close (a group settled, a request left before it was sent). */
  changed(): void;
}

interface Member {
  call: PooledInferCall;
  rows: number;
  arrivedAt: number;
  group: Group;
  /** Answered (or failed, or left): nothing more reaches its client. */
  done: boolean;
  resolve(outcome: PooledOutcome): void;
  reject(error: unknown): void;
  /** Ends the watch on its deadline and client. */
  unwatch(): void;
}

interface Group {
  /** Requests stack together when their inputs agree beyond the first dimension and they want the same outputs. */
  key: string;
  wanted: string[];
  rows: number;
  members: Member[];
  /** Its id on the lane once sent. */
  id?: number;
  sentAt?: number;
  /** Sent because fewer than GROUPS_OUT were out (a full one goes whatever is out, and is not counted). */
  counted?: boolean;
}

export class LaneGroups {
  readonly #lane: GroupLane;
  readonly #settings: LaneSettings;
  readonly #maxRows: number;
  /** Groups gathering, by key. */
  readonly #gathering = new Map<string, Group>();
  /** Full groups, to go at the next flush whatever is out. */
  #full: Group[] = [];
  /** Groups that went because there was room (a full one goes whatever is out, and counts nothing). */
  #out = 0;
  /** Groups sent and not settled, of either kind: the lane stays open while there are any. */
  #sent = 0;
  #flushDue = false;

  constructor(lane: GroupLane, settings: LaneSettings, maxRows: number) {
    this.#lane = lane;
    this.#settings = settings;
    this.#maxRows = maxRows;
  }

  /** Requests gathered and not yet sent, and groups out: the lane cannot close while there are any. */
  get busy(): boolean {
    return this.#sent > 0 || this.#gathering.size > 0 || this.#full.length > 0;
  }

  /**
   * Whether `call` can join a group: its inputs are small (GROUP_MAX_REQUEST_BYTES) and share a batch size
   * within the model's max batch size.
   */
  takes(call: PooledInferCall): boolean {
    const rows = batchSizeOf(call.inputs);
    return (
      rows !== undefined &&
      rows >= 1 &&
      rows <= this.#maxRows &&
      // A BYTES tensor stacks by reference to its request's body, which would then have to move with the group
      // and could not serve a run of the request alone: such requests go alone.
      call.inputs.every((input) => !Array.isArray(input.data)) &&
      inputBytes(call.inputs) <= GROUP_MAX_REQUEST_BYTES
    );
  }

  /** Runs `call` (takes() said it can) in a group. Rejects at once when its inputs do not fit the model. */
  add(call: PooledInferCall): Promise<PooledOutcome> {
    const { model, inputs, outputs } = this.#settings;
    let wanted: string[];
    try {
      checkInputs(model, call.inputs, inputs);
      wanted = wantedOutputs(model, outputs, call.outputs);
    } catch (error) {
      return Promise.reject(error);
    }
    const rows = batchSizeOf(call.inputs) as number;
    const key = `${stackingKey(call.inputs)}|${wanted.join("\u0000")}`;
    return new Promise<PooledOutcome>((resolve, reject) => {
      const late = call.deadline.watch(`'${call.model}' did not answer`, { follow: call.signal });
      if (late.signal.aborted) return reject(SwitchyardError.from(late.signal.reason));
      let group = this.#gathering.get(key);
      if (group !== undefined && group.rows + rows > this.#maxRows) {
        // Full: it goes at the next flush, and this request starts the next group.
        this.#gathering.delete(key);
        this.#full.push(group);
        group = undefined;
      }
      if (group === undefined) {
        group = { key, wanted, rows: 0, members: [] };
        this.#gathering.set(key, group);
      }
      const member: Member = {
        call,
        rows,
        arrivedAt: performance.now(),
        group,
        done: false,
        resolve,
        reject,
        unwatch: () => {
          late.stop();
          late.signal.removeEventListener("abort", leave);
        },
      };
      const leave = () => this.#leave(member, SwitchyardError.from(late.signal.reason));
      late.signal.addEventListener("abort", leave, { once: true });
      group.members.push(member);
      group.rows += rows;
      if (group.rows === this.#maxRows) {
        this.#gathering.delete(key);
        this.#full.push(group);
      }
      this.#flushSoon();
    });
  }

  /** The lane's session went away: requests not yet sent fail with it (those out hear it from the lane). */
  fail(error: SwitchyardError): void {
    const unsent = [...this.#gathering.values(), ...this.#full];
    this.#gathering.clear();
    this.#full = [];
    for (const group of unsent) for (const member of group.members) this.#settleMember(member, error);
  }

  /** Sends what gathered in this turn (requests read together travel together), as the rules above allow. */
  #flushSoon(): void {
    if (this.#flushDue) return;
    this.#flushDue = true;
    setImmediate(() => {
      this.#flushDue = false;
      const full = this.#full;
      this.#full = [];
      for (const group of full) this.#send(group, false);
      // Every key gathered goes together when there is room (none waits behind another key's full groups).
      if (this.#out < GROUPS_OUT) {
        const gathered = [...this.#gathering.values()];
        this.#gathering.clear();
        for (const group of gathered) this.#send(group, true);
      }
      // This is the check phase already: posted from here, the lane's mailbox would wait a whole turn more.
      this.#lane.flush();
    });
  }

  #send(group: Group, counted: boolean): void {
    const live = group.members.filter((member) => !member.done);
    if (live.length === 0) return;
    group.members = live;
    // Several requests are copied into the group's own buffers, which move; their bodies stay here, for a run
    // of each alone should the group fail, and go back to the pool once it is answered. A request alone moves.
    const stacked = stackInputs(live.map((member) => member.call.inputs));
    const last = live.reduce((latest, member) =>
      member.call.deadline.at > latest.call.deadline.at ? member : latest,
    );
    group.counted = counted;
    if (counted) this.#out += 1;
    this.#sent += 1;
    group.sentAt = performance.now();
    group.id = this.#lane.send(
      {
        requests: live.length,
        requestIds: live.map((member) => member.call.requestId ?? ""),
        inputs: stacked,
        outputs: group.wanted,
        deadlineAt: last.call.deadline.at,
        budgetMs: last.call.deadline.budgetMs,
      },
      inputBuffers(stacked),
      (settlement) => this.#settled(group, settlement),
    );
  }

  #settled(group: Group, settlement: LaneSettlement): void {
    if (group.counted) this.#out -= 1;
    this.#sent -= 1;
    const { members } = group;
    try {
      if (settlement.type === "outcome") {
        for (const spare of settlement.spare) requestBuffers.release(spare);
        this.#answer(group, settlement);
      } else if (
        settlement.type === "failure" &&
        settlement.error.code === "bad_input" &&
        members.length > 1
      ) {
        // The model refused the stacked inputs (or an output did not keep the batch's rows: session-lanes.ts):
        // each request runs again alone, on its own inputs, so only the one at fault fails.
        for (const member of members) {
          if (member.done) continue;
          member.done = true;
          member.unwatch();
          this.#lane.alone(member.call).then(member.resolve, member.reject);
        }
      } else {
        const error = settlement.type === "gone" ? settlement.error : fromWireError(settlement.error);
        for (const member of members) this.#settleMember(member, error);
      }
    } catch (error) {
      // Nothing above should throw; if it did, no member may be left waiting for an answer that came.
      for (const member of members) this.#settleMember(member, SwitchyardError.from(error));
    }
    if (this.#gathering.size > 0 || this.#full.length > 0) this.#flushSoon();
    this.#lane.changed();
  }

  /** Each member its rows of the group's outputs (views, no copy); the bodies of a group of several go back. */
  #answer(group: Group, settlement: Extract<LaneSettlement, { type: "outcome" }>): void {
    const { members } = group;
    const sizes = members.map((member) => member.rows);
    const split =
      members.length === 1
        ? settlement.outputs.map((output) => [output])
        : settlement.outputs.map((output) => splitRows(output, sizes));
    if (members.length > 1) {
      for (const member of members) {
        for (const buffer of inputBuffers(member.call.inputs)) requestBuffers.release(buffer);
      }
    }
    members.forEach((member, index) => {
      if (member.done) return;
      const outputs = split.map((rows) => rows[index] as Tensor);
      const waitedMs = (group.sentAt ?? member.arrivedAt) - member.arrivedAt;
      this.#settleMember(member, this.#lane.outcome(settlement, outputs, waitedMs));
    });
  }

  /** Its client left or its deadline passed: answered now; its group goes on without it. */
  #leave(member: Member, reason: SwitchyardError): void {
    if (member.done) return;
    this.#settleMember(member, reason);
    const { group } = member;
    if (group.id === undefined) {
      // Not sent yet: out of its group, and the group out of the lane when it was alone.
      group.members = group.members.filter((each) => each !== member);
      group.rows -= member.rows;
      if (group.members.length === 0) {
        if (this.#gathering.get(group.key) === group) this.#gathering.delete(group.key);
        this.#full = this.#full.filter((each) => each !== group);
        this.#lane.changed();
      }
    } else if (group.members.every((each) => each.done)) this.#lane.abort(group.id);
  }

  #settleMember(member: Member, result: PooledOutcome | SwitchyardError | Error): void {
    if (member.done) return;
    member.done = true;
    member.unwatch();
    if (result instanceof Error) member.reject(result);
    else member.resolve(result);
  }
}

/** The bytes a request's input values take (numbers only: takes() lets no BYTES tensor this far). */
function inputBytes(inputs: readonly Tensor[]): number {
  return inputs.reduce((sum, { data }) => sum + (data as ArrayBufferView).byteLength, 0);
}
