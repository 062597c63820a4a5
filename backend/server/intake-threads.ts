/**
 * The standalone server on HTTP intake threads (--http-threads N): starts N intake-thread.ts workers on one
 * port (and on the gRPC port, with --grpc-port), and serves what they hand over: infer calls on the replica
 * pool (after which a thread may get a lane straight to the model's session: lane-grants.ts), other requests
 * on the Hono app, gRPC's other calls with grpc-control.ts, and their log lines.
 * The ports are checked free first, then every thread binds them beside the others. A thread that dies is
 * replaced, so the ports keep their listeners.
 */

import { createServer } from "node:net";
import { type TransferListItem, Worker } from "node:worker_threads";
import type { Hono } from "hono";
import { describeError, noRoute, SwitchyardError } from "../../shared/errors.ts";
import { unlabelled } from "../../shared/oip/classification.ts";
import type { ReplicaPool } from "../pool/replica-pool.ts";
import { requestBuffers } from "../replica/buffer-pool.ts";
import { toWireError } from "../wire-error.ts";
import { withinGrace } from "../within-grace.ts";
import { workerEntryUrl } from "../worker-entry-url.ts";
import type { GrpcControl } from "./grpc/grpc-control.ts";
import { cannotListen } from "./grpc/grpc-transport.ts";
import {
  fromWireCall,
  type IntakeMessage,
  type IntakeSettings,
  type MainMessage,
  outputsForTransfer,
  type WireRequest,
} from "./intake-protocol.ts";
import { LaneGrants } from "./lane-grants.ts";
import type { SharedMemoryRegions } from "./shared-memory-regions.ts";
import { eachMessage, TickMailbox } from "./tick-mailbox.ts";

export interface IntakeThreadsOptions extends Omit<IntakeSettings, "regions" | "grpcPort"> {
  count: number;
  /** gRPC on the threads too (--grpc-port; 0: any free port), its calls other than inference answered here. */
  grpc?: { port: number; control: GrpcControl };
  /** The main thread's shared memory regions, where the agent offers them: each thread decodes with a copy. */
  regions?: SharedMemoryRegions;
  pool: ReplicaPool;
  app: Hono;
  log: (event: string, fields: Record<string, unknown>) => void;
}

export interface IntakeThreads {
  /** The port they share (the one chosen, for port 0). */
  port: number;
  /** The gRPC port they share, where they serve gRPC. */
  grpcPort?: number;
  /** Stops accepting connections and resolves once the threads answered what they had; then ends them. */
  close(graceMs: number): Promise<void>;
}

export async function startIntakeThreads(options: IntakeThreadsOptions): Promise<IntakeThreads> {
  const { count, pool, app, log, regions, grpc, ...settings } = options;
  const entry = workerEntryUrl(import.meta.url, "intake-thread");
  /** The threads serving now, each with its mailbox. */
  const threads = new Map<Worker, TickMailbox<MainMessage>>();
  /** Per thread, the "regions" messages it has not yet said it took, by seq. */
  const regionsAwaited = new Map<Worker, Map<number, () => void>>();
  let regionsSeq = 0;
  let closing = false;
  // Before the first thread starts: a registration answered while the others start reaches them too.
  regions?.publishTo(async (table) => {
    regionsSeq += 1;
    const seq = regionsSeq;
    await Promise.all(
      [...threads].map(
        ([worker, mailbox]) =>
          new Promise<void>((resolve) => {
            regionsAwaited.get(worker)?.set(seq, resolve);
            mailbox.post({ type: "regions", seq, table });
            mailbox.flush();
          }),
      ),
    );
  });

  const start = (ports: Ports): Promise<Worker> =>
    new Promise((resolve, reject) => {
      const worker = new Worker(entry, {
        workerData: {
          ...settings,
          port: ports.http,
          ...(ports.grpc === undefined ? {} : { grpcPort: ports.grpc }),
          ...(regions === undefined ? {} : { regions: regions.table() }),
        } satisfies IntakeSettings,
      });
      regionsAwaited.set(worker, new Map());
      const calls = new Map<number, AbortController>();
      let listening = false;
      const toThread = new TickMailbox<MainMessage>(worker, (message, error) => {
        // An answer that cannot cross (nothing the replicas make should be one) fails its request instead;
        // a failure is plain data, and one that could not cross either is not tried again.
        if ("id" in message && message.type !== "failure")
          toThread.post({ type: "failure", id: message.id, error: toWireError(error) });
        else if (message.type === "lane") {
          message.port.close();
          lanes.notice({ type: "lane-closed", laneId: message.laneId });
        }
      });
      threads.set(worker, toThread);
      const send = (message: MainMessage, transfer: readonly TransferListItem[] = []) => {
        // A thread that exited meanwhile has nobody left to answer.
        if (threads.has(worker)) toThread.post(message, transfer);
      };
      const lanes = new LaneGrants(pool, send, log);
      const handle = (message: IntakeMessage) => {
        switch (message.type) {
          case "listening":
            listening = true;
            return resolve(worker);
          case "listen-failed":
            void worker.terminate();
            return reject(
              Object.assign(
                new Error(message.message),
                message.code === undefined ? {} : { code: message.code },
              ),
            );
          case "infer": {
            const abort = new AbortController();
            calls.set(message.id, abort);
            const { call } = message;
            pool.infer(fromWireCall(call, abort.signal)).then(
              (outcome) => {
                calls.delete(message.id);
                const moved = outputsForTransfer(outcome.outputs);
                // The buffers this request came in went back to this thread's pool after its run: as many of
                // those sizes go back, so the intake thread reads its next ones into memory already paged in.
                const spares = call.spareBytes.flatMap((bytes) => requestBuffers.takeIdle(bytes) ?? []);
                lanes.offer(call);
                send(
                  {
                    type: "outcome",
                    id: message.id,
                    outcome: {
                      ...outcome,
                      outputs: moved.outputs,
                      classes: call.withLabels === true ? outcome.classes : unlabelled(outcome.classes),
                    },
                    spares,
                  },
                  [...moved.transfer, ...spares],
                );
              },
              (error: unknown) => {
                calls.delete(message.id);
                // (The thread logs a 5xx as it answers it, with the path its client called: "log".)
                send({ type: "failure", id: message.id, error: toWireError(error) });
              },
            );
            return;
          }
          case "fetch": {
            const abort = new AbortController();
            calls.set(message.id, abort);
            throughApp(app, message.request, abort.signal).then(
              ({ response, transfer }) => {
                calls.delete(message.id);
                send({ type: "response", id: message.id, response }, transfer);
              },
              (error: unknown) => {
                calls.delete(message.id);
                send({ type: "failure", id: message.id, error: toWireError(error) });
              },
            );
            return;
          }
          case "grpc": {
            const { id, call, request } = message;
            if (grpc === undefined) {
              send({ type: "failure", id, error: toWireError(new Error("this agent serves no gRPC")) });
              return;
            }
            // (A call that throws at once fails as one that rejects; the thread logs a 5xx as it answers it.)
            Promise.resolve()
              .then(() => grpc.control(call, request))
              .then(
                (answer) => send({ type: "grpc-answer", id, answer }),
                (error: unknown) => send({ type: "failure", id, error: toWireError(error) }),
              );
            return;
          }
          case "log":
            return log(message.event, message.fields);
          case "abort":
            calls.get(message.id)?.abort(new SwitchyardError("unavailable", "the client went away"));
            return;
          case "lane-retired":
          case "lane-closed":
            return lanes.notice(message);
          case "regions-taken": {
            const awaited = regionsAwaited.get(worker);
            awaited?.get(message.seq)?.();
            awaited?.delete(message.seq);
            return;
          }
          case "closed":
            return;
        }
      };
      worker.on("message", eachMessage(handle));
      worker.once("error", (error) => {
        log("http thread failed", { error: describeError(error) });
        reject(error);
      });
      worker.once("exit", (code) => {
        threads.delete(worker);
        for (const taken of regionsAwaited.get(worker)?.values() ?? []) taken();
        regionsAwaited.delete(worker);
        lanes.end();
        for (const abort of calls.values())
          abort.abort(new SwitchyardError("unavailable", "HTTP thread exited"));
        // Only one that served is replaced: one that could not listen would fail again, and again.
        if (closing || !listening) return;
        log("http thread exited", { code, replaced: true });
        start(ports).catch((error: unknown) =>
          log("http thread could not be replaced", { error: describeError(error) }),
        );
      });
    });

  // Both ports held at once while they are checked: the same port asked for twice (or 0 picked twice) is
  // refused rather than shared by HTTP and gRPC.
  const http = await claimPort(settings.host, settings.port);
  const ports: Ports = { http: http.port };
  try {
    if (grpc !== undefined) {
      const claimed = await claimPort(settings.host, grpc.port).catch((error: Error) => {
        throw cannotListen(settings.host, grpc.port, error);
      });
      ports.grpc = claimed.port;
      await claimed.release();
    }
  } finally {
    await http.release();
  }
  try {
    // The first binds them before the others join it there.
    await start(ports);
    await Promise.all(Array.from({ length: count - 1 }, () => start(ports)));
  } catch (error) {
    closing = true;
    await Promise.all([...threads.keys()].map((worker) => worker.terminate()));
    throw error;
  }

  return {
    port: ports.http,
    ...(ports.grpc === undefined ? {} : { grpcPort: ports.grpc }),
    async close(graceMs) {
      closing = true;
      const workers = [...threads];
      const closed = workers.map(
        ([worker, mailbox]) =>
          new Promise<void>((resolve) => {
            worker.on(
              "message",
              eachMessage((message: IntakeMessage) => {
                if (message.type === "closed") resolve();
              }),
            );
            worker.once("exit", () => resolve());
            // After the answers already gathered for it this turn.
            mailbox.post({ type: "close", graceMs });
            mailbox.flush();
          }),
      );
      await withinGrace(Promise.all(closed), graceMs);
      await Promise.all(workers.map(([worker]) => worker.terminate()));
    },
  };
}

/** The ports the threads share: HTTP's, and gRPC's where they serve it. */
interface Ports {
  http: number;
  grpc?: number;
}

/** The methods fetch forbids in a Request. */
const FORBIDDEN_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);

/** A forwarded request through the app, its answer read whole (the app's answers are small and finite). */
async function throughApp(
  app: Hono,
  wire: WireRequest,
  signal: AbortSignal,
): Promise<{
  response: { status: number; headers: [string, string][]; body: ArrayBuffer };
  transfer: ArrayBuffer[];
}> {
  // No route of the app takes them, and a web Request cannot carry them: the app's own 404, as on the main
  // thread's server (whose Hono adapter builds no Request for them). Of the three only TRACE gets here: Node's
  // parser refuses TRACK, and CONNECT goes to the server's 'connect' event.
  if (FORBIDDEN_METHODS.has(wire.method.toUpperCase()))
    throw noRoute(wire.method, new URL(wire.url).pathname);
  let request: Request;
  try {
    request = new Request(wire.url, {
      method: wire.method,
      headers: wire.headers,
      ...(wire.body === undefined ? {} : { body: wire.body }),
      signal,
    });
  } catch (error) {
    // What Node's parser let through but a web Request refuses (a header value fetch forbids): the
    // client's to fix, as on the main thread's server (standalone-server.ts appListener).
    throw new SwitchyardError("bad_input", `the request cannot be read: ${describeError(error)}`);
  }
  const response = await app.fetch(request);
  const body = await response.arrayBuffer();
  return {
    response: { status: response.status, headers: [...response.headers], body },
    transfer: [body],
  };
}

/**
 * A port the threads will share, checked free first by binding it alone (without SO_REUSEPORT): the
 * threads' own binds would otherwise succeed beside another agent of the same user on that port, and the
 * two would silently split its connections. For 0, the free port the kernel picks. Held until `release`.
 */
function claimPort(host: string, port: number): Promise<{ port: number; release(): Promise<void> }> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen({ host, port, exclusive: true }, () => {
      const address = probe.address();
      resolve({
        port: typeof address === "object" && address !== null ? address.port : port,
        release: () => new Promise((released) => probe.close(() => released())),
      });
    });
  });
}
