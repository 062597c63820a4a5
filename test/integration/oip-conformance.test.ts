import { spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deflateSync, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { describeOnnxFile } from "../../backend/models/file-byte-source.ts";
import { formatFloat } from "../../shared/oip/classification.ts";
import {
  decodeInferResponse,
  encodeInferRequest,
  INFERENCE_HEADER_CONTENT_LENGTH,
} from "../../shared/oip/codec.ts";
import { SHARED_MEMORY_NOT_OFFERED } from "../../shared/oip/shared-memory.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { MLP_INPUT, MLP_OUTPUT, mlpWeights, referenceMlp, seededFloats } from "../fixtures/onnx-builder.ts";
import { MULTIPLEX_SPECS, repoModelPath } from "../fixtures/paths.ts";
import { expectAllClose } from "../support/close-to.ts";
import { type AgentProcess as GatewayAgent, startAgent } from "./harness/agents.ts";
import { eventually } from "./harness/oip-client.ts";
import { type GatewayProcess, REPO_ROOT, SECRETS, startGateway } from "./harness/wrangler-dev.ts";
import { type AgentProcess as StandaloneAgent, startStandaloneAgent } from "./support/agent-process.ts";

// One table of OIP v2 conformance cases, run as a client (tritonclient, the KServe SDK, curl) would run
// them, against the standalone agent and against the gateway with a real agent process behind it. Both
// serve the same repository; every case expects the same answer from both, error wording included.
//
//   mlp      versions 1 and 2 (two MLPs), 16 features in, 8 out, no batching declared
//   batched  an MLP whose config.json declares max_batch_size 8, a dynamic batcher and labels for its output

const SPEC_V1 = MULTIPLEX_SPECS[0];
const SPEC_V2 = MULTIPLEX_SPECS[1];
const MODELS = ["mlp", "batched"] as const;
const BATCHED_LABELS = ["zero", "one", "two", "three", "four", "five"];

interface Target {
  name: "standalone" | "gateway";
  url: string;
  /** Headers of a client call (the client key on the gateway). */
  client: Record<string, string>;
  /** Headers of a model-control call (the admin key on the gateway). */
  admin: Record<string, string>;
  /** Headers of a call without a key (the pool, on the gateway). */
  nobody: Record<string, string>;
}

let repo: string;
let standalone: StandaloneAgent;
let gateway: GatewayProcess;
let behindGateway: GatewayAgent;
const targets: Record<Target["name"], Target> = {
  standalone: { name: "standalone", url: "", client: {}, admin: {}, nobody: {} },
  gateway: {
    name: "gateway",
    url: "",
    client: { Authorization: `Bearer ${SECRETS.apiKey}`, "X-Switchyard-Pool": "conformance" },
    admin: { Authorization: `Bearer ${SECRETS.adminKey}`, "X-Switchyard-Pool": "conformance" },
    nobody: { "X-Switchyard-Pool": "conformance" },
  },
};
/** What each target answered to each case with an error, to compare the wording across them. */
const errors: Record<string, Partial<Record<Target["name"], string>>> = {};

beforeAll(async () => {
  repo = mkdtempSync(join(tmpdir(), "switchyard-conformance-"));
  const copy = (from: string, to: string) => {
    mkdirSync(join(repo, to), { recursive: true });
    cpSync(repoModelPath(from), join(repo, to, "model.onnx"));
  };
  copy("m000", "mlp/1");
  copy("m001", "mlp/2");
  copy("m002", "batched/1");
  writeFileSync(
    join(repo, "batched", "1", "config.json"),
    JSON.stringify({
      max_batch_size: 8,
      dynamic_batching: { preferred_batch_size: [4, 8], max_queue_delay_microseconds: 500 },
      output: [{ name: MLP_OUTPUT, label_filename: "labels.txt" }],
    }),
  );
  // Labels for six of its eight classes: the last two have none.
  writeFileSync(join(repo, "batched", "labels.txt"), `${BATCHED_LABELS.join("\n")}\n`);
  const [agent, started] = await Promise.all([
    // The gateway's default body limit, so that both refuse the same bodies in the same words.
    startStandaloneAgent(["--models", repo, "--threads", "1", "--max-body", "33488896"]),
    startGateway(),
  ]);
  standalone = agent;
  gateway = started;
  targets.standalone.url = standalone.url;
  targets.gateway.url = gateway.url;
  await push(repo, gateway.wsUrl);
  behindGateway = await startAgent({
    gateway: gateway.wsUrl,
    name: "conf",
    pool: "conformance",
    models: null,
  });
}, 180_000);

afterAll(async () => {
  await Promise.all([standalone?.stop(), behindGateway?.stop("SIGKILL")]);
  await gateway?.stop();
  rmSync(repo, { recursive: true, force: true });
});

async function push(dir: string, gatewayUrl: string): Promise<void> {
  const child = spawn(
    process.execPath,
    [join(REPO_ROOT, "backend/bin/switchyard.ts"), "models", "push", dir, "--gateway", gatewayUrl],
    {
      env: { ...process.env, SWITCHYARD_ADMIN_KEY: SECRETS.adminKey },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  if (code !== 0) throw new Error(`switchyard models push failed (${code}):\n${output}`);
}

interface Call {
  method?: string;
  body?: Uint8Array | string;
  headers?: Record<string, string>;
  as?: "client" | "admin" | "nobody";
}

async function send(target: Target, path: string, call: Call = {}): Promise<Response> {
  const who = call.as ?? "client";
  const headers = { ...target[who], ...call.headers };
  return fetch(`${target.url}${path}`, {
    method: call.method ?? (call.body === undefined ? "GET" : "POST"),
    headers,
    ...(call.body === undefined ? {} : { body: call.body }),
  });
}

/** Sends, expects `status` and a JSON error body, and keeps its wording for the cross-target check. */
async function expectError(
  target: Target,
  label: string,
  path: string,
  call: Call,
  status: number,
): Promise<string> {
  const response = await send(target, path, call);
  const text = await response.text();
  expect(`${response.status} ${text}`).toMatch(new RegExp(`^${status} `));
  const body = JSON.parse(text) as { error: string };
  expect(Object.keys(body)).toEqual(["error"]);
  expect(text).not.toMatch(/\bat .+:\d+:\d+|node_modules|\.ts:\d+/);
  errors[label] = { ...errors[label], [target.name]: body.error };
  return body.error;
}

const mlpBody = (batch: number, seed = 1, extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    ...extra,
    inputs: [
      { name: MLP_INPUT, datatype: "FP32", shape: [batch, 16], data: [...seededFloats(seed, batch * 16)] },
    ],
  });

function expectMlp(response: { outputs: Tensor[] }, spec: typeof SPEC_V1, batch: number, seed = 1): void {
  const output = response.outputs.find((tensor) => tensor.name === MLP_OUTPUT);
  expect(output?.shape).toEqual([batch, 8]);
  const expected = referenceMlp(
    mlpWeights(spec as NonNullable<typeof SPEC_V1>),
    seededFloats(seed, batch * 16),
    batch,
  );
  expectAllClose(output?.data as Float32Array, expected, 1e-4);
}

describe.each(["standalone", "gateway"] as const)("OIP v2 conformance: %s", (name) => {
  const target = () => targets[name];

  test("health needs no key, and a wrong key does not make a live server look down", async () => {
    const anyKey: Record<string, string>[] = [{}, { Authorization: "Bearer not-a-key" }];
    for (const headers of anyKey) {
      const live = await send(target(), "/v2/health/live", { as: "nobody", headers });
      expect(live.status).toBe(200);
      expect(await live.json()).toEqual({ live: true });
      await eventually(
        "ready",
        async () => (await send(target(), "/v2/health/ready", { as: "nobody", headers })).status === 200,
      );
    }
  });

  test("server metadata lists the extensions both servers implement, and the agent its own log's", async () => {
    const metadata = (await (await send(target(), "/v2")).json()) as { name: string; extensions: string[] };
    expect(metadata.extensions).toEqual([
      "binary_tensor_data",
      "model_repository",
      "statistics",
      "parameters",
      "classification",
      // The agent's own log settings (GET/POST /v2/logging); the gateway's log is Cloudflare's.
      ...(name === "standalone" ? ["logging"] : []),
    ]);
  });

  test("a 'wait until ready, then infer' loop ends for every model of the repository, none loaded yet", async () => {
    for (const model of MODELS) {
      await eventually(
        `${model} ready`,
        async () => (await send(target(), `/v2/models/${model}/ready`)).status === 200,
      );
    }
    const index = (await (await send(target(), "/v2/repository/index", { body: "" })).json()) as Array<{
      name: string;
      version: string;
      state: string;
    }>;
    // Ready to serve, but nothing was loaded to say so.
    expect(index.filter((entry) => (MODELS as readonly string[]).includes(entry.name))).toEqual([
      { name: "batched", version: "1", state: "UNAVAILABLE", reason: "unloaded" },
      { name: "mlp", version: "1", state: "UNAVAILABLE", reason: "unloaded" },
      { name: "mlp", version: "2", state: "UNAVAILABLE", reason: "unloaded" },
    ]);
  });

  test("model metadata comes from the ONNX graph, for each version, before any load", async () => {
    for (const [path, version] of [
      ["/v2/models/mlp", "2"],
      ["/v2/models/mlp/versions/1", "1"],
    ] as const) {
      const metadata = await (await send(target(), path)).json();
      const graph = await describeOnnxFile(join(repo, "mlp", version, "model.onnx"));
      expect(metadata).toEqual({ name: "mlp", versions: ["1", "2"], platform: "onnxruntime_onnx", ...graph });
    }
  });

  test("model configuration in Triton's form: declared batching takes the batch dimension out of dims", async () => {
    const plain = (await (await send(target(), "/v2/models/mlp/config")).json()) as Record<string, unknown>;
    expect(plain).toMatchObject({
      name: "mlp",
      platform: "onnxruntime_onnx",
      backend: "onnxruntime",
      max_batch_size: 0,
      input: [{ name: MLP_INPUT, data_type: "TYPE_FP32", dims: [-1, 16] }],
      output: [{ name: MLP_OUTPUT, data_type: "TYPE_FP32", dims: [-1, 8] }],
      instance_group: [{ kind: "KIND_CPU", count: 1 }],
    });
    expect(plain.dynamic_batching).toBeUndefined();
    const batched = (await (await send(target(), "/v2/models/batched/versions/1/config")).json()) as Record<
      string,
      unknown
    >;
    expect(batched).toMatchObject({
      max_batch_size: 8,
      input: [{ name: MLP_INPUT, dims: [16] }],
      output: [{ name: MLP_OUTPUT, dims: [8] }],
      dynamic_batching: { preferred_batch_size: [4, 8], max_queue_delay_microseconds: 500 },
    });
  });

  test("infer with JSON tensors, the binary extension, and gzip or deflate bodies, all exact", async () => {
    const json = await send(target(), "/v2/models/mlp/versions/1/infer", {
      body: mlpBody(2, 3, { id: "conf-1" }),
    });
    expect(json.status).toBe(200);
    expect(json.headers.get("x-request-id")).toBe("conf-1");
    const decoded = decodeInferResponse(new Uint8Array(await json.arrayBuffer()));
    expect(decoded.id).toBe("conf-1");
    expectMlp(decoded, SPEC_V1, 2, 3);

    const encoded = encodeInferRequest(
      { inputs: [{ name: MLP_INPUT, datatype: "FP32", shape: [3, 16], data: seededFloats(5, 48) }] },
      { binaryInputs: true, binaryOutputs: true },
    );
    const binary = await send(target(), "/v2/models/mlp/infer", {
      body: encoded.body,
      headers: { [INFERENCE_HEADER_CONTENT_LENGTH]: String(encoded.headerLength) },
    });
    expect(binary.status).toBe(200);
    const headerLength = Number(binary.headers.get(INFERENCE_HEADER_CONTENT_LENGTH));
    expectMlp(decodeInferResponse(new Uint8Array(await binary.arrayBuffer()), headerLength), SPEC_V2, 3, 5);

    for (const [encoding, compress] of [
      ["gzip", gzipSync],
      ["deflate", deflateSync],
    ] as const) {
      const compressed = await send(target(), "/v2/models/mlp/infer", {
        body: compress(mlpBody(1, 7)),
        headers: { "Content-Encoding": encoding },
      });
      expect(compressed.status, encoding).toBe(200);
      expectMlp(decodeInferResponse(new Uint8Array(await compressed.arrayBuffer())), SPEC_V2, 1, 7);
    }
  });

  test("an id no header can carry is echoed in the body; X-Request-Id gets a fresh one", async () => {
    const response = await send(target(), "/v2/models/mlp/infer", {
      body: mlpBody(1, 1, { id: "naïve id" }),
    });
    expect(response.status).toBe(200);
    expect(decodeInferResponse(new Uint8Array(await response.arrayBuffer())).id).toBe("naïve id");
    expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  test("statistics in Triton's form count what ran, per model and version", async () => {
    const all = (await (await send(target(), "/v2/models/stats")).json()) as {
      model_stats: Array<Record<string, unknown>>;
    };
    const v1 = all.model_stats.find((record) => record.name === "mlp" && record.version === "1");
    expect(v1).toMatchObject({
      inference_count: 1,
      execution_count: 1,
      inference_stats: { success: { count: 1 }, fail: { count: 0 } },
    });
    const one = (await (await send(target(), "/v2/models/mlp/versions/2/stats")).json()) as {
      model_stats: Array<Record<string, unknown>>;
    };
    expect(one.model_stats).toHaveLength(1);
    expect(one.model_stats[0]).toMatchObject({
      name: "mlp",
      version: "2",
      inference_count: 4,
      execution_count: 4,
    });
    const model = (await (await send(target(), "/v2/models/mlp/stats")).json()) as { model_stats: unknown[] };
    expect(model.model_stats).toHaveLength(2);
  });

  test("classification: an output's top classes as 'value:index' strings, per row where the model batches", async () => {
    const outputOf = async (response: Response) => {
      expect(response.status).toBe(200);
      const headerLength = response.headers.get(INFERENCE_HEADER_CONTENT_LENGTH);
      const body = new Uint8Array(await response.arrayBuffer());
      return decodeInferResponse(body, headerLength === null ? undefined : Number(headerLength)).outputs[0];
    };
    const classes = (tensor: Tensor | undefined) =>
      ((tensor?.data ?? []) as Uint8Array[]).map((bytes) => new TextDecoder().decode(bytes));
    /**
     * The top `count` of values[from, to), read from a plain answer: value, then index, as Triton orders them,
     * with the label of each index `labels` has.
     */
    const top = (values: Float32Array, from: number, to: number, count: number, labels: string[] = []) =>
      [...values.subarray(from, to).keys()]
        .sort((a, b) => (values[from + b] as number) - (values[from + a] as number) || a - b)
        .slice(0, count)
        .map((index) => {
          const label = labels[index];
          return `${formatFloat(values[from + index] as number)}:${index}${label === undefined ? "" : `:${label}`}`;
        });

    // max_batch_size 8: each row's top 8 (all of them), labelled from labels.txt where it has a line; the
    // strings in the binary form here.
    const batched = (
      await outputOf(await send(target(), "/v2/models/batched/infer", { body: mlpBody(2, 11) }))
    )?.data as Float32Array;
    const rows = await outputOf(
      await send(target(), "/v2/models/batched/infer", {
        body: mlpBody(2, 11, {
          outputs: [{ name: MLP_OUTPUT, parameters: { classification: 8, binary_data: true } }],
        }),
      }),
    );
    expect(rows).toMatchObject({ name: MLP_OUTPUT, datatype: "BYTES", shape: [2, 8] });
    expect(classes(rows)).toEqual([
      ...top(batched, 0, 8, 8, BATCHED_LABELS),
      ...top(batched, 8, 16, 8, BATCHED_LABELS),
    ]);

    // No batching declared: the whole output is one row, its indices over all 16 values.
    const plain = (
      await outputOf(await send(target(), "/v2/models/mlp/versions/1/infer", { body: mlpBody(2, 11) }))
    )?.data as Float32Array;
    const whole = await outputOf(
      await send(target(), "/v2/models/mlp/versions/1/infer", {
        body: mlpBody(2, 11, { outputs: [{ name: MLP_OUTPUT, parameters: { classification: 3 } }] }),
      }),
    );
    expect(whole).toMatchObject({ datatype: "BYTES", shape: [3] });
    expect(classes(whole)).toEqual(top(plain, 0, 16, 3));
  });

  test("model control: load keeps a model loaded (pinned) until unload evicts it", async () => {
    const load = await send(target(), "/v2/repository/models/batched/load", { body: "{}", as: "admin" });
    expect(`${load.status} ${await load.text()}`).toBe("200 {}");
    const state = async () => {
      const index = (await (await send(target(), "/v2/repository/index", { body: "{}" })).json()) as Array<{
        name: string;
        state: string;
      }>;
      return index.find((entry) => entry.name === "batched")?.state;
    };
    expect(await state()).toBe("READY");
    const unload = await send(target(), "/v2/repository/models/batched/unload", {
      body: JSON.stringify({ parameters: { unload_dependents: false } }),
      as: "admin",
    });
    expect(`${unload.status} ${await unload.text()}`).toBe("200 {}");
    await eventually("unloaded", async () => (await state()) === "UNAVAILABLE");
  });

  test.each([
    ["unknown model", "/v2/models/nope", {}, 404, "model 'nope' not found"],
    [
      "unknown version",
      "/v2/models/mlp/versions/7",
      {},
      404,
      "model 'mlp' has no version 7 (versions: 1, 2)",
    ],
    ["unknown model's readiness", "/v2/models/nope/ready", {}, 404, "model 'nope' not found"],
    ["unknown model's config", "/v2/models/nope/config", {}, 404, "model 'nope' not found"],
    ["unknown model's statistics", "/v2/models/nope/stats", {}, 404, "model 'nope' not found"],
    [
      "infer on an unknown model",
      "/v2/models/nope/infer",
      { body: mlpBody(1) },
      404,
      "model 'nope' not found",
    ],
    [
      "infer on an unknown version",
      "/v2/models/mlp/versions/9/infer",
      { body: mlpBody(1) },
      404,
      "model 'mlp' has no version 9 (versions: 1, 2)",
    ],
    [
      "a wrong shape",
      "/v2/models/mlp/infer",
      {
        body: JSON.stringify({
          inputs: [{ name: MLP_INPUT, datatype: "FP32", shape: [1, 3], data: [1, 2, 3] }],
        }),
      },
      400,
      "input 'x' of model 'mlp' has shape [-1, 16] (-1: any), got [1, 3]",
    ],
    ["a body that is not JSON", "/v2/models/mlp/infer", { body: "{" }, 400, undefined],
    [
      "a classification count that is not a number of classes",
      "/v2/models/mlp/infer",
      { body: mlpBody(1, 1, { outputs: [{ name: MLP_OUTPUT, parameters: { classification: 0 } }] }) },
      400,
      "outputs[0].parameters.classification: must be a whole number of classes, 1 or more",
    ],
    [
      "an id too long to be a correlation id",
      "/v2/models/mlp/infer",
      { body: mlpBody(1, 1, { id: "i".repeat(100_000) }) },
      400,
      "id: a request id is at most 256 characters, got 100000",
    ],
    [
      "an encoding it cannot decode",
      "/v2/models/mlp/infer",
      { body: mlpBody(1), headers: { "Content-Encoding": "br" } },
      415,
      'Content-Encoding "br" is not supported; use gzip, deflate, identity',
    ],
    [
      "a gzip bomb",
      "/v2/models/mlp/infer",
      { body: gzipSync(Buffer.alloc(200 * 2 ** 20)), headers: { "Content-Encoding": "gzip" } },
      413,
      undefined,
    ],
    [
      "gzip that is not gzip",
      "/v2/models/mlp/infer",
      { body: "plain", headers: { "Content-Encoding": "gzip" } },
      400,
      undefined,
    ],
    [
      "an input in shared memory, where none is offered",
      "/v2/models/mlp/infer",
      {
        body: JSON.stringify({
          inputs: [
            {
              name: MLP_INPUT,
              datatype: "FP32",
              shape: [1, 16],
              parameters: { shared_memory_region: "in", shared_memory_byte_size: 64 },
            },
          ],
        }),
      },
      400,
      `inputs[0] ("x"): ${SHARED_MEMORY_NOT_OFFERED}`,
    ],
    [
      "an output asked in shared memory, where none is offered",
      "/v2/models/mlp/infer",
      {
        body: mlpBody(1, 1, {
          outputs: [
            { name: MLP_OUTPUT, parameters: { shared_memory_region: "out", shared_memory_byte_size: 32 } },
          ],
        }),
      },
      400,
      `outputs[0] ("y"): ${SHARED_MEMORY_NOT_OFFERED}`,
    ],
    [
      "a shared memory region to register, where none is offered",
      "/v2/systemsharedmemory/region/in/register",
      { body: JSON.stringify({ key: "/input0", offset: 0, byte_size: 64 }) },
      400,
      SHARED_MEMORY_NOT_OFFERED,
    ],
    [
      "the status of a region never registered",
      "/v2/systemsharedmemory/region/in/status",
      {},
      404,
      "shared memory region 'in' is not registered",
    ],
    [
      "a CUDA shared memory region to register",
      "/v2/cudasharedmemory/region/in/register",
      { body: JSON.stringify({ raw_handle: { b64: "AAAA" }, device_id: 0, byte_size: 64 }) },
      400,
      undefined,
    ],
    [
      "a load that would replace the model's files",
      "/v2/repository/models/mlp/load",
      { body: JSON.stringify({ parameters: { config: "{}" } }), as: "admin" },
      400,
      "a load here cannot override the model's configuration: push the model to the repository instead",
    ],
    [
      "a load of an unknown model",
      "/v2/repository/models/nope/load",
      { body: "{}", as: "admin" },
      404,
      "model 'nope' not found",
    ],
  ] as const)("%s: a clear %s", async (label, path, call, status, wording) => {
    const message = await expectError(target(), label, path, call as Call, status);
    if (wording !== undefined) expect(message).toBe(wording);
  });

  test("shared memory where none is offered: nothing registered, and a client's clean-up at exit succeeds", async () => {
    for (const kind of ["systemsharedmemory", "cudasharedmemory"]) {
      const status = await send(target(), `/v2/${kind}/status`);
      expect(`${status.status} ${await status.text()}`).toBe("200 []");
      for (const path of [`/v2/${kind}/unregister`, `/v2/${kind}/region/in/unregister`]) {
        const unregistered = await send(target(), path, { method: "POST" });
        expect(`${unregistered.status} ${await unregistered.text()}`).toBe("200 {}");
      }
    }
  });

  test("bodies that are not gzip, eight of 3 MiB at once while they are still being sent: each a clear 400", async () => {
    // Refused on their first bytes: the rest of each body is still on its way when the answer is ready.
    const body = new Uint8Array(3 * 2 ** 20).fill(7);
    const answers = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const response = await send(target(), "/v2/models/mlp/infer", {
          body,
          headers: { "Content-Encoding": "gzip" },
        });
        return `${response.status} ${await response.text()}`;
      }),
    );
    for (const answer of answers)
      expect(answer).toMatch(/^400 \{"error":"request body is not valid gzip data/);
  });
});

describe("both servers", () => {
  test("word every error the same", () => {
    const differing = Object.entries(errors).filter(
      ([, byTarget]) => byTarget.standalone !== byTarget.gateway,
    );
    expect(Object.keys(errors).length).toBeGreaterThan(10);
    expect(differing).toEqual([]);
  });
});
