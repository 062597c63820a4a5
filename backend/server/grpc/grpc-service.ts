import type { ServiceDefinition } from "@grpc/proto-loader";
import { Deadline, requestDeadline } from "../../../shared/deadline.ts";
import { describeError, SwitchyardError } from "../../../shared/errors.ts";
import type { HeaderReader } from "../../../shared/http/header-reader.ts";
import { parseModelName, parseModelVersion } from "../../../shared/model-names.ts";
import { loadRequestOf } from "../../../shared/oip/model-control.ts";
import { readHint } from "../../../shared/oip/request-options.ts";
import { sharedMemoryEndpoints } from "../../../shared/oip/shared-memory-endpoints.ts";
import { type LoggingAnswer, updateLogging } from "../logging-endpoint.ts";
import { regionsControl } from "../shared-memory-regions.ts";
import type { StandaloneAppOptions } from "../standalone-app.ts";
import { serveInfer } from "../standalone-infer.ts";
import {
  loadModel,
  modelConfig,
  modelMetadata,
  modelStatistics,
  repositoryIndex,
  standaloneExtensions,
  unloadModel,
} from "../standalone-models.ts";
import {
  decodeGrpcInferRequest,
  grpcInferResponse,
  inferResponsePieces,
  parametersOf,
  streamAnswerPieces,
} from "./grpc-infer.ts";
import type {
  LogSettingsMessage,
  LogSettingValueMessage,
  ModelInferRequestMessage,
  ModelInferResponseMessage,
  ModelRequestMessage,
  ModelStreamInferResponseMessage,
  RepositoryIndexRequestMessage,
  RepositoryModelRequestMessage,
  SharedMemoryNameMessage,
  SystemSharedMemoryRegisterMessage,
} from "./grpc-messages.ts";
import { inferenceService } from "./grpc-proto.ts";
import { GrpcFailure, grpcError } from "./grpc-status.ts";
import { type GrpcCall, type GrpcRoute, startGrpcTransport } from "./grpc-transport.ts";

/** What the HTTP app is given (the same replicas, limits and regions), and where gRPC listens. */
export interface GrpcServerOptions extends StandaloneAppOptions {
  host: string;
  /** 0: any free port. */
  port: number;
}

export interface GrpcServer {
  port: number;
  /** Stops taking calls and waits up to the grace for those in flight, then cuts the rest. */
  close(graceMs: number): Promise<void>;
}

/**
 * The standalone agent's API over gRPC (--grpc-port): the Open Inference Protocol's GRPCInferenceService as
 * KServe and Triton define it, answered by the same replicas, checks and messages as the HTTP server
 * (standalone-app.ts). It runs on the main thread beside the pool, on the agent's own gRPC transport
 * (grpc-transport.ts); a message's bytes are read and written by the .proto's encoders (@grpc/proto-loader),
 * except ModelInfer's tensors, which travel as they are.
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServer> {
  const { pool, models, log } = options;
  const regions = options.sharedMemory;
  const answerer = { agentName: options.name, ...(regions === undefined ? {} : { sharedMemory: regions }) };
  // The same calls and answers as the HTTP routes: a region registered over gRPC serves HTTP requests too.
  const sharedMemory = sharedMemoryEndpoints(regions && regionsControl(regions));
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
    const request = decodeGrpcInferRequest(message, regions);
    const headers: HeaderReader = { get: (name) => call.header(name.toLowerCase()) ?? null };
    const hint = readHint(headers);
    const served = await serveInfer(
      (pooled) => pool.infer(pooled),
      answerer,
      {
        model,
        ...(version === undefined ? {} : { version }),
        request,
        ...(hint === undefined ? {} : { hint }),
        deadline: earlier(requestDeadline(headers, request.parameters, options.defaultTimeoutMs), call),
      },
      call.signal,
    );
    return inferResponsePieces(grpcInferResponse(served, request), serializeInferResponse);
  };

  /** A call answered with a message of the .proto's (serialized whole, by its definition: these are small). */
  type ControlHandler = (request: unknown, call: GrpcCall) => Promise<object>;
  const control = <Request>(handle: (request: Request, call: GrpcCall) => Promise<object>) =>
    handle as ControlHandler;

  const controlHandlers: Record<string, ControlHandler> = {
    ServerLive: control(async () => ({ live: true })),
    ServerReady: control(async () => ({ ready: options.isReady() })),
    ModelReady: control(async ({ name, version }: ModelRequestMessage) => {
      try {
        const readiness = await models.readiness(parseModelName(name), optionalVersion(version));
        return { ready: readiness.ready };
      } catch (error) {
        // As Triton answers: a model the repository does not hold is simply not ready.
        if (error instanceof SwitchyardError && error.code === "not_found") return { ready: false };
        throw error;
      }
    }),
    ServerMetadata: control(async () => ({
      name: options.name,
      version: options.version,
      extensions: standaloneExtensions(regions !== undefined),
    })),
    ModelMetadata: control(({ name, version }: ModelRequestMessage) =>
      modelMetadata(models, parseModelName(name), optionalVersion(version)),
    ),
    // The JSON form HTTP answers has the protobuf's own field names; enums go as their names.
    ModelConfig: control(async ({ name, version }: ModelRequestMessage) => ({
      config: await modelConfig(models, pool, parseModelName(name), optionalVersion(version)),
    })),
    ModelStatistics: control(async ({ name, version }: ModelRequestMessage) => ({
      model_stats: await modelStatistics(
        models,
        ...(name === "" ? [] : [parseModelName(name), optionalVersion(version)]),
      ),
    })),
    RepositoryIndex: control(async ({ ready }: RepositoryIndexRequestMessage) => ({
      models: (await repositoryIndex(models, pool, ready)).map(({ name, version, state, reason }) => ({
        name,
        version,
        state,
        reason,
      })),
    })),
    RepositoryModelLoad: control(async (message: RepositoryModelRequestMessage) => {
      const name = repositoryModel(message);
      await loadModel(models, name, loadRequestOf({ parameters: parametersOf(message.parameters) }));
      return { model_name: name, isLoaded: true };
    }),
    RepositoryModelUnload: control(async (message: RepositoryModelRequestMessage) => {
      const name = repositoryModel(message);
      await unloadModel(models, name);
      return { model_name: name, isUnloaded: true };
    }),
    SystemSharedMemoryStatus: control(async ({ name }: SharedMemoryNameMessage) => ({
      regions: byName(sharedMemory.systemStatus(everyOr(name))),
    })),
    SystemSharedMemoryRegister: control(async (message: SystemSharedMemoryRegisterMessage) => {
      // 64-bit sizes arrive as decimal strings; one past 2^53 is no safe number and the schema refuses it.
      const { name, key, offset, byte_size } = message;
      await sharedMemory.systemRegister(name, {
        key,
        offset: Number(offset),
        byte_size: Number(byte_size),
      });
      return {};
    }),
    SystemSharedMemoryUnregister: control(async ({ name }: SharedMemoryNameMessage) => {
      await sharedMemory.systemUnregister(everyOr(name));
      return {};
    }),
    CudaSharedMemoryStatus: control(async ({ name }: SharedMemoryNameMessage) => ({
      regions: byName(sharedMemory.cudaStatus(everyOr(name))),
    })),
    CudaSharedMemoryRegister: control(async () => sharedMemory.cudaRegister()),
    CudaSharedMemoryUnregister: control(async () => {
      sharedMemory.cudaUnregister();
      return {};
    }),
    LogSettings: control(async ({ settings }: LogSettingsMessage) => {
      const request = Object.fromEntries(
        Object.entries(settings).map(([name, value]) => [
          name,
          value.parameter_choice === undefined ? undefined : value[value.parameter_choice],
        ]),
      );
      return { settings: settingValues(updateLogging(options.logSettings, request)) };
    }),
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
  for (const [name, handle] of Object.entries(controlHandlers)) {
    const { responseSerialize } = method(service, name);
    unaryRoute(name, async (request, call) => [responseSerialize(await handle(request, call)) as Uint8Array]);
  }
  unaryRoute("ModelInfer", (request, call) => infer(request as ModelInferRequestMessage, call));
  const stream = method(service, "ModelStreamInfer");
  routes.set(stream.path, {
    kind: "ordered-stream",
    decode: (bytes) => stream.requestDeserialize(bytes),
    handle: streamInfer,
  });
  // Every call the .proto lists has its route (a handler for a call it does not list fails in method()):
  // a call left out would otherwise be UNIMPLEMENTED without a word.
  const unhandled = Object.entries(service)
    .filter(([, definition]) => !routes.has(definition.path))
    .map(([name]) => name);
  if (unhandled.length > 0)
    throw new Error(`inference.proto and the gRPC handlers disagree: ${unhandled.join(", ")} has no handler`);

  const transport = await startGrpcTransport({
    host: options.host,
    port: options.port,
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

/** An empty version field is the protocol's "none named". */
function optionalVersion(version: string): string | undefined {
  return version === "" ? undefined : parseModelVersion(version);
}

/**
 * The model a repository call names. Triton's messages put it in field 2 (model_name, field 1 being the
 * repository's name, which tritonclient leaves empty); KServe's put it in field 1: a request with field 1
 * alone is KServe's.
 */
function repositoryModel(message: RepositoryModelRequestMessage): string {
  return parseModelName(message.model_name !== "" ? message.model_name : message.repository_name);
}

/** The log settings as LogSettingsResponse's values: booleans, whole numbers and strings each in their field. */
function settingValues(answer: LoggingAnswer): Record<string, LogSettingValueMessage> {
  return Object.fromEntries(
    Object.entries(answer).map(([name, value]) => [
      name,
      typeof value === "boolean"
        ? { bool_param: value }
        : typeof value === "number"
          ? { uint32_param: value }
          : { string_param: value },
    ]),
  );
}

/** A shared memory call's region: an empty name is the protocol's "every region". */
function everyOr(name: string): string | undefined {
  return name === "" ? undefined : name;
}

/** A status list as the response's map, keyed by region name. */
function byName<Region extends { name: string }>(regions: Region[]): Record<string, Region> {
  return Object.fromEntries(regions.map((region) => [region.name, region]));
}

/** The request's own deadline, or the gRPC call's where that comes first. */
function earlier(requested: Deadline, call: GrpcCall): Deadline {
  const at = call.deadlineAt;
  if (!Number.isFinite(at) || at >= requested.at) return requested;
  return Deadline.in(Math.max(0, at - Date.now()));
}
