import {
  type handleBidiStreamingCall,
  type handleUnaryCall,
  type Metadata,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
} from "@grpc/grpc-js";
import { Deadline, requestDeadline } from "../../../shared/deadline.ts";
import { describeError, SwitchyardError } from "../../../shared/errors.ts";
import type { HeaderReader } from "../../../shared/http/header-reader.ts";
import { parseModelName, parseModelVersion } from "../../../shared/model-names.ts";
import { catalog } from "../../../shared/models/model-catalog.ts";
import { loadRequestOf } from "../../../shared/oip/model-control.ts";
import { readHint } from "../../../shared/oip/request-options.ts";
import { withinGrace } from "../../within-grace.ts";
import type { StandaloneAppOptions } from "../standalone-app.ts";
import { serveInfer } from "../standalone-infer.ts";
import { modelMetadata, standaloneExtensions } from "../standalone-metadata.ts";
import { decodeGrpcInferRequest, grpcInferResponse, parametersOf } from "./grpc-infer.ts";
import type {
  ModelInferRequestMessage,
  ModelInferResponseMessage,
  ModelRequestMessage,
  ModelStreamInferResponseMessage,
  RepositoryIndexRequestMessage,
  RepositoryModelRequestMessage,
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
  const server = new Server({
    "grpc.max_receive_message_length": options.maxBodyBytes,
    "grpc.max_send_message_length": -1,
  });

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

  const reported = (error: unknown, path: string) => {
    const failure = SwitchyardError.from(error);
    if (failure.status >= 500) log("error", { path, error: describeError(error) });
    return grpcError(failure);
  };

  /** Runs one ModelInfer request; the signal follows the client going away. */
  const infer = async (
    message: ModelInferRequestMessage,
    call: { metadata: Metadata; getDeadline(): Date | number },
    signal: AbortSignal,
  ): Promise<ModelInferResponseMessage> => {
    const model = parseModelName(message.model_name);
    const version = message.model_version === "" ? undefined : parseModelVersion(message.model_version);
    const request = decodeGrpcInferRequest(message, regions);
    const headers = metadataReader(call.metadata);
    const hint = readHint(headers);
    const served = await serveInfer(
      (pooled) => pool.infer(pooled),
      { agentName: options.name, ...(regions === undefined ? {} : { sharedMemory: regions }) },
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

  const handlers = {
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
    ModelInfer: unary((message: ModelInferRequestMessage, call) => {
      const controller = new AbortController();
      call.once("cancelled", () => controller.abort(cancelled()));
      return infer(message, call, controller.signal);
    }),
    ModelStreamInfer: streamInfer(infer),
    RepositoryIndex: unary(async ({ ready }: RepositoryIndexRequestMessage) => {
      // The HTTP index answers from the very same function.
      const entries = catalog(await models.index(), pool.states());
      return {
        models: entries
          .filter((entry) => !ready || entry.state === "READY")
          .map((entry) => ({
            name: entry.name,
            version: entry.version,
            state: entry.state,
            reason: entry.reason,
          })),
      };
    }),
    RepositoryModelLoad: unary(async ({ model_name, parameters }: RepositoryModelRequestMessage) => {
      const name = parseModelName(model_name);
      const load = loadRequestOf({ parameters: parametersOf(parameters) });
      await models.load(name, load.version, { copies: load.copies, pin: true });
      return {};
    }),
    RepositoryModelUnload: unary(async ({ model_name }: RepositoryModelRequestMessage) => {
      const name = parseModelName(model_name);
      await models.versions(name);
      await models.unload(name, undefined, { evict: true });
      return {};
    }),
  };
  server.addService(inferenceService(), handlers);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      `${options.host.includes(":") ? `[${options.host}]` : options.host}:${options.port}`,
      ServerCredentials.createInsecure(),
      (error, bound) => (error === null ? resolve(bound) : reject(error)),
    );
  });
  return {
    port,
    async close(graceMs) {
      const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      await withinGrace(drained, graceMs);
      server.forceShutdown();
    },
  };

  /**
   * ModelStreamInfer (Triton's): each request on the stream is served as it comes, answered when it is done
   * (so not necessarily in order: a response carries its request's id), a failure as error_message
   * without ending the stream. The stream ends once the client ended its side and every answer is out.
   */
  function streamInfer(
    run: typeof infer,
  ): handleBidiStreamingCall<ModelInferRequestMessage, ModelStreamInferResponseMessage> {
    return (call: ServerDuplexStream<ModelInferRequestMessage, ModelStreamInferResponseMessage>) => {
      const controller = new AbortController();
      call.once("cancelled", () => controller.abort(cancelled()));
      let open = 0;
      let ended = false;
      const settle = () => {
        if (ended && open === 0) call.end();
      };
      call.on("data", (message: ModelInferRequestMessage) => {
        open += 1;
        void run(message, call, controller.signal)
          .then(
            (response) => call.write({ error_message: "", infer_response: response }),
            (error: unknown) => call.write({ error_message: reported(error, call.getPath()).details ?? "" }),
          )
          .finally(() => {
            open -= 1;
            settle();
          });
      });
      call.on("end", () => {
        ended = true;
        settle();
      });
    };
  }
}

/** An empty version field is the protocol's "none named". */
function optionalVersion(version: string): string | undefined {
  return version === "" ? undefined : parseModelVersion(version);
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

function cancelled(): SwitchyardError {
  return new SwitchyardError("bad_input", "the client cancelled the call");
}
