/**
 * The managed queue against the synchronous path (issue 15), on one real `wrangler dev` with real agents:
 *
 *   sync      N requests by C closed-loop clients through POST /v2/models/{m}/infer
 *   queue     the same N submitted at once to POST /v2/queue/..., each client then polling its result:
 *             submit-to-result latency and throughput, and how far each request's estimated_start_at
 *             (read at submit) was from its started_at
 *   burst     B requests submitted in a burst by C clients to a pool whose agent joins only once all are in,
 *             so that the whole burst waits in the queue; then drained. Memory throughout: the Worker
 *             isolate's JS heap (through wrangler's inspector, after a full collection; it holds the Worker
 *             and every Durable Object: queue, registry, relays) and the workerd processes' RSS
 *
 *   npm run bench:queue [-- --requests 400 --clients 8 --burst 10000 --out bench/results]
 *
 * Results: bench/results/queue.md, with the machine and the command.
 */
import { readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { parseArgs } from "node:util";
import { infer } from "../../shared/oip/http-client.ts";
import { QueueClient, type Submitted } from "../../shared/queue/queue-client.ts";
import { DET_MODEL, MULTIPLEX_MODELS } from "../../test/fixtures/paths.ts";
import { PPOCR_DET_DIMS, ppocrDetSampleInput } from "../../test/fixtures/ppocr.ts";
import { startAgent } from "../../test/integration/harness/agents.ts";
import { clientAuthorization, mlpRequest, waitForAgents } from "../../test/integration/harness/oip-client.ts";
import { SECRETS, startGateway } from "../../test/integration/harness/wrangler-dev.ts";
import { percentile, round } from "../gpu/measure.ts";
import { findInspector, IsolateProfiler } from "../registry/isolate-profile.ts";
import { describeGateway } from "../run-setup.ts";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "400" },
    "det-requests": { type: "string", default: "48" },
    clients: { type: "string", default: "8" },
    burst: { type: "string", default: "10000" },
    out: { type: "string", default: "bench/results" },
  },
});
const REQUESTS = Number(values.requests);
const CLIENTS = Number(values.clients);
const BURST = Number(values.burst);
const DET_REQUESTS = Number(values["det-requests"]);
const MODEL = MULTIPLEX_MODELS[0] ?? "m000";
const POOL = "bench";
/** The burst's pool: no agent until every request of the burst was submitted. */
const BURST_POOL = "burst";
const POLL_MS = 20;

const startedAt = Date.now();
const gateway = await startGateway({ vars: { QUEUE_IN_FLIGHT: "8" } });
const agent = await startAgent({
  gateway: gateway.wsUrl,
  name: "bench",
  pool: POOL,
  args: ["--preload", MODEL, "--preload", DET_MODEL, "--max-concurrency", "8"],
});
await waitForAgents(gateway.url, 1, POOL);
const queue = new QueueClient({ baseUrl: gateway.url, apiKey: SECRETS.apiKey, pool: POOL });

/** Runs `task` for every index with `clients` workers; resolves when all are done. */
async function pool<T>(count: number, clients: number, task: (index: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let index = next++; index < count; index = next++) results[index] = await task(index);
    }),
  );
  return results;
}

async function resultOf(handle: Submitted): Promise<void> {
  for (;;) {
    const result = await queue.result(handle);
    if (result !== undefined) return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

const workerd = workerdPids(gateway.process.child.pid ?? 0);
const inspectorUrl = await findInspector(gateway.process.child.pid ?? 0);
const inspector = inspectorUrl === undefined ? undefined : await IsolateProfiler.connect(inspectorUrl);
/**
 * The isolate's JS heap in use (bytes), after a full collection when `collect`; undefined without an
 * inspector, or when it did not answer (a busy isolate answers late; the reading is then left out).
 */
const heapOf = async (collect: boolean) => {
  try {
    return (await inspector?.heapUsage(collect))?.usedBytes;
  } catch (error) {
    console.error(`no heap reading: ${String(error)}`);
    return undefined;
  }
};
const rssAtStart = rssOf(workerd);
const heapAtStart = await heapOf(true);

// Warm-up: the model is loaded and both paths have run.
await infer(gateway.url, MODEL, mlpRequest(1, 0), {
  headers: { ...clientAuthorization, "X-Switchyard-Pool": POOL },
});
await resultOf(await queue.submit(MODEL, mlpRequest(1, 0)));

// Synchronous: C closed-loop clients.
const syncStarted = performance.now();
const syncLatencies = await pool(REQUESTS, CLIENTS, async (index) => {
  const sent = performance.now();
  await infer(gateway.url, MODEL, mlpRequest(1, index), {
    headers: { ...clientAuthorization, "X-Switchyard-Pool": POOL },
  });
  return performance.now() - sent;
});
const syncSeconds = (performance.now() - syncStarted) / 1000;
const rssAfterSync = rssOf(workerd);
const heapAfterSync = await heapOf(true);

// Queue: all N submitted (C at a time), then each followed to its result.
const queueStarted = performance.now();
const submitted = await pool(REQUESTS, CLIENTS, async (index) => {
  const sent = performance.now();
  const handle = await queue.submit(MODEL, mlpRequest(1, index));
  return { handle, sent };
});
const queueLatencies = await pool(REQUESTS, CLIENTS, async (index) => {
  const { handle, sent } = submitted[index] as (typeof submitted)[number];
  await resultOf(handle);
  return performance.now() - sent;
});
const queueSeconds = (performance.now() - queueStarted) / 1000;

// Estimates: det on the CPU takes long enough for a backlog to form behind QUEUE_IN_FLIGHT; each submit's
// estimated_start_at against its started_at.
const image = {
  inputs: [{ name: "x", datatype: "FP32" as const, shape: [...PPOCR_DET_DIMS], data: ppocrDetSampleInput() }],
};
await resultOf(await queue.submit(DET_MODEL, image, { binaryInputs: true }));
// Submitted all at once (each submit carries 4.9 MB to R2; one after another they arrive slower than
// QUEUE_IN_FLIGHT runs drain them, and no backlog forms).
const detHandles = await Promise.all(
  Array.from({ length: DET_REQUESTS }, () => queue.submit(DET_MODEL, image, { binaryInputs: true })),
);
const estimateErrors: number[] = [];
const positions: number[] = [];
for (const handle of detHandles) {
  await resultOf(handle);
  if (handle.estimated_start_at === undefined) continue;
  const status = await queue.status(handle);
  if (status.started_at === undefined) continue;
  positions.push(handle.queue_position ?? 0);
  estimateErrors.push(Math.abs(Date.parse(status.started_at) - Date.parse(handle.estimated_start_at)));
}
const detRunMs = await (async () => {
  const status = await queue.status(detHandles.at(-1) as Submitted);
  return Date.parse(status.finished_at ?? "") - Date.parse(status.started_at ?? "");
})();

// Burst: B submits to a pool with no agent yet (the whole burst waits in the queue's storage), then an agent
// joins and drains it; memory throughout.
const rssBefore = rssOf(workerd);
const heapBefore = await heapOf(true);
let rssPeak = rssBefore;
let heapPeak = heapBefore ?? 0;
let sampling = false;
const sampler = setInterval(() => {
  rssPeak = Math.max(rssPeak, rssOf(workerd));
  if (sampling || inspector === undefined) return;
  sampling = true;
  void heapOf(false)
    .then((used) => {
      heapPeak = Math.max(heapPeak, used ?? 0);
    })
    .finally(() => {
      sampling = false;
    });
}, 500);
const burstQueue = new QueueClient({ baseUrl: gateway.url, apiKey: SECRETS.apiKey, pool: BURST_POOL });
console.error(`burst: ${BURST} submits`);
const burstStarted = performance.now();
const burst = await pool(BURST, CLIENTS * 2, (index) =>
  burstQueue.submit(MODEL, mlpRequest(1, index % 1000)),
);
const submitSeconds = (performance.now() - burstStarted) / 1000;
const lastStatus = await burstQueue.status(burst.at(-1) as Submitted);
const waitingAtPeak = lastStatus.status === "IN_QUEUE" ? (lastStatus.queue_position ?? 0) + 1 : 0;
const rssBacklog = rssOf(workerd);
const heapBacklog = await heapOf(true);
console.error(`burst: ${waitingAtPeak} waiting; an agent joins to drain them`);
const drainer = await startAgent({
  gateway: gateway.wsUrl,
  name: "drainer",
  pool: BURST_POOL,
  args: ["--preload", MODEL, "--max-concurrency", "8"],
});
const drainStarted = performance.now();
for (;;) {
  if ((await burstQueue.status(burst.at(-1) as Submitted)).status === "COMPLETED") break;
  await new Promise((resolve) => setTimeout(resolve, 500));
}
const drainSeconds = (performance.now() - drainStarted) / 1000;
const completed = (
  await pool(BURST, CLIENTS * 2, async (index) => (await burstQueue.status(burst[index] as Submitted)).status)
).filter((status) => status === "COMPLETED").length;
clearInterval(sampler);
const rssAfter = rssOf(workerd);
// The isolate may still be busy with the last answers' aftermath: a few tries, a few seconds apart.
let heapAfter = await heapOf(true);
for (let attempt = 0; heapAfter === undefined && inspector !== undefined && attempt < 3; attempt += 1) {
  await new Promise((resolve) => setTimeout(resolve, 5_000));
  heapAfter = await heapOf(true);
}
inspector?.close();
await drainer.stop("SIGKILL");

await agent.stop("SIGKILL");
await gateway.stop();

const ms = (values: number[], p: number) => round(percentile(values, p), 1);
const mib = (bytes: number) => round(bytes / 2 ** 20, 1);
const heapMib = (bytes: number | undefined) => (bytes === undefined ? "n/a" : `${mib(bytes)}`);
const command = `npm run bench:queue -- --requests ${REQUESTS} --clients ${CLIENTS} --burst ${BURST}`;
const report = `# Managed queue against the synchronous path

Generated by \`${command}\` on ${new Date().toISOString().slice(0, 10)} (${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, ${round(os.totalmem() / 2 ** 30, 0)} GiB; ${round((Date.now() - startedAt) / 1000, 0)} s).

One \`wrangler dev\` (${describeGateway(gateway, ["QUEUE_IN_FLIGHT", "QUEUE_LIMIT"])}) and one agent on the CPU (--max-concurrency 8), model ${MODEL} (an MLP of 256 KiB; a run takes well under a millisecond, so what is measured is the path, not the model). ${CLIENTS} clients.

| path | requests | req/s | p50 ms | p90 ms | p99 ms |
| --- | --- | --- | --- | --- | --- |
| synchronous (closed loop) | ${REQUESTS} | ${round(REQUESTS / syncSeconds, 1)} | ${ms(syncLatencies, 50)} | ${ms(syncLatencies, 90)} | ${ms(syncLatencies, 99)} |
| queue (submit all, then poll every ${POLL_MS} ms): submit to result | ${REQUESTS} | ${round(REQUESTS / queueSeconds, 1)} | ${ms(queueLatencies, 50)} | ${ms(queueLatencies, 90)} | ${ms(queueLatencies, 99)} |

Throughput through the queue is ${round(REQUESTS / queueSeconds / (REQUESTS / syncSeconds), 2)}x the synchronous path's on the same load: each queued request costs a submit, its hand-over from the queue's Durable Object to the registry, and the polls for its result, and the queue runs QUEUE_IN_FLIGHT at a time.

Estimated start times: ${DET_REQUESTS} PP-OCRv4 det requests (binary, 4.9 MB, through R2) submitted at once, so that a backlog forms behind QUEUE_IN_FLIGHT (queue positions up to ${Math.max(0, ...positions)}; a det run here took about ${round(detRunMs, 0)} ms); each submit's estimated_start_at against the started_at it got, over the ${estimateErrors.length} that were queued with an estimate: median error ${ms(estimateErrors, 50)} ms, p90 ${ms(estimateErrors, 90)} ms.

## A burst of ${BURST}

${BURST} submits by ${CLIENTS * 2} clients to a pool with no agent took ${round(submitSeconds, 1)} s (${round(BURST / submitSeconds, 0)} submits/s); ${waitingAtPeak} were then waiting in the queue's storage. An agent (--max-concurrency 8) joined and all ${BURST} were answered ${round(drainSeconds, 1)} s later (${completed} COMPLETED, ${round(completed / drainSeconds, 0)} req/s).

Memory, in MiB. The Worker isolate's JS heap (read through \`wrangler dev\`'s inspector; the Worker and all its Durable Objects, the queue, the registry and the relays, live in that one isolate here; after a full collection except the peak, which is the largest uncollected reading while the burst went in and drained) and the resident memory of the workerd processes (its proxy, the Worker; V8 does not give memory back to the system at once, so RSS tells growth, not what is held):

| when | isolate heap used | workerd RSS |
| --- | --- | --- |
| start | ${heapMib(heapAtStart)} | ${mib(rssAtStart)} |
| after ${REQUESTS} synchronous requests | ${heapMib(heapAfterSync)} | ${mib(rssAfterSync)} |
| before the burst (after the queue runs above) | ${heapMib(heapBefore)} | ${mib(rssBefore)} |
| ${waitingAtPeak} waiting in the queue | ${heapMib(heapBacklog)} | ${mib(rssBacklog)} |
| peak, submitting and draining | ${inspector === undefined ? "n/a" : mib(heapPeak)} | ${mib(rssPeak)} |
| all ${BURST} answered | ${heapMib(heapAfter)} | ${mib(rssAfter)} |
`;
writeFileSync(`${values.out}/queue.md`, report);
console.log(report);

/** The workerd processes under `wrangler dev` (its proxy's and the Worker's), whose memory holds the objects. */
function workerdPids(root: number): number[] {
  const children = (pid: number): number[] => {
    try {
      return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map(Number);
    } catch {
      return [];
    }
  };
  const found: number[] = [];
  const pending = [root];
  while (pending.length > 0) {
    const pid = pending.shift() as number;
    try {
      if (readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "workerd") found.push(pid);
    } catch {
      // gone
    }
    pending.push(...children(pid));
  }
  if (found.length === 0) throw new Error("no workerd process under wrangler dev");
  return found;
}

/** Resident memory of `pids`, summed (bytes). */
function rssOf(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    const line = readFileSync(`/proc/${pid}/status`, "utf8")
      .split("\n")
      .find((entry) => entry.startsWith("VmRSS:"));
    total += Number(line?.split(/\s+/)[1] ?? 0) * 1024;
  }
  return total;
}
