/**
 * The one error type of Switchyard. Every failure that reaches a client is a SwitchyardError, and every
 * SwitchyardError maps to an Open Inference Protocol v2 error response: `{"error": "<message>"}` with the
 * HTTP status of its code. Messages say what is wrong and, where there is one, what fixes it; they never
 * carry secrets.
 */
export const ERROR_STATUS = {
  bad_input: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  /** A second data socket for an agent's channel (shared/protocol/data-channel.ts). */
  conflict: 409,
  /** A queued request's result outlived its retention (QUEUE_RESULT_TTL_SECONDS). */
  gone: 410,
  too_large: 413,
  /** A Content-Encoding the server cannot decode. */
  unsupported_media_type: 415,
  queue_full: 429,
  /** The API key's rate limit (RATE_LIMIT_PER_MINUTE on the gateway) is spent for now. */
  rate_limited: 429,
  internal: 500,
  model_load_failed: 500,
  unavailable: 503,
  deadline_exceeded: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;
export type ErrorStatus = (typeof ERROR_STATUS)[ErrorCode];

export interface ErrorBody {
  error: string;
}

export class SwitchyardError extends Error {
  readonly code: ErrorCode;
  /** Seconds a client should wait before retrying (429, 503); sent as Retry-After. */
  readonly retryAfterSeconds: number | undefined;
  /** Raised before any work on the request began (so it may be sent again elsewhere, whatever its code). */
  readonly beforeWork: boolean;

  constructor(
    code: ErrorCode,
    message: string,
    options?: { retryAfterSeconds?: number; cause?: unknown; beforeWork?: boolean },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "SwitchyardError";
    this.code = code;
    this.retryAfterSeconds = options?.retryAfterSeconds;
    this.beforeWork = options?.beforeWork === true;
  }

  get status(): ErrorStatus {
    return ERROR_STATUS[this.code];
  }

  toBody(): ErrorBody {
    return { error: this.message };
  }

  /** Headers that go with the response: Retry-After where the client should come back later. */
  headers(): Record<string, string> {
    return this.retryAfterSeconds === undefined ? {} : { "Retry-After": String(this.retryAfterSeconds) };
  }

  /** A failure a peer reported by its HTTP status (an agent's error frame or answer), as the one error type. */
  static fromStatus(
    status: number,
    message: string,
    options?: { retryAfterSeconds?: number },
  ): SwitchyardError {
    const code =
      (Object.keys(ERROR_STATUS) as ErrorCode[]).find((candidate) => ERROR_STATUS[candidate] === status) ??
      (status >= 500 ? "internal" : "bad_input");
    return new SwitchyardError(code, message, options);
  }

  /** Anything thrown, as a SwitchyardError: unknown failures become `internal` without leaking details. */
  static from(error: unknown): SwitchyardError {
    if (error instanceof SwitchyardError) return error;
    return new SwitchyardError("internal", "internal error", { cause: error });
  }
}

export const badInput = (message: string) => new SwitchyardError("bad_input", message);

/** An error and its causes on one line, for operators' logs ("could not run (worker exited (code 1))"). */
export function describeError(error: unknown): string {
  if (error instanceof Error)
    return error.cause === undefined ? error.message : `${error.message} (${describeError(error.cause)})`;
  return String(error);
}
export const notFound = (message: string) => new SwitchyardError("not_found", message);

// ---- One wording for the errors both servers give (the gateway and the standalone agent) ----

export const modelNotFound = (name: string) => notFound(`model '${name}' not found`);

export const versionNotFound = (name: string, version: string, available: readonly string[]) =>
  notFound(
    `model '${name}' has no version ${version}${available.length === 0 ? "" : ` (versions: ${available.join(", ")})`}`,
  );

/** An unknown route; the path is shortened, since whatever a client sends is echoed here. */
export const noRoute = (method: string, path: string) =>
  notFound(`no route for ${method.slice(0, 16)} ${path.length > 200 ? `${path.slice(0, 200)}…` : path}`);

/** As Triton: a model that exists but is not ready answers 400 on its ready endpoint. */
export const modelNotReady = (name: string, version: string, reason: string) =>
  badInput(`model '${name}' version ${version} is not ready: ${reason}`);
