import type { MiddlewareHandler } from "hono";
import { SwitchyardError } from "../shared/errors.ts";
import type { Env } from "./env.ts";

/**
 * Bearer authentication for the three kinds of secret. Each route accepts exactly one kind: a client key
 * presented to the agent endpoint is as wrong as a made-up one (403), so a leaked client key cannot
 * register a fake agent and a leaked agent token cannot call the admin API.
 *
 * Comparison is constant time in the secret's content: both sides are hashed with SHA-256 first (so lengths
 * never differ) and compared with crypto.subtle.timingSafeEqual, and every configured key is compared even
 * after a match. Secrets are never logged or echoed.
 */
export type SecretKind = "client" | "agent" | "admin";

const DESCRIPTION: Record<SecretKind, { what: string; variable: keyof Env }> = {
  client: { what: "API key", variable: "API_KEYS" },
  agent: { what: "agent token", variable: "AGENT_TOKENS" },
  admin: { what: "admin key", variable: "ADMIN_KEY" },
};

/** Configured secrets of a kind: comma-separated lists, blanks ignored. */
export function secretsOf(env: Env, kind: SecretKind): string[] {
  const value = env[DESCRIPTION[kind].variable];
  if (typeof value !== "string") return [];
  return value
    .split(",")
    .map((secret) => secret.trim())
    .filter((secret) => secret !== "");
}

/** The token of an `Authorization: Bearer <token>` header; a 401 when there is none. */
export function bearerToken(headers: Headers, kind: SecretKind): string {
  const header = headers.get("authorization");
  const what = DESCRIPTION[kind].what;
  if (header === null || header.trim() === "") {
    throw new SwitchyardError("unauthenticated", `missing ${what}: send 'Authorization: Bearer <${what}>'`);
  }
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  if (match?.[1] === undefined) {
    throw new SwitchyardError(
      "unauthenticated",
      `malformed Authorization header: expected 'Bearer <${what}>'`,
    );
  }
  return match[1];
}

const encoder = new TextEncoder();
const sha256 = async (text: string) => crypto.subtle.digest("SHA-256", encoder.encode(text));

/**
 * Digests of configured secrets, kept for the isolate's life: hashing every configured key again on every
 * request cost the Worker a digest per key per request. Keyed by the secret itself, which the isolate holds in
 * its environment anyway; bounded, since a deploy that rotates keys starts a new isolate.
 */
const configuredDigests = new Map<string, Promise<ArrayBuffer>>();
const MAX_KEPT_DIGESTS = 256;

function digestOfConfigured(secret: string): Promise<ArrayBuffer> {
  let digest = configuredDigests.get(secret);
  if (digest === undefined) {
    if (configuredDigests.size >= MAX_KEPT_DIGESTS) configuredDigests.clear();
    digest = sha256(secret);
    configuredDigests.set(secret, digest);
  }
  return digest;
}

/** Whether `presented` equals one of `secrets`, in time that does not depend on where they differ. */
export async function matchesAny(presented: string, secrets: readonly string[]): Promise<boolean> {
  const [presentedDigest, ...digests] = await Promise.all([
    sha256(presented),
    ...secrets.map(digestOfConfigured),
  ]);
  if (presentedDigest === undefined) return false;
  let matched = false;
  for (const digest of digests) {
    // No early exit: the time spent says how many keys exist, never which one matched.
    const equal = crypto.subtle.timingSafeEqual(presentedDigest, digest);
    matched = matched || equal;
  }
  return matched;
}

/** Throws 401 (no key) or 403 (a key that is not one of this kind's); resolves when the key is right. */
export async function authenticate(env: Env, headers: Headers, kind: SecretKind): Promise<void> {
  const presented = bearerToken(headers, kind);
  const secrets = secretsOf(env, kind);
  const { what, variable } = DESCRIPTION[kind];
  if (secrets.length === 0) {
    throw new SwitchyardError("forbidden", `this gateway accepts no ${what}: ${variable} is not configured`);
  }
  if (!(await matchesAny(presented, secrets))) {
    throw new SwitchyardError("forbidden", `the ${what} is not valid for this endpoint`);
  }
}

/** Hono middleware requiring a secret of `kind`. */
export function requireSecret(kind: SecretKind): MiddlewareHandler<{ Bindings: Env }> {
  return async (c, next) => {
    await authenticate(c.env, c.req.raw.headers, kind);
    await next();
  };
}
