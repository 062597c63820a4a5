/**
 * The registry benchmark's figures and its report: raw measurements in, per-request and per-MB costs out
 * (corrected for what the gateway spends with nobody asking anything), rendered as bench/results/registry.md.
 */
import { round } from "../gpu/measure.ts";
import type { FixedLoadResult } from "./fixed-load.ts";
import type { ProfileEntry, ProfileSummary } from "./isolate-profile.ts";
import type { CpuDelta } from "./process-cpu.ts";
import type { AgentCounters } from "./simulated-agents.ts";
import { type StorageWrites, WRITE_KINDS } from "./storage-writes.ts";

/** One measured configuration: a load window and an idle window of the same length right after it. */
export interface Measurement {
  kind: "infer" | "worker-only";
  /** What was asked, e.g. "POST /v2/models/bench-small/infer". */
  route: string;
  body: string;
  agents: number;
  /** Each agent's slots (its replica's maxConcurrency). */
  slotsPerAgent?: number;
  pool?: string;
  requestBytes: number;
  responseBytes: number;
  load: FixedLoadResult;
  cpu: CpuDelta;
  idle: CpuDelta;
  /** This process's CPU during the load window (clients and simulated agents), ms. */
  loadGeneratorMs: number;
  /** CPU the whole machine spent during the load window (all processes, all cores), ms. */
  machineMs: number;
  /** The registry's storage writes over the load window; absent when the gateway does not export them. */
  writes?: StorageWrites;
  /** What the simulated agents sent and got during the load window. */
  agentCounters?: Omit<AgentCounters, "problems">;
  problems?: string[];
  /** The Worker isolate's sampled time in a profiled window of its own (isolate-profile.ts). */
  profile?: ProfileSummary & { requests: number };
  /** How the router spread the window's requests over the agents. */
  spread?: { agentsUsed: number; maxShare: number };
}

export interface Figures {
  /** Worker + registry workerd, CPU ms per request, idle CPU of the same window length taken off. */
  workerMsPerRequest: number;
  /** The same, without the idle correction. */
  rawWorkerMsPerRequest: number;
  idleWorkerMsPerSecond: number;
  /** wrangler's dev proxy (another workerd), idle-corrected. */
  proxyMsPerRequest: number;
  /** Both workerd processes, idle-corrected: the brief's "all workerd" figure. */
  allWorkerdMsPerRequest: number;
  /** wrangler's own Node processes. */
  wranglerNodeMsPerRequest: number;
  loadGeneratorMsPerRequest: number;
  /**
   * CPU of processes outside the benchmark (the gateway's tree and the load generator) per second of the load
   * window: other work on the machine competing with the measurement.
   */
  othersMsPerSecond: number;
  /** Request + response bodies, in MB (10^6 bytes). */
  mbPerRequest: number;
  /** Worker-workerd CPU ms per MB relayed (the whole request's cost over its bytes). */
  workerMsPerMb?: number;
  writesPerRequest?: StorageWrites;
}

export function figuresOf(measured: Measurement): Figures {
  const { cpu, idle, load } = measured;
  const requests = Math.max(1, load.ok);
  const corrected = (loaded: number, idled: number) =>
    (loaded - (idled / Math.max(1, idle.wallMs)) * cpu.wallMs) / requests;
  const mbPerRequest = (measured.requestBytes + measured.responseBytes) / 1e6;
  const workerMsPerRequest = corrected(cpu.workerMs, idle.workerMs);
  const figures: Figures = {
    workerMsPerRequest,
    rawWorkerMsPerRequest: cpu.workerMs / requests,
    idleWorkerMsPerSecond: (idle.workerMs * 1000) / Math.max(1, idle.wallMs),
    proxyMsPerRequest: corrected(cpu.proxyMs, idle.proxyMs),
    allWorkerdMsPerRequest: corrected(cpu.workerMs + cpu.proxyMs, idle.workerMs + idle.proxyMs),
    wranglerNodeMsPerRequest: corrected(cpu.nodeMs, idle.nodeMs),
    loadGeneratorMsPerRequest: measured.loadGeneratorMs / requests,
    othersMsPerSecond:
      ((measured.machineMs - cpu.workerMs - cpu.proxyMs - cpu.nodeMs - measured.loadGeneratorMs) * 1000) /
      Math.max(1, cpu.wallMs),
    mbPerRequest,
  };
  if (measured.body === "1mib") figures.workerMsPerMb = workerMsPerRequest / mbPerRequest;
  if (measured.writes !== undefined) {
    const writes = measured.writes;
    figures.writesPerRequest = {
      kv: writes.kv / requests,
      alarm: writes.alarm / requests,
      attachment: writes.attachment / requests,
    };
  }
  return figures;
}

export interface RegistryReport {
  command: string;
  date: string;
  machine: string;
  /** The commit the Worker was bundled from, and uncommitted changes to it. */
  source: string;
  gatewayVars: Record<string, string>;
  settings: {
    concurrency: number;
    requests: number;
    largeRequests: number;
    warmup: number;
    /** Slots per agent: a number, or "auto" (concurrency / agents, rounded up). */
    slots: string;
    profile: boolean;
    stateFrames: boolean;
  };
  loadAverage: { before: number[]; after: number[] };
  durationS: number;
  measurements: Measurement[];
}

const f = (value: number | undefined, digits = 2) =>
  value === undefined ? "–" : String(round(value, digits));

/** The Worker's own share at this concurrency: the Worker-only reference on `route`. */
function workerReference(report: RegistryReport, route: string): Figures | undefined {
  const reference = report.measurements.find((row) => row.kind === "worker-only" && row.route === route);
  return reference === undefined ? undefined : figuresOf(reference);
}

export const HEALTH_ROUTE = "GET /v2/health/live";
export const METADATA_ROUTE = "GET /v2";

export function renderRegistryReport(report: RegistryReport): string {
  const lines: string[] = [];
  const { settings } = report;
  lines.push("# Registry Durable Object: CPU per request and per MB", "");
  lines.push(
    `- Machine: ${report.machine}; load average before ${report.loadAverage.before.map((v) => round(v)).join(" / ")}, after ${report.loadAverage.after.map((v) => round(v)).join(" / ")} (the machine is shared: another engineer works on it).`,
    `- Command: \`${report.command}\` (bench/registry/registry-bench.ts), ${report.date}, ${round(report.durationS, 0)} s in all.`,
    `- Gateway: \`wrangler dev\` on the Worker bundled from the working tree (${report.source}; test/integration/harness/wrangler-dev.ts), vars ${Object.entries(
      report.gatewayVars,
    )
      .map(([name, value]) => `\`${name}=${value}\``)
      .join(", ")}.`,
    `- Load: ${settings.concurrency} requests in flight, closed loop; ${settings.requests} small / ${settings.largeRequests} 1 MiB requests per configuration after ${settings.warmup} unmeasured warm-up requests (a tenth of that for 1 MiB); every answer must be 200. A fresh pool per configuration.`,
    `- Agents: simulated in the benchmark's process (bench/registry/simulated-agents.ts), real protocol: hello with an own repository holding the model, heartbeats, a result frame with the replica's state for every infer frame${settings.stateFrames ? ", and state frames at every replica change as a real agent's StateReporter sends them (coalesced, at most one per 50 ms per agent)" : " (no state frames: --no-state-frames)"}. Each agent has one replica with ${settings.slots === "auto" ? `${settings.concurrency} / agents slots (rounded up), so that the pool has just enough slots: the default router packs requests onto the busiest holder with a free slot` : `${settings.slots} slots`}. They answer at once: no model runs.`,
    "",
  );
  lines.push(
    "CPU is user + system time of the processes from /proc/<pid>/stat, before and after each window. `wrangler dev` runs two workerd processes: one runs the Worker and the Registry Durable Object (**worker**), the other is wrangler's dev proxy in front of it on the public port (**proxy**; not there in production). Each load window is followed by an idle window of the same length (same agents connected, no requests: heartbeats only), and the idle CPU (`worker idle ms/s`, at that rate for the load window's length) is taken off before dividing by the requests answered; `raw` is without that correction. `all workerd` = worker + proxy. `registry ≤` = worker workerd per request minus the Worker-only reference's (`GET /v2/health/live`, answered by the Worker without the registry): an upper bound on the registry's cost (see What it means). Before the first window every body went through a throwaway pool, so that no configuration pays for compiling the code. MB = 10^6 bytes of request plus response body. `load gen` is this benchmark's own process (clients and simulated agents); `others ms/s` is CPU spent meanwhile by processes outside the benchmark (the machine's other work: high values mean a contended window). Writes per request come from the registry's `switchyard_gateway_registry_storage_writes_total` at /metrics, read around the load window.",
    "",
  );

  const health = workerReference(report, HEALTH_ROUTE);
  const inferRows = report.measurements.filter((row) => row.kind === "infer");
  for (const body of [...new Set(inferRows.map((row) => row.body))]) {
    const rows = inferRows.filter((row) => row.body === body);
    const first = rows[0];
    if (first === undefined) continue;
    lines.push(
      `## ${body === "small" ? `Small requests (${first.requestBytes} B JSON in, ${first.responseBytes} B out)` : `1 MiB binary bodies (${first.requestBytes} B in, ${first.responseBytes} B out)`}`,
      "",
    );
    const header = [
      "agents × slots",
      "requests (failed)",
      "req/s",
      "p50 / p99 ms",
      "all workerd ms/req",
      "worker workerd ms/req",
      "proxy ms/req",
      "worker idle ms/s",
      "registry ≤ ms/req",
      ...(body === "1mib" ? ["worker ms/MB", "registry ≤ ms/MB"] : []),
      "wrangler node ms/req",
      "load gen ms/req",
      "others ms/s",
      "writes/req kv · alarm · attachment",
      "state frames/req",
      "agents used (max share)",
    ];
    lines.push(`| ${header.join(" | ")} |`, `| ${header.map(() => "---").join(" | ")} |`);
    for (const row of rows) {
      const figures = figuresOf(row);
      const registry =
        health === undefined ? undefined : figures.workerMsPerRequest - health.workerMsPerRequest;
      const writes = figures.writesPerRequest;
      const cells = [
        `${row.agents} × ${row.slotsPerAgent ?? "?"}`,
        `${row.load.ok} (${row.load.failed})`,
        f(row.load.requestsPerSecond, 1),
        `${f(row.load.latencyMs.p50)} / ${f(row.load.latencyMs.p99)}`,
        f(figures.allWorkerdMsPerRequest, 3),
        `${f(figures.workerMsPerRequest, 3)} (raw ${f(figures.rawWorkerMsPerRequest, 3)})`,
        f(figures.proxyMsPerRequest, 3),
        f(figures.idleWorkerMsPerSecond, 2),
        f(registry, 3),
        ...(body === "1mib"
          ? [
              f(figures.workerMsPerMb, 3),
              f(registry === undefined ? undefined : registry / figures.mbPerRequest, 3),
            ]
          : []),
        f(figures.wranglerNodeMsPerRequest, 3),
        f(figures.loadGeneratorMsPerRequest, 3),
        f(figures.othersMsPerSecond, 0),
        writes === undefined ? "–" : WRITE_KINDS.map((kind) => f(writes[kind], 3)).join(" · "),
        row.agentCounters === undefined
          ? "–"
          : f(row.agentCounters.stateFrames / Math.max(1, row.load.ok), 2),
        row.spread === undefined ? "–" : `${row.spread.agentsUsed} (${f(row.spread.maxShare * 100, 1)} %)`,
      ];
      lines.push(`| ${cells.join(" | ")} |`);
    }
    lines.push("");
  }

  const references = report.measurements.filter((row) => row.kind === "worker-only");
  if (references.length > 0) {
    lines.push("## Worker-only references (no agent connected, no registry call)", "");
    lines.push(
      "| route | requests (failed) | req/s | p50 / p99 ms | all workerd ms/req | worker workerd ms/req | proxy ms/req | worker idle ms/s | wrangler node ms/req | load gen ms/req | others ms/s |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    );
    for (const row of references) {
      const figures = figuresOf(row);
      lines.push(
        `| ${row.route} | ${row.load.ok} (${row.load.failed}) | ${f(row.load.requestsPerSecond, 1)} | ${f(row.load.latencyMs.p50)} / ${f(row.load.latencyMs.p99)} | ${f(figures.allWorkerdMsPerRequest, 3)} | ${f(figures.workerMsPerRequest, 3)} (raw ${f(figures.rawWorkerMsPerRequest, 3)}) | ${f(figures.proxyMsPerRequest, 3)} | ${f(figures.idleWorkerMsPerSecond)} | ${f(figures.wranglerNodeMsPerRequest, 3)} | ${f(figures.loadGeneratorMsPerRequest, 3)} | ${f(figures.othersMsPerSecond, 0)} |`,
      );
    }
    lines.push("");
  }

  lines.push(...profileSection(inferRows));

  const failures = report.measurements.flatMap((row) =>
    [...row.load.failures, ...(row.problems ?? [])].map(
      (text) => `${row.route}, ${row.agents} agents: ${text}`,
    ),
  );
  if (failures.length > 0) {
    lines.push("## Failures and agent problems", "", ...failures.map((text) => `- ${text}`), "");
  }

  lines.push("## What it means", "", ...meaning(report, health), "");
  return `${lines.join("\n")}\n`;
}

/** "list ← all (registry/model-pins.ts) 0.4": a function, who called it, its file, ms per request. */
function describeEntry(entry: ProfileEntry, requests: number): string {
  const caller = entry.caller === undefined ? "" : ` ← ${entry.caller}`;
  return `${entry.name}${caller} (${entry.file.replace(/^gateway\//, "")}) ${f(entry.ms / requests, 3)}`;
}

/** Sampled busy time: every share but idle (a profile from before the relays existed has none of theirs). */
function busyMs(profile: ProfileSummary): number {
  const { ms } = profile;
  return ms.registry + (ms.relay ?? 0) + ms.worker + ms.native + ms.gc;
}

/** Where the Worker isolate's time goes, per configuration, from the profiled windows. */
function profileSection(rows: readonly Measurement[]): string[] {
  const profiled = rows.filter((row) => row.profile !== undefined);
  if (profiled.length === 0) return [];
  const lines = [
    "## Where the isolate's time goes (V8 sampling profile)",
    "",
    `A separate window per configuration (a third of its requests, after the measured ones) with wrangler's inspector sampling the Worker isolate every 250 µs (bench/registry/isolate-profile.ts); the profiler's overhead makes these times larger than the CPU figures above, so read them as shares. A sample is the agents' relays' when a frame of its stack is in gateway/agent-relay/ (their entry points are AgentRelay methods), else the registry's when a frame is in gateway/registry/ or gateway/metrics/pool-*.ts (its entry points are Registry methods), the Worker's when it has other JS frames, and the runtime's (native: I/O, RPC and websocket plumbing, structured clone, no JS frame) otherwise; native work done for the registry is therefore not in the registry's share. Top entries are self time by function, with the caller that asked for it (a library such as zod counts as one entry under its caller); a sampler can pin native work on whichever JS frame is on top, so read single odd names (a trivial helper with milliseconds) as “around there”.`,
    "",
    "| body, agents | sampled busy ms/req | registry JS | relays JS | Worker JS | native | GC | registry's top self time (ms/req) | relays' top self time (ms/req) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const row of profiled) {
    const profile = row.profile;
    if (profile === undefined) continue;
    const { ms } = profile;
    const busy = busyMs(profile);
    const requests = Math.max(1, profile.requests);
    const pct = (value: number) => `${f((100 * value) / Math.max(1e-9, busy), 0)} %`;
    const top = (entries: readonly ProfileEntry[]) =>
      entries
        .slice(0, 6)
        .map((entry) => describeEntry(entry, requests))
        .join("; ");
    lines.push(
      `| ${row.body}, ${row.agents} | ${f(busy / requests, 3)} | ${pct(ms.registry)} | ${pct(ms.relay)} | ${pct(ms.worker)} | ${pct(ms.native)} | ${pct(ms.gc)} | ${top(profile.topRegistry)} | ${top(profile.topRelay ?? [])} |`,
    );
  }
  lines.push("");
  // The Worker's side is the same whatever the agents: one line per body, from its first configuration.
  for (const body of [...new Set(profiled.map((row) => row.body))]) {
    const row = profiled.find((candidate) => candidate.body === body);
    const profile = row?.profile;
    if (row === undefined || profile === undefined) continue;
    const requests = Math.max(1, profile.requests);
    lines.push(
      `- The Worker's top self time (${body}, ${row.agents} agent${row.agents === 1 ? "" : "s"}), ms/req: ${profile.topWorker
        .slice(0, 6)
        .map((entry) => describeEntry(entry, requests))
        .join("; ")}.`,
    );
  }
  lines.push("");
  return lines;
}

/** The implied ceiling of one registry object: what one core would do at 100 % on the registry alone. */
function meaning(report: RegistryReport, health: Figures | undefined): string[] {
  const out: string[] = [];
  if (health === undefined) {
    out.push("No Worker-only reference was measured, so the registry's share cannot be separated.");
    return out;
  }
  const metadata = workerReference(report, METADATA_ROUTE);
  out.push(
    `The Worker alone costs ${f(health.workerMsPerRequest, 3)} ms of workerd CPU per \`GET /v2/health/live\`${metadata === undefined ? "" : ` and ${f(metadata.workerMsPerRequest, 3)} ms per authenticated \`GET /v2\` (with the API-key check)`}. A Durable Object runs on one thread, so one registry object saturates at 1000 / (registry CPU ms per request) requests per second. The registry's CPU per request is bracketed: **at most** the infer's worker-workerd CPU minus the health check's (that difference still holds the Worker's own part of an infer: the key check, reading and checking the OIP body, its side of the RPC calls; and the agents' relays, which run in the same process here), and **about at least** the registry's JS share of the isolate's profile times the measured CPU (the runtime's native work for the registry, its websocket and RPC plumbing, is left out). The relays' JS share is given the same way: their work is spread over one object per agent, so it does not bound a pool. The ceiling below is given for both ends: the first figure is what one registry can surely do, the second what it cannot exceed.`,
    "",
  );
  for (const row of report.measurements.filter((measured) => measured.kind === "infer")) {
    const figures = figuresOf(row);
    const upper = figures.workerMsPerRequest - health.workerMsPerRequest;
    const profile = row.profile;
    const busy = profile === undefined ? 0 : busyMs(profile);
    const lower =
      profile === undefined || busy === 0
        ? undefined
        : (profile.ms.registry / busy) * figures.workerMsPerRequest;
    const relays =
      profile === undefined || busy === 0 || (profile.ms.relay ?? 0) === 0
        ? undefined
        : ((profile.ms.relay ?? 0) / busy) * figures.workerMsPerRequest;
    const who = `${row.agents} agent${row.agents === 1 ? "" : "s"}`;
    const bracket = `registry ${lower === undefined ? "" : `~${f(lower, 3)} to `}${f(upper, 3)} ms per request${relays === undefined ? "" : ` (the relays' JS ~${f(relays, 3)} ms of it, spread over the agents' objects)`}`;
    const requestCeiling = `~${f(1000 / upper, 0)}${lower === undefined ? "" : ` to ~${f(1000 / lower, 0)}`} requests/s`;
    if (row.body === "1mib") {
      const mb = figures.mbPerRequest;
      // What the bytes alone cost: the small request's cost at the same agent count taken off.
      const small = report.measurements.find(
        (other) => other.kind === "infer" && other.body === "small" && other.agents === row.agents,
      );
      const marginal =
        small === undefined
          ? undefined
          : (figures.workerMsPerRequest - figuresOf(small).workerMsPerRequest) /
            (mb - figuresOf(small).mbPerRequest);
      out.push(
        `- 1 MiB bodies, ${who}: ${bracket} = ${lower === undefined ? "" : `~${f(lower / mb, 3)} to `}${f(upper / mb, 3)} ms per MB relayed → one registry object tops out at ${requestCeiling}, ~${f(1000 / (upper / mb), 0)}${lower === undefined ? "" : ` to ~${f(1000 / (lower / mb), 0)}`} MB/s${marginal === undefined ? "" : ` (the bytes alone, the small request's whole cost taken off: ${f(marginal, 3)} ms of worker-workerd CPU per MB, Worker included)`}.`,
      );
    } else {
      out.push(
        `- Small requests, ${who}: ${bracket} → one registry object tops out at ${requestCeiling} at 100 % of one core.`,
      );
    }
  }
  return out;
}
