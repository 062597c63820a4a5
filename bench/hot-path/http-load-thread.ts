/**
 * One thread of the hot-path benchmark's client (client-threads.ts): its share of the clients, in a closed
 * loop of its own over the same window as the others, over HTTP or gRPC. One Node thread sending 4.9 MB
 * bodies and reading 1.6 MB answers tops out near the rate a multi-threaded agent serves (a grpc-js client
 * well below it), and the client must not be what is measured.
 */
import { parentPort, workerData } from "node:worker_threads";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { closedLoop } from "../gpu/measure.ts";
import { grpcRequests } from "./grpc-requests.ts";
import { HttpLoad, PhaseSum, type PreparedRequest } from "./http-load.ts";

/** What the thread's clients send: an HTTP request, or a ModelInfer call over `channels` connections. */
export type LoadThreadWork =
  | { kind: "http"; url: string; prepared: PreparedRequest }
  | { kind: "grpc"; address: string; model: string; input: Tensor; channels: number };

export interface LoadThreadData {
  work: LoadThreadWork;
  concurrency: number;
  warmupS: number;
  seconds: number;
}

/** One request of the thread's, and the Server-Timing stages its answer reported (none over gRPC). */
interface Sender {
  send(): Promise<Record<string, number>>;
  close(): void;
}

function senderFor(work: LoadThreadWork, concurrency: number): Sender {
  if (work.kind === "http") {
    const client = new HttpLoad(work.url, concurrency);
    return {
      send: async () => (await client.send(work.prepared)).timing,
      close: () => client.close(),
    };
  }
  // Its answers were checked on the benchmark's main thread before the load (hot-path.ts).
  const requests = grpcRequests(work.address, work.model, work.input, [], work.channels);
  return {
    send: async () => {
      await requests.send();
      return {};
    },
    close: () => requests.close(),
  };
}

if (parentPort === null) throw new Error("http-load-thread.ts runs as a worker thread");
const port = parentPort;
const { work, concurrency, warmupS, seconds } = workerData as LoadThreadData;
const sender = senderFor(work, concurrency);
port.postMessage({ type: "ready" });
port.once("message", async (message: { startAt: number }) => {
  // Every thread's window starts at the same moment (one process, one clock).
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, message.startAt - Date.now())));
  const phases = new PhaseSum();
  const load = await closedLoop(
    concurrency,
    warmupS,
    seconds,
    async () => {
      phases.add(await sender.send());
      return undefined;
    },
    { keepSamples: true },
  );
  sender.close();
  port.postMessage({ type: "done", load, phases: phases.totals });
});
