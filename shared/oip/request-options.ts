import { badInput } from "../errors.ts";
import type { HeaderReader } from "../http/header-reader.ts";
import { INFERENCE_HEADER_CONTENT_LENGTH } from "./codec.ts";

/**
 * Request options that travel outside the tensors, read the same way by the standalone agent and the
 * gateway: the routing hint (under the names fal and Ray Serve use too), the binary header's length, and the
 * response headers both servers send. (The deadline has a module of its own: shared/deadline.ts.)
 */

/** Header names that carry the routing hint, in order of precedence. */
export const HINT_HEADERS = ["x-runner-hint", "x-fal-runner-hint", "serve_multiplexed_model_id"] as const;

export function readHint(headers: HeaderReader): string | undefined {
  for (const name of HINT_HEADERS) {
    const value = headers.get(name)?.trim();
    if (value) return value;
  }
  return undefined;
}

/** Server-Timing header value for the phases a request went through (milliseconds). */
export function serverTiming(phases: Record<string, number>): string {
  return Object.entries(phases)
    .map(([name, milliseconds]) => `${name};dur=${milliseconds.toFixed(2)}`)
    .join(", ");
}

/** The phases of a Server-Timing header value (milliseconds by name); entries without a duration are skipped. */
export function parseServerTiming(header: string | null | undefined): Record<string, number> {
  const phases: Record<string, number> = {};
  for (const entry of (header ?? "").split(",")) {
    const match = /^\s*([\w-]+);dur=([\d.]+)/.exec(entry);
    if (match?.[1] !== undefined && match[2] !== undefined) phases[match[1]] = Number(match[2]);
  }
  return phases;
}

/** The binary extension's Inference-Header-Content-Length, or undefined for a JSON-only body. */
export function readHeaderLength(headers: HeaderReader): number | undefined {
  const value = headers.get(INFERENCE_HEADER_CONTENT_LENGTH);
  if (value === null) return undefined;
  const length = Number(value);
  if (value.trim() === "" || !Number.isSafeInteger(length) || length < 0) {
    throw badInput(`${INFERENCE_HEADER_CONTENT_LENGTH} must be a byte count, got '${value.slice(0, 40)}'`);
  }
  return length;
}

/** Visible ASCII, spaces inside, as a header value may carry it. */
const HEADER_SAFE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

/**
 * The X-Request-Id of a response: the request's own id when a header can carry it as it is, else a fresh
 * one (the body still echoes the request's id exactly, as OIP says).
 */
export function requestIdHeader(id: string | undefined): string {
  return id !== undefined && HEADER_SAFE.test(id) ? id : crypto.randomUUID();
}
