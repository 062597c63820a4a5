/**
 * The signature on a managed-queue webhook (gateway/queue/webhooks.ts sends them): HMAC-SHA256 with the
 * deployment's WEBHOOK_SECRET over `<timestamp>.<body>`, in hex, so that a receiver can tell the gateway sent
 * it and refuse replays older than it accepts. The one owner of the format: the gateway signs and a receiver
 * verifies with these same functions.
 */
export const WEBHOOK_TIMESTAMP_HEADER = "X-Switchyard-Webhook-Timestamp";
export const WEBHOOK_SIGNATURE_HEADER = "X-Switchyard-Webhook-Signature";
/** The signature header's value: the scheme, then the hex digest. */
const SCHEME = "v1=";

const encoder = new TextEncoder();

async function hmac(secret: string, timestamp: string, body: Uint8Array): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const prefix = encoder.encode(`${timestamp}.`);
  const signed = new Uint8Array(prefix.byteLength + body.byteLength);
  signed.set(prefix);
  signed.set(body, prefix.byteLength);
  const digest = new Uint8Array(await crypto.subtle.sign("HMAC", key, signed));
  return [...digest].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** The headers that sign `body`, sent at `nowMs`. */
export async function signWebhook(
  secret: string,
  body: Uint8Array,
  nowMs: number,
): Promise<Record<string, string>> {
  const timestamp = String(Math.floor(nowMs / 1000));
  return {
    [WEBHOOK_TIMESTAMP_HEADER]: timestamp,
    [WEBHOOK_SIGNATURE_HEADER]: `${SCHEME}${await hmac(secret, timestamp, body)}`,
  };
}

/**
 * Whether a received webhook is the gateway's: its signature matches `secret` and its timestamp is within
 * `toleranceSeconds` of `nowMs` (a replayed old delivery fails).
 */
export async function verifyWebhook(
  secret: string,
  headers: { get(name: string): string | null },
  body: Uint8Array,
  options: { nowMs?: number; toleranceSeconds?: number } = {},
): Promise<boolean> {
  const timestamp = headers.get(WEBHOOK_TIMESTAMP_HEADER);
  const signature = headers.get(WEBHOOK_SIGNATURE_HEADER);
  if (timestamp === null || signature === null || !/^\d+$/.test(timestamp) || !signature.startsWith(SCHEME))
    return false;
  const age = Math.abs((options.nowMs ?? Date.now()) / 1000 - Number(timestamp));
  if (age > (options.toleranceSeconds ?? 300)) return false;
  const expected = await hmac(secret, timestamp, body);
  const given = signature.slice(SCHEME.length);
  // Constant time in the digest's content.
  if (given.length !== expected.length) return false;
  let difference = 0;
  for (let index = 0; index < expected.length; index += 1)
    difference |= given.charCodeAt(index) ^ expected.charCodeAt(index);
  return difference === 0;
}
