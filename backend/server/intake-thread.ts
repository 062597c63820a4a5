/**
 * One HTTP intake thread of the standalone server (--http-threads): it listens on the server's port beside
 * the others (SO_REUSEPORT: the kernel spreads connections over them), reads each infer body into its
 * final buffer, decodes it, and hands the tensors to the main thread by transfer (or down a lane); it
 * encodes and writes the answer. Every other request is forwarded whole to the main thread's Hono app. With
 * --grpc-port it does the same for gRPC on that port: inference calls served here, every other call handed
 * to the main thread decoded. So the main thread, which routes and batches for every replica, never touches
 * a socket: at 32 clients sending 4.9 MB images it had spent 40 to 48 ms of each request reading bodies
 * (bench/results/hot-path-cuda.md). The agent's own failures (5xx) are logged from here, through the main
 * thread's log, with the path the client called.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { parentPort, workerData } from "node:worker_threads";
import { SwitchyardError } from "../../shared/errors.ts";
import { bodyTooLarge, bodyUnreadable, maxEncodedBytes } from "../../shared/http/request-body.ts";
import type { PooledInferCall, PooledOutcome } from "../pool/replica-pool.ts";
import { requestBuffers } from "../replica/buffer-pool.ts";
import { fromWireError, toWireError } from "../wire-error.ts";
import { answerError } from "./direct-infer-route.ts";
import type { GrpcServer } from "./grpc/grpc-service.ts";
import { IntakeLanes } from "./intake-lanes.ts";
import {
  type IntakeMessage,
  type IntakeSettings,
  inputBuffers,
  type MainMessage,
  toWireCall,
  type WireResponse,
} from "./intake-protocol.ts";
import { SharedMemoryRegions } from "./shared-memory-regions.ts";
import { listen, standaloneServer } from "./standalone-server.ts";
import { eachMessage, TickMailbox } from "./tick-mailbox.ts";

if (parentPort === null) throw new Error("intake-thread.ts runs as a worker thread (intake-threads.ts)");
const main = parentPort;
const settings = workerData as IntakeSettings;

type Settle = (message: MainMessage) => void;
/** The requests sent to the main thread, by id, until their answer. */
const waiting = new Map<number, Settle>();
let nextId = 0;

const toMain = new TickMailbox<IntakeMessage>(main, (message, error) => {
  // A request that could not cross fails here, as its answer would have.
  if ("id" in message) settle({ type: "failure", id: message.id, error: toWireError(error) });
});

/** Hands the main thread's answer to whoever waits for it. */
function settle(answer: Extract<MainMessage, { id: number }>): void {
  const waiter = waiting.get(answer.id);
  waiting.delete(answer.id);
  waiter?.(answer);
}

/** Sends a request to the main thread; resolves with its answer. A client gone away is told as an abort. */
function ask(
  message: (id: number) => IntakeMessage,
  transfer: ArrayBuffer[],
  signal: AbortSignal | undefined,
): Promise<MainMessage> {
  nextId += 1;
  const id = nextId;
  return new Promise((resolve) => {
    const onAbort = () => toMain.post({ type: "abort", id });
    signal?.addEventListener("abort", onAbort, { once: true });
    waiting.set(id, (answer) => {
      signal?.removeEventListener("abort", onAbort);
      resolve(answer);
    });
    toMain.post(message(id), transfer);
  });
}

/** Lanes straight to sessions' threads, for models the main thread granted one (intake-lanes.ts). */
const lanes = new IntakeLanes((notice) => toMain.post(notice));

/** On the model's lane where it has one, else through the main thread (which may grant one). */
function infer(call: PooledInferCall): Promise<PooledOutcome> {
  return lanes.has(call) ? lanes.infer(call) : inferOnMain(call);
}

async function inferOnMain(call: PooledInferCall): Promise<PooledOutcome> {
  const answer = await ask(
    (id) => ({ type: "infer", id, call: toWireCall(call) }),
    inputBuffers(call.inputs),
    call.signal,
  );
  if (answer.type === "failure") throw fromWireError(answer.error);
  if (answer.type !== "outcome") throw new Error(`the main thread answered '${answer.type}' to an infer`);
  for (const spare of answer.spares) requestBuffers.release(spare);
  return answer.outcome;
}

/** Forwards a request the infer route does not take to the main thread's app, and writes its answer. */
function throughMain(request: IncomingMessage, response: ServerResponse): void {
  void forward(request, response).catch((error: unknown) =>
    answerError(response, SwitchyardError.from(error)),
  );
}

async function forward(request: IncomingMessage, response: ServerResponse): Promise<void> {
  const abort = new AbortController();
  response.once("close", () => {
    if (!response.writableFinished) abort.abort();
  });
  const method = request.method ?? "GET";
  const body =
    method === "GET" || method === "HEAD"
      ? undefined
      : // Past this, decompressed, the body could only be larger than the app's own limit (request-body.ts).
        await readAll(request, maxEncodedBytes(settings.maxBodyBytes));
  const headers: [string, string][] = [];
  for (let index = 0; index + 1 < request.rawHeaders.length; index += 2) {
    const name = request.rawHeaders[index] as string;
    // The body arrives whole: how it was framed on this connection is not the app's business.
    if (!HOP_BY_HOP.has(name.toLowerCase())) headers.push([name, request.rawHeaders[index + 1] as string]);
  }
  const answer = await ask(
    (id) => ({
      type: "fetch",
      id,
      request: {
        method,
        url: appUrl(request.url ?? "/"),
        headers,
        ...(body === undefined ? {} : { body }),
      },
    }),
    body === undefined ? [] : [body],
    abort.signal,
  );
  if (answer.type === "failure") throw fromWireError(answer.error);
  if (answer.type !== "response") throw new Error(`the main thread answered '${answer.type}' to a request`);
  writeResponse(response, answer.response);
}

/** The request's URL for the app: its path and query (the app routes on them alone); unreadable is a 400. */
function appUrl(target: string): string {
  try {
    return new URL(target, "http://agent").href;
  } catch {
    throw new SwitchyardError("bad_input", "the request's URL cannot be read");
  }
}

const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"]);

function writeResponse(response: ServerResponse, answer: WireResponse): void {
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of answer.headers) {
    const seen = headers[name];
    headers[name] = seen === undefined ? value : [...(Array.isArray(seen) ? seen : [seen]), value];
  }
  headers["content-length"] = String(answer.body.byteLength);
  response.writeHead(answer.status, headers);
  response.end(new Uint8Array(answer.body));
}

/** The whole body, in one buffer of its own; more than `maxBytes` is a 413. */
function readAll(request: IncomingMessage, maxBytes: number): Promise<ArrayBuffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    request.on("data", (chunk: Buffer) => {
      length += chunk.byteLength;
      if (length > maxBytes) {
        request.destroy();
        reject(bodyTooLarge(settings.maxBodyBytes));
        return;
      }
      chunks.push(chunk);
    });
    request.once("end", () => {
      const body = new Uint8Array(length);
      let offset = 0;
      for (const chunk of chunks) {
        body.set(chunk, offset);
        offset += chunk.byteLength;
      }
      resolve(body.buffer);
    });
    request.once("error", (error) => reject(bodyUnreadable(error)));
  });
}

/** This thread's copy of the main thread's shared memory regions, which it decodes requests with. */
const regions =
  settings.regions === undefined
    ? undefined
    : new SharedMemoryRegions({ maxInputBytes: settings.maxBodyBytes });
if (settings.regions !== undefined) regions?.replace(settings.regions);

/** The agent's log, on the main thread (fields cross as they are: strings and numbers). */
const log = (event: string, fields: Record<string, unknown>) => toMain.post({ type: "log", event, fields });

const server = standaloneServer(throughMain, {
  infer,
  ...(regions === undefined ? {} : { sharedMemory: regions }),
  agentName: settings.agentName,
  maxBodyBytes: settings.maxBodyBytes,
  defaultTimeoutMs: settings.defaultTimeoutMs,
  spinMs: settings.spinMs,
  log,
});

/**
 * gRPC beside HTTP, where the agent serves it (--grpc-port): ModelInfer and ModelStreamInfer are read, run
 * (on a lane, or through the main thread) and answered here like HTTP's infer requests; every other call is
 * answered by the main thread, which holds the repository, the statistics and the regions (grpc-control.ts).
 */
async function startGrpc(port: number): Promise<GrpcServer> {
  // Its library is loaded only where gRPC is served.
  const { startGrpcService } = await import("./grpc/grpc-service.ts");
  return startGrpcService({
    host: settings.host,
    port,
    reusePort: true,
    maxBodyBytes: settings.maxBodyBytes,
    defaultTimeoutMs: settings.defaultTimeoutMs,
    infer,
    answerer: { agentName: settings.agentName, ...(regions === undefined ? {} : { sharedMemory: regions }) },
    control: async (call, request) => {
      const answer = await ask((id) => ({ type: "grpc", id, call, request }), [], undefined);
      if (answer.type === "failure") throw fromWireError(answer.error);
      if (answer.type !== "grpc-answer")
        throw new Error(`the main thread answered '${answer.type}' to a gRPC call`);
      return answer.answer;
    },
    log,
  });
}
let grpc: GrpcServer | undefined;

main.on(
  "message",
  eachMessage((message: MainMessage) => {
    switch (message.type) {
      case "close":
        // (Node's close() ends idle keep-alive connections itself; busy ones end once answered: standalone-server.ts.)
        void Promise.all([
          new Promise<void>((resolve) => server.close(() => resolve())),
          grpc?.close(message.graceMs),
        ]).then(() => toMain.post({ type: "closed" }));
        return;
      case "lane":
        return lanes.open(message);
      case "revoke-lane":
        return lanes.revoke(message.laneId);
      case "regions":
        regions?.replace(message.table);
        toMain.post({ type: "regions-taken", seq: message.seq });
        return;
      default:
        settle(message);
    }
  }),
);

Promise.all([
  listen(server, settings.host, settings.port, true),
  settings.grpcPort === undefined ? undefined : startGrpc(settings.grpcPort),
]).then(
  ([, started]) => {
    grpc = started;
    toMain.post({ type: "listening" });
  },
  (error: Error & { code?: string }) =>
    toMain.post({
      type: "listen-failed",
      message: error.message,
      ...(error.code === undefined ? {} : { code: error.code }),
    }),
);
