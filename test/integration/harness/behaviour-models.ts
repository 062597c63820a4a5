import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { onnx as Onnx } from "onnx-proto";
import {
  BATCH_DIM,
  bytesOf,
  DataType,
  encodeModel,
  intAttribute,
  modelHeader,
  node,
  tensorValue,
  toBytes,
} from "../../../scripts/lib/onnx-builder.ts";
import type { InferRequestToEncode } from "../../../shared/oip/codec.ts";
import { repoModelPath } from "../../fixtures/paths.ts";
import { type RepositoryModel, writeCorruptModel, writeModelRepository } from "../../fixtures/repository.ts";

/**
 * Models and repositories for the integration tests of the gateway's behaviours that need a real agent to
 * fail in a particular way: a model that loads but whose runs can fail (outlier ejection), a model that is
 * not idempotent, a model that fails to load on one agent and loads on another.
 */

/** GATHER_TABLE[i] is what the lookup model answers for index i; any other index fails the run. */
export const GATHER_TABLE = Float32Array.of(10, 20, 30, 40);

/**
 * value[r] = GATHER_TABLE[index[r]]: index INT64 [batch, 1] → value FP32 [batch, 1]. It loads like any model,
 * and a run with an index outside the table fails inside onnxruntime (Gather checks its bounds at run time):
 * a replica whose runs crash, as a client sees it, with nothing wrong with the request's shape or type.
 */
export function buildLookupModel(): Uint8Array {
  const graph: Onnx.IGraphProto = {
    name: "lookup",
    input: [tensorValue("index", DataType.INT64, [BATCH_DIM, 1])],
    output: [tensorValue("value", DataType.FLOAT, [BATCH_DIM, 1])],
    node: [node("Gather", ["table", "index"], ["value"], [intAttribute("axis", 0)])],
  };
  const table = {
    name: "table",
    dataType: DataType.FLOAT,
    dims: [GATHER_TABLE.length],
    byteLength: GATHER_TABLE.byteLength,
    payload: () => [bytesOf(GATHER_TABLE)],
  };
  return toBytes(
    encodeModel(modelHeader("a table lookup whose run fails outside the table"), graph, [table]),
  );
}

/**
 * y = ReduceSum(x) over the batch: x FP32 [batch, 4] → y FP32 [one, 4], its first dimension declared dynamic,
 * so its specs alone make it stackable, and yet its output does not keep the batch's rows: a batch of several
 * requests cannot be split back into each one's answer.
 */
export function buildBatchSumModel(): Uint8Array {
  const axes = BigInt64Array.of(0n);
  return toBytes(
    encodeModel(
      modelHeader("sum over the batch"),
      {
        name: "batch_sum",
        node: [node("ReduceSum", ["x", "axes"], ["y"], [intAttribute("keepdims", 1)])],
        input: [tensorValue("x", DataType.FLOAT, [BATCH_DIM, 4])],
        output: [tensorValue("y", DataType.FLOAT, ["one", 4])],
      },
      [
        {
          name: "axes",
          dataType: DataType.INT64,
          dims: [1],
          byteLength: axes.byteLength,
          payload: () => [bytesOf(axes)],
        },
      ],
    ),
  );
}

/** A request of the lookup model for one index (in the table or not). */
export function lookupRequest(index: number): InferRequestToEncode {
  return {
    inputs: [{ name: "index", datatype: "INT64", shape: [1, 1], data: BigInt64Array.of(BigInt(index)) }],
  };
}

/** A fresh temporary directory holding a model repository of `models`. */
export function temporaryRepository(label: string, models: RepositoryModel[]): string {
  const dir = mkdtempSync(join(tmpdir(), `switchyard-${label}-`));
  writeModelRepository(dir, models);
  return dir;
}

/** A model of the standard repository (m000 …) under another name, with a config.json when given. */
export function copyOf(source: string, name: string, config?: object): RepositoryModel {
  return { name, bytes: readFileSync(repoModelPath(source)), ...(config === undefined ? {} : { config }) };
}

/** A repository of `models` where each of `corrupt` is a model.onnx that is not ONNX: every load of it fails. */
export function repositoryWithCorrupt(label: string, models: RepositoryModel[], corrupt: string[]): string {
  const dir = temporaryRepository(label, models);
  for (const name of corrupt) writeCorruptModel(dir, name);
  return dir;
}
