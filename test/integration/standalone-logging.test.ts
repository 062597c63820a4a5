import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { tensorBinary } from "../../shared/oip/codec.ts";
import { infer } from "../../shared/oip/http-client.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { seededFloats } from "../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS } from "../fixtures/paths.ts";
import type { AgentProcess } from "./support/agent-process.ts";
import { type InferenceClient, startGrpcAgent, stopGrpcAgent } from "./support/grpc-client.ts";

// Triton's logging extension on a real agent: an operator turns request lines on and off, and the log's
// levels and format, while the agent serves, over HTTP (tritonclient's update_log_settings) and gRPC
// (LogSettings); the agent's stderr shows each change from the next line on. The requests go through the
// HTTP intake threads, the lines come from the main thread's replicas.

const MLP = MULTIPLEX_MODELS[0] ?? "m000";
const INVALID_ARGUMENT = 3;

describe("the agent's log settings, changed while it runs", () => {
  let agent: AgentProcess;
  let client: InferenceClient;
  beforeAll(async () => {
    ({ agent, client } = await startGrpcAgent(["--http-threads", "2"]));
  });
  afterAll(() => stopGrpcAgent({ agent, client }));

  const post = async (body: unknown) => {
    const response = await fetch(`${agent.url}/v2/logging`, { method: "POST", body: JSON.stringify(body) });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  /** The request lines the agent wrote since the last call (text or JSON). */
  let seen = 0;
  const newRequestLines = () => {
    const lines = agent
      .log()
      .split("\n")
      .filter((line) => /^\S+ request (requestId=\S+ )?model=|"event":"request"/.test(line));
    const fresh = lines.slice(seen);
    seen = lines.length;
    return fresh;
  };
  const servedSoFar = async () => {
    const stats = (await (await fetch(`${agent.url}/v2/models/${MLP}/stats`)).json()) as {
      model_stats: { inference_count: number }[];
    };
    return stats.model_stats[0]?.inference_count ?? 0;
  };
  /**
   * One request, once the main thread has counted it: an HTTP thread's requests reach the main thread's
   * statistics and log in the same report, so its line, if any, is written by then (and on stderr's pipe a
   * moment later).
   */
  const request = async () => {
    const before = await servedSoFar();
    await infer(agent.url, MLP, {
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], data: seededFloats(3, 16) }],
    });
    await expect.poll(servedSoFar, { timeout: 10_000 }).toBeGreaterThan(before);
    await new Promise((resolve) => setTimeout(resolve, 100));
  };

  test("the server metadata lists the extension; GET answers the settings the flags gave", async () => {
    const metadata = (await (await fetch(`${agent.url}/v2`)).json()) as { extensions: string[] };
    expect(metadata.extensions).toContain("logging");
    expect(await (await fetch(`${agent.url}/v2/logging`)).json()).toEqual({
      log_file: "",
      log_info: true,
      log_warning: true,
      log_error: true,
      log_verbose_level: 0,
      log_format: "text",
    });
  });

  test("a verbose level of 1 writes a line per request from the next request on; gRPC sets it back to 0", async () => {
    await request();
    expect(newRequestLines()).toEqual([]);
    expect(await post({ log_verbose_level: 1 })).toMatchObject({
      status: 200,
      body: { log_verbose_level: 1 },
    });
    await request();
    expect(newRequestLines()).toEqual([
      expect.stringMatching(new RegExp(` request requestId=\\S+ model=${MLP}:1 .*status=200`)),
    ]);

    const answer = await client.call("LogSettings", { settings: { log_verbose_level: { uint32_param: 0 } } });
    expect(answer).toEqual({
      ok: true,
      value: {
        settings: {
          log_file: { string_param: "", parameter_choice: "string_param" },
          log_info: { bool_param: true, parameter_choice: "bool_param" },
          log_warning: { bool_param: true, parameter_choice: "bool_param" },
          log_error: { bool_param: true, parameter_choice: "bool_param" },
          log_verbose_level: { uint32_param: 0, parameter_choice: "uint32_param" },
          log_format: { string_param: "text", parameter_choice: "string_param" },
        },
      },
    });
    await request();
    expect(newRequestLines()).toEqual([]);
  });

  test("log_format json over gRPC: the next lines are JSON objects; an empty request changes nothing", async () => {
    const set = (settings: Record<string, unknown>) => client.call("LogSettings", { settings });
    expect(
      await set({ log_format: { string_param: "json" }, log_verbose_level: { uint32_param: 1 } }),
    ).toMatchObject({ ok: true });
    await request();
    const lines = newRequestLines();
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? "")).toMatchObject({
      level: "info",
      event: "request",
      model: `${MLP}:1`,
      status: 200,
    });
    expect(await set({})).toMatchObject({
      ok: true,
      value: { settings: { log_format: { string_param: "json" }, log_verbose_level: { uint32_param: 1 } } },
    });
    // log_info off: request lines are info lines, so none.
    expect(await post({ log_info: false, log_format: "text" })).toMatchObject({ status: 200 });
    await request();
    expect(newRequestLines()).toEqual([]);
    expect(await post({ log_info: true, log_verbose_level: 0 })).toMatchObject({ status: 200 });
  });

  test("a setting the agent cannot take: HTTP 400 and gRPC INVALID_ARGUMENT in the same words", async () => {
    expect(await post({ log_file: "/var/log/agent.log" })).toEqual({
      status: 400,
      body: {
        error:
          "log_file: the agent writes its log to stderr only, so log_file stays empty (redirect stderr to keep it in a file)",
      },
    });
    const overGrpc = await client.call("LogSettings", {
      settings: { log_file: { string_param: "/var/log/agent.log" } },
    });
    expect(overGrpc).toMatchObject({
      ok: false,
      code: INVALID_ARGUMENT,
      details:
        "log_file: the agent writes its log to stderr only, so log_file stays empty (redirect stderr to keep it in a file)",
    });
    expect(
      await client.call("LogSettings", { settings: { log_info: { string_param: "yes" } } }),
    ).toMatchObject({ ok: false, code: INVALID_ARGUMENT, details: expect.stringContaining("log_info") });
  });
});

// A request line names its request by the id its client sees in X-Request-Id, whichever way it was served: the
// main thread's path (a model's first request from an HTTP thread), a lane (the requests after it, whose line
// the main thread writes from the session thread's report) and gRPC (no header: the request's own id).
describe("request lines, with --log-requests", () => {
  let agent: AgentProcess;
  let client: InferenceClient;
  beforeAll(async () => {
    ({ agent, client } = await startGrpcAgent(["--http-threads", "2", "--log-requests"]));
    // JSON from here on (the tests' agent start reads its text lines), as `--log-format json` writes it.
    const changed = await fetch(`${agent.url}/v2/logging`, {
      method: "POST",
      body: JSON.stringify({ log_format: "json" }),
    });
    expect(changed.status).toBe(200);
  });
  afterAll(() => stopGrpcAgent({ agent, client }));

  interface Line {
    level: string;
    event: string;
    requestId?: string;
    model: string;
    status: number;
    lane?: boolean;
    error?: string;
  }
  const requestLines = (): Line[] =>
    agent
      .log()
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as Line & { event: string })
      .filter((line) => line.event.startsWith("request"));
  /** The request line naming `requestId`, once the agent wrote it (a lane's line comes with its report). */
  const lineOf = async (requestId: string): Promise<Line> => {
    await expect
      .poll(() => requestLines().filter((line) => line.requestId === requestId), { timeout: 10_000 })
      .toHaveLength(1);
    return requestLines().find((line) => line.requestId === requestId) as Line;
  };
  const x = (seed: number): Tensor => ({
    name: "x",
    datatype: "FP32",
    shape: [1, 16],
    data: seededFloats(seed, 16),
  });

  test("over HTTP, on the main thread's path and on a lane: the response's X-Request-Id", async () => {
    const ids = Array.from({ length: 6 }, (_, index) => `order-${index}`);
    for (const [index, id] of ids.entries()) {
      const answer = await infer(agent.url, MLP, { id, inputs: [x(index)] });
      expect(answer.headers.get("x-request-id")).toBe(id);
    }
    const lines = await Promise.all(ids.map(lineOf));
    for (const line of lines)
      expect(line).toMatchObject({ level: "info", event: "request", model: `${MLP}:1`, status: 200 });
    // The first went through the main thread (which granted its HTTP thread a lane), later ones down the lane.
    expect(lines[0]?.lane).toBeUndefined();
    expect(lines.some((line) => line.lane === true)).toBe(true);
  });

  test("a request without an id: its line names the id the agent made up for X-Request-Id", async () => {
    const answer = await infer(agent.url, MLP, { inputs: [x(9)] });
    const made = answer.headers.get("x-request-id") ?? "";
    expect(made).toMatch(/^[0-9a-f-]{36}$/);
    expect(await lineOf(made)).toMatchObject({ event: "request", status: 200 });
  });

  test("over gRPC, the request's own id", async () => {
    const tensor = x(12);
    const answer = await client.call("ModelInfer", {
      model_name: MLP,
      id: "grpc-call-5",
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16] }],
      raw_input_contents: [Buffer.from(tensorBinary(tensor))],
    });
    expect(answer.ok).toBe(true);
    expect(await lineOf("grpc-call-5")).toMatchObject({ event: "request", model: `${MLP}:1`, status: 200 });
  });

  test("a client's mistake is a request line at info, not an error line", async () => {
    const response = await fetch(`${agent.url}/v2/models/no-such-model/infer`, {
      method: "POST",
      body: JSON.stringify({
        id: "lost-1",
        inputs: [{ name: "x", datatype: "FP32", shape: [1, 1], data: [1] }],
      }),
    });
    expect(response.status).toBe(404);
    expect(await lineOf("lost-1")).toMatchObject({
      level: "info",
      event: "request",
      model: "no-such-model",
      status: 404,
      error: "model 'no-such-model' not found",
    });
  });
});
