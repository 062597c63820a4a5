import { describe, expect, it } from "vitest";
import { InferHandler } from "../../../backend/gateway-link/infer-handler.ts";
import { decodeInferResponse, encodeInferRequest } from "../../../shared/oip/codec.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import { decodeBinaryFrame, encodeBinaryFrame, ResultHeaderSchema } from "../../../shared/protocol/frames.ts";
import { handlerOptions, identityReplica } from "./identity-replica.ts";

// Classification on the agent's gateway link: the classes go back in the result frame, and a request whose
// classes cannot be made (a BYTES output) is answered 400 as one that started, since its model ran.

/** Answers one frame with an identity model (its outputs are its inputs) that declares batching and labels. */
async function answered(input: Tensor): Promise<Uint8Array | string> {
  const sent: (Uint8Array | string)[] = [];
  const classes = { batched: true, labels: new Map([["x", ["a", "b", "c"]]]) };
  const handler = new InferHandler(handlerOptions(identityReplica({ classes }), sent));
  const encoded = encodeInferRequest(
    { inputs: [input], outputs: [{ name: "x", parameters: { classification: 2 } }] },
    { binaryInputs: true },
  );
  const header = { type: "infer", id: "r1", replica: "0", model: "m", timeoutMs: 5000 };
  handler.handle(
    encodeBinaryFrame({ ...header, headerLength: encoded.headerLength }, encoded.body, "request"),
  );
  await handler.idle();
  const [frame] = sent;
  if (frame === undefined) throw new Error("no answer");
  return frame;
}

describe("classes on the agent's gateway link", () => {
  it("the result frame carries each row's top classes, labelled", async () => {
    const frame = await answered({
      name: "x",
      datatype: "FP32",
      shape: [2, 3],
      data: new Float32Array([1, 3, 2, 6, 5, 4]),
    });
    if (typeof frame === "string") throw new Error(frame);
    const { header, body } = decodeBinaryFrame(frame, ResultHeaderSchema);
    const [output] = decodeInferResponse(body, header.headerLength).outputs;
    expect(output).toMatchObject({ datatype: "BYTES", shape: [2, 2] });
    expect(((output?.data ?? []) as Uint8Array[]).map((bytes) => new TextDecoder().decode(bytes))).toEqual([
      "3.000000:1:b",
      "2.000000:2:c",
      "6.000000:0:a",
      "5.000000:1:b",
    ]);
  });

  it("classes of a BYTES output: 400, as a request that started", async () => {
    const frame = await answered({ name: "x", datatype: "BYTES", shape: [1], data: [new Uint8Array([104])] });
    expect(typeof frame).toBe("string");
    expect(JSON.parse(frame as string)).toMatchObject({
      type: "error",
      id: "r1",
      status: 400,
      started: true,
      message: "class result not available for output 'x' due to unsupported type 'BYTES'",
    });
  });
});
