import { infer, OipHttpError } from "../../shared/oip/http-client.ts";
import {
  MLP_INPUT,
  MLP_OUTPUT,
  mlpWeights,
  referenceMlp,
  seededFloats,
} from "../../test/fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS, MULTIPLEX_SPECS } from "../../test/fixtures/paths.ts";

/**
 * The chaos benchmark's client: an open loop that sends one request every 1/rate seconds whatever happens
 * to the ones before (as real traffic does), and checks every answer against the MLP computed in plain JS,
 * so a response that went to the wrong request, or came from the wrong model, counts as a failure and not a
 * success (Ray Serve's chaos test checks every response too). Inputs cycle through a few seeded ones per
 * model, computed once up front, so that checking costs the client nothing while it keeps time.
 */
export interface RequestRecord {
  index: number;
  model: string;
  /** Milliseconds since the run started. */
  sentAt: number;
  endedAt?: number;
  outcome: "ok" | "wrong-answer" | "http-error" | "transport-error" | "lost";
  status?: number;
  detail?: string;
  replica?: string;
}

export interface LoadOptions {
  gatewayUrl: string;
  apiKey: string;
  ratePerSecond: number;
  durationMs: number;
  /** Models sent round-robin (the test repository's 16-feature MLPs). */
  models: number;
  /** X-Request-Timeout of each request; a request not answered LOST_AFTER_EXTRA_SECONDS after it is lost. */
  deadlineSeconds: number;
  /** Rows of 16 features per request: more rows, longer runs, more work in flight when a fault hits. */
  rows: number;
}

/** Inputs per row: the test repository's multiplex MLPs all take this many. */
export const FEATURES = MULTIPLEX_SPECS[0]?.inputDim ?? Number.NaN;
/** A request not answered this long after its deadline is lost. */
export const LOST_AFTER_EXTRA_SECONDS = 10;
const TOLERANCE = 1e-3;
/** Distinct inputs per model: consecutive requests of a model differ, so a swapped answer shows. */
const INPUTS_PER_MODEL = 7;

interface Case {
  input: Float32Array;
  expected: Float32Array;
}

export async function runSteadyLoad(options: LoadOptions, startedAt: number): Promise<RequestRecord[]> {
  const cases: Case[][] = MULTIPLEX_SPECS.slice(0, options.models).map((spec, model) => {
    const weights = mlpWeights(spec);
    return Array.from({ length: INPUTS_PER_MODEL }, (_, seed) => {
      const input = seededFloats(1 + model * INPUTS_PER_MODEL + seed, FEATURES * options.rows);
      return { input, expected: referenceMlp(weights, input, options.rows) };
    });
  });
  const records: RequestRecord[] = [];
  const inFlight: Promise<void>[] = [];
  const intervalMs = 1000 / options.ratePerSecond;
  for (let index = 0; ; index += 1) {
    const due = index * intervalMs;
    if (due >= options.durationMs) break;
    const wait = startedAt + due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const which = index % options.models;
    const record: RequestRecord = {
      index,
      model: MULTIPLEX_MODELS[which] ?? "",
      sentAt: performance.now() - startedAt,
      outcome: "lost",
    };
    records.push(record);
    const turn = Math.floor(index / options.models) % INPUTS_PER_MODEL;
    inFlight.push(send(options, record, cases[which]?.[turn], startedAt));
  }
  await Promise.all(inFlight);
  return records;
}

async function send(
  options: LoadOptions,
  record: RequestRecord,
  testCase: Case | undefined,
  startedAt: number,
): Promise<void> {
  if (testCase === undefined) throw new Error(`no input for request ${record.index}`);
  const { input, expected } = testCase;
  try {
    const result = await infer(
      options.gatewayUrl,
      record.model,
      { inputs: [{ name: MLP_INPUT, datatype: "FP32", shape: [options.rows, FEATURES], data: input }] },
      {
        headers: {
          Authorization: `Bearer ${options.apiKey}`,
          "X-Request-Timeout": String(options.deadlineSeconds),
        },
        signal: AbortSignal.timeout((options.deadlineSeconds + LOST_AFTER_EXTRA_SECONDS) * 1000),
      },
    );
    record.endedAt = performance.now() - startedAt;
    record.status = result.status;
    record.replica = result.headers.get("x-switchyard-replica") ?? undefined;
    const output = result.response.outputs.find((tensor) => tensor.name === MLP_OUTPUT)?.data;
    const right =
      output instanceof Float32Array &&
      output.length === expected.length &&
      output.every((value, index) => Math.abs(value - (expected[index] ?? Number.NaN)) <= TOLERANCE);
    record.outcome = right ? "ok" : "wrong-answer";
  } catch (error) {
    record.endedAt = performance.now() - startedAt;
    if (error instanceof OipHttpError) {
      record.outcome = "http-error";
      record.status = error.status;
      record.detail = error.message;
    } else if (error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError")) {
      // Nothing came back at all, not even an error: exactly what must never happen.
      record.outcome = "lost";
      delete record.endedAt;
    } else {
      record.outcome = "transport-error";
      record.detail =
        error instanceof Error ? `${error.message} ${String(error.cause ?? "")}` : String(error);
    }
  }
}
