import { once } from "node:events";
import { readFileSync } from "node:fs";
import { connect } from "node:http2";
import { type AddressInfo, createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { inferenceService } from "../../backend/server/grpc/grpc-proto.ts";
import { tensorBinary } from "../../shared/oip/codec.ts";
import { DATATYPES } from "../../shared/oip/datatypes.ts";
import { infer } from "../../shared/oip/http-client.ts";
import { SHARED_MEMORY_NOT_OFFERED } from "../../shared/oip/shared-memory.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { seededFloats } from "../fixtures/onnx-builder.ts";
import { BROKEN_MODEL, IDENTITY_MODELS, MULTIPLEX_MODELS, REPO_DIR } from "../fixtures/paths.ts";
import { sampleData } from "../fixtures/sample-data.ts";
import { contentsOf } from "../support/grpc-contents.ts";
import { type AgentProcess, runAgent, startHoldingAgent } from "./support/agent-process.ts";
import {
  grpcAddressIn,
  type InferenceClient,
  inferenceClient,
  startGrpcAgent,
  stopGrpcAgent,
} from "./support/grpc-client.ts";
import { inferenceCount } from "./support/model-stats.ts";

// The standalone agent's gRPC endpoint (--grpc-port) end to end: a real agent process, a grpc-js client with
// stubs from the protocol's .proto, a real HTTP/2 connection. Each answer is held against what the same
// agent answers over HTTP, which the other standalone tests hold against onnxruntime run directly.

const MLP = MULTIPLEX_MODELS[0] ?? "m000";
const OTHER_MLP = MULTIPLEX_MODELS[1] ?? "m001";
const MAX_BODY = 1024 * 1024;
const INVALID_ARGUMENT = 3;
const DEADLINE_EXCEEDED = 4;
const NOT_FOUND = 5;
const RESOURCE_EXHAUSTED = 8;
const UNIMPLEMENTED = 12;
const INTERNAL = 13;
const CANCELLED = 1;

interface InferResponse {
  model_name: string;
  model_version: string;
  id: string;
  outputs: { name: string; datatype: string; shape: string[] }[];
  raw_output_contents: Buffer[];
}

const bytesOf = (tensor: Tensor) => Buffer.from(tensorBinary(tensor));
const rawInput = (tensor: Tensor) => ({
  input: { name: tensor.name, datatype: tensor.datatype, shape: tensor.shape },
  raw: bytesOf(tensor),
});

/** A call's definition in the protocol's .proto (its path and message encoders). */
function method(name: string) {
  const definition = inferenceService()[name];
  if (definition === undefined) throw new Error(`no ${name} in inference.proto`);
  return definition;
}

/**
 * Where gRPC is read: on the main thread beside the pool (the default below 8 cores), or on HTTP intake
 * threads, which serve inference themselves and hand every other call to the main thread.
 */
const WHERE = [
  {
    where: "on its main thread",
    flags: ["--http-threads", "0"],
    summary: "on the main thread",
    listeners: 1,
  },
  {
    where: "on its HTTP intake threads",
    flags: ["--http-threads", "2"],
    summary: "inference on 2 threads, the rest on the main thread",
    listeners: 2,
  },
];

/** Runs a standalone agent on the fixture repository that must fail to start; resolves with its stderr. */
async function refusedAgent(flags: string[]): Promise<string> {
  const agent = runAgent(["--models", REPO_DIR, "--standalone", ...flags]);
  let stderr = "";
  agent.stderr?.setEncoding("utf8");
  agent.stderr?.on("data", (chunk: string) => {
    stderr += chunk;
  });
  const [code] = (await once(agent, "exit")) as [number | null];
  expect(code).not.toBe(0);
  return stderr;
}

/** A local TCP port free a moment ago. */
async function freePort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * ModelInfer sent over HTTP/2 by hand with a grpc-timeout as written (a client library rounds or enforces
 * its own); resolves with the call's grpc-status.
 */
async function modelInferWithTimeout(address: string, request: object, timeout: string): Promise<string> {
  const session = connect(`http://${address}`);
  try {
    const call = session.request({
      ":method": "POST",
      ":path": "/inference.GRPCInferenceService/ModelInfer",
      "content-type": "application/grpc",
      "grpc-timeout": timeout,
    });
    const message = Buffer.from(method("ModelInfer").requestSerialize(request));
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(message.length, 1);
    call.end(Buffer.concat([prefix, message]));
    // The status comes in the trailers, or in the headers alone when the call ends before any message.
    let status: string | undefined;
    call.on("response", (headers) => {
      status ??= headers["grpc-status"] as string | undefined;
    });
    call.on("trailers", (trailers) => {
      status = trailers["grpc-status"] as string | undefined;
    });
    await new Promise((resolve) => call.on("data", () => {}).on("close", resolve));
    return status ?? "(none)";
  } finally {
    session.close();
  }
}

/** Sockets listening on a local TCP port (Linux's /proc/net/tcp): one for each thread that accepts there. */
function listenersOn(port: number): number {
  const local = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  return readFileSync("/proc/net/tcp", "utf8")
    .split("\n")
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter(([, address, , state]) => state === "0A" && address?.endsWith(local) === true).length;
}

describe.each(WHERE)("the standalone agent over gRPC, $where", ({ flags, summary, listeners }) => {
  let agent: AgentProcess;
  let client: InferenceClient;

  beforeAll(async () => {
    ({ agent, client } = await startGrpcAgent([
      "--max-body",
      String(MAX_BODY),
      "--name",
      "grpc-agent",
      ...flags,
    ]));
  });
  afterAll(() => stopGrpcAgent({ agent, client }));

  test("health and server metadata say what the HTTP endpoints say", async () => {
    expect(await client.call("ServerLive", {})).toEqual({ ok: true, value: { live: true } });
    expect(await client.call("ServerReady", {})).toEqual({ ok: true, value: { ready: true } });
    const http = (await (await fetch(`${agent.url}/v2`)).json()) as Record<string, unknown>;
    expect(await client.call("ServerMetadata", {})).toEqual({ ok: true, value: http });
    expect(agent.log()).toMatch(/grpc +127\.0\.0\.1:<any free port> +\(OIP v2 GRPCInferenceService, (.*)\)/);
    expect(agent.log().match(/GRPCInferenceService, (.*)\)/)?.[1]).toBe(summary);
    // Each thread that reads gRPC accepts its own connections on the port.
    expect(listenersOn(Number(grpcAddressIn(agent.log()).split(":")[1]))).toBe(listeners);
  });

  test("model metadata and readiness, as over HTTP; a model the repository lacks is not ready", async () => {
    const http = (await (await fetch(`${agent.url}/v2/models/${MLP}`)).json()) as {
      inputs: { shape: number[] }[];
      outputs: { shape: number[] }[];
    };
    const metadata = await client.call<typeof http>("ModelMetadata", { name: MLP });
    // 64-bit shapes arrive as decimal strings (longs: String), as a client library hands them over.
    const numeric = (tensors: { shape: number[] }[]) =>
      tensors.map((tensor) => ({ ...tensor, shape: tensor.shape.map(Number) }));
    expect(
      metadata.ok && {
        ...metadata.value,
        inputs: numeric(metadata.value.inputs),
        outputs: numeric(metadata.value.outputs),
      },
    ).toEqual(http);
    expect(await client.call("ModelReady", { name: MLP })).toEqual({ ok: true, value: { ready: true } });
    expect(await client.call("ModelReady", { name: "no_such_model" })).toEqual({
      ok: true,
      value: { ready: false },
    });
    expect(await client.call("ModelMetadata", { name: "" })).toMatchObject({
      ok: false,
      code: INVALID_ARGUMENT,
    });
    const missing = await client.call("ModelMetadata", { name: "no_such_model" });
    expect(missing).toMatchObject({ ok: false, code: NOT_FOUND, details: "model 'no_such_model' not found" });
  });

  test("an MLP's answer in raw_output_contents is bit for bit the HTTP answer, with the request's id", async () => {
    const x: Tensor = { name: "x", datatype: "FP32", shape: [3, 16], data: seededFloats(11, 48) };
    const overHttp = await infer(
      agent.url,
      MLP,
      { inputs: [x] },
      { binaryInputs: true, binaryOutputs: true },
    );
    const { input, raw } = rawInput(x);
    const answer = await client.call<InferResponse>("ModelInfer", {
      model_name: MLP,
      id: "request-7",
      inputs: [input],
      raw_input_contents: [raw],
    });
    if (!answer.ok) throw new Error(answer.details);
    expect(answer.value).toMatchObject({
      model_name: MLP,
      model_version: "1",
      id: "request-7",
      outputs: [{ name: "y", datatype: "FP32", shape: ["3", "8"] }],
    });
    const y = overHttp.response.outputs[0];
    if (y === undefined) throw new Error("no output over HTTP");
    expect(answer.value.raw_output_contents).toEqual([bytesOf(y)]);
  });

  test.each(DATATYPES)(
    "%s travels through a model intact, in raw_input_contents and in contents",
    async (datatype) => {
      const x: Tensor = { name: "x", datatype, shape: [2, 3], data: sampleData(datatype, 6) };
      const { input, raw } = rawInput(x);
      const viaRaw = await client.call<InferResponse>("ModelInfer", {
        model_name: IDENTITY_MODELS[datatype],
        inputs: [input],
        raw_input_contents: [raw],
      });
      expect(viaRaw).toMatchObject({ ok: true, value: { outputs: [{ datatype, shape: ["2", "3"] }] } });
      expect(viaRaw.ok && viaRaw.value.raw_output_contents).toEqual([raw]);
      if (datatype === "FP16") {
        const refused = await client.call("ModelInfer", {
          model_name: IDENTITY_MODELS[datatype],
          inputs: [{ ...input, contents: {} }],
        });
        expect(refused).toMatchObject({
          ok: false,
          code: INVALID_ARGUMENT,
          details: 'inputs[0] ("x"): FP16 has no contents field: send it in raw_input_contents',
        });
        return;
      }
      const viaContents = await client.call<InferResponse>("ModelInfer", {
        model_name: IDENTITY_MODELS[datatype],
        inputs: [{ ...input, contents: contentsOf(x) }],
      });
      expect(viaContents.ok && viaContents.value.raw_output_contents).toEqual([raw]);
    },
  );

  test("a malformed request is INVALID_ARGUMENT with the message HTTP gives, or gRPC's own words", async () => {
    const x: Tensor = { name: "x", datatype: "FP32", shape: [1, 16], data: seededFloats(3, 16) };
    const { input, raw } = rawInput(x);
    const wrongCount = await client.call("ModelInfer", {
      model_name: MLP,
      inputs: [{ ...input, contents: { fp32_contents: [1, 2, 3] } }],
    });
    const overHttp = await fetch(`${agent.url}/v2/models/${MLP}/infer`, {
      method: "POST",
      body: JSON.stringify({ inputs: [{ ...input, data: [1, 2, 3] }] }),
    });
    expect(overHttp.status).toBe(400);
    expect(wrongCount).toMatchObject({
      ok: false,
      code: INVALID_ARGUMENT,
      details: ((await overHttp.json()) as { error: string }).error,
    });
    expect(
      await client.call("ModelInfer", {
        model_name: MLP,
        inputs: [{ ...input, shape: [1, 15] }],
        raw_input_contents: [raw],
      }),
    ).toMatchObject({
      ok: false,
      code: INVALID_ARGUMENT,
      details: 'inputs[0] ("x"): raw_input_contents[0] is 64 bytes but shape [1,15] of FP32 needs 60',
    });
    expect(
      await client.call("ModelInfer", { model_name: MLP, inputs: [input], raw_input_contents: [raw, raw] }),
    ).toMatchObject({
      ok: false,
      code: INVALID_ARGUMENT,
      details:
        "raw_input_contents has 2 entries but 1 inputs take their data from it: send one per input, in the order of inputs",
    });
    expect(
      await client.call("ModelInfer", {
        model_name: MLP,
        inputs: [{ ...input, contents: { int_contents: Array(16).fill(1) } }],
      }),
    ).toMatchObject({
      ok: false,
      code: INVALID_ARGUMENT,
      details: 'inputs[0] ("x"): has int_contents but FP32 is read from fp32_contents',
    });
    expect(await client.call("ModelInfer", { model_name: "no_such_model", inputs: [input] })).toMatchObject({
      ok: false,
    });
  });

  test("a message over --max-body is RESOURCE_EXHAUSTED, and the agent still serves", async () => {
    const rows = MAX_BODY / 64 + 1;
    const x: Tensor = { name: "x", datatype: "FP32", shape: [rows, 16], data: new Float32Array(rows * 16) };
    const { input, raw } = rawInput(x);
    const tooLarge = await client.call("ModelInfer", {
      model_name: MLP,
      inputs: [input],
      raw_input_contents: [raw],
    });
    expect(tooLarge).toMatchObject({ ok: false, code: RESOURCE_EXHAUSTED });
    expect(await client.call("ServerLive", {})).toEqual({ ok: true, value: { live: true } });
  });

  test("large tensors, one after another and at once, each come back bit for bit (pooled message buffers)", async () => {
    // 15,000 rows of 16 floats: 0.96 MB in, under this agent's 1 MiB --max-body.
    const rows = 15_000;
    const tensors = [1, 2, 3, 4, 5, 6].map(
      (seed): Tensor => ({
        name: "x",
        datatype: "FP32",
        shape: [rows, 16],
        data: seededFloats(seed, rows * 16),
      }),
    );
    const overGrpc = (x: Tensor) => {
      const { input, raw } = rawInput(x);
      return client.call<InferResponse>("ModelInfer", {
        model_name: MLP,
        inputs: [input],
        raw_input_contents: [raw],
      });
    };
    const expected = async (x: Tensor) => {
      const answer = await infer(
        agent.url,
        MLP,
        { inputs: [x] },
        { binaryInputs: true, binaryOutputs: true },
      );
      return bytesOf(answer.response.outputs[0] as Tensor);
    };
    const answers = [];
    for (const x of tensors.slice(0, 3)) answers.push(await overGrpc(x));
    answers.push(...(await Promise.all(tensors.slice(3).map(overGrpc))));
    for (const [index, answer] of answers.entries()) {
      if (!answer.ok) throw new Error(answer.details);
      expect(answer.value.raw_output_contents[0]?.equals(await expected(tensors[index] as Tensor))).toBe(
        true,
      );
    }
  });

  test.each([
    ["gzip", 2],
    ["deflate", 1],
  ])(
    "a client that compresses its messages (%s) is answered as one that does not",
    async (_name, algorithm) => {
      const compressing = inferenceClient(grpcAddressIn(agent.log()), {
        "grpc.default_compression_algorithm": algorithm,
      });
      try {
        const x: Tensor = { name: "x", datatype: "FP32", shape: [64, 16], data: seededFloats(17, 64 * 16) };
        const { input, raw } = rawInput(x);
        const request = { model_name: MLP, inputs: [input], raw_input_contents: [raw] };
        const plain = await client.call<InferResponse>("ModelInfer", request);
        const compressed = await compressing.call<InferResponse>("ModelInfer", request);
        expect(compressed).toEqual(plain);
        expect(plain.ok).toBe(true);
      } finally {
        compressing.close();
      }
    },
  );

  test("HTTP/2 as gRPC clients meet it: wide windows, 415 for what is no gRPC, gRPC's status for the rest", async () => {
    const session = connect(`http://${grpcAddressIn(agent.log())}`);
    try {
      await once(session, "remoteSettings");
      // A 4.9 MB tensor needs no WINDOW_UPDATE round trip every 64 KiB (HTTP/2's default).
      expect(session.remoteSettings.initialWindowSize).toBeGreaterThanOrEqual(8 * 1024 * 1024);
      await expect.poll(() => session.state.remoteWindowSize ?? 0).toBeGreaterThanOrEqual(8 * 1024 * 1024);

      const ask = async (headers: Record<string, string>) => {
        const stream = session.request({ ":method": "POST", ...headers });
        stream.end(Buffer.alloc(5));
        const [answered] = (await once(stream, "response")) as [Record<string, string>];
        stream.resume();
        return {
          status: answered[":status"],
          grpcStatus: answered["grpc-status"],
          message: answered["grpc-message"],
        };
      };
      const path = "/inference.GRPCInferenceService/ServerLive";
      expect(await ask({ ":path": path, "content-type": "application/json" })).toMatchObject({ status: 415 });
      expect(
        await ask({ ":path": path, "content-type": "application/grpc", "grpc-encoding": "snappy" }),
      ).toMatchObject({ status: 200, grpcStatus: String(UNIMPLEMENTED) });
      expect(
        await ask({ ":path": path, "content-type": "application/grpc", "grpc-timeout": "soon" }),
      ).toMatchObject({ status: 200, grpcStatus: String(INTERNAL), message: "Invalid grpc-timeout: soon" });
    } finally {
      session.close();
    }
  });

  test("an output's classes (Triton's classification extension) over gRPC", async () => {
    const x: Tensor = { name: "x", datatype: "FP32", shape: [1, 16], data: seededFloats(5, 16) };
    const { input, raw } = rawInput(x);
    const overHttp = await fetch(`${agent.url}/v2/models/${MLP}/infer`, {
      method: "POST",
      body: JSON.stringify({
        inputs: [{ ...input, data: Array.from(x.data as Float32Array) }],
        outputs: [{ name: "y", parameters: { classification: 2 } }],
      }),
    });
    const classes = ((await overHttp.json()) as { outputs: { data: string[]; shape: number[] }[] })
      .outputs[0];
    if (classes === undefined) throw new Error("no classes over HTTP");
    const answer = await client.call<InferResponse>("ModelInfer", {
      model_name: MLP,
      inputs: [input],
      outputs: [{ name: "y", parameters: { classification: { int64_param: 2 } } }],
      raw_input_contents: [raw],
    });
    expect(classes.shape).toEqual([2]);
    expect(answer).toMatchObject({
      ok: true,
      value: { outputs: [{ name: "y", datatype: "BYTES", shape: ["2"] }] },
    });
    const expected = bytesOf({
      name: "y",
      datatype: "BYTES",
      shape: classes.shape,
      data: classes.data.map((text) => new TextEncoder().encode(text)),
    });
    expect(answer.ok && answer.value.raw_output_contents).toEqual([expected]);
  });

  test("ModelStreamInfer answers each request in order, a failure as error_message with its id, then ends", async () => {
    const x: Tensor = { name: "x", datatype: "FP32", shape: [1, 16], data: seededFloats(9, 16) };
    const { input, raw } = rawInput(x);
    const stream = client.stream();
    stream.write({ model_name: MLP, id: "first", inputs: [input], raw_input_contents: [raw] });
    stream.write({ model_name: "no_such_model", id: "second", inputs: [input], raw_input_contents: [raw] });
    stream.write({ model_name: OTHER_MLP, id: "third", inputs: [input], raw_input_contents: [raw] });
    stream.end();
    const responses = (await stream.responses) as {
      error_message: string;
      infer_response: { id: string; model_name: string } | null;
    }[];
    // In the order sent, as Triton answers a model that is not decoupled: a client may match them so.
    expect(responses.map((response) => [response.infer_response?.id, response.error_message])).toEqual([
      ["first", ""],
      ["second", "model 'no_such_model' not found"],
      ["third", ""],
    ]);
    expect(responses[2]?.infer_response?.model_name).toBe(OTHER_MLP);
  });

  test("the repository calls unload and load a model, and the index follows", async () => {
    const index = async (ready: boolean) => {
      const answer = await client.call<{ models: { name: string; state: string }[] }>("RepositoryIndex", {
        ready,
      });
      return answer.ok ? answer.value.models : [];
    };
    await client.call("RepositoryModelLoad", { model_name: OTHER_MLP });
    expect((await index(true)).map((entry) => entry.name)).toContain(OTHER_MLP);
    expect(await client.call("RepositoryModelUnload", { model_name: OTHER_MLP })).toEqual({
      ok: true,
      value: { model_name: OTHER_MLP, isUnloaded: true },
    });
    expect((await index(true)).map((entry) => entry.name)).not.toContain(OTHER_MLP);
    expect((await index(false)).map((entry) => entry.name)).toContain(OTHER_MLP);
    // KServe's messages carry the model's name in field 1, where Triton's carry the repository's.
    expect(
      await client.call("RepositoryModelLoad", {
        repository_name: OTHER_MLP,
        parameters: { copies: { int64_param: "1" } },
      }),
    ).toEqual({ ok: true, value: { model_name: OTHER_MLP, isLoaded: true } });
    expect(await client.call("ModelReady", { name: OTHER_MLP })).toEqual({
      ok: true,
      value: { ready: true },
    });
    expect(
      await client.call("RepositoryModelLoad", {
        model_name: OTHER_MLP,
        parameters: { config: { string_param: "{}" } },
      }),
    ).toMatchObject({ ok: false, code: INVALID_ARGUMENT });
  });

  test("a second agent on the same gRPC port is refused, rather than sharing it", async () => {
    const port = grpcAddressIn(agent.log()).split(":")[1] ?? "";
    const refused = await refusedAgent(["--port", "0", "--grpc-port", port, ...flags]);
    expect(refused).toContain(`--grpc-port: cannot listen on 127.0.0.1:${port}`);
    expect(await client.call("ServerLive", {})).toEqual({ ok: true, value: { live: true } });
  });

  test("a model that fails to load is INTERNAL, logged once with the gRPC call's path", async () => {
    const answer = await client.call("ModelInfer", {
      model_name: BROKEN_MODEL,
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16] }],
      raw_input_contents: [Buffer.alloc(64)],
    });
    expect(answer).toMatchObject({
      ok: false,
      code: INTERNAL,
      details: expect.stringMatching(/failed to load/),
    });
    // (Its line may reach stderr's pipe after the answer.)
    await vi.waitFor(() =>
      expect(agent.log().match(/ error path=\S+(?= error="model \\"broken)/g)).toEqual([
        " error path=/inference.GRPCInferenceService/ModelInfer",
      ]),
    );
  });

  test("gRPC on the HTTP port is refused: the two ports must differ", async () => {
    const port = await freePort();
    const refused = await refusedAgent(["--port", String(port), "--grpc-port", String(port), ...flags]);
    expect(refused).toContain(`--grpc-port: cannot listen on 127.0.0.1:${port}`);
  });

  test("a call the agent does not serve (Triton's Trace) is UNIMPLEMENTED", async () => {
    const answer = await client.raw("/inference.GRPCInferenceService/Trace", new Uint8Array());
    expect(answer).toMatchObject({ ok: false, code: UNIMPLEMENTED });
  });

  test("without --allow-client-shm nothing registers, and a client's clean-up still succeeds", async () => {
    expect(
      await client.call("SystemSharedMemoryRegister", { name: "in", key: "/input0", byte_size: 64 }),
    ).toMatchObject({ ok: false, code: INVALID_ARGUMENT, details: SHARED_MEMORY_NOT_OFFERED });
    expect(await client.call("SystemSharedMemoryStatus", {})).toEqual({ ok: true, value: { regions: {} } });
    expect(await client.call("SystemSharedMemoryStatus", { name: "in" })).toEqual({
      ok: false,
      code: NOT_FOUND,
      details: "shared memory region 'in' is not registered",
      metadata: expect.anything(),
    });
    expect(await client.call("SystemSharedMemoryUnregister", {})).toEqual({ ok: true, value: {} });
    expect(await client.call("CudaSharedMemoryUnregister", { name: "in" })).toEqual({ ok: true, value: {} });
  });

  test("Triton's ModelConfig and ModelStatistics say what GET config and GET stats say", async () => {
    const http = (await (await fetch(`${agent.url}/v2/models/${MLP}/config`)).json()) as Record<
      string,
      unknown
    >;
    const config = await client.call<{ config: Record<string, unknown> }>("ModelConfig", { name: MLP });
    // 64-bit integers arrive as decimal strings; fields HTTP's form has and the .proto leaves out are dropped
    // (parameters: {}), and a oneof names its choice.
    const numbers = (value: unknown): unknown =>
      JSON.parse(JSON.stringify(value), (key, item: unknown) =>
        key !== "version" && typeof item === "string" && /^-?\d+$/.test(item) ? Number(item) : item,
      );
    const { parameters: _none, ...expected } = http;
    if (!config.ok) throw new Error(config.details);
    const { scheduling_choice: _choice, ...got } = config.value.config;
    expect(numbers(got)).toMatchObject(expected);
    expect(expected).toMatchObject({ name: MLP, input: [{ name: "x", data_type: "TYPE_FP32" }] });

    await client.call("ModelInfer", {
      model_name: MLP,
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16] }],
      raw_input_contents: [Buffer.alloc(64)],
    });
    const stats = (await (await fetch(`${agent.url}/v2/models/${MLP}/stats`)).json()) as {
      model_stats: unknown[];
    };
    const overGrpc = await client.call<{ model_stats: unknown[] }>("ModelStatistics", { name: MLP });
    expect(overGrpc.ok && numbers(overGrpc.value.model_stats)).toEqual(stats.model_stats);
    const all = await client.call<{ model_stats: { name: string }[] }>("ModelStatistics", {});
    expect(all.ok && all.value.model_stats.map((entry) => entry.name)).toContain(MLP);
    expect(await client.call("ModelStatistics", { name: MLP, version: "9" })).toMatchObject({
      ok: false,
      code: NOT_FOUND,
    });
  });

  test("a deadline of microseconds (grpc-timeout 5u) has passed before the call can run: DEADLINE_EXCEEDED", async () => {
    const request = {
      model_name: MLP,
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16] }],
      raw_input_contents: [Buffer.alloc(64)],
    };
    const address = grpcAddressIn(agent.log());
    // Warm: the model loaded, and on HTTP threads a lane to it, which answers within a millisecond.
    expect(await modelInferWithTimeout(address, request, "10S")).toBe("0");
    for (let round = 0; round < 5; round += 1)
      expect(await modelInferWithTimeout(address, request, "5u")).toBe(String(DEADLINE_EXCEEDED));
  });

  test("bytes that are no ModelInferRequest are refused, and the agent serves on", async () => {
    // protobuf reads model_name's never-ending length varint as some name, which the agent refuses...
    const odd = await client.raw(
      "/inference.GRPCInferenceService/ModelInfer",
      Uint8Array.of(0x0a, ...Array(12).fill(0xff)),
    );
    expect(odd).toMatchObject({ ok: false, code: INVALID_ARGUMENT });
    // ...and cannot read a tag of wire type 7 at all: INTERNAL, as gRPC libraries answer bytes they cannot parse.
    const unreadable = await client.raw(
      "/inference.GRPCInferenceService/ModelInfer",
      Uint8Array.of(0x0f, 0x00, 0x2a),
    );
    expect(unreadable).toMatchObject({ ok: false, code: INTERNAL });
    expect(await client.call("ServerLive", {})).toEqual({ ok: true, value: { live: true } });
  });
});

describe.each(WHERE)("gRPC deadlines, cancels and draining, $where", ({ flags }) => {
  let agent: AgentProcess;
  let client: InferenceClient;
  // The agent keeps a request that arrives alone waiting this long for others to batch with.
  const HOLD_MS = 1500;
  const x: Tensor = { name: "x", datatype: "FP32", shape: [1, 16], data: seededFloats(2, 16) };
  const { input, raw } = rawInput(x);
  const request = { model_name: MLP, inputs: [input], raw_input_contents: [raw] };

  /** Requests the model has run, from its statistics over HTTP. */
  const ran = () => inferenceCount(agent.url, MLP);
  const settled = () => new Promise((resolve) => setTimeout(resolve, HOLD_MS + 500));

  beforeAll(async () => {
    agent = await startHoldingAgent(MLP, HOLD_MS, ["--grpc-port", "0", ...flags]);
    client = inferenceClient(grpcAddressIn(agent.log()));
  });
  afterAll(() => stopGrpcAgent({ agent, client }));

  test("a deadline 30 days out (as grpc-go writes a long one: 2592000S) lets a waiting call run", async () => {
    // It waited the agent's HOLD_MS for company, then ran: no timer ended it early.
    expect(await modelInferWithTimeout(grpcAddressIn(agent.log()), request, "2592000S")).toBe("0");
  });

  test("a call whose gRPC deadline passes while it waits is DEADLINE_EXCEEDED, and never runs", async () => {
    const before = await ran();
    const started = Date.now();
    expect(await client.call("ModelInfer", request, { deadlineMs: 300 })).toMatchObject({
      ok: false,
      code: DEADLINE_EXCEEDED,
    });
    expect(Date.now() - started).toBeLessThan(HOLD_MS);
    await settled();
    expect(await ran()).toBe(before);
    // The request's own timeout parameter (microseconds), as over HTTP: the agent's 504 becomes the status.
    const timedOut = await client.call("ModelInfer", {
      ...request,
      parameters: { timeout: { int64_param: "300000" } },
    });
    expect(timedOut).toMatchObject({
      ok: false,
      code: DEADLINE_EXCEEDED,
      details: expect.stringMatching(/deadline of 300 ms/),
    });
    // Without either, it is served once the batch's wait ends.
    expect(await client.call("ModelInfer", request)).toMatchObject({ ok: true });
    expect(await ran()).toBe(before + 1);
  });

  test("a call its client cancels while it waits never runs", async () => {
    const before = await ran();
    expect(await client.call("ModelInfer", request, { cancelAfterMs: 200 })).toMatchObject({
      ok: false,
      code: CANCELLED,
    });
    await settled();
    expect(await ran()).toBe(before);
  });

  test("a stream its client cancels while a request waits: the request never runs, the agent serves on", async () => {
    const before = await ran();
    const stream = client.stream();
    stream.write({ ...request, id: "abandoned" });
    await new Promise((resolve) => setTimeout(resolve, 200));
    stream.cancel();
    await expect(stream.responses).rejects.toMatchObject({ code: CANCELLED });
    await settled();
    expect(await ran()).toBe(before);
    expect(await client.call("ServerLive", {})).toEqual({ ok: true, value: { live: true } });
  });

  // Last: it stops the agent.
  test("a drain answers what a stream has in flight, ends the stream, and the agent exits", async () => {
    const stream = client.stream();
    stream.write({ ...request, id: "in-flight" });
    // Sent, and waiting out its batch's hold, when the agent is told to stop.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const exited = agent.stop();
    const responses = (await stream.responses) as { error_message: string; infer_response: { id: string } }[];
    expect(responses.map((response) => [response.infer_response.id, response.error_message])).toEqual([
      ["in-flight", ""],
    ]);
    expect(await exited).toBe(0);
  });
});
