import { badInput } from "../../shared/errors.ts";
import type { QueueStatus } from "../../shared/queue/queue-status.ts";
import { signWebhook } from "../../shared/queue/webhook-signature.ts";

/**
 * Managed-queue webhooks: one signed POST per finished request to the URL its submit named (`?webhook=`),
 * retried with backoff for hours until the receiver answers 2xx (fal and Replicate do the same). What is
 * checked at submit, what is sent, and when it is tried again; request-queue.ts keeps each delivery's state
 * with its request, so a delivery outlives a restart.
 */

/** After a failed delivery, the next is tried this long after (then it is given up): about 3.7 hours. */
export const WEBHOOK_RETRY_DELAYS_MS = [
  2_000, 10_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 7_200_000,
];
/** One delivery may take this long before it counts as failed. */
export const WEBHOOK_TIMEOUT_MS = 10_000;
const MAX_URL_LENGTH = 2048;
/** A JSON result up to this size travels in the webhook's `payload`; larger ones, and binary ones, by URL. */
const MAX_INLINE_PAYLOAD_BYTES = 1024 * 1024;

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);
const isLoopback = (url: URL) => LOOPBACK_HOSTS.has(url.hostname);

/**
 * The webhook URL a submit names, checked: https, or plain http to a loopback address while the gateway itself
 * is reached on one (`wrangler dev` on a developer's machine); never credentials in the URL.
 */
export function checkWebhookUrl(value: string, gateway: URL): string {
  if (value.length > MAX_URL_LENGTH)
    throw badInput(`the webhook URL is longer than ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw badInput(`the webhook ${JSON.stringify(value.slice(0, 80))} is not a URL`);
  }
  if (url.username !== "" || url.password !== "")
    throw badInput("the webhook URL must not carry credentials");
  const developing = isLoopback(gateway) && url.protocol === "http:" && isLoopback(url);
  if (url.protocol !== "https:" && !developing) {
    throw badInput(
      "the webhook URL must be https (plain http only to a loopback address while the gateway itself runs locally)",
    );
  }
  return url.href;
}

/** What a finished request's webhook says (fal's fields, in OIP's snake_case). */
export interface WebhookBody {
  request_id: string;
  /** OK when the model answered, ERROR otherwise. */
  status: "OK" | "ERROR";
  queue_status: QueueStatus["status"];
  model: string;
  version?: string;
  response_status?: number;
  /** Where the result is, exactly as synchronous infer answered it (with the submitting key). */
  response_url: string;
  /** The result's JSON when it is JSON and small; otherwise null (fetch response_url). */
  payload: unknown;
  error?: string;
}

export function webhookBody(
  status: QueueStatus,
  responseUrl: string,
  result: Uint8Array | undefined,
  contentType: string | null,
): WebhookBody {
  let payload: unknown = null;
  if (
    result !== undefined &&
    contentType?.startsWith("application/json") &&
    result.byteLength <= MAX_INLINE_PAYLOAD_BYTES
  ) {
    try {
      payload = JSON.parse(new TextDecoder().decode(result)) as unknown;
    } catch {
      payload = null;
    }
  }
  return {
    request_id: status.request_id,
    status: status.status === "COMPLETED" ? "OK" : "ERROR",
    queue_status: status.status,
    model: status.model,
    ...(status.version === undefined ? {} : { version: status.version }),
    ...(status.response_status === undefined ? {} : { response_status: status.response_status }),
    response_url: responseUrl,
    payload,
    ...(status.error === undefined ? {} : { error: status.error }),
  };
}

/** One delivery: true when the receiver answered 2xx; otherwise why not. */
export async function deliverWebhook(
  url: string,
  body: WebhookBody,
  secret: string,
  now: number,
): Promise<{ ok: true } | { ok: false; why: string }> {
  const bytes = new TextEncoder().encode(JSON.stringify(body));
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "X-Switchyard-Request-Id": body.request_id,
        ...(await signWebhook(secret, bytes, now)),
      },
      body: bytes,
      signal: AbortSignal.timeout(WEBHOOK_TIMEOUT_MS),
    });
    await response.body?.cancel();
    return response.ok ? { ok: true } : { ok: false, why: `the receiver answered ${response.status}` };
  } catch (error) {
    return {
      ok: false,
      why: `it could not be delivered (${error instanceof Error ? error.message : String(error)})`,
    };
  }
}
