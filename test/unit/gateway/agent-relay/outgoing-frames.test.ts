import { describe, expect, test } from "vitest";
import { inferFrame } from "../../../../gateway/agent-relay/outgoing-frames.ts";
import type { RunOrder } from "../../../../gateway/pool-calls.ts";
import { decodeInferRequest, encodeInferRequest } from "../../../../shared/oip/codec.ts";
import { decodeBinaryFrame, InferHeaderSchema } from "../../../../shared/protocol/frames.ts";

const order = (body: Uint8Array, headerLength: number | undefined, model = "m"): RunOrder => ({
  model,
  body,
  ...(headerLength === undefined ? {} : { headerLength }),
  timeoutMs: 1000,
  budgetMs: 1000,
  attempts: 1,
  reruns: 0,
  pool: "default",
  shard: 0,
  ticket: "t-1",
  agentId: "a",
  channel: "c",
  replicaId: "0",
  replica: "a/0",
  queuedMs: 0,
});

describe("the relay's infer frame", () => {
  test("a binary request's tensors start at a multiple of 8 in the frame, whatever the names' lengths", () => {
    for (const model of ["m", "model-with-a-longer-name", "abc"]) {
      for (const name of ["x", "input_0", "a-name-of-odd-length"]) {
        const data = Float32Array.from({ length: 6 }, (_, index) => index + 0.5);
        const encoded = encodeInferRequest(
          { inputs: [{ name, datatype: "FP32", shape: [2, 3], data }] },
          { binaryInputs: true },
        );
        const frame = inferFrame(order(encoded.body, encoded.headerLength, model), 900);
        const { header, body } = decodeBinaryFrame(frame, InferHeaderSchema);
        expect(header).toMatchObject({ model, headerLength: encoded.headerLength, timeoutMs: 900 });
        expect((body.byteOffset + (encoded.headerLength ?? 0)) % 8).toBe(0);
        // So the agent can view the tensor in place.
        const viewed = decodeInferRequest(body, header.headerLength, { views: true }).inputs[0]?.data;
        expect((viewed as Float32Array).buffer).toBe(frame.buffer);
        expect([...(viewed as Float32Array)]).toEqual([...data]);
      }
    }
  });

  test("a JSON request's body follows its header unpadded", () => {
    const body = new TextEncoder().encode('{"inputs":[]}');
    const frame = inferFrame(order(body, undefined), 900);
    const { header } = decodeBinaryFrame(frame, InferHeaderSchema);
    expect(frame.length).toBe(4 + JSON.stringify(header).length + body.length);
  });
});
