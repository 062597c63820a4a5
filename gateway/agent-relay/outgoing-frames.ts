import { type CancelFrame, encodeBinaryFrame, type InferHeader } from "../../shared/protocol/frames.ts";
import type { RunOrder } from "../pool-calls.ts";

/**
 * The frames an agent's relay sends it about a request, built from the Worker's run order;
 * shared/protocol/frames.ts owns their layout and schemas. The body travels as the client sent it.
 */
export function inferFrame(call: RunOrder, remainingMs: number): Uint8Array {
  const header: InferHeader = {
    type: "infer",
    id: call.ticket,
    replica: call.replicaId,
    model: call.model,
    ...(call.version === undefined ? {} : { version: call.version }),
    ...(call.hint === undefined ? {} : { hint: call.hint }),
    // What is left of the client's deadline when it leaves the relay: the agent cuts the run off then.
    timeoutMs: Math.max(1, remainingMs),
    ...(call.headerLength === undefined ? {} : { headerLength: call.headerLength }),
    ...(call.requestId === undefined ? {} : { requestId: call.requestId }),
  };
  // Its binary tensors placed where an agent can view them in place (BinaryFrameOptions.alignBodyAt).
  return encodeBinaryFrame(
    header,
    call.body,
    "request",
    call.headerLength === undefined ? {} : { alignBodyAt: call.headerLength },
  );
}

/** Tells the agent that nobody waits for the request any more (its deadline passed). */
export function cancelFrame(id: string): string {
  return JSON.stringify({ type: "cancel", id } satisfies CancelFrame);
}
