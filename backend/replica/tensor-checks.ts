/**
 * A request's tensors checked against a model's specs before anything runs: what the replica, a session's
 * lanes and an intake thread grouping requests for a lane all check, so that a bad request fails alone with a
 * message that says what does not match. No onnxruntime here: intake threads import it.
 */
import { badInput } from "../../shared/errors.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import type { TensorSpec } from "./ort-tensors.ts";

/** The outputs a request asks for (all of them by default), each checked against the model's. */
export function wantedOutputs(
  modelName: string,
  specs: readonly TensorSpec[],
  asked: readonly string[] | undefined,
): string[] {
  const wanted = asked === undefined ? specs.map((spec) => spec.name) : [...asked];
  for (const name of wanted) {
    if (!specs.some((spec) => spec.name === name)) {
      const known = specs.map((spec) => spec.name).join(", ");
      throw badInput(`model '${modelName}' has no output '${name}' (its outputs: ${known})`);
    }
  }
  return wanted;
}

/** Checks a request's inputs against the model's and says exactly what does not match. */
export function checkInputs(
  modelName: string,
  inputs: readonly Tensor[],
  specs: readonly TensorSpec[],
): void {
  const given = new Set<string>();
  for (const input of inputs) {
    const spec = specs.find((candidate) => candidate.name === input.name);
    if (spec === undefined) {
      // Named only for the message: every request passes through here, most of them fine.
      const known = specs.map((candidate) => candidate.name).join(", ");
      throw badInput(`model '${modelName}' has no input '${input.name}' (its inputs: ${known})`);
    }
    if (given.has(input.name)) throw badInput(`input '${input.name}' is given twice`);
    given.add(input.name);
    if (spec.datatype !== input.datatype) {
      throw badInput(
        `input '${input.name}' of model '${modelName}' is ${spec.datatype}, got ${input.datatype}`,
      );
    }
    const fits =
      spec.shape.length === input.shape.length &&
      spec.shape.every((dim, index) => dim === -1 || dim === input.shape[index]);
    if (!fits) {
      throw badInput(
        `input '${input.name}' of model '${modelName}' has shape [${spec.shape.join(", ")}] (-1: any), ` +
          `got [${input.shape.join(", ")}]`,
      );
    }
  }
  const missing = specs.filter((spec) => !given.has(spec.name)).map((spec) => spec.name);
  if (missing.length > 0) throw badInput(`model '${modelName}' needs input(s) ${missing.join(", ")}`);
}
