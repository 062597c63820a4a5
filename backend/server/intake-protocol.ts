/**
 * The messages between the standalone server's HTTP intake threads (intake-thread.ts) and the main thread,
 * which holds the replicas (intake-threads.ts). An intake thread reads and decodes requests and encodes and
 * writes answers; the main thread only routes. Tensors cross by transfer, never by copy where the sender
 * owns their buffers. Every request carries an id that its one answer repeats.
 */

import type { MessagePort } from "node:worker_threads";
import { Deadline } from "../../shared/deadline.ts";
import type { OutputClasses } from "../../shared/oip/classification.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import type { ModelRef } from "../../shared/protocol/replica-state.ts";
import type { PooledInferCall, PooledOutcome } from "../pool/replica-pool.ts";
import { poolable } from "../replica/buffer-pool.ts";
import type { LaneSettings } from "../replica/lane-protocol.ts";
import { forTransfer } from "../replica/session-protocol.ts";
import type { WireError } from "../wire-error.ts";
import type { RegionTable } from "./shared-memory-regions.ts";

/** What an intake thread is started with (its workerData). */
export interface IntakeSettings {
  host: string;
  port: number;
  agentName: string;
  maxBodyBytes: number;
  defaultTimeoutMs: number;
  /** How long the thread keeps turning after a request arrives (hot-loop.ts); 0: never. */
  spinMs: number;
  /** The shared memory regions registered now, where the agent offers them (--allow-client-shm). */
  regions?: RegionTable;
  /** Where the thread also serves gRPC (--grpc-port), beside the other threads. */
  grpcPort?: number;
}

/** An infer call as it crosses: the deadline as its moment (one process, one clock) and its budget. */
export interface WireInferCall {
  model: string;
  version?: string;
  hint?: string;
  inputs: Tensor[];
  outputs?: string[];
  withLabels?: true;
  requestId?: string;
  deadlineAt: number;
  budgetMs: number;
  /**
   * Sizes of the pooled buffers its inputs came in (the body read into one, or inputs read from shared
   * memory): the main thread sends idle ones of those sizes back (`spares`), as they went to its pool.
   */
  spareBytes: number[];
}

/** A request the infer route does not take, for the main thread's Hono app. */
export interface WireRequest {
  method: string;
  url: string;
  headers: [string, string][];
  body?: ArrayBuffer;
}

export interface WireResponse {
  status: number;
  headers: [string, string][];
  body: ArrayBuffer;
}

/** A lane as the main thread grants it. */
export interface LaneGrantMessage {
  type: "lane";
  laneId: number;
  /** The model as requests name it (requestedModelKey): what the lane serves. */
  key: string;
  port: MessagePort;
  model: ModelRef;
  replica: string;
  /** The model's specs and batching, as its session serves the lane (requests are checked and grouped with them). */
  settings: LaneSettings;
  /** How the model's outputs are classified (InferOutcome's), once for all the lane's requests. */
  classes: OutputClasses;
  lifetimeMs: number;
}

/** What the lanes tell the main thread: a lane no longer takes requests; a lane is closed (its lease ends). */
export type LaneNotice = { type: "lane-retired"; laneId: number } | { type: "lane-closed"; laneId: number };

export type IntakeMessage =
  /** Its ports are bound (the main thread claimed them first: intake-threads.ts). */
  | { type: "listening" }
  | { type: "listen-failed"; message: string; code?: string }
  | { type: "infer"; id: number; call: WireInferCall }
  | { type: "fetch"; id: number; request: WireRequest }
  /** A gRPC call other than inference (grpc-control.ts), its request decoded: answered "grpc-answer". */
  | { type: "grpc"; id: number; call: string; request: unknown }
  /** The client went away: the main thread stops waiting for the request's replica. */
  | { type: "abort"; id: number }
  /** A lane takes no more requests; then, it is closed (intake-lanes.ts). */
  | LaneNotice
  /**
   * A line for the agent's log: a failure of the agent's own (5xx) while the thread answered a request, over
   * HTTP or gRPC, logged once, here, with the path the client called (the main thread does not log those).
   */
  | { type: "log"; event: string; fields: Record<string, unknown> }
  /** The thread holds the regions of the "regions" message `seq`. */
  | { type: "regions-taken"; seq: number }
  | { type: "closed" };

export type MainMessage =
  /**
   * `spares`: buffers the main thread's pool held idle (ones that came back from a session's thread after a
   * run), for the intake thread to read its next bodies and inputs into (buffer-pool.ts).
   */
  | { type: "outcome"; id: number; outcome: PooledOutcome; spares: ArrayBuffer[] }
  | { type: "response"; id: number; response: WireResponse }
  /** A gRPC call's answer, the .proto's message as a plain object (for the thread to encode). */
  | { type: "grpc-answer"; id: number; answer: object }
  | { type: "failure"; id: number; error: WireError }
  /** A lane to a session's thread, and its end (intake-lanes.ts). */
  | LaneGrantMessage
  | { type: "revoke-lane"; laneId: number }
  /** The shared memory regions after a register or unregister, for the thread's copy; answered "regions-taken". */
  | { type: "regions"; seq: number; table: RegionTable }
  /**
   * Stop accepting connections, finish what is in flight, then say "closed". `graceMs`: how long gRPC calls
   * in flight may take before they are cut (the main thread ends the thread itself after that).
   */
  | { type: "close"; graceMs: number };

/** What a call carries across as it is, either way. */
function sameBothWays(
  call: Pick<WireInferCall, "model" | "version" | "hint" | "inputs" | "outputs" | "withLabels" | "requestId">,
) {
  return {
    model: call.model,
    ...(call.version === undefined ? {} : { version: call.version }),
    ...(call.hint === undefined ? {} : { hint: call.hint }),
    inputs: call.inputs,
    ...(call.outputs === undefined ? {} : { outputs: call.outputs }),
    ...(call.withLabels === undefined ? {} : { withLabels: call.withLabels }),
    ...(call.requestId === undefined ? {} : { requestId: call.requestId }),
  };
}

/** The call as it crosses; read before its inputs' buffers are transferred (which empties them). */
export function toWireCall(call: PooledInferCall): WireInferCall {
  return {
    ...sameBothWays(call),
    deadlineAt: call.deadline.at,
    budgetMs: call.deadline.budgetMs,
    spareBytes: inputBuffers(call.inputs)
      .filter(poolable)
      .map((buffer) => buffer.byteLength),
  };
}

export function fromWireCall(call: WireInferCall, signal: AbortSignal, now = Date.now()): PooledInferCall {
  return {
    ...sameBothWays(call),
    deadline: Deadline.in(call.deadlineAt - now, now, call.budgetMs),
    signal,
    // Decoded by the intake thread for this request alone, from a body that moved here with it.
    handOverInputs: true,
  };
}

/**
 * The buffers under a request's input tensors, typed arrays and BYTES elements alike: the request owns its
 * body, so all of them move with it.
 */
export function inputBuffers(inputs: readonly Tensor[]): ArrayBuffer[] {
  const buffers = new Set<ArrayBuffer>();
  for (const { data } of inputs) {
    const views = Array.isArray(data) ? data : [data];
    for (const view of views) if (view.buffer instanceof ArrayBuffer) buffers.add(view.buffer);
  }
  return [...buffers];
}

/**
 * An outcome's outputs made ready to move, and the buffers to transfer. An output that views the whole of
 * its buffer is the request's alone (a run of its own, or a batch it filled): it moves as it is. One that
 * views part of a buffer shares it with the other requests of its batch (tensor-batch.ts splitRows), so it
 * is copied into a buffer of its own first: moving the shared one would empty it for them.
 */
export function outputsForTransfer(outputs: readonly Tensor[]): {
  outputs: Tensor[];
  transfer: ArrayBuffer[];
} {
  const transfer = new Set<ArrayBuffer>();
  // The session's own rule for what may move and what is copied first (session-protocol.ts forTransfer).
  const moved = outputs.map(
    (tensor) => forTransfer([tensor], viewsAllOfItsBuffer(tensor), transfer).tensors[0] as Tensor,
  );
  return { outputs: moved, transfer: [...transfer] };
}

function viewsAllOfItsBuffer({ data }: Tensor): boolean {
  return !Array.isArray(data) && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
}
