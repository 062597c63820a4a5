import {
  type handleBidiStreamingCall,
  type handleUnaryCall,
  type Metadata,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { Deadline, requestDeadline } from "../../../shared/deadline.ts";
import { describeError, SwitchyardError } from "../../../shared/errors.ts";
import type { HeaderReader } from "../../../shared/http/header-reader.ts";
import { parseModelName, parseModelVersion } from "../../../shared/model-names.ts";
import { loadRequestOf } from "../../../shared/oip/model-control.ts";
import { readHint } from "../../../shared/oip/request-options.ts";
import { sharedMemoryEndpoints } from "../../../shared/oip/shared-memory-endpoints.ts";
import { withinGrace } from "../../within-grace.ts";
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
import { decodeGrpcInferRequest, grpcInferResponse, parametersOf } from "./grpc-infer.ts";
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
import { grpcError } from "./grpc-status.ts";

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
 * (standalone-app.ts). It runs on the main thread beside the pool: gRPC's HTTP/2 framing is its library's.
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServer> {
  const { pool, models, log } = options;
  const regions = options.sharedMemory;
  const answerer = { agentName: options.name, ...(regions === undefined ? {} : { sharedMemory: regions }) };
  // The same calls and answers as the HTTP routes: a region registered over gRPC serves HTTP requests too.
  const sharedMemory = sharedMemoryEndpoints(regions && regionsControl(regions));
  const server = new Server({
    "grpc.max_receive_message_length": options.maxBodyBytes,
    "grpc.max_send_message_length": -1,
  });
  /** Open ModelStreamInfer streams, told when the server closes. */
  const streams = new Set<() => void>();
  let closing = false;

  const reported = (error: unknown, path: string) => {
    const failure = SwitchyardError.from(error);
    if (failure.status >= 500) log("error", { path, error: describeError(error) });
    return grpcError(failure);
  };

  /** One call's handler: its answer, or the one error type as a gRPC status (thrown at once or later). */
  const unary =
    <Request, Response>(
      handle: (request: Request, call: ServerUnaryCall<Request, Response>) => Promise<Response>,
    ): handleUnaryCall<Request, Response> =>
    (call, callback) => {
      void (async () => handle(call.request, call))().then(
        (response) => callback(null, response),
        (error: unknown) => callback(reported(error, call.getPath())),
      );
    };

  /** Runs one ModelInfer request; the signal follows the client going away. */
  const infer = async (
    message: ModelInferRequestMessage,
    call: { metadata: Metadata; getDeadline(): Date | number },
    signal: AbortSignal,
  ): Promise<ModelInferResponseMessage> => {
    const model = parseModelName(message.model_name);
    const version = optionalVersion(message.model_version);
    const request = decodeGrpcInferRequest(message, regions);
    const headers = metadataReader(call.metadata);
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
      signal,
    );
    return grpcInferResponse(served, request);
  };

  /**
   * ModelStreamInfer (Triton's): each request on the stream is served as it comes and answered in the order
   * it came (as Triton answers a model that is not decoupled), a failure as error_message with the request's
   * id, without ending the stream. A client that stops reading stops being read until it catches up. The
   * stream ends once the client ended its side and every answer is out; once the server closes, new requests
   * are answered UNAVAILABLE and an idle stream ends.
   */
  const streamInfer: handleBidiStreamingCall<ModelInferRequestMessage, ModelStreamInferResponseMessage> = (
    call: ServerDuplexStream<ModelInferRequestMessage, ModelStreamInferResponseMessage>,
  ) => {
    const controller = new AbortController();
    let open = 0;
    let ended = false;
    /** The stream was ended (or cancelled): nothing more is written to it. */
    let finished = false;
    let answered: Promise<void> = Promise.resolve();
    const settle = () => {
      if (finished || !(ended || closing) || open > 0) return;
      finished = true;
      call.end();
    };
    const stop = () => settle();
    streams.add(stop);
    const gone = () => {
      finished = true;
      controller.abort(cancelled());
    };
    call.once("cancelled", gone);
    // A stream that fails (its connection reset mid-message) is a client gone too, not an unhandled 'error'.
    call.on("error", gone);
    call.once("close", () => streams.delete(stop));
    call.on("data", (message: ModelInferRequestMessage) => {
      open += 1;
      const answer = (
        closing
          ? Promise.reject(new SwitchyardError("unavailable", "the agent is shutting down"))
          : infer(message, call, controller.signal)
      ).then(
        (response): ModelStreamInferResponseMessage => ({ error_message: "", infer_response: response }),
        (error: unknown): ModelStreamInferResponseMessage => ({
          error_message: reported(error, call.getPath()).details ?? "",
          // As Triton does, so that the client knows which request failed.
          infer_response: {
            model_name: message.model_name,
            model_version: message.model_version,
            id: message.id,
            outputs: [],
            raw_output_contents: [],
          },
        }),
      );
      // Each answer is written after the one before it (answer never rejects: failures became messages).
      answered = answered
        .then(() => answer)
        .then((response) => {
          open -= 1;
          // A request that came after the stream ended (a drain ended it while the client still sent).
          if (finished) return;
          if (!call.write(response)) {
            call.pause();
            call.once("drain", () => call.resume());
          }
          settle();
        });
    });
    call.on("end", () => {
      ended = true;
      settle();
    });
  };

  const handlers: UntypedServiceImplementation = {
    ServerLive: unary(async () => ({ live: true })),
    ServerReady: unary(async () => ({ ready: options.isReady() })),
    ModelReady: unary(async ({ name, version }: ModelRequestMessage) => {
      try {
        const readiness = await models.readiness(parseModelName(name), optionalVersion(version));
        return { ready: readiness.ready };
      } catch (error) {
        // As Triton answers: a model the repository does not hold is simply not ready.
        if (error instanceof SwitchyardError && error.code === "not_found") return { ready: false };
        throw error;
      }
    }),
    ServerMetadata: unary(async () => ({
      name: options.name,
      version: options.version,
      extensions: standaloneExtensions(regions !== undefined),
    })),
    ModelMetadata: unary(({ name, version }: ModelRequestMessage) =>
      modelMetadata(models, parseModelName(name), optionalVersion(version)),
    ),
    // The JSON form HTTP answers has the protobuf's own field names; enums go as their names.
    ModelConfig: unary(async ({ name, version }: ModelRequestMessage) => ({
      config: await modelConfig(models, pool, parseModelName(name), optionalVersion(version)),
    })),
    ModelStatistics: unary(async ({ name, version }: ModelRequestMessage) => ({
      model_stats: await modelStatistics(
        models,
        ...(name === "" ? [] : [parseModelName(name), optionalVersion(version)]),
      ),
    })),
    ModelInfer: unary((message: ModelInferRequestMessage, call) => {
      const controller = new AbortController();
      call.once("cancelled", () => controller.abort(cancelled()));
      return infer(message, call, controller.signal);
    }),
    ModelStreamInfer: streamInfer,
    RepositoryIndex: unary(async ({ ready }: RepositoryIndexRequestMessage) => ({
      models: (await repositoryIndex(models, pool, ready)).map(({ name, version, state, reason }) => ({
        name,
        version,
        state,
        reason,
      })),
    })),
    RepositoryModelLoad: unary(async (message: RepositoryModelRequestMessage) => {
      const name = repositoryModel(message);
      await loadModel(models, name, loadRequestOf({ parameters: parametersOf(message.parameters) }));
      return { model_name: name, isLoaded: true };
    }),
    RepositoryModelUnload: unary(async (message: RepositoryModelRequestMessage) => {
      const name = repositoryModel(message);
      await unloadModel(models, name);
      return { model_name: name, isUnloaded: true };
    }),
    SystemSharedMemoryStatus: unary(async ({ name }: SharedMemoryNameMessage) => ({
      regions: byName(sharedMemory.systemStatus(everyOr(name))),
    })),
    SystemSharedMemoryRegister: unary(async (message: SystemSharedMemoryRegisterMessage) => {
      // 64-bit sizes arrive as decimal strings; one past 2^53 is no safe number and the schema refuses it.
      const { name, key, offset, byte_size } = message;
      await sharedMemory.systemRegister(name, { key, offset: Number(offset), byte_size: Number(byte_size) });
      return {};
    }),
    SystemSharedMemoryUnregister: unary(async ({ name }: SharedMemoryNameMessage) => {
      await sharedMemory.systemUnregister(everyOr(name));
      return {};
    }),
    CudaSharedMemoryStatus: unary(async ({ name }: SharedMemoryNameMessage) => ({
      regions: byName(sharedMemory.cudaStatus(everyOr(name))),
    })),
    CudaSharedMemoryRegister: unary(async () => sharedMemory.cudaRegister()),
    CudaSharedMemoryUnregister: unary(async () => {
      sharedMemory.cudaUnregister();
      return {};
    }),
    LogSettings: unary(async ({ settings }: LogSettingsMessage) => {
      const request = Object.fromEntries(
        Object.entries(settings).map(([name, value]) => [
          name,
          value.parameter_choice === undefined ? undefined : value[value.parameter_choice],
        ]),
      );
      return { settings: settingValues(updateLogging(options.logSettings, request)) };
    }),
  };
  const service = inferenceService();
  // Every call the .proto lists has its handler, and no handler is for a call it does not list (a misspelt
  // name would otherwise leave its call UNIMPLEMENTED without a word).
  const unhandled = Object.keys(service).filter((method) => !(method in handlers));
  const unlisted = Object.keys(handlers).filter((method) => !(method in service));
  if (unhandled.length > 0 || unlisted.length > 0)
    throw new Error(
      `inference.proto and the gRPC handlers disagree: ${[...unhandled, ...unlisted].join(", ")}`,
    );
  server.addService(service, handlers);

  const address = `${options.host.includes(":") ? `[${options.host}]` : options.host}:${options.port}`;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, ServerCredentials.createInsecure(), (error, bound) =>
      error === null
        ? resolve(bound)
        : reject(new Error(`--grpc-port: cannot listen on ${address} (${error.message}); pick a free port`)),
    );
  });
  return {
    port,
    async close(graceMs) {
      closing = true;
      for (const stop of streams) stop();
      const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      await withinGrace(drained, graceMs);
      server.forceShutdown();
    },
  };
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
function earlier(requested: Deadline, call: { getDeadline(): Date | number }): Deadline {
  const callDeadline = call.getDeadline();
  const at = callDeadline instanceof Date ? callDeadline.getTime() : callDeadline;
  if (!Number.isFinite(at) || at >= requested.at) return requested;
  return Deadline.in(Math.max(0, at - Date.now()));
}

/** What reading request options needs of gRPC metadata: the routing hint and X-Request-Timeout. */
function metadataReader(metadata: Metadata): HeaderReader {
  return {
    get(name) {
      const [value] = metadata.get(name.toLowerCase());
      return value === undefined ? null : String(value);
    },
  };
}

/** Why a call's work is abandoned when its client cancels it (no one reads the answer). */
function cancelled(): SwitchyardError {
  return new SwitchyardError("unavailable", "the client cancelled the call");
}
