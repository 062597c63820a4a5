/**
 * The hot-path benchmark's client over several threads: `concurrency` clients split over `threads` worker
 * threads (http-load-thread.ts), their loops started together and merged into one result. Over gRPC the
 * channels are split too (a thread has at least one, so there are no more threads than channels).
 */
import { Worker } from "node:worker_threads";
import { workerEntryUrl } from "../../backend/worker-entry-url.ts";
import { type LoadResult, mergeLoads } from "../gpu/measure.ts";
import { PhaseSum } from "./http-load.ts";
import type { LoadThreadData, LoadThreadWork } from "./http-load-thread.ts";

export async function threadedLoad(options: {
  work: LoadThreadWork;
  concurrency: number;
  threads: number;
  warmupS: number;
  seconds: number;
}): Promise<{ load: LoadResult; phases: Record<string, number> }> {
  const { work } = options;
  const threads = Math.max(
    1,
    Math.min(
      options.threads,
      options.concurrency,
      work.kind === "grpc" ? work.channels : Number.POSITIVE_INFINITY,
    ),
  );
  const entry = workerEntryUrl(import.meta.url, "http-load-thread");
  const workers = Array.from({ length: threads }, (_, index) => {
    // The clients spread as evenly as they divide: 32 over 3 threads is 11, 11, 10.
    const share = (total: number) => Math.floor(total / threads) + (index < total % threads ? 1 : 0);
    const data: LoadThreadData = {
      work: work.kind === "grpc" ? { ...work, channels: share(work.channels) } : work,
      concurrency: share(options.concurrency),
      warmupS: options.warmupS,
      seconds: options.seconds,
    };
    return new Worker(entry, { workerData: data });
  });
  try {
    await Promise.all(workers.map((worker) => nextMessage(worker)));
    const startAt = Date.now() + 20;
    const done = workers.map((worker) => nextMessage(worker));
    for (const worker of workers) worker.postMessage({ startAt });
    const results = (await Promise.all(done)) as Array<{
      load: LoadResult;
      phases: { sums: Record<string, number>; count: number };
    }>;
    const phases = new PhaseSum();
    for (const result of results) phases.add(result.phases.sums, result.phases.count);
    return { load: mergeLoads(results.map((result) => result.load)), phases: phases.mean() };
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
}

function nextMessage(worker: Worker): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    worker.once("error", onError);
    worker.once("message", (message) => {
      worker.off("error", onError);
      resolve(message);
    });
  });
}
