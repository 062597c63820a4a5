import {
  type CallOptions,
  type ChannelOptions,
  type Client,
  type ClientUnaryCall,
  credentials,
  Metadata,
  makeGenericClientConstructor,
  type ServiceError,
} from "@grpc/grpc-js";
import { inferenceService } from "../../../backend/server/grpc/grpc-proto.ts";
import { REPO_DIR } from "../../fixtures/paths.ts";
import { type AgentProcess, startStandaloneAgent } from "./agent-process.ts";

/**
 * A gRPC client of the agent's GRPCInferenceService as a user writes one: @grpc/grpc-js with stubs loaded
 * from the protocol's .proto (the agent's own copy, whose names and field numbers are the protocol's), over a
 * real HTTP/2 connection. Calls resolve to the answer or to the gRPC error (code, details). Messages are read
 * as the agent reads its own: 64-bit integers as decimal strings, every field present.
 */
const Service = makeGenericClientConstructor(inferenceService(), "GRPCInferenceService");

export type GrpcAnswer<T> =
  | { ok: true; value: T }
  | { ok: false; code: number; details: string; metadata: Metadata };

type Unary = (
  request: unknown,
  metadata: Metadata,
  options: CallOptions,
  callback: (error: ServiceError | null, value: unknown) => void,
) => ClientUnaryCall;

export interface StreamCall {
  write(request: unknown): void;
  end(): void;
  /** Cancels the stream (its responses then reject with CANCELLED). */
  cancel(): void;
  /** Every response until the server ends the stream. */
  responses: Promise<unknown[]>;
}

export interface InferenceClient {
  call<T = Record<string, unknown>>(
    method: string,
    request: unknown,
    options?: { deadlineMs?: number; metadata?: Record<string, string>; cancelAfterMs?: number },
  ): Promise<GrpcAnswer<T>>;
  /** ModelStreamInfer. */
  stream(): StreamCall;
  /** A call to any path, with bytes as the message (for methods the .proto does not list). */
  raw(path: string, message: Uint8Array): Promise<GrpcAnswer<Buffer>>;
  close(): void;
}

/** `channel`: grpc-js channel options besides the unlimited message sizes (e.g. compression). */
export function inferenceClient(address: string, channel: ChannelOptions = {}): InferenceClient {
  const client = new Service(address, credentials.createInsecure(), {
    "grpc.max_receive_message_length": -1,
    "grpc.max_send_message_length": -1,
    ...channel,
  }) as Client & Record<string, unknown>;
  const answer =
    <T>(resolve: (answer: GrpcAnswer<T>) => void) =>
    (error: ServiceError | null, value: unknown) =>
      resolve(
        error === null
          ? { ok: true, value: value as T }
          : { ok: false, code: error.code, details: error.details, metadata: error.metadata },
      );
  return {
    call(method, request, options = {}) {
      const metadata = new Metadata();
      for (const [key, value] of Object.entries(options.metadata ?? {})) metadata.set(key, value);
      const callOptions: CallOptions =
        options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
      return new Promise((resolve) => {
        const call = (client[method] as Unary).call(client, request, metadata, callOptions, answer(resolve));
        if (options.cancelAfterMs !== undefined) setTimeout(() => call.cancel(), options.cancelAfterMs);
      });
    },
    stream() {
      const call = (
        client.ModelStreamInfer as () => NodeJS.ReadWriteStream & { end(): void; cancel(): void }
      ).call(client);
      const responses = new Promise<unknown[]>((resolve, reject) => {
        const received: unknown[] = [];
        call.on("data", (response: unknown) => received.push(response));
        call.on("end", () => resolve(received));
        call.on("error", reject);
      });
      return {
        write: (request) => call.write(request as never),
        end: () => call.end(),
        cancel: () => call.cancel(),
        responses,
      };
    },
    raw(path, message) {
      return new Promise((resolve) => {
        client.makeUnaryRequest(
          path,
          (bytes: Buffer) => bytes,
          (bytes: Buffer) => bytes,
          Buffer.from(message),
          answer(resolve),
        );
      });
    },
    close: () => client.close(),
  };
}

/** The gRPC server's host:port, from the agent's log line. */
export function grpcAddressIn(log: string): string {
  const address = / grpc server listening address=(\S+)/.exec(log)?.[1];
  if (address === undefined) throw new Error(`the agent did not say where gRPC listens:\n${log}`);
  return address;
}

/** A standalone agent serving gRPC too, and a client of it. */
export interface GrpcAgent {
  agent: AgentProcess;
  client: InferenceClient;
}

/**
 * Starts a standalone agent on the fixture repository (one onnxruntime thread) with --grpc-port on any free
 * port and `extra` flags, and connects a client to it.
 */
export async function startGrpcAgent(extra: string[]): Promise<GrpcAgent> {
  const agent = await startStandaloneAgent([
    "--models",
    REPO_DIR,
    "--threads",
    "1",
    "--grpc-port",
    "0",
    ...extra,
  ]);
  try {
    return { agent, client: inferenceClient(grpcAddressIn(agent.log())) };
  } catch (error) {
    // Its caller never gets it to stop.
    await agent.stop();
    throw error;
  }
}

/** Closes the client and stops the agent (either may be missing where the start failed). */
export async function stopGrpcAgent(started: Partial<GrpcAgent>): Promise<void> {
  started.client?.close();
  await started.agent?.stop();
}
