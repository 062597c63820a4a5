import type { ServiceDefinition } from "@grpc/proto-loader";
import { Deadline, requestDeadline } from "../../../shared/deadline.ts";
import { describeError, SwitchyardError } from "../../../shared/errors.ts";
import type { HeaderReader } from "../../../shared/http/header-reader.ts";
import { parseModelName } from "../../../shared/model-names.ts";
import { readHint, requestIdHeader } from "../../../shared/oip/request-options.ts";
import { type Answerer, type InferOnReplicas, serveInfer } from "../standalone-infer.ts";
import type { GrpcControl } from "./grpc-control.ts";
import {
  decodeGrpcInferRequest,
  grpcInferResponse,
  inferResponsePieces,
  optionalVersion,
  streamAnswerPieces,
} from "./grpc-infer.ts";
import type {
  ModelInferRequestMessage,
  ModelInferResponseMessage,
  ModelStreamInferResponseMessage,
} from "./grpc-messages.ts";
import { INFER_CALLS, inferenceService } from "./grpc-proto.ts";
import { GrpcFailure, grpcError } from "./grpc-status.ts";
import { type GrpcCall, type GrpcRoute, startGrpcTransport } from "./grpc-transport.ts";

export interface GrpcServer {
  port: number;
  /** Stops taking calls and waits up to the grace for those in flight, then cuts the rest. */
  close(graceMs: number): Promise<void>;
}

/** What a gRPC listener serves with, on whichever thread it runs. */
export interface GrpcServiceOptions {
  host: string;
  /** 0: any free port. */
  port: number;
  /** Listen beside the agent's other threads on the same port (the kernel spreads connections over them). */
  reusePort?: boolean;
  maxBodyBytes: number;
  defaultTimeoutMs: number;
  /** Runs an infer call on the replicas: the pool on the main thread, a lane or the main thread elsewhere. */
  infer: InferOnReplicas;
  /** The agent's name, and the shared memory regions inputs are read from and outputs written to. */
  answerer: Answerer;
  /** Every call but inference (grpc-control.ts), here or on the main thread. */
  control: GrpcControl;
  log: (event: string, fields: Record<string, unknown>) => void;
}

/**
 * The standalone agent's API over gRPC (--grpc-port): the Open Inference Protocol's GRPCInferenceService as
 * KServe and Triton define it, answered by the same replicas, checks and messages as the HTTP server
 * (standalone-app.ts), on the agent's own gRPC transport (grpc-transport.ts). A message's bytes are read and
 * written by the .proto's encoders (@grpc/proto-loader), except ModelInfer's tensors, which travel as they
 * are. It runs where HTTP is read: on each HTTP intake thread (ModelInfer and ModelStreamInfer served there,
 * the other calls by the main thread: intake-thread.ts), or on the main thread beside the pool.
 */
export async function startGrpcService(options: GrpcServiceOptions): Promise<GrpcServer> {
  const { log } = options;
  const service = inferenceService();
  let closing = false;

  /** The one error type as the call's gRPC status; the agent's own failures are logged. */
  const reported = (error: unknown, path: string): GrpcFailure => {
    if (error instanceof GrpcFailure) return error;
    const failure = SwitchyardError.from(error);
    if (failure.status >= 500) log("error", { path, error: describeError(error) });
    return grpcError(failure);
  };

  /** ModelInferResponse's pieces: its outputs' bytes written as they are (grpc-infer.ts). */
  const inferDefinition = method(service, "ModelInfer");
  const serializeInferResponse = (message: ModelInferResponseMessage) =>
    inferDefinition.responseSerialize(message) as Uint8Array;

  /** Runs one ModelInfer request; the call's signal follows the client going away or its deadline. */
  const infer = async (message: ModelInferRequestMessage, call: GrpcCall): Promise<Uint8Array[]> => {
    const model = parseModelName(message.model_name);
    const version = optionalVersion(message.model_version);
    const request = decodeGrpcInferRequest(message, options.answerer.sharedMemory);
    const headers: HeaderReader = { get: (name) => call.header(name.toLowerCase()) ?? null };
    const hint = readHint(headers);
    const served = await serveInfer(
      options.infer,
      options.answerer,
      {
        model,
        ...(version === undefined ? {} : { version }),
        request,
        ...(hint === undefined ? {} : { hint }),
        deadline: earlier(requestDeadline(headers, request.parameters, options.defaultTimeoutMs), call),
        // No header answers it over gRPC: the id names the request in the agent's log lines, as over HTTP.
        requestId: requestIdHeader(request.id),
      },
      call.signal,
    );
    return inferResponsePieces(grpcInferResponse(served, request), serializeInferResponse);
  };

  /**
   * ModelStreamInfer (Triton's): each request on the stream is served as it comes and answered in the order
   * it came (as Triton answers a model that is not decoupled), a failure as error_message with the request's
   * id, without ending the stream. Once the server closes, new requests are answered UNAVAILABLE.
   */
  const streamInfer = async (request: unknown, call: GrpcCall): Promise<Uint8Array[]> => {
    const message = request as ModelInferRequestMessage;
    try {
      if (closing) throw new SwitchyardError("unavailable", "the agent is shutting down");
      return streamAnswerPieces(await infer(message, call));
    } catch (error) {
      const answer: ModelStreamInferResponseMessage = {
        error_message: reported(error, call.path).details,
        // As Triton does, so that the client knows which request failed.
        infer_response: {
          model_name: message.model_name,
          model_version: message.model_version,
          id: message.id,
          outputs: [],
          raw_output_contents: [],
        },
      };
      return [method(service, "ModelStreamInfer").responseSerialize(answer) as Uint8Array];
    }
  };

  const routes = new Map<string, GrpcRoute>();
  /** A call of one request and one answer; a failure is its gRPC status. */
  const unaryRoute = (name: string, answer: (request: unknown, call: GrpcCall) => Promise<Uint8Array[]>) => {
    const definition = method(service, name);
    routes.set(definition.path, {
      kind: "unary",
      decode: (bytes) => definition.requestDeserialize(bytes),
      handle: async (request, call) => {
        try {
          return await answer(request, call);
        } catch (error) {
          throw reported(error, call.path);
        }
      },
    });
  };
  // Every call of the .proto has its route (grpc-control.ts checks that it has a handler for each of the rest).
  for (const [name, definition] of Object.entries(service)) {
    if (INFER_CALLS.has(name)) continue;
    unaryRoute(name, async (request) => [
      definition.responseSerialize(await options.control(name, request)) as Uint8Array,
    ]);
  }
  unaryRoute("ModelInfer", (request, call) => infer(request as ModelInferRequestMessage, call));
  const stream = method(service, "ModelStreamInfer");
  routes.set(stream.path, {
    kind: "ordered-stream",
    decode: (bytes) => stream.requestDeserialize(bytes),
    handle: streamInfer,
  });

  const transport = await startGrpcTransport({
    host: options.host,
    port: options.port,
    ...(options.reusePort === undefined ? {} : { reusePort: options.reusePort }),
    routes,
    maxMessageBytes: options.maxBodyBytes,
    onInternalError: (path, error) => log("error", { path, error: describeError(error) }),
  });
  return {
    port: transport.port,
    async close(graceMs) {
      closing = true;
      await transport.close(graceMs);
    },
  };
}

/** A call's definition in the service (its path, and its messages' encoders). */
function method(service: ServiceDefinition, name: string): ServiceDefinition[string] {
  const definition = service[name];
  if (definition === undefined) throw new Error(`inference.proto has no ${name}`);
  return definition;
}

/** The request's own deadline, or the gRPC call's where that comes first. */
function earlier(requested: Deadline, call: GrpcCall): Deadline {
  const at = call.deadlineAt;
  if (!Number.isFinite(at) || at >= requested.at) return requested;
  return Deadline.in(Math.max(0, at - Date.now()));
}
