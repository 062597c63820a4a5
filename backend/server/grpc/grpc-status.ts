import type { ErrorCode, SwitchyardError } from "../../../shared/errors.ts";

/** gRPC's status codes (the grpc-status trailer), by name. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusCode = (typeof GrpcStatus)[keyof typeof GrpcStatus];

/** How a call ends when it fails: its status, the message (grpc-message) and metadata for the trailers. */
export class GrpcFailure extends Error {
  readonly code: GrpcStatusCode;
  readonly trailers: Readonly<Record<string, string>>;

  constructor(code: GrpcStatusCode, details: string, trailers: Record<string, string> = {}) {
    super(details);
    this.code = code;
    this.trailers = trailers;
  }

  get details(): string {
    return this.message;
  }
}

/**
 * The one error type as a gRPC status: the code gRPC clients branch on for each of ours (the same split
 * Triton's gRPC endpoint makes: a full queue and a starting server are UNAVAILABLE, worth a retry), the
 * message as the status details, and Retry-After as trailing metadata where there is one.
 */
const GRPC_STATUS: Record<ErrorCode, GrpcStatusCode> = {
  bad_input: GrpcStatus.INVALID_ARGUMENT,
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  forbidden: GrpcStatus.PERMISSION_DENIED,
  not_found: GrpcStatus.NOT_FOUND,
  conflict: GrpcStatus.ALREADY_EXISTS,
  gone: GrpcStatus.NOT_FOUND,
  too_large: GrpcStatus.RESOURCE_EXHAUSTED,
  unsupported_media_type: GrpcStatus.INVALID_ARGUMENT,
  queue_full: GrpcStatus.UNAVAILABLE,
  rate_limited: GrpcStatus.RESOURCE_EXHAUSTED,
  internal: GrpcStatus.INTERNAL,
  model_load_failed: GrpcStatus.INTERNAL,
  unavailable: GrpcStatus.UNAVAILABLE,
  deadline_exceeded: GrpcStatus.DEADLINE_EXCEEDED,
};

export function grpcError(failure: SwitchyardError): GrpcFailure {
  return new GrpcFailure(
    GRPC_STATUS[failure.code],
    failure.message,
    failure.retryAfterSeconds === undefined ? {} : { "retry-after": String(failure.retryAfterSeconds) },
  );
}
