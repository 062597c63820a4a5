import type { InferRequestToEncode } from "../../../shared/oip/codec.ts";
import { type InferOptions, type InferResult, infer, OipHttpError } from "../../../shared/oip/http-client.ts";
import { MLP_INPUT, seededFloats } from "../../fixtures/onnx-builder.ts";
import { SECRETS } from "./wrangler-dev.ts";

/**
 * Calls a test gateway as a client would: with the client API key and, where a test isolates its agents,
 * the pool header. Failures come back as values (status, message, headers), so a test can assert on
 * several concurrent outcomes.
 */
export type Outcome =
  | { ok: true; status: 200; result: InferResult; finishedAt: number }
  | { ok: false; status: number; message: string; headers: Headers; finishedAt: number };

export interface CallOptions extends InferOptions {
  pool?: string;
}

export const clientAuthorization = { Authorization: `Bearer ${SECRETS.apiKey}` };

export async function call(
  gatewayUrl: string,
  model: string,
  request: InferRequestToEncode,
  options: CallOptions = {},
): Promise<Outcome> {
  const { pool, headers, ...rest } = options;
  try {
    const result = await infer(gatewayUrl, model, request, {
      ...rest,
      headers: {
        ...clientAuthorization,
        ...(pool === undefined ? {} : { "X-Switchyard-Pool": pool }),
        ...headers,
      },
    });
    return { ok: true, status: 200, result, finishedAt: performance.now() };
  } catch (error) {
    if (!(error instanceof OipHttpError)) throw error;
    return {
      ok: false,
      status: error.status,
      message: error.message,
      headers: error.headers,
      finishedAt: performance.now(),
    };
  }
}

/** An MLP request of `batch` rows of seeded inputs (the test MLPs take 16 features). */
export function mlpRequest(batch: number, seed = 1): InferRequestToEncode {
  return {
    inputs: [{ name: MLP_INPUT, datatype: "FP32", shape: [batch, 16], data: seededFloats(seed, batch * 16) }],
  };
}

/** GET a path with the client key (and pool); the status. */
export async function statusOf(gatewayUrl: string, path: string, pool?: string): Promise<number> {
  const response = await fetch(`${gatewayUrl}${path}`, {
    headers: { ...clientAuthorization, ...(pool === undefined ? {} : { "X-Switchyard-Pool": pool }) },
  });
  await response.arrayBuffer();
  return response.status;
}

/** Polls `check` until it holds; throws after `timeoutMs`. */
export async function eventually(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what}: not within ${timeoutMs} ms`);
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * How long agents may take to dial a restarted gateway again: their reconnect backoff grows to 30 s (with
 * jitter) while wrangler restarts, so the default wait of 30 s can end just before the dial that succeeds.
 */
export const AFTER_RESTART_MS = 75_000;

/**
 * Waits until the pool's readiness counts `count` serving agents (agents reconnect after a gateway reload):
 * 30 s by default, AFTER_RESTART_MS after a gateway restart.
 */
export async function waitForAgents(
  gatewayUrl: string,
  count: number,
  pool?: string,
  timeoutMs?: number,
): Promise<void> {
  await eventually(
    `${count} agent(s) in pool ${pool ?? "default"}`,
    async () => {
      const response = await fetch(`${gatewayUrl}/v2/health/ready`, {
        headers: { ...clientAuthorization, ...(pool === undefined ? {} : { "X-Switchyard-Pool": pool }) },
      });
      const body = (await response.json()) as { agents?: number };
      return response.status === 200 && body.agents === count;
    },
    timeoutMs,
  );
}
