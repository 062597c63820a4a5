import { randomUUID } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { SHARED_MEMORY_DIRECTORY } from "../../backend/server/shared-memory-regions.ts";
import { tensorBinary } from "../../shared/oip/codec.ts";
import { infer } from "../../shared/oip/http-client.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { seededFloats } from "../fixtures/onnx-builder.ts";
import { IDENTITY_MODELS, MULTIPLEX_MODELS, REPO_DIR } from "../fixtures/paths.ts";
import { type AgentProcess, startStandaloneAgent } from "./support/agent-process.ts";
import { type InferenceClient, startGrpcAgent, stopGrpcAgent } from "./support/grpc-client.ts";
import { rawRequest } from "./support/raw-http.ts";

// Triton's system shared memory end to end, as tritonclient's shared-memory examples use it: the client
// creates objects in /dev/shm (what shm_open does), registers regions of them with a real agent, names the
// regions for its inputs and outputs, and reads the outputs from memory. On the main thread's HTTP server
// and on an HTTP intake thread, where a registration must reach the thread before the register call returns.

const MLP = MULTIPLEX_MODELS[0] ?? "m000";
// 1100 rows of 16 floats: 70 KB in, so the input is read into a pooled buffer (buffer-pool.ts) as a body is.
const ROWS = 1100;
const objects: string[] = [];

/** A fresh object in /dev/shm holding `bytes`; its key. Removed after the tests. */
function createObject(bytes: Uint8Array): string {
  const name = `switchyard-test-${randomUUID()}`;
  writeFileSync(join(SHARED_MEMORY_DIRECTORY, name), bytes);
  objects.push(name);
  return `/${name}`;
}
const objectBytes = (key: string) =>
  new Uint8Array(readFileSync(join(SHARED_MEMORY_DIRECTORY, key.slice(1))));

afterAll(() => {
  for (const name of objects) rmSync(join(SHARED_MEMORY_DIRECTORY, name), { force: true });
});

const json = (value: unknown) => ({ method: "POST", body: JSON.stringify(value) });

/**
 * One call on a connection of its own: with several HTTP threads the kernel spreads connections over them,
 * so a register and the infer after it may be read by different threads.
 */
async function call(
  url: string,
  init: { method?: string; body?: string } = {},
): Promise<{ status: number; body: unknown }> {
  const answer = await rawRequest(url, {
    ...init,
    headers: { "Content-Type": "application/json" },
    fresh: true,
  });
  return { status: answer.status, body: JSON.parse(answer.body.toString("utf8")) };
}

const inShm = (region: string, byteSize: number, offset?: number) => ({
  shared_memory_region: region,
  shared_memory_byte_size: byteSize,
  ...(offset === undefined ? {} : { shared_memory_offset: offset }),
});

/**
 * The MLP's input of ROWS rows in an object of its own, 24 bytes into a region that sits 40 bytes into the
 * object (the rest filled with `fill`), and an object for its output: 16 bytes of zeros, then room for it.
 */
function mlpObjects(seed: number, fill: number) {
  const input = seededFloats(seed, ROWS * 16);
  const inputBytes = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  const inputObject = new Uint8Array(40 + 24 + inputBytes.byteLength).fill(fill);
  inputObject.set(inputBytes, 64);
  return {
    input,
    inputBytes,
    inKey: createObject(inputObject),
    /** The input's region: the object past its first 40 bytes. */
    inRegionBytes: inputObject.byteLength - 40,
    outKey: createObject(new Uint8Array(ROWS * 8 * 4 + 16)),
  };
}

/** The output object holds, 16 bytes in, bit for bit what the agent answers `input` in a body, and zeros before. */
async function expectMlpOutputIn(url: string, outKey: string, input: Float32Array): Promise<void> {
  const direct = await infer(
    url,
    MLP,
    { inputs: [{ name: "x", datatype: "FP32", shape: [ROWS, 16], data: input }] },
    { binaryInputs: true, binaryOutputs: true },
  );
  const written = objectBytes(outKey);
  expect(written.subarray(16)).toEqual(new Uint8Array(tensorBinary(direct.response.outputs[0] as Tensor)));
  expect(written.subarray(0, 16)).toEqual(new Uint8Array(16));
}

describe.each([0, 2])("system shared memory, --http-threads %i", (threads) => {
  let agent: AgentProcess;
  const url = () => agent.url;
  const register = (name: string, key: string, byteSize: number, offset = 0) =>
    call(
      `${url()}/v2/systemsharedmemory/region/${name}/register`,
      json({ key, offset, byte_size: byteSize }),
    );

  beforeAll(async () => {
    agent = await startStandaloneAgent([
      "--models",
      REPO_DIR,
      "--threads",
      "1",
      "--http-threads",
      String(threads),
      "--allow-client-shm",
    ]);
  });
  afterAll(async () => {
    await agent?.stop();
  });

  test("the server metadata lists the extension, and the agent says at start that it offers it", async () => {
    const metadata = (await call(`${url()}/v2`)).body as { extensions: string[] };
    expect(metadata.extensions).toContain("system_shared_memory");
    expect(agent.log()).toContain("system shared memory for clients on this host");
  });

  test("an MLP's input read from a region and its output written to one: bit for bit the answer in the body", async () => {
    const { input, inputBytes, inKey, inRegionBytes, outKey } = mlpObjects(7, 0xab);
    expect(await register(`in-${threads}`, inKey, inRegionBytes, 40)).toEqual({
      status: 200,
      body: {},
    });
    expect(await register(`out-${threads}`, outKey, ROWS * 8 * 4 + 16)).toEqual({ status: 200, body: {} });

    const answer = await call(
      `${url()}/v2/models/${MLP}/infer`,
      json({
        inputs: [
          {
            name: "x",
            datatype: "FP32",
            shape: [ROWS, 16],
            parameters: inShm(`in-${threads}`, inputBytes.byteLength, 24),
          },
        ],
        outputs: [{ name: "y", parameters: inShm(`out-${threads}`, ROWS * 8 * 4, 16) }],
      }),
    );
    expect(answer).toEqual({
      status: 200,
      body: {
        model_name: MLP,
        model_version: "1",
        outputs: [{ name: "y", datatype: "FP32", shape: [ROWS, 8] }],
      },
    });

    await expectMlpOutputIn(url(), outKey, input);
  });

  test("BYTES in a region (Triton's 4-byte lengths) come back as the strings sent", async () => {
    const strings = ["", "shared", "mémoire", "tab\tand\u0001"];
    const tensor: Tensor = {
      name: "x",
      datatype: "BYTES",
      shape: [1, strings.length],
      data: strings.map((text) => new TextEncoder().encode(text)),
    };
    const bytes = tensorBinary(tensor);
    const key = createObject(bytes);
    expect((await register(`bytes-${threads}`, key, bytes.byteLength)).status).toBe(200);
    const answer = await call(
      `${url()}/v2/models/${IDENTITY_MODELS.BYTES}/infer`,
      json({
        inputs: [
          {
            name: "x",
            datatype: "BYTES",
            shape: [1, strings.length],
            parameters: inShm(`bytes-${threads}`, bytes.byteLength),
          },
        ],
      }),
    );
    expect(answer.status).toBe(200);
    expect((answer.body as { outputs: { data: string[] }[] }).outputs[0]?.data).toEqual(strings);
  });

  test("a region is usable as soon as register answers, and gone as soon as unregister does; status shows which", async () => {
    const values = Float32Array.from({ length: 16 }, (_, index) => index / 4);
    const key = createObject(new Uint8Array(values.buffer));
    const body = json({
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], parameters: inShm(`quick-${threads}`, 64) }],
    });
    for (let round = 0; round < 10; round += 1) {
      expect((await register(`quick-${threads}`, key, 64)).status).toBe(200);
      const served = await call(`${url()}/v2/models/${IDENTITY_MODELS.FP32}/infer`, body);
      expect(served.status).toBe(200);
      expect((served.body as { outputs: { data: number[] }[] }).outputs[0]?.data).toEqual([...values]);
      expect(await call(`${url()}/v2/systemsharedmemory/region/quick-${threads}/status`)).toEqual({
        status: 200,
        body: [{ name: `quick-${threads}`, key, offset: 0, byte_size: 64 }],
      });
      expect(
        (await call(`${url()}/v2/systemsharedmemory/region/quick-${threads}/unregister`, { method: "POST" }))
          .status,
      ).toBe(200);
      expect(await call(`${url()}/v2/models/${IDENTITY_MODELS.FP32}/infer`, body)).toEqual({
        status: 400,
        body: { error: `inputs[0] ("x"): shared memory region 'quick-${threads}' is not registered` },
      });
    }
  });

  test("an output region too small for the result: a 400 in Triton's words, and the region untouched", async () => {
    const key = createObject(new Uint8Array(32).fill(5));
    expect((await register(`small-${threads}`, key, 32)).status).toBe(200);
    const answer = await call(
      `${url()}/v2/models/${MLP}/infer`,
      json({
        inputs: [{ name: "x", datatype: "FP32", shape: [ROWS, 16], data: [...seededFloats(1, ROWS * 16)] }],
        outputs: [{ name: "y", parameters: inShm(`small-${threads}`, 32) }],
      }),
    );
    expect(answer).toEqual({
      status: 400,
      body: {
        error: `output 'y': shared memory size specified with the request (32 bytes) should be at least ${ROWS * 32} bytes to hold the results`,
      },
    });
    expect(objectBytes(key)).toEqual(new Uint8Array(32).fill(5));
  });

  test("a key outside /dev/shm, or an object that is not there: refused at register", async () => {
    expect(await register(`bad-${threads}`, "/../../etc/passwd", 8)).toMatchObject({
      status: 400,
      body: { error: expect.stringContaining("is not a shared memory key") },
    });
    expect(await register(`bad-${threads}`, `/switchyard-missing-${randomUUID()}`, 8)).toMatchObject({
      status: 400,
      body: { error: expect.stringContaining("does not exist on the agent's host") },
    });
  });
});

// The same extension through the agent's gRPC calls (tritonclient.grpc's register_system_shared_memory and
// friends), read on the main thread or on HTTP intake threads: a registration is answered by the main thread,
// and the region serves gRPC and HTTP requests on any thread as soon as the call returns, and the reverse.
describe.each([0, 2])("system shared memory over gRPC, --http-threads %i", (threads) => {
  let agent: AgentProcess;
  let client: InferenceClient;
  const register = (name: string, key: string, byteSize: number | string, offset = 0) =>
    client.call("SystemSharedMemoryRegister", { name, key, offset, byte_size: byteSize });

  beforeAll(async () => {
    ({ agent, client } = await startGrpcAgent(["--http-threads", String(threads), "--allow-client-shm"]));
  });
  afterAll(() => stopGrpcAgent({ agent, client }));
  // Each test starts with no region registered.
  afterEach(async () => {
    await client.call("SystemSharedMemoryUnregister", {});
  });

  test("ModelInfer reads its input from a region and writes its output to one: bit for bit the HTTP answer", async () => {
    const { input, inputBytes, inKey, inRegionBytes, outKey } = mlpObjects(9, 0xcd);
    expect(await register("grpc-in", inKey, inRegionBytes, 40)).toEqual({
      ok: true,
      value: {},
    });
    expect(await register("grpc-out", outKey, ROWS * 8 * 4 + 16)).toEqual({ ok: true, value: {} });

    const inRegion = (region: string, byteSize: number, offset: number) => ({
      shared_memory_region: { string_param: region },
      shared_memory_byte_size: { int64_param: byteSize },
      shared_memory_offset: { int64_param: offset },
    });
    const answer = await client.call<{ outputs: unknown[]; raw_output_contents: Buffer[] }>("ModelInfer", {
      model_name: MLP,
      inputs: [
        {
          name: "x",
          datatype: "FP32",
          shape: [ROWS, 16],
          parameters: inRegion("grpc-in", inputBytes.byteLength, 24),
        },
      ],
      outputs: [{ name: "y", parameters: inRegion("grpc-out", ROWS * 8 * 4, 16) }],
    });
    if (!answer.ok) throw new Error(answer.details);
    expect(answer.value.outputs).toMatchObject([{ name: "y", datatype: "FP32", shape: [String(ROWS), "8"] }]);
    // Its bytes are in the region, not in the message.
    expect(answer.value.raw_output_contents).toEqual([Buffer.alloc(0)]);

    await expectMlpOutputIn(agent.url, outKey, input);
  });

  test("a region registered over gRPC serves HTTP on every thread at once; status agrees on both; unregister ends it", async () => {
    const values = Float32Array.from({ length: 16 }, (_, index) => index - 8);
    const key = createObject(new Uint8Array(values.buffer));
    const body = json({
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], parameters: inShm("both", 64) }],
    });
    for (let round = 0; round < 5; round += 1) {
      expect(await register("both", key, 64)).toEqual({ ok: true, value: {} });
      const served = await call(`${agent.url}/v2/models/${IDENTITY_MODELS.FP32}/infer`, body);
      expect((served.body as { outputs: { data: number[] }[] }).outputs[0]?.data).toEqual([...values]);
      const listed = { name: "both", key, offset: "0", byte_size: "64" };
      expect(await client.call("SystemSharedMemoryStatus", {})).toEqual({
        ok: true,
        value: { regions: { both: listed } },
      });
      expect(await client.call("SystemSharedMemoryStatus", { name: "both" })).toEqual({
        ok: true,
        value: { regions: { both: listed } },
      });
      expect(await call(`${agent.url}/v2/systemsharedmemory/status`)).toEqual({
        status: 200,
        body: [{ name: "both", key, offset: 0, byte_size: 64 }],
      });
      expect(await client.call("SystemSharedMemoryUnregister", { name: "both" })).toEqual({
        ok: true,
        value: {},
      });
      expect((await call(`${agent.url}/v2/models/${IDENTITY_MODELS.FP32}/infer`, body)).status).toBe(400);
      expect(await client.call("SystemSharedMemoryStatus", { name: "both" })).toMatchObject({
        ok: false,
        code: NOT_FOUND,
        details: "shared memory region 'both' is not registered",
      });
    }
  });

  test("an empty name unregisters every region, as in Triton", async () => {
    const key = createObject(new Uint8Array(64));
    for (const name of ["all-1", "all-2"]) expect((await register(name, key, 64)).ok).toBe(true);
    // One registered over HTTP goes too: one table.
    expect(
      (
        await call(
          `${agent.url}/v2/systemsharedmemory/region/all-3/register`,
          json({ key, offset: 0, byte_size: 64 }),
        )
      ).status,
    ).toBe(200);
    expect(
      Object.keys(((await client.call("SystemSharedMemoryStatus", {})) as GrpcRegions).value.regions),
    ).toEqual(["all-1", "all-2", "all-3"]);
    expect(await client.call("SystemSharedMemoryUnregister", { name: "" })).toEqual({ ok: true, value: {} });
    expect(await client.call("SystemSharedMemoryStatus", {})).toEqual({ ok: true, value: { regions: {} } });
  });

  test("what HTTP refuses, gRPC refuses as INVALID_ARGUMENT in the same words; CUDA shared memory is not offered", async () => {
    const key = createObject(new Uint8Array(64));
    const missing = `/switchyard-missing-${randomUUID()}`;
    const refusal = async (answer: Promise<unknown>) => {
      const settled = (await answer) as { ok: boolean; code?: number; details?: string };
      return settled.ok ? "registered" : [settled.code, settled.details];
    };
    const overHttp = async (name: string, request: unknown) =>
      (
        (await call(`${agent.url}/v2/systemsharedmemory/region/${name}/register`, json(request))).body as {
          error: string;
        }
      ).error;
    for (const [name, request] of [
      ["r1", { key: missing, offset: 0, byte_size: 8 }],
      ["r2", { key: "/../../etc/passwd", offset: 0, byte_size: 8 }],
      ["r3", { key, offset: 32, byte_size: 64 }],
      ["r4", { key: "", offset: 0, byte_size: 8 }],
    ] as const) {
      expect(await refusal(client.call("SystemSharedMemoryRegister", { name, ...request }))).toEqual([
        INVALID_ARGUMENT,
        await overHttp(name, request),
      ]);
    }
    // 2^53 + 2: a uint64 the wire carries and no JavaScript number holds exactly.
    expect(await refusal(register("huge", key, "9007199254740994"))).toEqual([
      INVALID_ARGUMENT,
      expect.stringContaining("must be a whole number of bytes"),
    ]);
    expect(await refusal(register("", key, 64))).toEqual([
      INVALID_ARGUMENT,
      "a shared memory region needs a name",
    ]);
    expect(
      await refusal(
        client.call("CudaSharedMemoryRegister", {
          name: "gpu",
          raw_handle: Buffer.alloc(64),
          device_id: 0,
          byte_size: 64,
        }),
      ),
    ).toEqual([INVALID_ARGUMENT, expect.stringContaining("CUDA shared memory is not offered")]);
    expect(await client.call("CudaSharedMemoryStatus", {})).toEqual({ ok: true, value: { regions: {} } });
    expect(await refusal(client.call("CudaSharedMemoryStatus", { name: "gpu" }))).toEqual([
      NOT_FOUND,
      "shared memory region 'gpu' is not registered",
    ]);
    expect(await client.call("SystemSharedMemoryStatus", {})).toEqual({ ok: true, value: { regions: {} } });
  });
});

type GrpcRegions = { value: { regions: Record<string, unknown> } };
const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;
