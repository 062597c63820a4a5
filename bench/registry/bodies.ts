/**
 * The two request shapes the registry benchmark relays, encoded once with the repository's OIP codec: a tiny
 * JSON request (what a control-heavy workload sends) and a 1 MiB binary tensor each way (what a data-heavy
 * one sends). Each comes with the model the simulated agents say they hold and the response they answer with.
 */
import { type EncodedBody, encodeInferRequest, encodeInferResponse } from "../../shared/oip/codec.ts";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";
import type { SimulatedModel } from "./simulated-agents.ts";

export type BodyKind = "small" | "1mib";
export const BODY_KINDS: readonly BodyKind[] = ["small", "1mib"];

export interface BodyCase {
  kind: BodyKind;
  label: string;
  model: SimulatedModel;
  signature: ModelSignature;
  request: EncodedBody;
  response: EncodedBody;
}

const LARGE_BYTES = 2 ** 20;

export function bodyCase(kind: BodyKind): BodyCase {
  return kind === "small" ? smallCase() : largeCase();
}

/** FP32 [1, 4] in and out, as JSON: ~100 bytes each way. */
function smallCase(): BodyCase {
  const model = { name: "bench-small", version: "1", bytes: 4096 };
  const input = {
    name: "x",
    datatype: "FP32" as const,
    shape: [1, 4],
    data: Float32Array.of(0.5, 1, 1.5, 2),
  };
  const output = { ...input, name: "y", data: Float32Array.of(0.25, 0.5, 0.75, 1) };
  return {
    kind: "small",
    label: "small JSON body",
    model,
    signature: {
      name: model.name,
      version: model.version,
      inputs: [{ name: "x", datatype: "FP32", shape: [-1, 4] }],
      outputs: [{ name: "y", datatype: "FP32", shape: [-1, 4] }],
      batching: { max_batch_size: 0, dynamic_batching: null },
    },
    request: encodeInferRequest({ inputs: [input] }, { binaryInputs: false }),
    response: encodeInferResponse(
      { model_name: model.name, model_version: model.version, outputs: [output] },
      () => false,
    ),
  };
}

/**
 * UINT8 [1048576] in, binary tensor extension, binary output asked for; the agents answer with a tensor of the
 * same size (an echo), so each request relays 1 MiB to the agent and 1 MiB back.
 */
function largeCase(): BodyCase {
  const model = { name: "bench-echo", version: "1", bytes: 4096 };
  const data = new Uint8Array(LARGE_BYTES);
  // Not zeros: nothing on the way may get away with less work for a uniform body.
  for (let index = 0; index < data.length; index += 1) data[index] = (index * 2_654_435_761) >>> 24;
  const input = { name: "x", datatype: "UINT8" as const, shape: [LARGE_BYTES], data };
  return {
    kind: "1mib",
    label: "1 MiB binary body each way",
    model,
    signature: {
      name: model.name,
      version: model.version,
      inputs: [{ name: "x", datatype: "UINT8", shape: [-1] }],
      outputs: [{ name: "y", datatype: "UINT8", shape: [-1] }],
      batching: { max_batch_size: 0, dynamic_batching: null },
    },
    request: encodeInferRequest({ inputs: [input] }, { binaryInputs: true, binaryOutputs: true }),
    response: encodeInferResponse(
      { model_name: model.name, model_version: model.version, outputs: [{ ...input, name: "y" }] },
      () => true,
    ),
  };
}
