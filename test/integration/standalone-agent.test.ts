import { spawnSync } from "node:child_process";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { DATATYPES } from "../../shared/oip/datatypes.ts";
import { infer, OipHttpError } from "../../shared/oip/http-client.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { mlpWeights, referenceMlp } from "../fixtures/onnx-builder.ts";
import {
  BROKEN_MODEL,
  DET_MODEL,
  IDENTITY_MODELS,
  MULTI_MODEL,
  MULTIPLEX_MODELS,
  MULTIPLEX_SPECS,
  REPO_DIR,
  VERSIONED_MODEL,
} from "../fixtures/paths.ts";
import { PPOCR_DET_DIMS, PPOCR_DET_PATH, ppocrDetSampleInput } from "../fixtures/ppocr.ts";
import { sampleData } from "../fixtures/sample-data.ts";
import { expectAllClose } from "../support/close-to.ts";
import { AGENT_BIN, type AgentProcess, startStandaloneAgent } from "./support/agent-process.ts";
import { rawRequest } from "./support/raw-http.ts";

// The real CLI in standalone mode, called over HTTP like any OIP v2 client would.

let agent: AgentProcess;
const MAX_BODY = 8 * 1024 * 1024;

/** The agent as each suite below runs it: HTTP on its main thread, or on intake threads. */
function startTestAgent(httpThreads: number): Promise<AgentProcess> {
  return startStandaloneAgent([
    "--models",
    REPO_DIR,
    "--replicas",
    "2",
    "--threads",
    "1",
    "--preload",
    MULTIPLEX_MODELS[0] ?? "",
    "--max-body",
    String(MAX_BODY),
    "--name",
    "test-agent",
    "--http-threads",
    String(httpThreads),
  ]);
}

const get = (path: string) => fetch(`${agent.url}${path}`);
const post = (path: string, body: string | Uint8Array, headers: Record<string, string> = {}) =>
  fetch(`${agent.url}${path}`, { method: "POST", body: body as string, headers });

/** A POST through node:http, which (unlike fetch) sends TE and reads a response's trailers. */
const rawPost = (url: string, path: string, body: string, headers: Record<string, string>) =>
  rawRequest(new URL(path, url).href, { method: "POST", body, headers });

// Every behaviour below, from the main thread's HTTP server and from two intake threads sharing the port.
describe.each([0, 2])("standalone OIP v2 server, HTTP on %i threads", (httpThreads) => {
  beforeAll(async () => {
    agent = await startTestAgent(httpThreads);
  });
  afterAll(async () => {
    await agent?.stop();
  });

  test("health, server metadata, model metadata from the ONNX session", async () => {
    expect((await get("/v2/health/live")).status).toBe(200);
    expect((await get("/v2/health/ready")).status).toBe(200);
    const server = (await (await get("/v2")).json()) as { name: string; extensions: string[] };
    expect(server.name).toBe("test-agent");
    expect(server.extensions).toContain("binary_tensor_data");
    const metadata = await (await get(`/v2/models/${MULTI_MODEL}`)).json();
    expect(metadata).toMatchObject({
      name: MULTI_MODEL,
      versions: ["1"],
      platform: "onnxruntime_onnx",
      inputs: [
        { name: "a", datatype: "FP32", shape: [-1, 4] },
        { name: "b", datatype: "INT64", shape: [-1, 4] },
      ],
    });
    const det = (await (await get(`/v2/models/${DET_MODEL}/versions/1`)).json()) as { inputs: unknown[] };
    expect(det.inputs).toEqual([{ name: "x", datatype: "FP32", shape: [-1, 3, -1, -1] }]);
  });

  test("a method no route takes is a 404 naming it, TRACE included (which fetch itself refuses to build)", async () => {
    for (const method of ["TRACE", "PATCH"]) {
      // A method fetch cannot send: through node:http.
      const answer = await rawRequest(new URL("/v2/health/live", agent.url).href, { method });
      expect(answer.status, method).toBe(404);
      expect(JSON.parse(answer.body.toString("utf8")), method).toEqual({
        error: `no route for ${method} /v2/health/live`,
      });
    }
  });

  test("PP-OCRv4 detection over the binary extension equals a direct onnxruntime run", async () => {
    const input = ppocrDetSampleInput();
    const session = await ort.InferenceSession.create(PPOCR_DET_PATH, { intraOpNumThreads: 1 });
    const direct = await session.run({ x: new ort.Tensor("float32", input, [...PPOCR_DET_DIMS]) });
    await session.release();
    const expected = Object.values(direct)[0] as ort.Tensor;

    const result = await infer(
      agent.url,
      DET_MODEL,
      { id: "det-1", inputs: [{ name: "x", datatype: "FP32", shape: [...PPOCR_DET_DIMS], data: input }] },
      { binaryInputs: true, binaryOutputs: true },
    );
    expect(result.response.id).toBe("det-1");
    expect(result.headers.get("inference-header-content-length")).not.toBeNull();
    const output = result.response.outputs[0];
    expect(output?.shape).toEqual([...expected.dims]);
    const want = expected.data as Float32Array;
    expectAllClose(output?.data as Float32Array, want, 1e-5);
    // The sample has text in it: the detector must find some.
    expect(want.some((value) => value > 0.5)).toBe(true);
  });

  test("JSON with nested data, miss then hit, and the response headers", async () => {
    const name = MULTIPLEX_MODELS[3] ?? "";
    const rows = [Array.from({ length: 16 }, (_, index) => index / 16), Array.from({ length: 16 }, () => -1)];
    const body = JSON.stringify({
      id: "nested",
      inputs: [{ name: "x", shape: [2, 16], datatype: "FP32", data: rows }],
    });
    const first = await post(`/v2/models/${name}/infer`, body);
    const second = await post(`/v2/models/${name}/infer`, body);
    expect({ status: first.status, body: first.status === 200 ? "" : await first.clone().text() }).toEqual({
      status: 200,
      body: "",
    });
    expect(first.headers.get("x-switchyard-cache")).toBe("miss");
    expect(second.headers.get("x-switchyard-cache")).toBe("hit");
    expect(first.headers.get("x-request-id")).toBe("nested");
    expect(first.headers.get("x-switchyard-replica")).toMatch(/^test-agent\/\d$/);
    expect(first.headers.get("server-timing")).toMatch(/queue;dur=[\d.]+, load;dur=[\d.]+, infer;dur=[\d.]+/);
    const response = (await first.json()) as { outputs: Array<{ data: number[]; shape: number[] }> };
    const spec = MULTIPLEX_SPECS[3];
    if (spec === undefined) throw new Error("fixture spec missing");
    const expected = referenceMlp(mlpWeights(spec), Float32Array.from(rows.flat()), 2);
    expect(response.outputs[0]?.shape).toEqual([2, 8]);
    expectAllClose(response.outputs[0]?.data, expected);
    await second.arrayBuffer();
  });

  test("a client that accepts trailers gets the send stage as a Server-Timing trailer, and the same answer", async () => {
    const name = MULTIPLEX_MODELS[3] ?? "";
    const body = JSON.stringify({
      id: "te",
      inputs: [{ name: "x", shape: [1, 16], datatype: "FP32", data: [...Array(16).keys()] }],
    });
    const path = `/v2/models/${name}/infer`;
    const plain = await rawPost(agent.url, path, body, { "Content-Type": "application/json" });
    const traced = await rawPost(agent.url, path, body, {
      "Content-Type": "application/json",
      TE: "trailers",
    });
    expect([plain.status, traced.status]).toEqual([200, 200]);
    expect(traced.body.equals(plain.body)).toBe(true);
    // Without TE: a Content-Length and no trailer, as every OIP client expects.
    expect(plain.headers["content-length"]).toBe(String(plain.body.length));
    expect(plain.headers.trailer).toBeUndefined();
    expect(plain.trailers).toEqual({});
    // With it: chunked, announced, and the trailer carries `send` (the header keeps the other stages).
    expect(traced.headers["transfer-encoding"]).toBe("chunked");
    expect(traced.headers["content-length"]).toBeUndefined();
    expect(traced.headers.trailer).toBe("Server-Timing");
    expect(traced.headers["server-timing"]).toMatch(/infer;dur=[\d.]+.*encode;dur=[\d.]+, total;dur=[\d.]+$/);
    expect(traced.trailers["server-timing"]).toMatch(/^send;dur=\d+\.\d\d$/);
  });

  test.each(DATATYPES)("%s travels through a model intact, as JSON and as binary", async (datatype) => {
    const data = sampleData(datatype, 6);
    const tensor: Tensor = { name: "x", datatype, shape: [2, 3], data };
    for (const binary of [false, true]) {
      const result = await infer(
        agent.url,
        IDENTITY_MODELS[datatype],
        { inputs: [tensor] },
        { binaryInputs: binary, binaryOutputs: binary },
      );
      const output = result.response.outputs[0];
      expect(output?.datatype).toBe(datatype);
      expect(output?.shape).toEqual([2, 3]);
      expect(output?.data).toEqual(data);
    }
  });

  test("several inputs and outputs of different types are matched by name", async () => {
    const result = await infer(agent.url, MULTI_MODEL, {
      inputs: [
        { name: "b", datatype: "INT64", shape: [1, 4], data: BigInt64Array.of(1n, 2n, 3n, 4n) },
        { name: "a", datatype: "FP32", shape: [1, 4], data: Float32Array.of(0.5, 0.5, 0.5, 0.5) },
      ],
    });
    const byName = Object.fromEntries(result.response.outputs.map((output) => [output.name, output]));
    expectAllClose(byName.sum?.data as Float32Array, [1.5, 2.5, 3.5, 4.5], 0);
    expect(byName.total?.datatype).toBe("INT64");
  });

  test("a version in the path, and the highest version by default", async () => {
    const input = {
      name: "x",
      datatype: "FP32" as const,
      shape: [1, 16],
      data: new Float32Array(16).fill(1),
    };
    const latest = await infer(agent.url, VERSIONED_MODEL, { inputs: [input] });
    const two = await infer(agent.url, VERSIONED_MODEL, { inputs: [input] }, { version: "2" });
    expect(latest.response.model_version).toBe("10");
    expect(two.response.model_version).toBe("2");
    expect(latest.response.outputs[0]?.data).not.toEqual(two.response.outputs[0]?.data);
  });

  test("bad input gets a 4xx OIP error that says what is wrong, and the agent keeps serving", async () => {
    const model = MULTIPLEX_MODELS[0] ?? "";
    const inferPath = `/v2/models/${model}/infer`;
    const x = (fields: object) =>
      JSON.stringify({ inputs: [{ name: "x", shape: [1, 16], datatype: "FP32", ...fields }] });
    const cases: Array<[string, string | Uint8Array, Record<string, string>, number, RegExp]> = [
      [inferPath, "{not json", {}, 400, /JSON/i],
      ["/v2/models/nope/infer", x({ data: new Array(16).fill(0) }), {}, 404, /nope/],
      ["/v2/models/..%2Fetc/infer", x({ data: new Array(16).fill(0) }), {}, 400, /name/i],
      [inferPath, x({ name: "y", data: new Array(16).fill(0) }), {}, 400, /no input 'y'/],
      [inferPath, x({ datatype: "INT32", data: new Array(16).fill(0) }), {}, 400, /FP32, got INT32/],
      [inferPath, x({ data: new Array(15).fill(0) }), {}, 400, /15/],
      [inferPath, x({ datatype: "FP128", data: [1] }), {}, 400, /datatype/],
      [
        inferPath,
        x({ parameters: { binary_data_size: 64 } }),
        { "Inference-Header-Content-Length": "90" },
        400,
        /.+/,
      ],
      [
        inferPath,
        x({ data: new Array(16).fill(0) }),
        { "X-Request-Timeout": "soon" },
        400,
        /X-Request-Timeout/,
      ],
      [
        inferPath,
        x({ data: new Array(16).fill(0) }),
        { "Inference-Header-Content-Length": "many" },
        400,
        /Inference-Header-Content-Length must be a byte count/,
      ],
      [inferPath, new Uint8Array(MAX_BODY + 1), {}, 413, /larger than/],
      [`/v2/models/${BROKEN_MODEL}/infer`, x({ data: new Array(16).fill(0) }), {}, 500, /broken.*load/],
    ];
    for (const [path, body, headers, status, message] of cases) {
      const response = await post(path, body, headers);
      const answer = (await response.json()) as { error: string };
      expect({ path, status: response.status }).toEqual({ path, status });
      expect(answer.error).toMatch(message);
    }
    // The agent's own failure is logged, once, with the path the client called (from an HTTP thread too);
    // the client's mistakes are not. (Its line may reach stderr's pipe after the answer.)
    await vi.waitFor(() =>
      expect(agent.log().match(/ error path=\S+/g)).toEqual([` error path=/v2/models/${BROKEN_MODEL}/infer`]),
    );
    const still = await infer(agent.url, model, {
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], data: new Float32Array(16) }],
    });
    expect(still.response.outputs).toHaveLength(1);
  });

  test("repository extension: ready means servable; load pins a model until unload evicts it", async () => {
    const name = MULTIPLEX_MODELS[5] ?? "";
    const stateOf = async (model: string) => {
      const index = (await (await post("/v2/repository/index", "{}")).json()) as Array<{
        name: string;
        state: string;
      }>;
      return index.find((entry) => entry.name === model)?.state;
    };
    // Ready before any load: a request for it would be served. A file that is not a model is not ready.
    expect(await stateOf(name)).toBe("UNAVAILABLE");
    expect(await (await get(`/v2/models/${name}/ready`)).json()).toEqual({ name, version: "1", ready: true });
    const broken = await get(`/v2/models/${BROKEN_MODEL}/ready`);
    expect(broken.status).toBe(400);
    expect(((await broken.json()) as { error: string }).error).toMatch(/is not ready: .*not an ONNX model/);

    expect((await post(`/v2/repository/models/${name}/load`, "")).status).toBe(200);
    expect(await stateOf(name)).toBe("READY");
    const replicas = (await (await get("/v2/agent/replicas")).json()) as {
      replicas: Array<{ loaded: Array<{ name: string; pinned: boolean }> }>;
    };
    expect(replicas.replicas[0]?.loaded.find((model) => model.name === name)?.pinned).toBe(true);
    const ready = (await (
      await post("/v2/repository/index", JSON.stringify({ ready: true }))
    ).json()) as unknown[];
    expect(ready.length).toBeGreaterThan(0);
    expect((await post(`/v2/repository/models/${name}/unload`, "")).status).toBe(200);
    expect(await stateOf(name)).toBe("UNAVAILABLE");
    expect((await post("/v2/repository/models/absent/load", "")).status).toBe(404);
  });

  test("the client's error helper sees the status", async () => {
    const failure = await infer(agent.url, "absent", { inputs: [] }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(OipHttpError);
    expect((failure as OipHttpError).status).toBe(404);
  });
});

describe("agent CLI", () => {
  const run = (args: string[]) =>
    spawnSync(process.execPath, [AGENT_BIN, ...args], { encoding: "utf8", timeout: 60_000 });

  test("--help explains every flag", () => {
    const result = run(["--help"]);
    expect(result.status).toBe(0);
    for (const flag of [
      "--models",
      "--device",
      "--gpus",
      "--max-models",
      "--max-model-memory",
      "--keep-alive",
    ]) {
      expect(result.stdout).toContain(flag);
    }
  });

  test("a bad flag is one clear line and exit code 2", () => {
    const result = run(["--models", REPO_DIR, "--max-models", "lots"]);
    expect(result.status).toBe(2);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
    expect(result.stderr).toMatch(/--max-models/);
  });

  test("--device cuda without a usable CUDA provider refuses to start and says why", () => {
    const result = run(["--models", REPO_DIR, "--device", "cuda", "--standalone", "--port", "0"]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/CUDA device 0 is not usable/);
    expect(result.stderr).toMatch(/--device auto/);
  });

  test("SIGTERM drains and exits cleanly", async () => {
    const short = await startStandaloneAgent(["--models", REPO_DIR, "--threads", "1"]);
    expect(await short.stop("SIGTERM")).toBe(0);
    expect(short.log()).toMatch(/draining/);
  });
});
