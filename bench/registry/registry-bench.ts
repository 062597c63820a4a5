/**
 * The registry benchmark: what one Registry Durable Object costs in workerd per request it relays, with 1, 10
 * and 200 agents connected, for tiny JSON requests and for 1 MiB binary bodies; and, for reference, what the
 * Worker alone costs (a route it answers without the registry) and what the gateway spends idle with the
 * agents connected (heartbeats).
 *
 *   npm run bench:registry [-- --agents 1,10,200] [--bodies small,1mib] [--concurrency 16]
 *     [--requests 3000] [--large-requests 400] [--warmup 200] [--slots auto] [--no-state-frames]
 *     [--no-reference] [--no-profile] [--out bench/results]
 *
 * One `wrangler dev` for the whole run (the bundled Worker, as the integration tests serve it), a fresh pool
 * per configuration. Results: bench/results/registry.md and registry.json.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { GatewayProcess } from "../../test/integration/harness/wrangler-dev.ts";
import { SECRETS, startGateway } from "../../test/integration/harness/wrangler-dev.ts";
import { sleep } from "../gpu/measure.ts";
import { HttpLoad, type PreparedRequest, requestHeaders } from "../hot-path/http-load.ts";
import { BODY_KINDS, type BodyCase, type BodyKind, bodyCase } from "./bodies.ts";
import { fixedLoad } from "./fixed-load.ts";
import { findInspector, IsolateProfiler, summarizeProfile } from "./isolate-profile.ts";
import { cpuBetween, machineBusyMs, ownCpuMs, readTreeCpu } from "./process-cpu.ts";
import {
  HEALTH_ROUTE,
  METADATA_ROUTE,
  type Measurement,
  type RegistryReport,
  renderRegistryReport,
} from "./report.ts";
import { SimulatedAgents } from "./simulated-agents.ts";
import { readStorageWrites, writesBetween } from "./storage-writes.ts";

const { values } = parseArgs({
  allowNegative: true,
  options: {
    agents: { type: "string", default: "1,10,200" },
    bodies: { type: "string", default: "small,1mib" },
    concurrency: { type: "string", default: "16" },
    requests: { type: "string", default: "3000" },
    "large-requests": { type: "string", default: "400" },
    warmup: { type: "string", default: "200" },
    /** Slots per agent (its replica's maxConcurrency); "auto": concurrency / agents, rounded up. */
    slots: { type: "string", default: "auto" },
    "state-frames": { type: "boolean", default: true },
    reference: { type: "boolean", default: true },
    /** A V8 sampling profile of the Worker isolate per configuration, in a window of its own after the others. */
    profile: { type: "boolean", default: true },
    out: { type: "string", default: "bench/results" },
  },
});

const concurrency = Number(values.concurrency);
const requests = Number(values.requests);
const largeRequests = Number(values["large-requests"]);
const warmup = Number(values.warmup);
const agentCounts = values.agents.split(",").map(Number);
const bodies = values.bodies
  .split(",")
  .filter((kind): kind is BodyKind => BODY_KINDS.some((k) => k === kind));
for (const [name, value] of Object.entries({ concurrency, requests, largeRequests, warmup })) {
  if (!Number.isInteger(value) || value < (name === "warmup" ? 0 : 1))
    throw new Error(`--${name}: expected a positive integer`);
}

/**
 * Each agent's slots. The default router packs requests onto the busiest holder with a free slot (ties by
 * address), so agents that each take all `concurrency` requests would leave all but one idle; with
 * concurrency / agents slots each, the pool has just enough slots and the load spreads as far as the router
 * spreads it (reported as "agents used").
 */
function slotsFor(agents: number): number {
  if (values.slots === "auto") return Math.max(1, Math.ceil(concurrency / agents));
  const slots = Number(values.slots);
  if (!Number.isInteger(slots) || slots < 1) throw new Error("--slots: expected a positive integer or auto");
  return slots;
}

/** Lets timers the load set off (the registry's metrics flush, 2 s) land before the next reading. */
const SETTLE_MS = 2_500;

const log = (line: string) => process.stderr.write(`${line}\n`);

interface LoadWindow {
  gateway: GatewayProcess;
  port: number;
  route: string;
  body: string;
  agents: number;
  requestBytes: number;
  responseBytes: number;
  count: number;
  send: () => Promise<unknown>;
  /** Storage writes of this pool are read around the window. */
  pool?: string;
  simulated?: SimulatedAgents;
  slotsPerAgent?: number;
}

/**
 * The load window, then an idle window of the same length (same agents, no requests). Storage writes are read
 * outside the CPU windows (a /metrics scrape costs the registry CPU of its own), after the metrics flush that
 * the load set off.
 */
async function measure(window: LoadWindow, kind: Measurement["kind"]): Promise<Measurement> {
  const { gateway, port } = window;
  const root = gateway.process.child.pid;
  if (root === undefined) throw new Error("wrangler dev has no pid");
  const readWrites = () =>
    window.pool === undefined
      ? Promise.resolve(undefined)
      : readStorageWrites(gateway.url, window.pool, SECRETS.adminKey);
  await sleep(SETTLE_MS);
  const writesBefore = await readWrites();
  window.simulated?.resetSpread();
  const countersBefore = window.simulated === undefined ? undefined : { ...window.simulated.counters };
  const ownBefore = ownCpuMs();
  const machineBefore = machineBusyMs();
  const before = readTreeCpu(root, port);
  const load = await fixedLoad(window.count, concurrency, window.send);
  const after = readTreeCpu(root, port);
  const machineMs = machineBusyMs() - machineBefore;
  const loadGeneratorMs = ownCpuMs() - ownBefore;
  const countersAfter = window.simulated === undefined ? undefined : { ...window.simulated.counters };
  const spread = window.simulated?.spread();
  await sleep(SETTLE_MS);
  const writes = writesBetween(writesBefore, await readWrites());
  const cpu = cpuBetween(before, after);
  const idleStart = readTreeCpu(root, port);
  await sleep(cpu.wallMs);
  const idle = cpuBetween(idleStart, readTreeCpu(root, port));
  const measured: Measurement = {
    kind,
    route: window.route,
    body: window.body,
    agents: window.agents,
    ...(window.slotsPerAgent === undefined ? {} : { slotsPerAgent: window.slotsPerAgent }),
    ...(window.pool === undefined ? {} : { pool: window.pool }),
    requestBytes: window.requestBytes,
    responseBytes: window.responseBytes,
    load,
    cpu,
    idle,
    loadGeneratorMs,
    machineMs,
    ...(writes === undefined ? {} : { writes }),
    ...(spread === undefined ? {} : { spread }),
  };
  if (countersBefore !== undefined && countersAfter !== undefined) {
    measured.agentCounters = {
      inferFrames: countersAfter.inferFrames - countersBefore.inferFrames,
      resultFrames: countersAfter.resultFrames - countersBefore.resultFrames,
      stateFrames: countersAfter.stateFrames - countersBefore.stateFrames,
      pings: countersAfter.pings - countersBefore.pings,
      cancels: countersAfter.cancels - countersBefore.cancels,
      queries: countersAfter.queries - countersBefore.queries,
    };
    const problems = [...countersAfter.problems];
    // Each answered request is one infer frame and one result (the registry retries nothing here).
    if (measured.agentCounters.inferFrames !== load.requests)
      problems.push(`${measured.agentCounters.inferFrames} infer frames for ${load.requests} requests`);
    if (problems.length > 0) measured.problems = problems;
  }
  const idleRate = (idle.workerMs * 1000) / Math.max(1, idle.wallMs);
  log(
    `  ${load.ok}/${load.requests} ok, ${load.failed} failed, ${load.requestsPerSecond.toFixed(1)} req/s, p50 ${load.latencyMs.p50.toFixed(2)} ms, p99 ${load.latencyMs.p99.toFixed(2)} ms; worker workerd ${(cpu.workerMs / Math.max(1, load.ok)).toFixed(3)} ms/req raw (idle ${idleRate.toFixed(1)} ms/s), proxy ${(cpu.proxyMs / Math.max(1, load.ok)).toFixed(3)} ms/req${writes === undefined ? "" : `, writes ${JSON.stringify(writes)}`}`,
  );
  for (const failure of load.failures) log(`  failure: ${failure}`);
  return measured;
}

/** Samples every 250 µs: fine enough for sub-millisecond requests, coarse enough to cost little. */
const PROFILE_INTERVAL_US = 250;

/**
 * A profiled window of its own (the profiler's overhead stays out of the CPU figures): where the Worker
 * isolate's time goes, split into the registry's code and the Worker's. Never fails the benchmark: without
 * wrangler's inspector, or when it does not answer, the configuration is still measured, without a profile.
 */
async function profileWindow(
  gateway: GatewayProcess,
  count: number,
  send: () => Promise<unknown>,
): Promise<Measurement["profile"]> {
  const root = gateway.process.child.pid;
  const url = root === undefined ? undefined : await findInspector(root);
  if (url === undefined) {
    log("  no inspector found: no profile");
    return undefined;
  }
  let profiler: IsolateProfiler | undefined;
  try {
    profiler = await IsolateProfiler.connect(url);
    await profiler.start(PROFILE_INTERVAL_US);
    const load = await fixedLoad(count, concurrency, send);
    const profile = await profiler.stop();
    const bundle = readFileSync(join(gateway.persistTo, "bundle", "index.js"), "utf8");
    return { requests: load.ok, ...summarizeProfile(profile, bundle) };
  } catch (error) {
    log(`  no profile: ${error instanceof Error ? error.message : String(error)}`);
    return undefined;
  } finally {
    profiler?.close();
  }
}

function inferRequest(model: string, pool: string, body: BodyCase["request"]): PreparedRequest {
  return {
    path: `/v2/models/${model}/infer?pool=${encodeURIComponent(pool)}`,
    body: body.body,
    headers: requestHeaders(body.headerLength, { Authorization: `Bearer ${SECRETS.apiKey}` }),
  };
}

async function workerOnly(gateway: GatewayProcess, port: number, client: HttpLoad): Promise<Measurement[]> {
  const routes: Array<{ route: string; prepared: PreparedRequest }> = [
    { route: HEALTH_ROUTE, prepared: { path: "/v2/health/live", headers: {} } },
    {
      route: METADATA_ROUTE,
      prepared: { path: "/v2", headers: { Authorization: `Bearer ${SECRETS.apiKey}` } },
    },
  ];
  const measured: Measurement[] = [];
  for (const { route, prepared } of routes) {
    log(`${route}: Worker only, no agents`);
    const send = () => client.send(prepared);
    await fixedLoad(warmup, concurrency, send);
    measured.push(
      await measure(
        {
          gateway,
          port,
          route,
          body: "none",
          agents: 0,
          requestBytes: 0,
          responseBytes: 0,
          count: requests,
          send,
        },
        "worker-only",
      ),
    );
  }
  return measured;
}

async function registryCase(
  gateway: GatewayProcess,
  port: number,
  client: HttpLoad,
  body: BodyCase,
  agents: number,
): Promise<Measurement> {
  // A fresh pool (a registry object of its own) per configuration: nothing left over from the last one.
  const pool = `bench-${body.kind}-${agents}-${Date.now().toString(36)}`;
  const count = body.kind === "small" ? requests : largeRequests;
  const warmupCount = body.kind === "small" ? warmup : Math.ceil(warmup / 10);
  log(`${body.label}, ${agents} agent${agents === 1 ? "" : "s"} (pool ${pool}): ${count} requests`);
  const connectStarted = performance.now();
  const simulated = await SimulatedAgents.connect({
    wsUrl: gateway.wsUrl,
    pool,
    token: SECRETS.agentToken,
    count: agents,
    model: body.model,
    signature: body.signature,
    maxConcurrency: slotsFor(agents),
    response: body.response,
    stateFrames: values["state-frames"],
  });
  log(
    `  ${agents} agents (${slotsFor(agents)} slots each) welcomed in ${((performance.now() - connectStarted) / 1000).toFixed(1)} s`,
  );
  try {
    const prepared = inferRequest(body.model.name, pool, body.request);
    const send = () => client.send(prepared);
    await fixedLoad(warmupCount, concurrency, send);
    const measured = await measure(
      {
        gateway,
        port,
        route: `POST /v2/models/${body.model.name}/infer`,
        body: body.kind,
        agents,
        requestBytes: body.request.body.byteLength,
        responseBytes: body.response.body.byteLength,
        count,
        send,
        pool,
        simulated,
        slotsPerAgent: slotsFor(agents),
      },
      "infer",
    );
    if (values.profile) {
      const profile = await profileWindow(gateway, Math.max(1, Math.ceil(count / 3)), send);
      if (profile !== undefined) measured.profile = profile;
    }
    return measured;
  } finally {
    await simulated.close();
  }
}

/**
 * Runs every body through a throwaway pool first, so that the first measured configuration does not pay for
 * workerd compiling the Worker's and the registry's code (all pools' registries share one isolate).
 */
async function warmGateway(gateway: GatewayProcess, http: HttpLoad): Promise<void> {
  for (const kind of bodies) {
    const body = bodyCase(kind);
    const pool = `bench-warmup-${kind}-${Date.now().toString(36)}`;
    const simulated = await SimulatedAgents.connect({
      wsUrl: gateway.wsUrl,
      pool,
      token: SECRETS.agentToken,
      count: 1,
      model: body.model,
      signature: body.signature,
      maxConcurrency: concurrency,
      response: body.response,
      stateFrames: values["state-frames"],
    });
    try {
      const prepared = inferRequest(body.model.name, pool, body.request);
      const count = kind === "small" ? 3 * warmup : Math.ceil((3 * warmup) / 10);
      const warmed = await fixedLoad(count, concurrency, () => http.send(prepared));
      if (warmed.failed > 0) throw new Error(`warm-up failed: ${warmed.failures.join("; ")}`);
    } finally {
      await simulated.close();
    }
  }
}

/** The commit, and whether the gateway's sources differ from it: the Worker is bundled from the working tree. */
function sourceState(): string {
  try {
    const git = (...args: string[]) => execFileSync("git", args, { encoding: "utf8" }).trim();
    const changed = git("status", "--porcelain", "--", "gateway", "shared")
      .split("\n")
      .filter(Boolean).length;
    return `${git("rev-parse", "--short", "HEAD")}${changed > 0 ? ` with ${changed} uncommitted change${changed === 1 ? "" : "s"} under gateway/ and shared/` : ""}`;
  } catch {
    return "unknown (no git)";
  }
}

async function main(): Promise<void> {
  const startedAt = Date.now();
  const loadBefore = loadavg();
  log("starting wrangler dev (bundling the Worker first)...");
  const source = sourceState();
  const gateway = await startGateway();
  const port = Number(new URL(gateway.url).port);
  const http = new HttpLoad(gateway.url, concurrency);
  const measurements: Measurement[] = [];
  try {
    log("warming the gateway up (a throwaway pool per body)...");
    await warmGateway(gateway, http);
    if (values.reference) measurements.push(...(await workerOnly(gateway, port, http)));
    for (const kind of bodies) {
      const body = bodyCase(kind);
      for (const agents of agentCounts)
        measurements.push(await registryCase(gateway, port, http, body, agents));
    }
  } catch (error) {
    log(`---- wrangler dev ----\n${gateway.process.output().slice(-3000)}`);
    throw error;
  } finally {
    http.close();
    await gateway.stop();
  }
  const cpu = cpus();
  const report: RegistryReport = {
    command: `npm run bench:registry${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
    date: new Date().toISOString().slice(0, 10),
    machine: `${cpu.length} cores (${cpu[0]?.model ?? "unknown CPU"}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB memory, Linux ${release()}, Node ${process.version}`,
    source,
    gatewayVars: { ...gateway.vars },
    settings: {
      concurrency,
      requests,
      largeRequests,
      warmup,
      slots: values.slots,
      profile: values.profile,
      stateFrames: values["state-frames"],
    },
    loadAverage: { before: loadBefore, after: loadavg() },
    durationS: (Date.now() - startedAt) / 1000,
    measurements,
  };
  writeFileSync(join(values.out, "registry.json"), `${JSON.stringify(report, null, 1)}\n`);
  writeFileSync(join(values.out, "registry.md"), renderRegistryReport(report));
  log(`wrote ${join(values.out, "registry.md")} and registry.json (${report.durationS.toFixed(0)} s)`);
}

// A benchmark stopped with Ctrl-C or a timeout still takes wrangler dev down with it: process-group.ts kills
// its groups on exit, which a signal's default action skips.
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));

await main();
