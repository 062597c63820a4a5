import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { SharedMemoryRegions } from "../../../backend/server/shared-memory-regions.ts";
import {
  decodeInferRequest,
  encodeInferResponseParts,
  joined,
  sharedMemoryOutputSelector,
} from "../../../shared/oip/codec.ts";
import { SHARED_MEMORY_NOT_OFFERED, sharedMemoryRefOf } from "../../../shared/oip/shared-memory.ts";

const utf8 = new TextEncoder();
const body = (value: unknown) => utf8.encode(JSON.stringify(value));
const problem = (message: string): never => {
  throw new Error(message);
};

describe("a tensor's shared memory parameters", () => {
  test("none, a region with its size (offset 0 unless given), or a clear problem", () => {
    expect(sharedMemoryRefOf(undefined, problem)).toBeUndefined();
    expect(sharedMemoryRefOf({ binary_data_size: 4 }, problem)).toBeUndefined();
    expect(sharedMemoryRefOf({ shared_memory_region: "in", shared_memory_byte_size: 64 }, problem)).toEqual({
      region: "in",
      offset: 0,
      byteSize: 64,
    });
    expect(
      sharedMemoryRefOf(
        { shared_memory_region: "in", shared_memory_byte_size: 64, shared_memory_offset: 8 },
        problem,
      ),
    ).toEqual({ region: "in", offset: 8, byteSize: 64 });
    // As in Triton: one of the two required parameters without the other is an error.
    expect(() => sharedMemoryRefOf({ shared_memory_byte_size: 64 }, problem)).toThrow(
      "parameters.shared_memory_region must name a registered region, got nothing",
    );
    expect(() => sharedMemoryRefOf({ shared_memory_region: "in" }, problem)).toThrow(
      "parameters.shared_memory_byte_size must be a whole number of bytes, got nothing",
    );
    expect(() =>
      sharedMemoryRefOf(
        { shared_memory_region: "in", shared_memory_byte_size: 4, shared_memory_offset: -1 },
        problem,
      ),
    ).toThrow("parameters.shared_memory_offset must be a whole number of bytes, got -1");
    expect(() =>
      sharedMemoryRefOf({ shared_memory_region: "in", shared_memory_byte_size: 2 ** 60 }, problem),
    ).toThrow("shared_memory_byte_size must be a whole number of bytes");
  });
});

describe("a server that offers no shared memory (the gateway)", () => {
  const input = {
    name: "x",
    datatype: "FP32",
    shape: [1, 4],
    parameters: { shared_memory_region: "in", shared_memory_byte_size: 16 },
  };

  test("refuses an input in a region, instead of running on nothing", () => {
    expect(() => decodeInferRequest(body({ inputs: [input] }))).toThrow(
      `inputs[0] ("x"): ${SHARED_MEMORY_NOT_OFFERED}`,
    );
  });

  test("refuses an output asked in a region, instead of answering into the body while the client reads the region", () => {
    const request = {
      inputs: [{ name: "x", datatype: "FP32", shape: [1], data: [1] }],
      outputs: [{ name: "y", parameters: { shared_memory_region: "out", shared_memory_byte_size: 4 } }],
    };
    expect(() => decodeInferRequest(body(request))).toThrow(`outputs[0] ("y"): ${SHARED_MEMORY_NOT_OFFERED}`);
  });
});

describe("an output written to shared memory", () => {
  let directory: string;
  let regions: SharedMemoryRegions;
  beforeEach(() => {
    directory = mkdtempSync(join(tmpdir(), "switchyard-shm-"));
    writeFileSync(join(directory, "out"), new Uint8Array(8));
    regions = new SharedMemoryRegions({ directory, maxInputBytes: 1 << 20 });
    regions.register("out", { key: "/out", offset: 0, byte_size: 8 });
  });
  afterEach(() => rmSync(directory, { recursive: true, force: true }));

  test("is answered by name, datatype and shape only, beside outputs in the body", () => {
    const request = decodeInferRequest(
      body({
        inputs: [{ name: "x", datatype: "FP32", shape: [1], data: [1] }],
        outputs: [
          { name: "y", parameters: { shared_memory_region: "out", shared_memory_byte_size: 8 } },
          { name: "z" },
        ],
      }),
      undefined,
      { sharedMemory: regions },
    );
    expect(request.outputs?.[0]?.sharedMemory).toEqual({ region: "out", offset: 0, byteSize: 8 });
    // The transport parameters are not the output's own.
    expect(request.outputs?.[0]?.parameters).toEqual({});
    const encoded = joined(
      encodeInferResponseParts(
        {
          model_name: "m",
          outputs: [
            { name: "y", datatype: "FP32", shape: [2], data: Float32Array.of(1, 2) },
            { name: "z", datatype: "INT32", shape: [1], data: Int32Array.of(7) },
          ],
        },
        () => false,
        sharedMemoryOutputSelector(request),
      ),
    );
    expect(JSON.parse(new TextDecoder().decode(encoded.body))).toEqual({
      model_name: "m",
      outputs: [
        { name: "y", datatype: "FP32", shape: [2] },
        { name: "z", datatype: "INT32", shape: [1], data: [7] },
      ],
    });
  });
});
