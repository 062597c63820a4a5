import { SwitchyardError } from "../../shared/errors.ts";
import { answeredOutputs, asksClasses } from "../../shared/oip/classification.ts";
import {
  binaryOutputSelector,
  encodeInferResponseParts,
  sharedMemoryOutputSelector,
  tensorBinary,
} from "../../shared/oip/codec.ts";
import { type InferRequestIn, inferResponseHeaders } from "../../shared/oip/infer-http.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import type { PooledInferCall, PooledOutcome } from "../pool/replica-pool.ts";
import type { SharedMemoryRegions } from "./shared-memory-regions.ts";

/** A served inference, as the pieces to write: headers, and the body's parts one after the other. */
export interface InferAnswer {
  headers: Record<string, string>;
  parts: Uint8Array[];
  byteLength: number;
}

/**
 * Runs a call on the agent's replicas: the pool itself on the main thread, a message to it from an HTTP
 * intake thread (intake-thread.ts).
 */
export type InferOnReplicas = (call: PooledInferCall) => Promise<PooledOutcome>;

/** Who answers: the agent's name (for X-Switchyard-Replica) and its shared memory regions, if offered. */
export interface Answerer {
  agentName: string;
  sharedMemory?: SharedMemoryRegions;
}

/** Milliseconds the request spent before it reached the pool: reading its body, then decoding it. */
export interface Arrival {
  receiveMs: number;
  decodeMs: number;
  /** performance.now() when the request arrived (its headers were read). */
  arrivedAt: number;
}

/**
 * Runs a checked infer request on the agent's replicas and encodes the answer: what both ways into the
 * standalone server share (the direct route for plain bodies, Hono's for compressed or chunked ones).
 * The decoded tensors move to the model's thread without a copy; binary outputs are written from the
 * session's own buffers; outputs asked for in shared memory are written there first. Server-Timing says
 * where the time went: receive, decode, queue, load, infer (and run, onnxruntime's part of it), encode
 * (writing to shared memory included), total.
 */
export async function answerInfer(
  infer: InferOnReplicas,
  answerer: Answerer,
  input: InferRequestIn,
  arrival: Arrival,
  signal?: AbortSignal,
): Promise<InferAnswer> {
  const { request } = input;
  const { outcome, outputs, servedAt } = await serveInfer(infer, answerer, input, signal);
  const encoded = encodeInferResponseParts(
    {
      model_name: outcome.model.name,
      model_version: outcome.model.version,
      ...(request.id === undefined ? {} : { id: request.id }),
      outputs,
    },
    binaryOutputSelector(request),
    sharedMemoryOutputSelector(request),
  );
  const encodeMs = performance.now() - servedAt;
  const headers = inferResponseHeaders({
    requestId: input.requestId,
    replica: `${answerer.agentName}/${outcome.replica}`,
    cache: outcome.cache,
    contentType: encoded.contentType,
    ...(encoded.headerLength === undefined ? {} : { headerLength: encoded.headerLength }),
    timings: {
      receive: arrival.receiveMs,
      decode: arrival.decodeMs,
      queue: outcome.timings.poolQueueMs + outcome.timings.queueMs,
      load: outcome.timings.loadMs,
      infer: outcome.timings.inferMs,
      // Of infer, onnxruntime's own run on the session's thread; the rest is the way there and back.
      run: outcome.timings.sessionMs,
      encode: encodeMs,
      total: performance.now() - arrival.arrivedAt,
    },
  });
  headers["Content-Length"] = String(encoded.byteLength);
  return { headers, parts: encoded.parts, byteLength: encoded.byteLength };
}

/** A request served: the pool's outcome, the outputs to answer with, and when the pool answered. */
export interface Served {
  outcome: PooledOutcome;
  /** The outputs as answered: classes where the request asked for them (classification.ts). */
  outputs: Tensor[];
  /** performance.now() once the pool answered: encoding (shared memory writes included) starts here. */
  servedAt: number;
}

/**
 * Runs a checked request on the replicas, the part of serving it that HTTP and gRPC (grpc/grpc-service.ts)
 * share; outputs asked for in shared memory are written there. The request's input tensors move to the
 * session's thread (their buffers are detached here): every caller decodes them into buffers the request
 * alone owns (a body read for it, a copy out of a region or a gRPC message).
 */
export async function serveInfer(
  infer: InferOnReplicas,
  answerer: Answerer,
  input: Pick<InferRequestIn, "model" | "version" | "request" | "hint" | "deadline" | "requestId">,
  signal?: AbortSignal,
): Promise<Served> {
  const { model, version, request, hint, deadline, requestId } = input;
  const outcome = await infer({
    model,
    requestId,
    ...(version === undefined ? {} : { version }),
    ...(hint === undefined ? {} : { hint }),
    inputs: request.inputs,
    ...(request.outputs === undefined ? {} : { outputs: request.outputs.map((output) => output.name) }),
    ...(asksClasses(request) ? { withLabels: true as const } : {}),
    deadline,
    ...(signal === undefined ? {} : { signal }),
    // See above: the tensors' buffers are the request's own.
    handOverInputs: true,
  });
  const servedAt = performance.now();
  const outputs = answeredOutputs(outcome, request);
  writeToSharedMemory(answerer.sharedMemory, input, outputs);
  return { outcome, outputs, servedAt };
}

/** Writes each output the request asked for in shared memory into its region. */
function writeToSharedMemory(
  regions: SharedMemoryRegions | undefined,
  input: Pick<InferRequestIn, "request">,
  outputs: readonly Tensor[],
): void {
  for (const asked of input.request.outputs ?? []) {
    if (asked.sharedMemory === undefined) continue;
    // The codec lets such an output through only where it was given the regions.
    if (regions === undefined)
      throw new SwitchyardError("internal", "an output in shared memory, but no regions");
    const output = outputs.find((tensor) => tensor.name === asked.name);
    if (output === undefined) continue;
    regions.write(asked.sharedMemory, asked.name, [tensorBinary(output)]);
  }
}
