/**
 * The messages between a replica (main thread) and the worker thread that holds one model's onnxruntime
 * session (session-worker.ts). Tensors travel as OIP tensors: the worker turns them into onnxruntime's and
 * back, so that the float16 workaround and BYTES encoding run beside the session, off the main thread.
 * Every request carries an id that its one reply repeats.
 */
import type { MessagePort } from "node:worker_threads";
import type { InferenceSession } from "onnxruntime-node";
import type { Datatype } from "../../shared/oip/datatypes.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import type { LaneSettings } from "./lane-protocol.ts";
import type { TensorSpec } from "./ort-tensors.ts";

export type SessionRequest =
  /** `spinMs`: how long the thread keeps turning after each run (hot-loop.ts); 0: it sleeps at once. */
  | { type: "create"; path: string; options: InferenceSession.SessionOptions; spinMs: number }
  /**
   * One run for one or more requests: `parts` holds each request's feeds, which the worker stacks along
   * the first dimension (and pads to `padTo` rows) itself, so the copy a batch costs is not made on the
   * main thread, which reads the next requests' bodies meanwhile. A lone part that needs no padding runs
   * as it is.
   */
  | { type: "run"; parts: Tensor[][]; padTo?: number; outputs: string[] }
  /** Serves a lane from an intake thread on `port` (lane-protocol.ts; the port moves with the message). */
  | { type: "lane"; port: MessagePort; settings: LaneSettings }
  /** Takes runs (these same requests) from another session's thread on `port`: a bucket's, for lanes. */
  | { type: "peer"; port: MessagePort }
  /** Its lanes' batches of `size` rows (a batch bucket) run on the session at the other end of `port`. */
  | { type: "bucket"; size: number; port: MessagePort }
  /**
   * Reports what its lanes served and had not reported yet (session-lanes.ts), before the reply: answered
   * out of turn, not after the runs and releases chained before it (after the check phase under way).
   */
  | { type: "report-lanes" }
  /** Releases the session after every request sent before it; the thread is then terminated. */
  | { type: "release" };

export type SessionReply =
  /**
   * The session's specs, and the operator types its graph uses (onnx-op-types.ts); null when the file
   * could not be read for them (the session itself loaded).
   */
  | { type: "ready"; inputs: TensorSpec[]; outputs: TensorSpec[]; opTypes: string[] | null }
  /**
   * The requested outputs, in the order they were asked for. `sessionMs`: how long onnxruntime's run took
   * on the worker; `stackMs`: how long stacking the parts took there (the rest of a run's time is the hop).
   */
  | { type: "result"; outputs: Tensor[]; sessionMs: number; stackMs: number; parts?: Tensor[][] }
  | { type: "released" }
  | { type: "lanes-reported" }
  | { type: "lane-opened" }
  | { type: "connected" }
  /** onnxruntime's (or the worker's) error message, as it was. */
  | { type: "error"; message: string; parts?: Tensor[][] };
// `parts`: a run's parts as they came, given back (their buffers move back) once the run is over: after a
// success those of a size the pool reuses (buffer-pool.ts), after a failed batch all of them, for each
// request to run again alone.

export type Envelope<T> = T & { id: number };

export type FixedDatatype = Exclude<Datatype, "BYTES">;
export type FixedData = Exclude<Tensor["data"], Uint8Array[]>;

interface TypedArrayClass {
  new (length: number): FixedData;
  new (buffer: ArrayBuffer, byteOffset: number, length: number): FixedData;
}

/** The typed array class of each fixed-size datatype (FP16 travels as its bit patterns). */
export const ARRAY_CLASS: Record<FixedDatatype, TypedArrayClass> = {
  BOOL: Uint8Array,
  UINT8: Uint8Array,
  UINT16: Uint16Array,
  UINT32: Uint32Array,
  UINT64: BigUint64Array,
  INT8: Int8Array,
  INT16: Int16Array,
  INT32: Int32Array,
  INT64: BigInt64Array,
  FP16: Uint16Array,
  FP32: Float32Array,
  FP64: Float64Array,
};

/**
 * Tensors as they go to the worker, and the buffers to transfer (move) with them. A transferred buffer is
 * detached on the sending side, so only what the sender owns may move: with `handOver`, the tensors' own
 * buffers (a batch the replica stacked itself); otherwise each typed array is first copied into a buffer
 * of its exact size (one copy, where structured cloning would make two, and would clone the whole buffer
 * a view points into). BYTES elements are cloned (a request's strings are small and many).
 */
export function forTransfer(
  tensors: readonly Tensor[],
  handOver: boolean,
  transfer = new Set<ArrayBuffer>(),
): { tensors: Tensor[]; transfer: ArrayBuffer[] } {
  const moved = tensors.map(({ name, datatype, shape, data }): Tensor => {
    if (Array.isArray(data)) return { name, datatype, shape, data: data.map(ownBuffer) };
    const owned = handOver && data.buffer instanceof ArrayBuffer ? data : copyOf(datatype, data);
    transfer.add(owned.buffer as ArrayBuffer);
    return { name, datatype, shape, data: owned };
  });
  return { tensors: moved, transfer: [...transfer] };
}

/** forTransfer for each request's feeds, with each request's own `handOver`, and one transfer list. */
export function partsForTransfer(
  parts: readonly (readonly Tensor[])[],
  handOver: readonly boolean[],
): { parts: Tensor[][]; transfer: ArrayBuffer[] } {
  const transfer = new Set<ArrayBuffer>();
  const moved = parts.map((feeds, index) => forTransfer(feeds, handOver[index] === true, transfer).tensors);
  return { parts: moved, transfer: [...transfer] };
}

/** The buffers of the typed arrays among `tensors` (outputs the worker computed, and so owns). */
export function transferablesOf(tensors: readonly Tensor[]): ArrayBuffer[] {
  const buffers = new Set<ArrayBuffer>();
  for (const { data } of tensors) {
    if (!Array.isArray(data) && data.buffer instanceof ArrayBuffer) buffers.add(data.buffer);
  }
  return [...buffers];
}

/**
 * A copy of `data` in a buffer of its own, of the typed array its datatype uses (a Node Buffer, whose
 * slice() is a view into a shared pool, becomes a plain Uint8Array).
 */
function copyOf(datatype: Datatype, data: FixedData): FixedData {
  const ArrayClass = ARRAY_CLASS[datatype as FixedDatatype];
  const copy = new ArrayClass(data.length);
  new Uint8Array(copy.buffer).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return copy;
}

/** A BYTES element that is a view into a larger buffer (a request body) is cut out of it. */
function ownBuffer(element: Uint8Array): Uint8Array {
  if (element.byteOffset === 0 && element.byteLength === element.buffer.byteLength) return element;
  const copy = new Uint8Array(element.byteLength);
  copy.set(element);
  return copy;
}
