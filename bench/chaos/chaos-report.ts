import type { Fault } from "./fault-schedule.ts";
import { LOST_AFTER_EXTRA_SECONDS, type RequestRecord } from "./steady-load.ts";

/**
 * The chaos run's figures. A request counts as "during a fault" when it was sent between a fault and one
 * second after the pool was whole again (every agent connected); "outside" otherwise.
 */
export interface ChaosFigures {
  sent: number;
  succeeded: number;
  failed: number;
  lost: number;
  wrongAnswers: number;
  failures: { outcome: string; status?: number; detail?: string; count: number }[];
  latency: { all: Percentiles; duringFaults: Percentiles; outsideFaults: Percentiles };
  faults: (Fault & { inFlight: number })[];
  /** Requests the registry ran again after an agent died with them, or sent elsewhere after a refusal. */
  gatewayRetries: { reruns: number; retries: number; registryResends: number };
  servedBy: Record<string, number>;
}

export interface Percentiles {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

const SETTLE_MS = 1000;

export function chaosFigures(records: RequestRecord[], faults: Fault[], gatewayLog: string): ChaosFigures {
  const windows = faults.map((fault) => [fault.at, (fault.recoveredAt ?? fault.at) + SETTLE_MS] as const);
  const during = (record: RequestRecord) =>
    windows.some(([from, to]) => record.sentAt >= from && record.sentAt <= to);
  const ok = records.filter((record) => record.outcome === "ok");
  const failedRecords = records.filter((record) => record.outcome !== "ok" && record.outcome !== "lost");
  const latencies = (subset: RequestRecord[]) =>
    percentiles(subset.map((record) => (record.endedAt ?? Number.NaN) - record.sentAt));
  const failures = new Map<string, ChaosFigures["failures"][number]>();
  for (const record of failedRecords) {
    const key = `${record.outcome} ${record.status ?? ""} ${record.detail ?? ""}`;
    const known = failures.get(key);
    if (known !== undefined) known.count += 1;
    else
      failures.set(key, {
        outcome: record.outcome,
        ...(record.status === undefined ? {} : { status: record.status }),
        ...(record.detail === undefined ? {} : { detail: record.detail }),
        count: 1,
      });
  }
  const servedBy: Record<string, number> = {};
  for (const record of ok) {
    const agent = record.replica?.split("/")[0] ?? "?";
    servedBy[agent] = (servedBy[agent] ?? 0) + 1;
  }
  return {
    sent: records.length,
    succeeded: ok.length,
    failed: failedRecords.length,
    lost: records.filter((record) => record.outcome === "lost").length,
    wrongAnswers: records.filter((record) => record.outcome === "wrong-answer").length,
    failures: [...failures.values()],
    latency: {
      all: latencies(ok),
      duringFaults: latencies(ok.filter(during)),
      outsideFaults: latencies(ok.filter((record) => !during(record))),
    },
    faults: faults.map((fault) => ({
      ...fault,
      // Sent before the fault and answered after it (or never): the requests it could have hurt.
      inFlight: records.filter(
        (record) => record.sentAt <= fault.at && (record.endedAt === undefined || record.endedAt > fault.at),
      ).length,
    })),
    gatewayRetries: {
      reruns: countEvents(gatewayLog, "rerun"),
      retries: countEvents(gatewayLog, "retry"),
      registryResends: countEvents(gatewayLog, "registry-call-failed", '"retry":true'),
    },
    servedBy,
  };
}

function percentiles(values: number[]): Percentiles {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  const at = (q: number) =>
    sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN;
  return { count: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted.at(-1) ?? Number.NaN };
}

function countEvents(log: string, event: string, alsoContaining = ""): number {
  return log
    .split("\n")
    .filter((line) => line.includes(`{"event":"${event}"`) && line.includes(alsoContaining)).length;
}

export interface RunDescription {
  machine: string;
  command: string;
  date: string;
  settings: string[];
  evictionMethod: string;
}

const ms = (value: number) => (Number.isFinite(value) ? `${value.toFixed(0)} ms` : "-");
const seconds = (value: number | undefined) => (value === undefined ? "-" : `${(value / 1000).toFixed(1)} s`);

export function chaosMarkdown(figures: ChaosFigures, run: RunDescription): string {
  const { latency } = figures;
  const lines = [
    "# Chaos: agents killed and the registry restarted under steady load",
    "",
    `- Machine: ${run.machine}.`,
    `- Command: \`${run.command}\` (bench/chaos/chaos.ts), ${run.date}.`,
    ...run.settings.map((setting) => `- ${setting}`),
    `- Registry eviction: ${run.evictionMethod}`,
    "",
    "## Outcome",
    "",
    "| sent | succeeded | failed | lost | wrong answers |",
    "|---|---|---|---|---|",
    `| ${figures.sent} | ${figures.succeeded} | ${figures.failed} | ${figures.lost} | ${figures.wrongAnswers} |`,
    "",
    "Succeeded means a 200 whose outputs equal the model's, computed in plain JS for that request's own input.",
    "Failed is any other answer (an HTTP error, a refused connection); lost is no answer at all within the",
    `request's deadline plus ${LOST_AFTER_EXTRA_SECONDS} s.`,
    "",
    ...(figures.failures.length === 0
      ? []
      : [
          "| failure | status | count | message |",
          "|---|---|---|---|",
          ...figures.failures.map(
            (failure) =>
              `| ${failure.outcome} | ${failure.status ?? "-"} | ${failure.count} | ${(failure.detail ?? "").replaceAll("|", "\\|").slice(0, 160)} |`,
          ),
          "",
        ]),
    "## Latency of successful requests",
    "",
    "| requests sent | count | p50 | p99 | max |",
    "|---|---|---|---|---|",
    `| during faults | ${latency.duringFaults.count} | ${ms(latency.duringFaults.p50)} | ${ms(latency.duringFaults.p99)} | ${ms(latency.duringFaults.max)} |`,
    `| outside faults | ${latency.outsideFaults.count} | ${ms(latency.outsideFaults.p50)} | ${ms(latency.outsideFaults.p99)} | ${ms(latency.outsideFaults.max)} |`,
    `| all | ${latency.all.count} | ${ms(latency.all.p50)} | ${ms(latency.all.p99)} | ${ms(latency.all.max)} |`,
    "",
    `A request is sent during a fault when it leaves between the fault and ${SETTLE_MS / 1000} s after every agent is connected`,
    "again.",
    "",
    "## Faults",
    "",
    "| at | fault | requests in flight then | pool whole again after |",
    "|---|---|---|---|",
    ...figures.faults.map(
      (fault) =>
        `| ${seconds(fault.at)} | ${fault.kind === "agent-kill" ? `SIGKILL ${fault.target}, restarted at once` : `registry restart (${fault.target})`} | ${fault.inFlight} | ${seconds(fault.recoveredAt === undefined ? undefined : fault.recoveredAt - fault.at)} |`,
    ),
    "",
    `The registry ran ${figures.gatewayRetries.reruns} requests again after their agent died with them (idempotent`,
    `models, under the retry budget) and sent ${figures.gatewayRetries.retries} elsewhere after an agent refused them`,
    `without starting; the Worker sent ${figures.gatewayRetries.registryResends} requests again to the restarted`,
    `registry after their call to the old one failed. Successful requests per agent: ${Object.entries(
      figures.servedBy,
    )
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([agent, count]) => `${agent} ${count}`)
      .join(", ")}.`,
    "",
  ];
  return lines.join("\n");
}
