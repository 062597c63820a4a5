/**
 * The HTTP side of `POST /v2/models/{m}[/versions/{v}]/infer`, shared by the gateway's Worker and the
 * standalone agent, so that both read a request and answer it the same way: the model and version from
 * the path, the body (decompressed, within its limit), the binary extension's header length, the OIP
 * request itself, the routing hint, the deadline and the request id; and, on the way out, the same
 * response headers. What happens in between (relay to an agent, or run on a local replica) is each
 * server's own.
 */
import { type Deadline, requestDeadline } from "../deadline.ts";
import type { HeaderReader } from "../http/header-reader.ts";
import { readRequestBody } from "../http/request-body.ts";
import { parseModelName, parseModelVersion } from "../model-names.ts";
import { type DecodedInferRequest, decodeInferRequest, INFERENCE_HEADER_CONTENT_LENGTH } from "./codec.ts";
import { readHeaderLength, readHint, requestIdHeader, serverTiming } from "./request-options.ts";
import type { SharedMemoryAccess } from "./shared-memory.ts";

export interface InferRequestIn {
  model: string;
  /** Absent: the highest version serves. */
  version?: string;
  /** The body as received, decompressed: the gateway relays these very bytes. */
  body: Uint8Array;
  headerLength?: number;
  /** The body decoded and checked: a malformed request never gets further than this. */
  request: DecodedInferRequest;
  hint?: string;
  deadline: Deadline;
  /** The response's X-Request-Id (the request's id where a header can carry it). */
  requestId: string;
}

export interface InferLimits {
  maxBodyBytes: number;
  /** Deadline of a request that names none. */
  defaultTimeoutMs: number;
}

/** Reads and checks an infer request; every problem is a 4xx SwitchyardError naming it. */
export async function readInferRequest(
  raw: Request,
  path: InferPath,
  limits: InferLimits,
): Promise<InferRequestIn> {
  const body = await readRequestBody(raw, limits.maxBodyBytes);
  return parseInferRequest(path, raw.headers, body, limits.defaultTimeoutMs);
}

export interface InferPath {
  model: string | undefined;
  version: string | undefined;
}

/**
 * Checks an infer request whose body is already read (decompressed, within its limit). Binary tensors are
 * views of `body` where alignment allows: read them before `body` is handed on, or hand them on with it.
 * Inputs in shared memory are read from `sharedMemory` (the standalone agent's regions; the gateway has
 * none, and refuses them).
 */
export function parseInferRequest(
  path: InferPath,
  headers: HeaderReader,
  body: Uint8Array,
  defaultTimeoutMs: number,
  sharedMemory?: SharedMemoryAccess,
): InferRequestIn {
  const model = parseModelName(path.model ?? "");
  const version = path.version === undefined ? undefined : parseModelVersion(path.version);
  const headerLength = readHeaderLength(headers);
  const request = decodeInferRequest(body, headerLength, {
    views: true,
    ...(sharedMemory === undefined ? {} : { sharedMemory }),
  });
  const hint = readHint(headers);
  return {
    model,
    ...(version === undefined ? {} : { version }),
    body,
    ...(headerLength === undefined ? {} : { headerLength }),
    request,
    ...(hint === undefined ? {} : { hint }),
    deadline: requestDeadline(headers, request.parameters, defaultTimeoutMs),
    requestId: requestIdHeader(request.id),
  };
}

export interface InferAnswered {
  requestId: string;
  /** "<agent>/<replica>" that served it. */
  replica: string;
  cache: "hit" | "miss";
  contentType: string;
  headerLength?: number;
  /** Milliseconds per phase, for Server-Timing (queue, load, infer, total, ...). */
  timings: Record<string, number>;
}

/** The headers of a served inference, the same from both servers. */
export function inferResponseHeaders(answered: InferAnswered): Record<string, string> {
  const headers: Record<string, string> = {
    "Content-Type": answered.contentType,
    "X-Request-Id": answered.requestId,
    "X-Switchyard-Replica": answered.replica,
    "X-Switchyard-Cache": answered.cache,
    "Server-Timing": serverTiming(answered.timings),
  };
  if (answered.headerLength !== undefined)
    headers[INFERENCE_HEADER_CONTENT_LENGTH] = String(answered.headerLength);
  return headers;
}
