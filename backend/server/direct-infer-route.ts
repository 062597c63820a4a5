import type { IncomingMessage, ServerResponse } from "node:http";
import { describeError, SwitchyardError } from "../../shared/errors.ts";
import type { HeaderReader } from "../../shared/http/header-reader.ts";
import { bodyTooLarge, bodyUnreadable } from "../../shared/http/request-body.ts";
import { alignmentPad, INFERENCE_HEADER_CONTENT_LENGTH } from "../../shared/oip/codec.ts";
import { type InferLimits, parseInferRequest } from "../../shared/oip/infer-http.ts";
import { requestBuffers } from "../replica/buffer-pool.ts";
import { writeInferAnswer } from "./infer-answer-writer.ts";
import type { SharedMemoryRegions } from "./shared-memory-regions.ts";
import { answerInfer, type InferOnReplicas } from "./standalone-infer.ts";

const INFER_PATH = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?\/infer$/;

export interface DirectInferOptions extends InferLimits {
  /** Runs the call (on the main thread's pool, or from an intake thread through a message or a lane). */
  infer: InferOnReplicas;
  agentName: string;
  /** This thread's copy of the registered regions, where the agent offers system shared memory. */
  sharedMemory?: SharedMemoryRegions;
  log: (event: string, fields: Record<string, unknown>) => void;
}

/**
 * The infer route of the standalone server straight on `node:http`, for the requests that make up its
 * traffic: a plain body of known length. The body is read once, into a buffer of its own whose binary part
 * starts aligned, so the tensors are views of it and move to the model's thread with it (no copy); the
 * answer is written as its parts (the JSON header, then each output's bytes) without joining them. Every
 * other request (compressed, chunked, another route) is left to the Hono app: returns false for those.
 * The request is read and answered exactly as the Hono route would (shared/oip/infer-http.ts).
 */
export function directInferRoute(
  options: DirectInferOptions,
): (request: IncomingMessage, response: ServerResponse) => boolean {
  return (request, response) => {
    if (request.method !== "POST") return false;
    const encoding = request.headers["content-encoding"];
    if (encoding !== undefined && encoding.trim().toLowerCase() !== "identity") return false;
    const declared = request.headers["content-length"];
    if (declared === undefined) return false;
    const path = pathOf(request.url ?? "");
    const match = path === undefined ? null : INFER_PATH.exec(path);
    if (match === null) return false;
    const arrivedAt = performance.now();
    void serve(options, request, response, match, Number(declared), arrivedAt).catch((error: unknown) => {
      const failure = SwitchyardError.from(error);
      if (failure.status >= 500) options.log("error", { path, error: describeError(error) });
      answerError(response, failure);
    });
    return true;
  };
}

async function serve(
  options: DirectInferOptions,
  request: IncomingMessage,
  response: ServerResponse,
  match: RegExpExecArray,
  length: number,
  arrivedAt: number,
): Promise<void> {
  if (!Number.isSafeInteger(length) || length < 0)
    throw new SwitchyardError("bad_input", "Content-Length is not a byte count");
  if (length > options.maxBodyBytes) {
    request.resume();
    throw bodyTooLarge(options.maxBodyBytes);
  }
  const headers = headersOf(request);
  const headerLength = Number(headers.get(INFERENCE_HEADER_CONTENT_LENGTH) ?? Number.NaN);
  // Leave room before the body so that its binary part (after the JSON header) starts aligned.
  const pad = Number.isSafeInteger(headerLength) && headerLength >= 0 ? alignmentPad(headerLength) : 0;
  // From the pool: a body that moves to the session's thread comes back after the run (buffer-pool.ts).
  const buffer = requestBuffers.acquire(pad + length);
  const body = await readInto(request, new Uint8Array(buffer, pad, length));
  const received = performance.now();
  const input = parseInferRequest(
    { model: decodeSegment(match[1]), version: decodeSegment(match[2]) },
    headers,
    body,
    options.defaultTimeoutMs,
    options.sharedMemory,
  );
  const decoded = performance.now();
  const abort = new AbortController();
  response.once("close", () => {
    if (!response.writableFinished) abort.abort(new SwitchyardError("unavailable", "the client went away"));
  });
  const answer = await answerInfer(
    options.infer,
    options,
    input,
    { arrivedAt, receiveMs: received - arrivedAt, decodeMs: decoded - received },
    abort.signal,
  );
  writeInferAnswer(request, response, answer);
}

/** Reads exactly `into.byteLength` bytes of body into `into`; more or fewer is a 400. */
function readInto(request: IncomingMessage, into: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    let offset = 0;
    request.on("data", (chunk: Buffer) => {
      if (offset + chunk.byteLength > into.byteLength) {
        request.destroy();
        reject(new SwitchyardError("bad_input", "the request body is longer than its Content-Length"));
        return;
      }
      into.set(chunk, offset);
      offset += chunk.byteLength;
    });
    request.once("end", () =>
      offset === into.byteLength
        ? resolve(into)
        : reject(new SwitchyardError("bad_input", "the request body is shorter than its Content-Length")),
    );
    request.once("error", (error) => reject(bodyUnreadable(error)));
  });
}

/** A request target a URL parser leaves as it is: segments of letters, digits, `_` and `-`, none empty. */
const PLAIN_PATH = /^(?:\/[\w-]+)+$/;

/** The path with dot segments resolved, as a URL parser (and so the Hono app) sees it. */
function pathOf(url: string): string | undefined {
  // The usual infer path parses to itself: no URL object per request for it.
  if (PLAIN_PATH.test(url)) return url;
  try {
    return new URL(url, "http://agent").pathname;
  } catch {
    return undefined;
  }
}

function decodeSegment(segment: string | undefined): string | undefined {
  if (segment === undefined) return undefined;
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new SwitchyardError(
      "bad_input",
      `the path segment ${JSON.stringify(segment.slice(0, 40))} is not valid percent-encoding`,
    );
  }
}

/**
 * node:http's parsed headers read as Headers.get reads them (names are lowercased there; a repeated header
 * Node keeps as a list is joined with ", "), without building a Headers per request.
 */
function headersOf(request: IncomingMessage): HeaderReader {
  const { headers } = request;
  return {
    get(name) {
      const value = headers[name.toLowerCase()];
      if (value === undefined) return null;
      return Array.isArray(value) ? value.join(", ") : value;
    },
  };
}

/** The error's OIP answer; a response already under way is cut off instead. */
export function answerError(response: ServerResponse, failure: SwitchyardError): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const body = JSON.stringify(failure.toBody());
  response.writeHead(failure.status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
    ...failure.headers(),
  });
  response.end(body);
}
