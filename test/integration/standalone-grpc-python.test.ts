import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { INFERENCE_PROTO } from "../../backend/server/grpc/grpc-proto.ts";
import { tensorBinary } from "../../shared/oip/codec.ts";
import { infer } from "../../shared/oip/http-client.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { seededFloats } from "../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS } from "../fixtures/paths.ts";
import type { AgentProcess } from "./support/agent-process.ts";
import { type GrpcAgent, grpcAddressIn, startGrpcAgent, stopGrpcAgent } from "./support/grpc-client.ts";
import { PYTHON_GRPC } from "./support/python-grpc.ts";

// The agent's gRPC endpoint against another implementation of gRPC and protobuf: Python's grpcio (the C core
// tritonclient.grpc and KServe's client run on) with stubs that grpc_tools.protoc generates from the agent's
// inference.proto, as a user generates them. Every answer is held against what the agent answers over HTTP.
// Both where the agent reads gRPC: on its main thread, and on HTTP intake threads (the default on 8 cores).

const MLP = MULTIPLEX_MODELS[0] ?? "m000";
const CLIENT = fileURLToPath(new URL("./support/grpc_interop.py", import.meta.url));
let stubs: string;

beforeAll(() => {
  stubs = mkdtempSync(join(tmpdir(), "switchyard-grpc-stubs-"));
  const generated = spawnSync(
    PYTHON_GRPC,
    [
      "-m",
      "grpc_tools.protoc",
      `-I${dirname(INFERENCE_PROTO)}`,
      `--python_out=${stubs}`,
      `--grpc_python_out=${stubs}`,
      INFERENCE_PROTO,
    ],
    { encoding: "utf8" },
  );
  if (generated.status !== 0) throw new Error(`protoc failed: ${generated.stderr}`);
});
afterAll(() => {
  rmSync(stubs, { recursive: true, force: true });
});

describe.each([0, 2])("--http-threads %i", (threads) => {
  let agent: AgentProcess;
  let grpcAgent: GrpcAgent | undefined;

  beforeAll(async () => {
    // (The Python client dials on its own: the agent's own client is not used.)
    grpcAgent = await startGrpcAgent(["--allow-client-shm", "--http-threads", String(threads)]);
    agent = grpcAgent.agent;
  });
  afterAll(() => stopGrpcAgent(grpcAgent ?? {}));

  test("a Python grpcio client with stubs generated from inference.proto gets what HTTP answers", async () => {
    const x: Tensor = { name: "x", datatype: "FP32", shape: [2, 16], data: seededFloats(21, 32) };
    const overHttp = await infer(
      agent.url,
      MLP,
      { inputs: [x] },
      { binaryInputs: true, binaryOutputs: true },
    );
    const y = overHttp.response.outputs[0];
    if (y === undefined) throw new Error("no output over HTTP");
    const expected = Buffer.from(tensorBinary(y)).toString("base64");
    const server = (await (await fetch(`${agent.url}/v2`)).json()) as { name: string; extensions: string[] };
    const config = (await (await fetch(`${agent.url}/v2/models/${MLP}/config`)).json()) as {
      name: string;
      backend: string;
      max_batch_size: number;
      input: { name: string; data_type: string; dims: number[] }[];
      output: { name: string; data_type: string; dims: number[] }[];
    };
    const tensors = (list: typeof config.input) =>
      list.map((tensor) => [tensor.name, tensor.data_type, tensor.dims]);

    const run = spawnSync(PYTHON_GRPC, [CLIENT, stubs, grpcAddressIn(agent.log())], {
      input: JSON.stringify({
        model: MLP,
        // Never asked before: it has to load, which takes longer than the shortest deadline.
        unloaded: MULTIPLEX_MODELS[1] ?? "m001",
        input: {
          name: "x",
          datatype: "FP32",
          shape: x.shape,
          raw: Buffer.from(tensorBinary(x)).toString("base64"),
        },
      }),
      encoding: "utf8",
      timeout: 60_000,
    });
    if (run.status !== 0) throw new Error(`the Python client failed:\n${run.stderr}`);
    const after = (await (await fetch(`${agent.url}/v2/models/${MLP}/stats`)).json()) as {
      model_stats: { inference_count: number }[];
    };
    const ranAfter = after.model_stats[0]?.inference_count;
    expect(JSON.parse(run.stdout)).toEqual({
      live: true,
      ready: true,
      server,
      model: { versions: ["1"], inputs: [["x", "FP32", [-1, 16]]] },
      config: {
        name: config.name,
        backend: config.backend,
        max_batch_size: config.max_batch_size,
        input: tensors(config.input),
        output: tensors(config.output),
      },
      infer: {
        model_name: MLP,
        model_version: "1",
        id: "py-1",
        outputs: [["y", "FP32", [2, 8]]],
        raw: [expected],
      },
      // The same input as typed contents: the same bytes back.
      contents_raw: [expected],
      // The same request gzip-compressed (grpcio's compression=Gzip): the same bytes back.
      gzip_raw: [expected],
      not_found: ["NOT_FOUND", "model 'no_such_model' not found"],
      // Its words are the client library's own (it may give up before the server does).
      deadline: ["DEADLINE_EXCEEDED", expect.any(String)],
      stream: [
        ["s0", ""],
        ["s1", "model 'no_such_model' not found"],
        ["s2", ""],
      ],
      shm_status: [
        ["py-in", true, 0, 8 + 2 * 16 * 4],
        ["py-out", false, 0, 2 * 8 * 4],
      ],
      // The output's bytes are in its region, and its place in the message is empty.
      shm: { outputs: [["y", "FP32", [2, 8]]], in_message: [0], raw: expected },
      shm_after: 0,
      // As HTTP reads them after: at least the HTTP call, the raw, typed, gzip and shared memory calls and the
      // two served on the stream.
      statistics: [[MLP, "1", ranAfter]],
    });
    expect(ranAfter).toBeGreaterThanOrEqual(7);
  });
});
