/**
 * One thread of the hot-path benchmark's client (client-threads.ts): its share of the clients, in a closed
 * loop of its own over the same window as the others. One Node thread sending 4.9 MB bodies and reading
 * 1.6 MB answers tops out near the rate a multi-threaded agent serves, and the client must not be what is
 * measured.
 */
import { parentPort, workerData } from "node:worker_threads";
import { closedLoop } from "../gpu/measure.ts";
import { HttpLoad, PhaseSum, type PreparedRequest } from "./http-load.ts";

export interface LoadThreadData {
  url: string;
  prepared: PreparedRequest;
  concurrency: number;
  warmupS: number;
  seconds: number;
}

if (parentPort === null) throw new Error("http-load-thread.ts runs as a worker thread");
const port = parentPort;
const { url, prepared, concurrency, warmupS, seconds } = workerData as LoadThreadData;
const client = new HttpLoad(url, concurrency);
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
      const answer = await client.send(prepared);
      phases.add(answer.timing);
      return undefined;
    },
    { keepSamples: true },
  );
  client.close();
  port.postMessage({ type: "done", load, phases: phases.totals });
});
