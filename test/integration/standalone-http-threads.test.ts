import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { infer } from "../../shared/oip/http-client.ts";
import { mlpWeights, referenceMlp } from "../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS, MULTIPLEX_SPECS, REPO_DIR } from "../fixtures/paths.ts";
import { expectAllClose } from "../support/close-to.ts";
import { type AgentProcess, runAgent, startHoldingAgent } from "./support/agent-process.ts";

// What is particular to HTTP on intake threads (--http-threads): requests read on several threads meet in
// one replica's batches and each gets its own rows back, clients that go away, the port, shutdown. Every
// other standalone behaviour runs on both servers in standalone-agent.test.ts.

const MODEL = MULTIPLEX_MODELS[2] ?? "m002";
const SPEC = MULTIPLEX_SPECS[2];
// A request alone waits this long for company: long enough to be caught in flight.
const QUEUE_DELAY_MS = 1500;
let agent: AgentProcess;

beforeAll(async () => {
  agent = await startHoldingAgent(MODEL, QUEUE_DELAY_MS, ["--http-threads", "2"]);
});
afterAll(async () => {
  await agent?.stop();
});

function rowOf(index: number): Float32Array {
  return Float32Array.from({ length: 16 }, (_, column) => Math.sin(index * 17 + column));
}

function expected(row: Float32Array): Float32Array {
  if (SPEC === undefined) throw new Error("fixture spec missing");
  return referenceMlp(mlpWeights(SPEC), row, 1);
}

describe("standalone server on two HTTP threads", () => {
  test("the startup summary says where HTTP is served", () => {
    expect(agent.log()).toContain("HTTP on 2 threads");
  });

  test("requests read on different threads share batches, and each gets its own rows back", async () => {
    const rows = Array.from({ length: 24 }, (_, index) => rowOf(index));
    // Binary and JSON alike: a binary answer's rows are cut out of the batch's output, a JSON one encoded.
    const answers = await Promise.all(
      rows.map((row, index) =>
        infer(
          agent.url,
          MODEL,
          { inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], data: row }] },
          { binaryInputs: index % 2 === 0, binaryOutputs: index % 2 === 0 },
        ),
      ),
    );
    answers.forEach((answer, index) => {
      expect(answer.response.outputs[0]?.shape).toEqual([1, 8]);
      expectAllClose(
        Array.from(answer.response.outputs[0]?.data as Float32Array),
        expected(rows[index] as Float32Array),
      );
    });
    const stats = (await (await fetch(`${agent.url}/v2/models/${MODEL}/stats`)).json()) as {
      model_stats: Array<{ batch_stats: Array<{ batch_size: number }> }>;
    };
    const sizes = stats.model_stats.flatMap((entry) => entry.batch_stats.map((batch) => batch.batch_size));
    expect(Math.max(...sizes)).toBeGreaterThan(1);
  });

  test("clients that go away mid-body or while their request waits leave the server serving", async () => {
    const { hostname, port } = new URL(agent.url);
    const cut = connect(Number(port), hostname);
    await new Promise((resolve) => cut.once("connect", resolve));
    cut.write(
      `POST /v2/models/${MODEL}/infer HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"inputs":`,
    );
    const waiting = new AbortController();
    const abandoned = infer(
      agent.url,
      MODEL,
      { inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], data: rowOf(99) }] },
      { signal: waiting.signal },
    ).catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 200));
    cut.destroy();
    waiting.abort();
    expect(await abandoned).toBeInstanceOf(Error);
    const after = await infer(agent.url, MODEL, {
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], data: rowOf(5) }],
    });
    expectAllClose(Array.from(after.response.outputs[0]?.data as Float32Array), expected(rowOf(5)));
  });

  test("a second agent on the same port is refused, as on one thread, rather than sharing it", async () => {
    const { port } = new URL(agent.url);
    const second = runAgent(["--models", REPO_DIR, "--standalone", "--port", port, "--http-threads", "2"]);
    let stderr = "";
    second.stderr?.setEncoding("utf8");
    second.stderr?.on("data", (chunk: string) => {
      stderr += chunk;
    });
    const code = await new Promise<number | null>((resolve) => second.once("exit", resolve));
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/EADDRINUSE|in use/);
  });

  test("SIGTERM: a request in flight is answered, then the agent exits 0", async () => {
    const inFlight = infer(agent.url, MODEL, {
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], data: rowOf(7) }],
    });
    // Alone, it waits up to QUEUE_DELAY_MS in its batch: well inside that, the agent is told to stop.
    await new Promise((resolve) => setTimeout(resolve, QUEUE_DELAY_MS / 3));
    const exited = agent.stop("SIGTERM");
    const answer = await inFlight;
    expectAllClose(Array.from(answer.response.outputs[0]?.data as Float32Array), expected(rowOf(7)));
    expect(await exited).toBe(0);
    expect(agent.log()).toMatch(/draining/);
  });
});
