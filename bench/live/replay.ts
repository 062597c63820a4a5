import { OUTCOME, type RunRecord } from "../sim/metrics.ts";
import type { Scenario } from "../sim/scenario.ts";
import type { Trace } from "../sim/trace.ts";
import { FEATURES } from "./catalogue.ts";

/**
 * The live client: replays a simulator trace against a real gateway as an open loop (each request leaves
 * at its arrival time, whatever happened to the ones before, as real traffic does) and records what the
 * simulator records, so bench/sim's summarise() reads both the same way. A hit is a 200 whose
 * X-Switchyard-Cache says "hit" (the model was loaded before the request reached its replica).
 */
export interface ReplayOptions {
  gatewayUrl: string;
  apiKey: string;
  /** Stop after this many requests of the trace (the rest stay unsent and are not counted). */
  requests: number;
}

export interface ReplayResult {
  record: RunRecord;
  /** 5xx other than 503/504, and transport failures: a live run must have none. */
  errors: number;
  firstError?: string;
  /** How late the client sent requests behind their arrival times (ms): p99, so a lagging client shows. */
  sendLagP99Ms: number;
}

/** How long after its deadline the client gives up on an answer (the gateway answers 504 by then). */
const CLIENT_GRACE_MS = 10_000;

const BODY = JSON.stringify({
  inputs: [
    {
      name: "x",
      datatype: "FP32",
      shape: [1, FEATURES],
      data: Array.from({ length: FEATURES }, (_, index) => Math.sin(index)),
    },
  ],
});

export async function replay(
  scenario: Scenario,
  trace: Trace,
  options: ReplayOptions,
): Promise<ReplayResult> {
  const n = Math.min(options.requests, trace.arrivals.length);
  const record: RunRecord = {
    latency: new Float64Array(n),
    outcome: new Uint8Array(n),
    hit: new Uint8Array(n),
    deadlineMs: scenario.deadlineMs,
    firstArrival: 0,
    lastAnswer: 0,
    loadMs: 0,
    loads: 0,
  };
  const result: ReplayResult = { record, errors: 0, sendLagP99Ms: 0 };
  const lags = new Float64Array(n);
  const headers = {
    Authorization: `Bearer ${options.apiKey}`,
    "Content-Type": "application/json",
    "X-Request-Timeout": String(scenario.deadlineMs / 1000),
  };
  const sent: Promise<void>[] = [];
  const started = performance.now();

  const send = async (index: number, model: string, sentAt: number) => {
    let outcome: number = OUTCOME.unavailable;
    try {
      const response = await fetch(`${options.gatewayUrl}/v2/models/${model}/infer`, {
        method: "POST",
        headers,
        body: BODY,
        signal: AbortSignal.timeout(scenario.deadlineMs + CLIENT_GRACE_MS),
      });
      await response.arrayBuffer();
      if (response.status === 200) {
        outcome = OUTCOME.ok;
        record.hit[index] = response.headers.get("X-Switchyard-Cache") === "hit" ? 1 : 0;
      } else if (response.status === 504) outcome = OUTCOME.timedOut;
      else if (response.status === 429) outcome = OUTCOME.rejected;
      else if (response.status !== 503) noteError(result, `HTTP ${response.status} for ${model}`);
    } catch (error) {
      outcome = OUTCOME.timedOut;
      noteError(result, `${model}: ${error instanceof Error ? error.message : String(error)}`);
    }
    const endedAt = performance.now() - started;
    record.outcome[index] = outcome;
    record.latency[index] = endedAt - sentAt;
    record.lastAnswer = Math.max(record.lastAnswer, endedAt);
  };

  for (let index = 0; index < n; index += 1) {
    const due = trace.arrivals[index] as number;
    const wait = started + due - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    const sentAt = performance.now() - started;
    lags[index] = Math.max(0, sentAt - due);
    const model = scenario.models[trace.models[index] as number]?.name ?? "";
    sent.push(send(index, model, sentAt));
  }
  record.firstArrival = trace.arrivals[0] ?? 0;
  await Promise.all(sent);
  lags.sort();
  result.sendLagP99Ms = lags[Math.max(0, Math.ceil(0.99 * n) - 1)] ?? 0;
  return result;
}

function noteError(result: ReplayResult, message: string): void {
  result.errors += 1;
  result.firstError ??= message;
}
