/**
 * A failure as it crosses between the agent's threads (intake threads, the main thread, session threads'
 * lanes): plain data a structured clone keeps, turned back into the SwitchyardError it was on the other side.
 */
import { describeError, type ErrorCode, SwitchyardError } from "../shared/errors.ts";

export interface WireError {
  code: ErrorCode;
  message: string;
  retryAfterSeconds?: number;
  /**
   * What caused it, in describeError's words: for the agent's log on the other side (an intake thread logs
   * the 5xx it answers), never for the client, which gets `message` alone.
   */
  cause?: string;
}

export function toWireError(error: unknown): WireError {
  const failure = SwitchyardError.from(error);
  return {
    code: failure.code,
    message: failure.message,
    ...(failure.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: failure.retryAfterSeconds }),
    ...(failure.cause === undefined ? {} : { cause: describeError(failure.cause) }),
  };
}

export function fromWireError(error: WireError): SwitchyardError {
  return new SwitchyardError(error.code, error.message, {
    ...(error.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: error.retryAfterSeconds }),
    ...(error.cause === undefined ? {} : { cause: new Error(error.cause) }),
  });
}
