import { execFileSync } from "node:child_process";
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { MAX_REGIONS, SharedMemoryRegions } from "../../../backend/server/shared-memory-regions.ts";
import { SwitchyardError } from "../../../shared/errors.ts";
import { decodeInferRequest, tensorBinary } from "../../../shared/oip/codec.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";

// Real files stand in for /dev/shm (a POSIX shared memory object is a file there): the regions read and write
// them exactly as they do the objects a client made with shm_open.

let directory: string;
let regions: SharedMemoryRegions;
beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), "switchyard-shm-"));
  regions = new SharedMemoryRegions({ directory, maxInputBytes: 1 << 20 });
});
afterEach(() => rmSync(directory, { recursive: true, force: true }));

const object = (name: string, bytes: Uint8Array | number) =>
  writeFileSync(join(directory, name), typeof bytes === "number" ? new Uint8Array(bytes) : bytes);
const problem = (message: string): never => {
  throw new SwitchyardError("bad_input", message);
};
const utf8 = new TextEncoder();
const requestBody = (value: unknown) => utf8.encode(JSON.stringify(value));

describe("registering", () => {
  test("a window of an object that exists and holds it; status lists it as Triton does", () => {
    object("input0", 128);
    regions.register("in", { key: "/input0", offset: 32, byte_size: 96 });
    expect(regions.status()).toEqual([{ name: "in", key: "/input0", offset: 32, byte_size: 96 }]);
    expect(regions.status("in")).toHaveLength(1);
    expect(() => regions.status("other")).toThrow("shared memory region 'other' is not registered");
  });

  test("refuses, each with the reason: a taken name, a missing object, one too small, a key that is not a name", () => {
    object("input0", 64);
    regions.register("in", { key: "/input0", offset: 0, byte_size: 64 });
    const refusals: [string, { key: string; offset: number; byte_size: number }, string][] = [
      ["in", { key: "/input0", offset: 0, byte_size: 8 }, "'in' is already registered: unregister it first"],
      ["a", { key: "/missing", offset: 0, byte_size: 8 }, "'/missing' does not exist on the agent's host"],
      ["b", { key: "/input0", offset: 8, byte_size: 64 }, "holds 64 bytes, but region 'b' ends at byte 72"],
      ["c", { key: "/../etc/passwd", offset: 0, byte_size: 8 }, "is not a shared memory key"],
      ["e", { key: "/..", offset: 0, byte_size: 8 }, "is not a shared memory key"],
      ["f", { key: `/${"k".repeat(256)}`, offset: 0, byte_size: 8 }, "is not a shared memory key"],
    ];
    for (const [name, request, reason] of refusals) {
      expect(() => regions.register(name, request), name).toThrow(reason);
    }
    expect(regions.status().map((region) => region.name)).toEqual(["in"]);
  });

  test("at most MAX_REGIONS at once, then a 400 that says to unregister", () => {
    object("o", 8);
    for (let index = 0; index < MAX_REGIONS; index += 1)
      regions.register(`r${index}`, { key: "/o", offset: 0, byte_size: 8 });
    expect(() => regions.register("one-more", { key: "/o", offset: 0, byte_size: 8 })).toThrow(
      `${MAX_REGIONS} shared memory regions are registered, the most at once: unregister some first`,
    );
    regions.unregister("r0");
    regions.register("one-more", { key: "/o", offset: 0, byte_size: 8 });
  });

  test("a key's leading slashes name nothing, as glibc's shm_open reads them", () => {
    object("input0", 8);
    regions.register("a", { key: "input0", offset: 0, byte_size: 8 });
    regions.register("b", { key: "//input0", offset: 0, byte_size: 8 });
    expect(regions.status().map((region) => region.key)).toEqual(["input0", "//input0"]);
  });

  test("only a regular file is an object: a FIFO (which would block the thread) or a directory is refused", () => {
    execFileSync("mkfifo", [join(directory, "fifo")]);
    mkdirSync(join(directory, "dir"));
    expect(() => regions.register("x", { key: "/fifo", offset: 0, byte_size: 0 })).toThrow(
      `'/fifo' is not a shared memory object (a regular file in ${directory})`,
    );
    expect(() => regions.register("x", { key: "/dir", offset: 0, byte_size: 0 })).toThrow(
      "shared memory object '/dir' cannot be opened by the agent (EISDIR)",
    );
    // One swapped for a FIFO after registering: refused at its next use, not waited on.
    object("o", 16);
    regions.register("o", { key: "/o", offset: 0, byte_size: 16 });
    rmSync(join(directory, "o"));
    execFileSync("mkfifo", [join(directory, "o")]);
    expect(() => regions.read({ region: "o", offset: 0, byteSize: 16 }, problem)).toThrow(
      "'/o' is not a shared memory object",
    );
    expect(() => regions.write({ region: "o", offset: 0, byteSize: 16 }, "y", [new Uint8Array(4)])).toThrow(
      "shared memory object '/o' cannot be opened by the agent (ENXIO)",
    );
  });

  test("a symbolic link in the directory is not followed (no key reaches a file elsewhere)", () => {
    const outside = join(directory, "..", `outside-${Date.now()}`);
    writeFileSync(outside, new Uint8Array(16));
    try {
      symlinkSync(outside, join(directory, "link"));
      expect(() => regions.register("l", { key: "/link", offset: 0, byte_size: 8 })).toThrow(
        "cannot be opened by the agent (ELOOP)",
      );
    } finally {
      rmSync(outside, { force: true });
    }
  });

  test("unregister drops one region or all; a name not registered is no error", () => {
    object("o", 16);
    regions.register("a", { key: "/o", offset: 0, byte_size: 8 });
    regions.register("b", { key: "/o", offset: 8, byte_size: 8 });
    regions.unregister("nope");
    regions.unregister("a");
    expect(regions.status().map((region) => region.name)).toEqual(["b"]);
    regions.unregister();
    expect(regions.status()).toEqual([]);
  });

  test("another thread's copy takes the table whole", () => {
    object("o", 16);
    regions.register("a", { key: "/o", offset: 4, byte_size: 8 });
    const copy = new SharedMemoryRegions({ directory, maxInputBytes: 1 << 20 });
    copy.replace(regions.table());
    expect(copy.status()).toEqual(regions.status());
    regions.unregister();
    copy.replace(regions.table());
    expect(copy.status()).toEqual([]);
  });
});

describe("inputs from a region", () => {
  test("decode exactly as the same tensor sent in the body, whatever the datatype and place in the region", () => {
    const tensors = fc.oneof(
      fc.array(fc.float({ noNaN: true }), { maxLength: 40 }).map(
        (values): Tensor => ({
          name: "x",
          datatype: "FP32",
          shape: [values.length],
          data: Float32Array.from(values),
        }),
      ),
      fc.array(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), { maxLength: 20 }).map(
        (values): Tensor => ({
          name: "x",
          datatype: "INT64",
          shape: [values.length],
          data: BigInt64Array.from(values),
        }),
      ),
      fc
        .array(fc.uint8Array({ maxLength: 12 }), { maxLength: 6 })
        .map((values): Tensor => ({ name: "x", datatype: "BYTES", shape: [values.length], data: values })),
    );
    fc.assert(
      fc.property(tensors, fc.nat(24), fc.nat(24), (tensor, objectOffset, regionOffset) => {
        const bytes = tensorBinary(tensor);
        const file = new Uint8Array(objectOffset + regionOffset + bytes.byteLength + 5).fill(0xee);
        file.set(bytes, objectOffset + regionOffset);
        object("t", file);
        regions.unregister();
        regions.register("r", { key: "/t", offset: objectOffset, byte_size: file.byteLength - objectOffset });
        const decoded = decodeInferRequest(
          requestBody({
            inputs: [
              {
                name: "x",
                datatype: tensor.datatype,
                shape: tensor.shape,
                parameters: {
                  shared_memory_region: "r",
                  shared_memory_offset: regionOffset,
                  shared_memory_byte_size: bytes.byteLength,
                },
              },
            ],
          }),
          undefined,
          { sharedMemory: regions },
        );
        expect(decoded.inputs).toEqual([tensor]);
      }),
      { numRuns: 60 },
    );
  });

  test("refused, naming the input: an unregistered region, a size the shape does not need, beyond the region, data too", () => {
    object("t", 64);
    regions.register("r", { key: "/t", offset: 0, byte_size: 64 });
    const input = (parameters: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
      requestBody({ inputs: [{ name: "x", datatype: "FP32", shape: [4], parameters, ...extra }] });
    const cases: [Uint8Array, string][] = [
      [
        input({ shared_memory_region: "nope", shared_memory_byte_size: 16 }),
        `inputs[0] ("x"): shared memory region 'nope' is not registered`,
      ],
      [
        input({ shared_memory_region: "r", shared_memory_byte_size: 12 }),
        "shared_memory_byte_size is 12 bytes but shape [4] of FP32 needs 16",
      ],
      [
        input({ shared_memory_region: "r", shared_memory_byte_size: 16, shared_memory_offset: 56 }),
        "shared memory region 'r' is 64 bytes, too small for 16 bytes at offset 56",
      ],
      [
        input({ shared_memory_region: "r", shared_memory_byte_size: 16 }, { data: [1, 2, 3, 4] }),
        "has data and a shared memory region; send one of them",
      ],
    ];
    for (const [body, reason] of cases) {
      expect(() => decodeInferRequest(body, undefined, { sharedMemory: regions })).toThrow(reason);
    }
  });

  test("inputs in shared memory bring at most maxInputBytes in all, checked before anything is read", () => {
    // A sparse object: any size registers, and would cost nothing until read.
    object("big", 0);
    truncateSync(join(directory, "big"), 8 << 20);
    regions.register("big", { key: "/big", offset: 0, byte_size: 8 << 20 });
    const input = (name: string, datatype: string, shape: number[], byteSize: number, offset = 0) => ({
      name,
      datatype,
      shape,
      parameters: {
        shared_memory_region: "big",
        shared_memory_byte_size: byteSize,
        shared_memory_offset: offset,
      },
    });
    const decode = (inputs: unknown[]) =>
      decodeInferRequest(requestBody({ inputs }), undefined, { sharedMemory: regions });
    // Each within the bound (1 MiB), their sum not: 413.
    const half = (1 << 20) / 2 + 4;
    const refusal = (() => {
      try {
        decode([input("a", "UINT8", [half], half), input("b", "UINT8", [half], half, half)]);
      } catch (error) {
        return error as SwitchyardError;
      }
    })();
    expect(refusal?.status).toBe(413);
    // BYTES: the size is the client's to say, but never less than 4 bytes per element, nor past the bound.
    expect(() => decode([input("s", "BYTES", [1], 2 << 20)])).toThrow(
      "the inputs in shared memory add up to more than 1048576 bytes, the most a request may bring (--max-body)",
    );
    expect(() => decode([input("s", "BYTES", [3], 8)])).toThrow(
      "shared_memory_byte_size is 8 bytes but shape [3] of BYTES needs at least 12 (4 for each element's length)",
    );
    expect(decode([input("a", "UINT8", [1 << 20], 1 << 20)]).inputs[0]?.data).toHaveLength(1 << 20);
  });

  test("an object that shrank after registering, or was removed, is a 400 at the next use", () => {
    object("t", 64);
    regions.register("r", { key: "/t", offset: 0, byte_size: 64 });
    const ref = { region: "r", offset: 0, byteSize: 64 };
    truncateSync(join(directory, "t"), 10);
    expect(() => regions.read(ref, problem)).toThrow("'/t' ends before region 'r' does");
    rmSync(join(directory, "t"));
    expect(() => regions.read(ref, problem)).toThrow("'/t' does not exist on the agent's host");
  });
});

describe("outputs to a region", () => {
  test("are written at the region's place in the object, the bytes around them untouched", () => {
    object("o", new Uint8Array(32).fill(9));
    regions.register("out", { key: "/o", offset: 8, byte_size: 16 });
    regions.write({ region: "out", offset: 4, byteSize: 12 }, "y", [
      Uint8Array.of(1, 2, 3),
      Uint8Array.of(4, 5),
    ]);
    expect([...readFileSync(join(directory, "o"))]).toEqual([
      ...new Array(12).fill(9),
      1,
      2,
      3,
      4,
      5,
      ...new Array(15).fill(9),
    ]);
  });

  test("an object that shrank after registering is not grown by a write: a 400, the object as it was", () => {
    object("o", 32);
    regions.register("out", { key: "/o", offset: 0, byte_size: 32 });
    truncateSync(join(directory, "o"), 10);
    expect(() => regions.write({ region: "out", offset: 8, byteSize: 8 }, "y", [new Uint8Array(8)])).toThrow(
      "shared memory object '/o' ends before region 'out' does (it shrank after registering)",
    );
    expect(readFileSync(join(directory, "o")).byteLength).toBe(10);
  });

  test("more bytes than the request gave the output is its 400, worded as Triton words it", () => {
    object("o", 32);
    regions.register("out", { key: "/o", offset: 0, byte_size: 32 });
    expect(() => regions.write({ region: "out", offset: 0, byteSize: 4 }, "y", [new Uint8Array(8)])).toThrow(
      "output 'y': shared memory size specified with the request (4 bytes) should be at least 8 bytes to hold the results",
    );
    expect([...readFileSync(join(directory, "o"))]).toEqual(new Array(32).fill(0));
  });
});
