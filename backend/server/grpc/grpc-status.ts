import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import type { ErrorCode, SwitchyardError } from "../../../shared/errors.ts";

/**
 * The one error type as a gRPC status: the code gRPC clients branch on for each of ours (the same split
 * Triton's gRPC endpoint makes: a full queue and a starting server are UNAVAILABLE, worth a retry), the
 * message as the status details, and Retry-After as trailing metadata where there is one.
 */
const GRPC_STATUS: Record<ErrorCode, status> = {
  bad_input: status.INVALID_ARGUMENT,
  unauthenticated: status.UNAUTHENTICATED,
  forbidden: status.PERMISSION_DENIED,
  not_found: status.NOT_FOUND,
  conflict: status.ALREADY_EXISTS,
  gone: status.NOT_FOUND,
  too_large: status.RESOURCE_EXHAUSTED,
  unsupported_media_type: status.INVALID_ARGUMENT,
  queue_full: status.UNAVAILABLE,
  rate_limited: status.RESOURCE_EXHAUSTED,
  internal: status.INTERNAL,
  model_load_failed: status.INTERNAL,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
};

export function grpcError(failure: SwitchyardError): Partial<ServiceError> {
  const metadata = new Metadata();
  if (failure.retryAfterSeconds !== undefined) metadata.set("retry-after", String(failure.retryAfterSeconds));
  return { code: GRPC_STATUS[failure.code], details: failure.message, metadata };
}
