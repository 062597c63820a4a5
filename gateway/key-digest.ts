const encoder = new TextEncoder();

/**
 * The SHA-256 of a client key, in hex: what the gateway keeps and names things by (a key's rate-limit bucket,
 * the owner of a queued request), never the key itself.
 */
export async function keyDigest(key: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(key)));
  return [...digest].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}
