import { describe, expect, it } from "vitest";
import { InferHandler } from "../../../backend/gateway-link/infer-handler.ts";
import type { InferCall } from "../../../backend/replica/replica.ts";
import { decodeInferResponse, encodeInferRequest } from "../../../shared/oip/codec.ts";
import { decodeBinaryFrame, encodeBinaryFrame, ResultHeaderSchema } from "../../../shared/protocol/frames.ts";
import { handlerOptions, identityReplica } from "./identity-replica.ts";

// An infer frame as the gateway's relay sends it (gateway/agent-relay/outgoing-frames.ts: its binary part
// aligned in the frame): where the frame is in a buffer of its own, the request's tensors are views of that
// buffer, to move to the session's thread with it; where the buffer holds other bytes too, they are copies.

const data = Float32Array.from({ length: 40 }, (_, index) => index / 3);

function inferFrame(): Uint8Array {
  const encoded = encodeInferRequest(
    { inputs: [{ name: "x", datatype: "FP32", shape: [4, 10], data }] },
    { binaryInputs: true, binaryOutputs: true },
  );
  const header = { type: "infer", id: "r1", replica: "0", model: "m", timeoutMs: 5000 };
  return encodeBinaryFrame({ ...header, headerLength: encoded.headerLength }, encoded.body, "request", {
    alignBodyAt: encoded.headerLength,
  });
}

/** Runs one frame through a handler whose replica keeps the call and returns its inputs. */
async function handled(frame: Uint8Array): Promise<{ call: InferCall; result: Uint8Array }> {
  let seen: InferCall | undefined;
  const sent: (Uint8Array | string)[] = [];
  const handler = new InferHandler(handlerOptions(identityReplica({ seen: (call) => (seen = call) }), sent));
  handler.handle(frame);
  await handler.idle();
  const [result] = sent;
  if (seen === undefined || !(result instanceof Uint8Array)) throw new Error(`no result: ${String(result)}`);
  return { call: seen, result };
}

/** The output tensor of a result frame. */
function outputOf(result: Uint8Array): Float32Array {
  const { header, body } = decodeBinaryFrame(result, ResultHeaderSchema);
  return decodeInferResponse(body, header.headerLength).outputs[0]?.data as Float32Array;
}

describe("the agent's infer handler and the frame's buffer", () => {
  it("a frame in a buffer of its own lends it: the tensor is a view of it, handed over, with the same answer", async () => {
    const frame = inferFrame();
    const { call, result } = await handled(frame);
    const input = call.inputs[0]?.data as Float32Array;
    expect(input.buffer).toBe(frame.buffer);
    expect(call.handOverInputs).toBe(true);
    expect([...outputOf(result)]).toEqual([...data]);
  });

  it("a frame that shares its buffer with other bytes is copied from, and answered the same", async () => {
    const own = inferFrame();
    // Aligned as before, but with other bytes around it (a small message read in one chunk with others).
    const shared = new Uint8Array(own.byteLength + 16);
    shared.set(own, 8);
    const frame = shared.subarray(8, 8 + own.byteLength);
    const { call, result } = await handled(frame);
    const input = call.inputs[0]?.data as Float32Array;
    expect(input.buffer).not.toBe(frame.buffer);
    expect(input.buffer.byteLength).toBe(data.byteLength);
    expect([...outputOf(result)]).toEqual([...data]);
  });
});
