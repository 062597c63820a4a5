import { randomUUID } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { SHARED_MEMORY_DIRECTORY } from "../../backend/server/shared-memory-regions.ts";
import { tensorBinary } from "../../shared/oip/codec.ts";
import { infer } from "../../shared/oip/http-client.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { seededFloats } from "../fixtures/onnx-builder.ts";
import { IDENTITY_MODELS, MULTIPLEX_MODELS, REPO_DIR } from "../fixtures/paths.ts";
import { type AgentProcess, startStandaloneAgent } from "./support/agent-process.ts";
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
    const input = seededFloats(7, ROWS * 16);
    const inputBytes = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
    // The input sits 24 bytes into its region, which sits 40 bytes into its object.
    const inputObject = new Uint8Array(40 + 24 + inputBytes.byteLength).fill(0xab);
    inputObject.set(inputBytes, 64);
    const inKey = createObject(inputObject);
    const outKey = createObject(new Uint8Array(ROWS * 8 * 4 + 16));
    expect(await register(`in-${threads}`, inKey, inputObject.byteLength - 40, 40)).toEqual({
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

    const direct = await infer(
      url(),
      MLP,
      { inputs: [{ name: "x", datatype: "FP32", shape: [ROWS, 16], data: input }] },
      { binaryInputs: true, binaryOutputs: true },
    );
    const expected = tensorBinary(direct.response.outputs[0] as Tensor);
    const written = objectBytes(outKey);
    expect(written.subarray(16)).toEqual(new Uint8Array(expected));
    expect(written.subarray(0, 16)).toEqual(new Uint8Array(16));
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
