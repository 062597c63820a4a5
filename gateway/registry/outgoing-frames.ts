import { type CancelFrame, encodeBinaryFrame, type InferHeader } from "../../shared/protocol/frames.ts";
import type { RelayedRequest } from "./relay-types.ts";

/**
 * The frames the registry sends an agent about a request, built from the request as the Worker relayed it;
 * shared/protocol/frames.ts owns their layout and schemas. The body travels as the client sent it.
 */
export function inferFrame(
  id: string,
  replicaId: string,
  call: RelayedRequest,
  remainingMs: number,
): Uint8Array {
  const header: InferHeader = {
    type: "infer",
    id,
    replica: replicaId,
    model: call.model,
    ...(call.version === undefined ? {} : { version: call.version }),
    ...(call.hint === undefined ? {} : { hint: call.hint }),
    // What is left of the client's deadline when it leaves the registry: the agent cuts the run off then.
    timeoutMs: Math.max(1, remainingMs),
    ...(call.headerLength === undefined ? {} : { headerLength: call.headerLength }),
    ...(call.requestId === undefined ? {} : { requestId: call.requestId }),
  };
  return encodeBinaryFrame(header, call.body);
}

/** Tells the agent that nobody waits for the request any more (its deadline passed). */
export function cancelFrame(id: string): string {
  return JSON.stringify({ type: "cancel", id } satisfies CancelFrame);
}
