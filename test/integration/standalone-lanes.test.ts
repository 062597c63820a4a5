import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { infer, OipHttpError } from "../../shared/oip/http-client.ts";
import { mlpWeights, referenceMlp } from "../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS, MULTIPLEX_SPECS, REPO_DIR } from "../fixtures/paths.ts";
import { expectAllClose } from "../support/close-to.ts";
import { copyOf, temporaryRepository } from "./harness/behaviour-models.ts";
import { type AgentProcess, startHoldingAgent, startStandaloneAgent } from "./support/agent-process.ts";

// Lanes end to end (backend/replica/lane-protocol.ts): the real agent on one HTTP intake thread, a real
// HTTP client. Once a request of a model was answered, the thread sends that model's next requests straight
// to its session's thread; clients must see the same answers, counts and bounds as through the main thread.

const MODEL = MULTIPLEX_MODELS[2] ?? "m002";
const SPEC = MULTIPLEX_SPECS[2];
const rowOf = (index: number) =>
  Float32Array.from({ length: 16 }, (_, column) => Math.sin(index * 5 + column));
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let agent: AgentProcess | undefined;
afterEach(async () => {
  await agent?.stop();
  agent = undefined;
});

/** `rows` rows, the first rowOf(index). */
const inputOf = (index: number, rows: number) =>
  Float32Array.from({ length: rows * 16 }, (_, at) => rowOf(index + Math.floor(at / 16))[at % 16] ?? 0);

const send = (index: number, rows = 1) =>
  infer(
    agent?.url ?? "",
    MODEL,
    { inputs: [{ name: "x", datatype: "FP32", shape: [rows, 16], data: inputOf(index, rows) }] },
    { binaryOutputs: true },
  );

/** The agent's --log-requests lines for answered requests (`<time> request key=value ...`), and whether each says it came down a lane. */
const requestLines = () =>
  (agent?.log() ?? "")
    .split("\n")
    // (A refused request's line is a "request" line too, with its status.)
    .filter((line) => line.split(" ")[1] === "request" && / status=200\b/.test(line))
    .map((line) => ({ lane: / lane=true\b/.test(line) ? true : undefined }));

/**
 * requestLines() once `enough` says so of them, or after five seconds as they are. A lane's answers leave
 * before its report to the main thread, which logs them: lines trail their answers by up to
 * LANE_REPORT_INTERVAL_MS.
 */
const requestLinesOnce = async (enough: (lines: ReturnType<typeof requestLines>) => boolean) => {
  let lines = requestLines();
  for (let tries = 0; tries < 50 && !enough(lines); tries += 1) {
    await pause(100);
    lines = requestLines();
  }
  return lines;
};

/** The agent on one HTTP thread, MODEL loaded and batching up to 8 rows. */
const startLaneAgent = (extra: string[] = []) =>
  startStandaloneAgent([
    "--models",
    REPO_DIR,
    "--threads",
    "1",
    "--http-threads",
    "1",
    "--max-batch-size",
    "8",
    "--preload",
    MODEL,
    ...extra,
  ]);

describe("lanes from an HTTP thread to a model's session", () => {
  test("after the first answer the model's requests come down the lane, with the same answers bit for bit, counted in its statistics", {
    timeout: 60_000,
  }, async () => {
    agent = await startLaneAgent(["--log-requests", "--metrics-port", "0"]);
    const metricsUrl = /metrics listening url=(\S+)/.exec(agent.log())?.[1] ?? "";
    const first = await send(1, 3);
    await pause(200);
    // Concurrent requests: they share the session's batches on the lane.
    const later = await Promise.all(Array.from({ length: 24 }, () => send(1, 3)));
    const expected = first.response.outputs[0]?.data as Float32Array;
    if (SPEC === undefined) throw new Error("fixture spec missing");
    expectAllClose(Array.from(expected), referenceMlp(mlpWeights(SPEC), inputOf(1, 3), 3));
    for (const answer of later) {
      const data = answer.response.outputs[0]?.data as Float32Array;
      expect(data.length).toBe(expected.length);
      expect(data.every((value, at) => Object.is(value, expected[at]))).toBe(true);
    }

    // The replica counts them as it counts the main thread's. Their reports cross every few milliseconds; a
    // reader of the statistics or the metrics, right after its answers, still sees every one.
    const succeeded = async () => {
      const stats = (await (await fetch(`${agent?.url}/v2/models/${MODEL}/stats`)).json()) as {
        model_stats: { inference_stats: { success: { count: number } } }[];
      };
      return stats.model_stats[0]?.inference_stats.success.count;
    };
    expect(await succeeded()).toBe(25);
    // One after another, each read at once: within the interval of the last report.
    for (let count = 26; count <= 30; count += 1) {
      await send(1, 3);
      expect(await succeeded()).toBe(count);
    }
    const metrics = await (await fetch(metricsUrl)).text();
    const served = new RegExp(
      `^switchyard_agent_requests_total\\{[^}]*model="${MODEL}"[^}]*status="200"[^}]*\\} (\\d+)$`,
      "m",
    );
    expect(metrics.match(served)?.[1]).toBe("30");
    // Each logged, from the same reports (the lane's a second long: a slow machine may send some through the
    // main thread again when it lapses).
    const lines = await requestLinesOnce((some) => some.length >= 30);
    expect(lines).toHaveLength(30);
    expect(lines[0]?.lane).toBeUndefined();
    expect(lines.filter((line) => line.lane === true).length).toBeGreaterThanOrEqual(12);
  });

  test("classes with their labels come back alike through the main thread and down a lane, in groups too", {
    timeout: 60_000,
  }, async () => {
    // The model under another name, declaring batching and labels for its output.
    const repo = temporaryRepository("lane-classes", [
      copyOf(MODEL, "labelled", { max_batch_size: 8, output: [{ name: "y", label_filename: "labels.txt" }] }),
    ]);
    writeFileSync(join(repo, "labelled", "labels.txt"), "a\nb\nc\nd\ne\nf\ng\nh\n");
    agent = await startStandaloneAgent([
      ...["--models", repo, "--threads", "1", "--http-threads", "1", "--preload", "labelled"],
      "--log-requests",
    ]);
    const classified = async () => {
      const { response } = await infer(
        agent?.url ?? "",
        "labelled",
        {
          inputs: [{ name: "x", datatype: "FP32", shape: [2, 16], data: inputOf(3, 2) }],
          outputs: [{ name: "y", parameters: { classification: 3 } }],
        },
        { binaryOutputs: false },
      );
      const [output] = response.outputs;
      expect(output).toMatchObject({ datatype: "BYTES", shape: [2, 3] });
      return ((output?.data ?? []) as Uint8Array[]).map((bytes) => new TextDecoder().decode(bytes));
    };
    const first = await classified();
    expect(first.every((text) => /^-?\d+\.\d{6}:[0-7]:[a-h]$/.test(text))).toBe(true);
    await pause(200);
    const later = await Promise.all(Array.from({ length: 12 }, () => classified()));
    for (const answer of later) expect(answer).toEqual(first);
    const lines = await requestLinesOnce((some) => some.length >= 13);
    expect(lines[0]?.lane).toBeUndefined();
    expect(lines.some((line) => line.lane === true)).toBe(true);
  });

  test("the session bounds what comes down its lanes: past --max-concurrency and --max-queue a group of requests gets 429", {
    timeout: 60_000,
  }, async () => {
    // A request alone waits 3 s for company in its batch, holding the one place meanwhile.
    agent = await startHoldingAgent(MODEL, 3000, [
      "--http-threads",
      "1",
      "--max-concurrency",
      "1",
      "--max-queue",
      "1",
      "--log-requests",
    ]);
    await send(1);
    // The lane is granted as the answer leaves; what follows comes well within its lifetime (a second), in
    // this order. The HTTP thread sends each of the first two on its own (the lane is idle, then one group
    // is out): one holds the session's place, the other waits in its line.
    await pause(100);
    const holding = send(2);
    await pause(20);
    const waiting = send(3);
    await pause(20);
    // With two groups out, the next requests gather on the HTTP thread; eight fill a batch, and the group goes
    // at once: the session has no room for it, and each of its requests gets 429.
    const refused = await Promise.all(
      Array.from({ length: 8 }, (_, index) => send(4 + index).catch((error: unknown) => error)),
    );
    for (const error of refused) {
      expect(error).toBeInstanceOf(OipHttpError);
      expect((error as OipHttpError).status).toBe(429);
      expect((error as OipHttpError).headers.get("retry-after")).toBe("1");
    }
    const answers = await Promise.all([holding, waiting]);
    expect(answers.map((answer) => answer.response.outputs[0]?.shape)).toEqual([
      [1, 8],
      [1, 8],
    ]);
    // One line for each of the two answered down the lane.
    const laneLines = (some: ReturnType<typeof requestLines>) => some.filter((line) => line.lane === true);
    expect(laneLines(await requestLinesOnce((some) => laneLines(some).length >= 2))).toHaveLength(2);
  });

  test("unloading a model while its requests come down lanes: every request is answered, and the unload completes", {
    timeout: 60_000,
  }, async () => {
    agent = await startLaneAgent();
    await send(1);
    await pause(100);
    const url = agent.url;
    let stop = false;
    const misses: number[] = [];
    let unloadedAt: number | undefined;
    const clients = Array.from({ length: 4 }, async (_, client) => {
      let answered = 0;
      while (!stop) {
        const answer = await send(client);
        if (answer.headers.get("x-switchyard-cache") === "miss") misses.push(Date.now());
        answered += 1;
      }
      return answered;
    });
    await pause(300);
    const unload = await fetch(`${url}/v2/repository/models/${MODEL}/unload`, { method: "POST" });
    expect(unload.status).toBe(200);
    unloadedAt = Date.now();
    await pause(300);
    stop = true;
    const answered = await Promise.all(clients);
    expect(answered.every((count) => count > 0)).toBe(true);
    // It was unloaded under its lanes: requests after it loaded it again.
    expect(misses.some((at) => at >= (unloadedAt ?? Number.POSITIVE_INFINITY) - 300)).toBe(true);
  });
});
