import { z } from "zod";
import { Deadline } from "../../shared/deadline.ts";
import { describeError, type ErrorCode, SwitchyardError } from "../../shared/errors.ts";
import { answeredOutputs } from "../../shared/oip/classification.ts";
import {
  binaryOutputSelector,
  decodeInferRequest,
  encodeInferResponseParts,
} from "../../shared/oip/codec.ts";
import {
  decodeBinaryFrame,
  type ErrorFrame,
  encodeBinaryFrame,
  type InferHeader,
  InferHeaderSchema,
  peekBinaryFrameHeader,
  type ResultHeader,
} from "../../shared/protocol/frames.ts";
import { type Log, withRequestId } from "../log.ts";
import type { LinkedReplica } from "./linked-replica.ts";

// Failures that come before any run (the request does not fit the model, the model cannot be had or loaded
// here): the replica did not start, so the gateway may still try another one. A deadline that passed or a
// failed run are final.
const NOT_STARTED: ReadonlySet<ErrorCode> = new Set(["bad_input", "not_found", "model_load_failed"]);

interface InFlight {
  controller: AbortController;
  cancelled: boolean;
}

export interface InferHandlerOptions {
  replicas: ReadonlyMap<string, LinkedReplica>;
  /** Sends on the connection the request arrived on; a closed connection drops the frame. */
  send: (frame: Uint8Array | string) => void;
  log: Log;
}

/**
 * Runs the infer frames of one connection on the replica the gateway picked and answers each with exactly
 * one result or error frame, also after a cancel or past the deadline: the registry keeps the replica's slot
 * taken until the answer comes, so the answer is sent when the replica is really done with the request. The
 * deadline (timeoutMs) and a cancel take a request out of the replica's line if it is still waiting there;
 * a load or a run already going cannot be interrupted and finishes first.
 */
export class InferHandler {
  readonly #options: InferHandlerOptions;
  readonly #inFlight = new Map<string, InFlight>();
  readonly #idleWaiters = new Set<() => void>();
  #refusing: string | undefined;

  constructor(options: InferHandlerOptions) {
    this.#options = options;
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** From now on new requests are answered 503 (not started), so the gateway sends them elsewhere. */
  refuseNew(reason: string): void {
    this.#refusing = reason;
  }

  /** Resolves once nothing is in flight. */
  idle(): Promise<void> {
    if (this.#inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.add(resolve));
  }

  /** The connection is gone: nothing can be answered any more, so queued work leaves the replicas' lines. */
  abandonAll(): void {
    for (const request of this.#inFlight.values()) {
      request.controller.abort(new SwitchyardError("unavailable", "the connection to the gateway was lost"));
    }
  }

  cancel(id: string): void {
    const request = this.#inFlight.get(id);
    if (request === undefined) return;
    request.cancelled = true;
    request.controller.abort(new SwitchyardError("deadline_exceeded", "cancelled by the gateway"));
  }

  /** Handles one binary frame from the gateway; never throws. */
  handle(frame: Uint8Array): void {
    const arrivedAt = performance.now();
    let header: InferHeader;
    let body: Uint8Array;
    try {
      ({ header, body } = decodeBinaryFrame(frame, InferHeaderSchema));
    } catch (error) {
      this.#refuseMalformed(frame, SwitchyardError.from(error));
      return;
    }
    if (this.#inFlight.has(header.id)) {
      this.#options.log("gateway link: duplicate request id ignored", { id: header.id });
      return;
    }
    const request: InFlight = { controller: new AbortController(), cancelled: false };
    this.#inFlight.set(header.id, request);
    // A frame in a buffer of its own (a large message, which `ws` gathers into a new one) lends it to the
    // request: its binary tensors are views of it where the relay aligned them, and they move to the
    // session's thread with it. A frame that shares its buffer (a small message read with others) is
    // copied from, since moving that buffer would take its neighbours' bytes.
    const ownsBuffer = frame.byteOffset === 0 && frame.byteLength === frame.buffer.byteLength;
    void this.#run(header, body, ownsBuffer, request, arrivedAt)
      .catch((error: unknown) =>
        this.#options.log("gateway link: reply failed", { id: header.id, error: String(error) }),
      )
      .finally(() => this.#finished(header.id));
  }

  async #run(
    header: InferHeader,
    body: Uint8Array,
    views: boolean,
    request: InFlight,
    arrivedAt: number,
  ): Promise<void> {
    const replica = this.#options.replicas.get(header.replica);
    if (this.#refusing !== undefined) {
      return this.#sendError(header, new SwitchyardError("unavailable", this.#refusing), {
        started: false,
        replica,
      });
    }
    if (replica === undefined) {
      const known = [...this.#options.replicas.keys()].join(", ");
      const error = new SwitchyardError(
        "unavailable",
        `this agent has no replica '${header.replica}' (it has ${known})`,
      );
      return this.#sendError(header, error, { started: false });
    }
    // The deadline, rebuilt on this machine's clock from what the gateway said was left of it.
    const late = Deadline.in(header.timeoutMs).watch(`'${header.model}' did not finish`);
    late.signal.addEventListener("abort", () => request.controller.abort(late.signal.reason), { once: true });
    try {
      const decoded = decodeInferRequest(body, header.headerLength, { views });
      // The agent's log lines about this request carry the client's id (X-Request-Id).
      const outcome = await withRequestId(header.requestId ?? decoded.id ?? header.id, () =>
        replica.infer({
          model: header.model,
          ...(header.version === undefined ? {} : { version: header.version }),
          inputs: decoded.inputs,
          ...(decoded.outputs === undefined ? {} : { outputs: decoded.outputs.map((output) => output.name) }),
          signal: request.controller.signal,
          // The tensors were decoded for this request alone: they may move to the session's thread.
          handOverInputs: true,
        }),
      );
      if (request.cancelled) {
        // Nobody wants the outputs any more; the answer only tells the registry the slot is free.
        const cancelled = new SwitchyardError("deadline_exceeded", "cancelled by the gateway");
        return this.#sendError(header, cancelled, { started: true, replica });
      }
      let encoded: ReturnType<typeof encodeInferResponseFor>;
      try {
        encoded = encodeInferResponseFor(outcome, decoded);
      } catch (error) {
        // The model ran: a request that cannot be answered after it (classes of a BYTES output) started.
        return this.#sendError(header, SwitchyardError.from(error), { started: true, replica });
      }
      const resultHeader: ResultHeader = {
        type: "result",
        id: header.id,
        replica: replica.id,
        model: outcome.model,
        cache: outcome.cache,
        timings: {
          queueMs: outcome.timings.queueMs,
          loadMs: outcome.timings.loadMs,
          inferMs: outcome.timings.inferMs,
          agentMs: performance.now() - arrivedAt,
        },
        contentType: encoded.contentType,
        ...(encoded.headerLength === undefined ? {} : { headerLength: encoded.headerLength }),
        state: replica.resultState(),
      };
      // The answer's parts go into the frame as they are: one copy of the outputs, not a joined body first.
      this.#options.send(encodeBinaryFrame(resultHeader, encoded.parts, "result"));
    } catch (error) {
      const failure = SwitchyardError.from(error);
      if (failure.code === "internal") {
        this.#options.log("gateway link: request failed", {
          id: header.id,
          model: header.model,
          error: describeError(error),
        });
      }
      const started = request.cancelled || !(failure.beforeWork || NOT_STARTED.has(failure.code));
      this.#sendError(header, failure, { started, replica });
    } finally {
      late.stop();
    }
  }

  #sendError(
    header: Pick<InferHeader, "id" | "replica">,
    error: SwitchyardError,
    { started, replica }: { started: boolean; replica?: LinkedReplica | undefined },
  ): void {
    const frame: ErrorFrame = {
      type: "error",
      id: header.id,
      replica: header.replica,
      status: error.status,
      message: error.message.slice(0, 4096),
      started,
      ...(replica === undefined ? {} : { state: replica.resultState() }),
    };
    this.#options.send(JSON.stringify(frame));
  }

  /**
   * A frame whose header does not parse: answered 400 when its id can still be read (and names no request in
   * flight), else only logged.
   */
  #refuseMalformed(frame: Uint8Array, error: SwitchyardError): void {
    const address = readAddress(frame);
    this.#options.log("gateway link: malformed infer frame", {
      error: error.message,
      ...(address === undefined ? {} : { id: address.id }),
    });
    // A request of that id in flight answers for itself: a second answer would be taken for its own.
    if (address !== undefined && !this.#inFlight.has(address.id))
      this.#sendError(address, error, {
        started: false,
        replica: this.#options.replicas.get(address.replica),
      });
  }

  #finished(id: string): void {
    this.#inFlight.delete(id);
    if (this.#inFlight.size > 0) return;
    for (const resolve of this.#idleWaiters) resolve();
    this.#idleWaiters.clear();
  }
}

function encodeInferResponseFor(
  outcome: Awaited<ReturnType<LinkedReplica["infer"]>>,
  decoded: ReturnType<typeof decodeInferRequest>,
) {
  return encodeInferResponseParts(
    {
      model_name: outcome.model.name,
      model_version: outcome.model.version,
      ...(decoded.id === undefined ? {} : { id: decoded.id }),
      outputs: answeredOutputs(outcome, decoded),
    },
    binaryOutputSelector(decoded),
  );
}

/** What an answer needs of a frame that failed validation: its id (as the schema has it) and its replica. */
const AddressSchema = InferHeaderSchema.pick({ id: true }).extend({
  replica: z
    .string()
    .min(1)
    .catch("?")
    .transform((replica) => replica.slice(0, 64)),
});

/** The id and replica of a frame whose header failed validation, if they can be read at all. */
function readAddress(frame: Uint8Array): { id: string; replica: string } | undefined {
  const parsed = AddressSchema.safeParse(peekBinaryFrameHeader(frame));
  return parsed.success ? parsed.data : undefined;
}
