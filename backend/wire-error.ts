/**
 * A failure as it crosses between the agent's threads (intake threads, the main thread, session threads'
 * lanes): plain data a structured clone keeps, turned back into the SwitchyardError it was on the other side.
 */
import { type ErrorCode, SwitchyardError } from "../shared/errors.ts";

export interface WireError {
  code: ErrorCode;
  message: string;
  retryAfterSeconds?: number;
}

export function toWireError(error: unknown): WireError {
  const failure = SwitchyardError.from(error);
  return {
    code: failure.code,
    message: failure.message,
    ...(failure.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: failure.retryAfterSeconds }),
  };
}

export function fromWireError(error: WireError): SwitchyardError {
  return new SwitchyardError(
    error.code,
    error.message,
    error.retryAfterSeconds === undefined ? undefined : { retryAfterSeconds: error.retryAfterSeconds },
  );
}
