/**
 * What the gateway path adds over calling the agent directly: one real `wrangler dev` gateway and one real
 * agent that serves both ways at once (--gateway and --standalone, the same replica), requests alternating
 * between the two, sequential, side by side in one run. Writes bench/results/gateway-overhead.md.
 *   npm run bench:gateway-overhead
 */
import { writeFileSync } from "node:fs";
import os from "node:os";
import { freePort } from "../../scripts/lib/free-port.ts";
import { infer } from "../../shared/oip/http-client.ts";
import { parseServerTiming } from "../../shared/oip/request-options.ts";
import { DET_MODEL, MULTIPLEX_MODELS, MULTIPLEX_OPTIONS } from "../../test/fixtures/paths.ts";
import { PPOCR_DET_DIMS, ppocrDetSampleInput } from "../../test/fixtures/ppocr.ts";
import { startAgent } from "../../test/integration/harness/agents.ts";
import { clientAuthorization, mlpRequest, waitForAgents } from "../../test/integration/harness/oip-client.ts";
import { type GatewayProcess, startGateway } from "../../test/integration/harness/wrangler-dev.ts";
import { percentile } from "../gpu/measure.ts";
import { type CpuReading, cpuBetween, gatewayCpuReader } from "../registry/process-cpu.ts";

const REQUESTS = Number(process.env.REQUESTS ?? 400);
const WARMUP = 20;

/** The bytes of the tensors' data (typed arrays; JSON data counts as nothing, and is not reported). */
const tensorBytes = (tensors: ReadonlyArray<{ data?: unknown }>) =>
  tensors.reduce((sum, tensor) => sum + (ArrayBuffer.isView(tensor.data) ? tensor.data.byteLength : 0), 0);

interface Case {
  /** Completed with the bytes that went each way (measured on the first answer). */
  label: string;
  model: string;
  request: Parameters<typeof infer>[2];
  binary: boolean;
  count: number;
}

/**
 * CPU of wrangler dev's two workerd processes over a case, per gateway request: the one running the Worker and
 * its Durable Objects (everything the gateway does), and wrangler's local proxy in front of it. Read from
 * /proc; the direct requests of the same window cost them nothing but idle time.
 */
function cpuMeter(gateway: GatewayProcess) {
  const read = gatewayCpuReader(gateway);
  return {
    start: read,
    perRequest(started: CpuReading | undefined, requests: number): string {
      const ended = read();
      if (started === undefined || ended === undefined) return "n/a";
      const { workerMs, proxyMs } = cpuBetween(started, ended);
      return `${(workerMs / requests).toFixed(2)} · ${(proxyMs / requests).toFixed(2)}`;
    },
  };
}

function rowOf(
  label: string,
  count: number,
  times: Record<"gateway" | "direct", number[]>,
  cpu: string,
): string {
  const [gp50, gp99, dp50, dp99] = [
    percentile(times.gateway, 50),
    percentile(times.gateway, 99),
    percentile(times.direct, 50),
    percentile(times.direct, 99),
  ];
  const row = `| ${label} | ${count} | ${dp50.toFixed(2)} / ${dp99.toFixed(2)} | ${gp50.toFixed(2)} / ${gp99.toFixed(2)} | ${(gp50 - dp50).toFixed(2)} / ${(gp99 - dp99).toFixed(2)} | ${cpu} |`;
  console.log(row);
  return row;
}

/**
 * Where a gateway request's time goes, from its Server-Timing (p50 of each share over the requests): the
 * client's whole wait minus `total` is wrangler dev's proxy and HTTP on loopback; `total` minus `registry` the
 * Worker's own work; `registry` (the whole time in the pool) minus `roundtrip` the asks to the registry and
 * the relay's share; `roundtrip` minus `agent` the websocket both ways; `agent` the agent's own.
 */
interface Shares {
  proxy: number[];
  worker: number[];
  pool: number[];
  websocket: number[];
  agent: number[];
}

function sharesRow(label: string, shares: Shares): string {
  const p50 = (values: number[]) => percentile(values, 50).toFixed(2);
  return `| ${label} | ${p50(shares.proxy)} | ${p50(shares.worker)} | ${p50(shares.pool)} | ${p50(shares.websocket)} | ${p50(shares.agent)} |`;
}

const model = MULTIPLEX_MODELS[0] ?? "m000";
const megabytes = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
const cases: Case[] = [
  {
    label: `MLP ${MULTIPLEX_OPTIONS.targetBytes / 1024} KiB, batch 1, JSON`,
    model,
    request: mlpRequest(1),
    binary: false,
    count: REQUESTS,
  },
  {
    label: `PP-OCRv4 det ${PPOCR_DET_DIMS.slice(2).join("x")}, binary`,
    model: DET_MODEL,
    request: {
      inputs: [{ name: "x", datatype: "FP32", shape: [...PPOCR_DET_DIMS], data: ppocrDetSampleInput() }],
    },
    binary: true,
    count: Math.max(20, Math.floor(REQUESTS / 10)),
  },
];

const gateway = await startGateway();
const standalonePort = await freePort();
const agent = await startAgent({
  gateway: gateway.wsUrl,
  name: "bench",
  args: [
    "--standalone",
    "--port",
    String(standalonePort),
    "--preload",
    `${model},${DET_MODEL}`,
    "--threads",
    "2",
  ],
});
const rows: string[] = [];
const shareRows: string[] = [];
try {
  await waitForAgents(gateway.url, 1);
  const direct = `http://127.0.0.1:${standalonePort}`;
  // The floor: a request that does no work on either side (wrangler dev's local proxy, HTTP on loopback).
  const live: Record<"gateway" | "direct", number[]> = { gateway: [], direct: [] };
  const meter = cpuMeter(gateway);
  let cpuFrom = meter.start();
  for (let index = 0; index < WARMUP + REQUESTS; index += 1) {
    for (const path of ["gateway", "direct"] as const) {
      const started = performance.now();
      const response = await fetch(`${path === "gateway" ? gateway.url : direct}/v2/health/live`, {
        headers: path === "gateway" ? clientAuthorization : {},
      });
      await response.arrayBuffer();
      if (index >= WARMUP) live[path].push(performance.now() - started);
    }
    if (index === WARMUP - 1) cpuFrom = meter.start();
  }
  rows.push(
    rowOf("GET /v2/health/live (no work: the floor)", REQUESTS, live, meter.perRequest(cpuFrom, REQUESTS)),
  );
  for (const benchCase of cases) {
    const times: Record<"gateway" | "direct", number[]> = { gateway: [], direct: [] };
    const shares: Shares = { proxy: [], worker: [], pool: [], websocket: [], agent: [] };
    const options = { binaryInputs: benchCase.binary, binaryOutputs: benchCase.binary };
    let outputBytes = 0;
    let cpuFrom = meter.start();
    for (let index = 0; index < WARMUP + benchCase.count; index += 1) {
      if (index === WARMUP) cpuFrom = meter.start();
      for (const path of ["gateway", "direct"] as const) {
        const started = performance.now();
        const result = await infer(
          path === "gateway" ? gateway.url : direct,
          benchCase.model,
          benchCase.request,
          {
            ...options,
            headers: path === "gateway" ? clientAuthorization : {},
          },
        );
        const took = performance.now() - started;
        if (index >= WARMUP) times[path].push(took);
        if (index >= WARMUP && path === "gateway") {
          const timing = parseServerTiming(result.headers.get("server-timing"));
          const { total = NaN, registry = NaN, roundtrip = NaN, agent: atAgent = NaN } = timing;
          shares.proxy.push(took - total);
          shares.worker.push(total - registry);
          shares.pool.push(registry - roundtrip);
          shares.websocket.push(roundtrip - atAgent);
          shares.agent.push(atAgent);
        }
        outputBytes = tensorBytes(result.response.outputs);
      }
    }
    const inputBytes = tensorBytes(benchCase.request.inputs);
    const label = benchCase.binary
      ? `${benchCase.label} (${megabytes(inputBytes)} in, ${megabytes(outputBytes)} out)`
      : benchCase.label;
    rows.push(rowOf(label, benchCase.count, times, meter.perRequest(cpuFrom, benchCase.count)));
    shareRows.push(sharesRow(label, shares));
  }
} finally {
  await agent.stop();
  await gateway.stop();
}

const report = `# Gateway path vs calling the agent directly

- Machine: ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? "unknown"}), Node ${process.version}; gateway in
  \`wrangler dev\` (workerd, local Durable Object) on loopback; one CPU agent serving the same replica both ways.
- Command: \`npm run bench:gateway-overhead\` (bench/gateway/overhead.ts), ${new Date().toISOString().slice(0, 10)}.
- Sequential requests, gateway and direct alternating, after ${WARMUP} warm-up pairs; latency at the client.
- workerd CPU: user + system time of wrangler dev's two workerd processes (/proc) over the measured pairs,
  per gateway request: the one that runs the Worker, the registry and the relays, and wrangler's local proxy.

| request | pairs | direct p50 / p99 (ms) | gateway p50 / p99 (ms) | added p50 / p99 (ms) | workerd CPU per request: Worker · proxy (ms) |
|---|---|---|---|---|---|
${rows.join("\n")}

Where the gateway path's time goes, p50 of each share in ms, from the gateway's Server-Timing: \`proxy\` is the
client's wait minus the Worker's \`total\` (wrangler dev's local proxy, HTTP on loopback), \`Worker\` its own work
(\`total\` − \`registry\`), \`pool\` the asks to the registry and the relay's share (\`registry\` − \`roundtrip\`),
\`websocket\` both ways to the agent (\`roundtrip\` − \`agent\`), \`agent\` the agent's own. The gateway's
figures come from workerd's clock, which counts whole milliseconds and moves only between I/O events: a share
under a millisecond reads as 0 or 1 (the agent's own is measured in Node, to the microsecond).

| request | proxy | Worker | pool | websocket | agent |
|---|---|---|---|---|---|
${shareRows.join("\n")}

The gateway path adds the Worker (auth, validation with the OIP codec), an RPC to the pool's Registry
Durable Object for a slot, an RPC with the body to the agent's AgentRelay Durable Object, and that relay's
websocket to the agent and back. The first row is the floor of this setup: a request
that does no work still pays \`wrangler dev\`'s local proxy in front of workerd. The gateway's own view of a
request is in its Server-Timing header (\`agent\` = the websocket round trip, \`total\` = inside the Worker).
In production the Worker runs at the Cloudflare edge near the client, without the dev proxy, and the added
time is the network path between the edge and the GPU host plus the processing share measured here.
`;
writeFileSync(new URL("../results/gateway-overhead.md", import.meta.url), report);
console.log(report);
