import { SwitchyardError } from "../../../shared/errors.ts";
import { parseModelName } from "../../../shared/model-names.ts";
import { loadRequestOf } from "../../../shared/oip/model-control.ts";
import { sharedMemoryEndpoints } from "../../../shared/oip/shared-memory-endpoints.ts";
import { type LoggingAnswer, updateLogging } from "../logging-endpoint.ts";
import { regionsControl } from "../shared-memory-regions.ts";
import type { StandaloneAppOptions } from "../standalone-app.ts";
import {
  loadModel,
  modelConfig,
  modelMetadata,
  modelStatistics,
  repositoryIndex,
  standaloneExtensions,
  unloadModel,
} from "../standalone-models.ts";
import { optionalVersion, parametersOf } from "./grpc-infer.ts";
import type {
  LogSettingsMessage,
  LogSettingValueMessage,
  ModelRequestMessage,
  RepositoryIndexRequestMessage,
  RepositoryModelRequestMessage,
  SharedMemoryNameMessage,
  SystemSharedMemoryRegisterMessage,
} from "./grpc-messages.ts";
import { INFER_CALLS, inferenceService } from "./grpc-proto.ts";

/**
 * Every call of GRPCInferenceService but inference: health, metadata, configuration, statistics, the
 * repository, shared memory and logging, answered from the main thread's pool, repository and regions
 * (with the same answers as the HTTP routes: a region registered over gRPC serves HTTP requests too).
 * A call's request and answer are the .proto's messages as @grpc/proto-loader decodes and encodes them
 * (plain objects), so the call may be read on another thread (an HTTP intake thread) and answered here.
 */
export type GrpcControl = (call: string, request: unknown) => Promise<object>;

export function grpcControl(options: StandaloneAppOptions): GrpcControl {
  const { pool, models } = options;
  const regions = options.sharedMemory;
  const sharedMemory = sharedMemoryEndpoints(regions && regionsControl(regions));

  type Handler = (request: unknown) => Promise<object>;
  const handler = <Request>(handle: (request: Request) => Promise<object>) => handle as Handler;

  const handlers: Record<string, Handler> = {
    ServerLive: handler(async () => ({ live: true })),
    ServerReady: handler(async () => ({ ready: options.isReady() })),
    ModelReady: handler(async ({ name, version }: ModelRequestMessage) => {
      try {
        const readiness = await models.readiness(parseModelName(name), optionalVersion(version));
        return { ready: readiness.ready };
      } catch (error) {
        // As Triton answers: a model the repository does not hold is simply not ready.
        if (error instanceof SwitchyardError && error.code === "not_found") return { ready: false };
        throw error;
      }
    }),
    ServerMetadata: handler(async () => ({
      name: options.name,
      version: options.version,
      extensions: standaloneExtensions(regions !== undefined),
    })),
    ModelMetadata: handler(({ name, version }: ModelRequestMessage) =>
      modelMetadata(models, parseModelName(name), optionalVersion(version)),
    ),
    // The JSON form HTTP answers has the protobuf's own field names; enums go as their names.
    ModelConfig: handler(async ({ name, version }: ModelRequestMessage) => ({
      config: await modelConfig(models, pool, parseModelName(name), optionalVersion(version)),
    })),
    ModelStatistics: handler(async ({ name, version }: ModelRequestMessage) => ({
      model_stats: await modelStatistics(
        models,
        ...(name === "" ? [] : [parseModelName(name), optionalVersion(version)]),
      ),
    })),
    RepositoryIndex: handler(async ({ ready }: RepositoryIndexRequestMessage) => ({
      models: (await repositoryIndex(models, pool, ready)).map(({ name, version, state, reason }) => ({
        name,
        version,
        state,
        reason,
      })),
    })),
    RepositoryModelLoad: handler(async (message: RepositoryModelRequestMessage) => {
      const name = repositoryModel(message);
      await loadModel(models, name, loadRequestOf({ parameters: parametersOf(message.parameters) }));
      return { model_name: name, isLoaded: true };
    }),
    RepositoryModelUnload: handler(async (message: RepositoryModelRequestMessage) => {
      const name = repositoryModel(message);
      await unloadModel(models, name);
      return { model_name: name, isUnloaded: true };
    }),
    SystemSharedMemoryStatus: handler(async ({ name }: SharedMemoryNameMessage) => ({
      regions: byName(sharedMemory.systemStatus(everyOr(name))),
    })),
    SystemSharedMemoryRegister: handler(async (message: SystemSharedMemoryRegisterMessage) => {
      // 64-bit sizes arrive as decimal strings; one past 2^53 is no safe number and the schema refuses it.
      const { name, key, offset, byte_size } = message;
      await sharedMemory.systemRegister(name, {
        key,
        offset: Number(offset),
        byte_size: Number(byte_size),
      });
      return {};
    }),
    SystemSharedMemoryUnregister: handler(async ({ name }: SharedMemoryNameMessage) => {
      await sharedMemory.systemUnregister(everyOr(name));
      return {};
    }),
    CudaSharedMemoryStatus: handler(async ({ name }: SharedMemoryNameMessage) => ({
      regions: byName(sharedMemory.cudaStatus(everyOr(name))),
    })),
    CudaSharedMemoryRegister: handler(async () => sharedMemory.cudaRegister()),
    CudaSharedMemoryUnregister: handler(async () => {
      sharedMemory.cudaUnregister();
      return {};
    }),
    LogSettings: handler(async ({ settings }: LogSettingsMessage) => {
      const request = Object.fromEntries(
        Object.entries(settings).map(([name, value]) => [
          name,
          value.parameter_choice === undefined ? undefined : value[value.parameter_choice],
        ]),
      );
      return { settings: settingValues(updateLogging(options.logSettings, request)) };
    }),
  };

  // Every call the .proto lists has its handler, here or among the infer calls (and none that it does not
  // list): a call left out would otherwise be UNIMPLEMENTED without a word.
  const service = Object.keys(inferenceService());
  const unhandled = service.filter((call) => !INFER_CALLS.has(call) && !(call in handlers));
  const unknown = Object.keys(handlers).filter((call) => !service.includes(call));
  if (unhandled.length > 0 || unknown.length > 0)
    throw new Error(
      `inference.proto and the gRPC handlers disagree: ${[...unhandled.map((call) => `${call} has no handler`), ...unknown.map((call) => `${call} is not in the .proto`)].join(", ")}`,
    );

  return (call, request) => {
    const handle = handlers[call];
    if (handle === undefined) throw new Error(`no gRPC handler for ${call}`);
    return handle(request);
  };
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
