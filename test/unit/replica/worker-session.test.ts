import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import * as ort from "onnxruntime-node";
import { afterEach, describe, expect, test } from "vitest";
import { openRepository } from "../../../backend/models/open-repository.ts";
import { DEFAULT_BATCHING } from "../../../backend/replica/batch-settings.ts";
import { OnnxModelLoader } from "../../../backend/replica/onnx-loader.ts";
import { sessionOptions } from "../../../backend/replica/session-options.ts";
import { SessionGoneError } from "../../../backend/replica/session-thread.ts";
import { WorkerSession } from "../../../backend/replica/worker-session.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import { mlpWeights, referenceMlp, seededFloats } from "../../fixtures/onnx-builder.ts";
import {
  BROKEN_MODEL,
  IDENTITY_MODELS,
  MULTIPLEX_MODELS,
  MULTIPLEX_SPECS,
  REPO_DIR,
  repoModelPath,
} from "../../fixtures/paths.ts";
import { expectAllClose } from "../../support/close-to.ts";
import { CRASH_EXIT_CODE, CRASH_VALUE } from "./crash-trigger.ts";

// Sessions in worker threads, on real onnxruntime: what the replica relies on.

const OPTIONS = sessionOptions({ kind: "cpu" }, { intraOpThreads: 1 });
const MLP = MULTIPLEX_MODELS[0] ?? "";
const CRASHING_WORKER = new URL("./crashing-session-worker.ts", import.meta.url);

const sessions: WorkerSession[] = [];
afterEach(async () => {
  await Promise.all(sessions.splice(0).map((session) => session.release()));
});

async function open(model: string, entry?: URL, spinMs?: number): Promise<WorkerSession> {
  const session = await WorkerSession.create(repoModelPath(model), OPTIONS, { entry, spinMs });
  sessions.push(session);
  return session;
}

/** CPU milliseconds this process (its worker threads included) spends over `ms` from now, while the test waits. */
async function cpuMsOver(ms: number): Promise<number> {
  const start = process.cpuUsage();
  await sleep(ms);
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
}

const mlpInput = (rows: number, first?: number): Tensor => {
  const data = seededFloats(rows, rows * 16);
  if (first !== undefined) data[0] = first;
  return { name: "x", datatype: "FP32", shape: [rows, 16], data };
};

function expectedMlp(input: Tensor): Float32Array {
  const spec = MULTIPLEX_SPECS[0];
  if (spec === undefined) throw new Error("fixture spec missing");
  return referenceMlp(mlpWeights(spec), input.data as Float32Array, input.shape[0] ?? 0);
}

async function failureOf(promise: Promise<unknown>): Promise<Error> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  if (!(outcome instanceof Error)) throw new Error("expected a rejection with an Error");
  return outcome;
}

describe("WorkerSession", () => {
  test("reports the model's inputs and outputs and computes what it computes; the caller's inputs stay", async () => {
    const session = await open(MLP);
    expect(session.inputs).toEqual([{ name: "x", datatype: "FP32", shape: [-1, 16] }]);
    expect(session.outputs).toEqual([{ name: "y", datatype: "FP32", shape: [-1, 8] }]);
    const input = mlpInput(3);
    const copy = Float32Array.from(input.data as Float32Array);
    const {
      outputs: [output],
      sessionMs,
    } = await session.run([input], ["y"]);
    expect(sessionMs).toBeGreaterThan(0);
    expect(output?.shape).toEqual([3, 8]);
    expectAllClose(output?.data as Float32Array, expectedMlp(input));
    // Not handed over: copied, so the caller can send the same tensor again.
    expect(input.data).toEqual(copy);
  });

  test("handOver moves the feeds' buffers to the worker instead of copying them", async () => {
    const session = await open(MLP);
    const input = mlpInput(2);
    const expected = expectedMlp(input);
    const {
      outputs: [output],
    } = await session.run([input], ["y"], { handOver: true });
    expectAllClose(output?.data as Float32Array, expected);
    expect((input.data as Float32Array).byteLength).toBe(0);
  });

  test("onnxruntime's errors come back with the messages it gives in the main thread", async () => {
    const badShape: Tensor = { name: "x", datatype: "FP32", shape: [1, 15], data: new Float32Array(15) };
    const direct = await ort.InferenceSession.create(repoModelPath(MLP), OPTIONS);
    const expected = await failureOf(
      direct.run({ x: new ort.Tensor("float32", new Float32Array(15), [1, 15]) }),
    );
    await direct.release();
    const session = await open(MLP);
    const failure = await failureOf(session.run([badShape], ["y"]));
    expect(failure.message).toBe(expected.message);
    // The session stays usable after a refused run.
    expect((await session.run([mlpInput(1)], ["y"])).outputs[0]?.shape).toEqual([1, 8]);

    const brokenPath = repoModelPath(BROKEN_MODEL);
    const expectedLoad = await failureOf(ort.InferenceSession.create(brokenPath, OPTIONS));
    const loadFailure = await failureOf(WorkerSession.create(brokenPath, OPTIONS));
    expect(loadFailure.message).toBe(expectedLoad.message);
  });

  test("FP16 bit patterns and BYTES elements round-trip through the worker", async () => {
    const fp16 = await open(IDENTITY_MODELS.FP16);
    const bits = Uint16Array.of(0x3c00, 0x3c01, 0xc000, 0x7bff, 0x0001, 0x8000);
    const {
      outputs: [half],
    } = await fp16.run([{ name: "x", datatype: "FP16", shape: [2, 3], data: bits }], ["y"]);
    expect(half?.datatype).toBe("FP16");
    expect(half?.data).toEqual(bits);

    const bytes = await open(IDENTITY_MODELS.BYTES);
    const encoder = new TextEncoder();
    // One element is a view into a larger buffer, as elements of a binary request body are.
    const body = encoder.encode("prefix|élément ✓|suffix");
    const elements = [encoder.encode("a"), body.subarray(7, 7 + encoder.encode("élément ✓").length)];
    const {
      outputs: [text],
    } = await bytes.run([{ name: "x", datatype: "BYTES", shape: [1, 2], data: elements }], ["y"]);
    expect(text?.datatype).toBe("BYTES");
    const texts = ((text?.data ?? []) as Uint8Array[]).map((element) => new TextDecoder().decode(element));
    expect(texts).toEqual(["a", "élément ✓"]);
  });

  test("release waits for the runs sent before it, ends the worker, and later runs fail cleanly", async () => {
    const session = await open(MLP);
    expect(session.running).toBe(true);
    const input = mlpInput(4);
    const pending = session.run([input], ["y"]);
    await session.release();
    expectAllClose((await pending).outputs[0]?.data as Float32Array, expectedMlp(input));
    expect(session.running).toBe(false);
    const failure = await failureOf(session.run([mlpInput(1)], ["y"]));
    expect(failure).toBeInstanceOf(SessionGoneError);
    expect((failure as SessionGoneError).reason).toBe("released");
    expect(failure.message).toMatch(/was released/);
    await session.release();
  });

  test("runs sent together each get their own answer, and a release sent after them waits for every one", async () => {
    // Runs are not chained on the worker (session-worker.ts): those sent in one turn run back to back.
    const session = await open(MLP);
    const inputs = Array.from({ length: 16 }, (_, index) => mlpInput(1 + (index % 4), index));
    const pending = inputs.map((input) => session.run([input], ["y"]));
    await session.release();
    const answers = await Promise.all(pending);
    for (const [index, answer] of answers.entries()) {
      expectAllClose(answer.outputs[0]?.data as Float32Array, expectedMlp(inputs[index] as Tensor));
    }
  });

  test("the time each run reports is its own, not that of the runs sent before it with it", async () => {
    const session = await open(MLP);
    const inputs = Array.from({ length: 16 }, (_, index) => mlpInput(4096, index));
    const sent = performance.now();
    const answers = await Promise.all(inputs.map((input) => session.run([input], ["y"])));
    const wallMs = performance.now() - sent;
    // They ran one after another: their own times add up to no more than the wait for all of them.
    const sum = answers.reduce((total, answer) => total + answer.sessionMs, 0);
    expect(sum).toBeLessThanOrEqual(wallMs);
  });

  test("with spinMs its thread keeps polling after a run for that long, then sleeps; without, it sleeps at once", async () => {
    const spinning = await open(MLP, undefined, 400);
    const sleeping = await open(MLP);
    // (Each create starts a spare worker in the background: its start is not what is measured.)
    await sleep(1000);
    await sleeping.run([mlpInput(1)], ["y"]);
    // A thread that polls takes a core (a loaded machine may give it less); one that sleeps, next to nothing.
    expect(await cpuMsOver(200)).toBeLessThan(40);
    await spinning.run([mlpInput(1)], ["y"]);
    expect(await cpuMsOver(200)).toBeGreaterThan(60);
    await sleep(300);
    expect(await cpuMsOver(200)).toBeLessThan(40);
  });

  test("a worker that dies fails the runs waiting on it and every later one; release still works", async () => {
    const session = await open(MLP, CRASHING_WORKER);
    expect((await session.run([mlpInput(1)], ["y"])).outputs[0]?.shape).toEqual([1, 8]);
    const crashing = session.run([mlpInput(1, CRASH_VALUE)], ["y"]);
    const queued = session.run([mlpInput(1)], ["y"]);
    for (const failure of [await failureOf(crashing), await failureOf(queued)]) {
      expect(failure).toBeInstanceOf(SessionGoneError);
      expect((failure as SessionGoneError).reason).toBe("exited");
      expect(failure.message).toContain(`stopped unexpectedly (exit code ${CRASH_EXIT_CODE})`);
      expect(failure.message).toContain(repoModelPath(MLP));
    }
    expect(session.running).toBe(false);
    expect(await failureOf(session.run([mlpInput(1)], ["y"]))).toBeInstanceOf(SessionGoneError);
    await session.release();
  });
});

describe("OnnxModelLoader", () => {
  test("a loaded session's worker lives until the loader releases it", async () => {
    const loader = new OnnxModelLoader(
      openRepository(REPO_DIR, { cacheDir: mkdtempSync(join(tmpdir(), "switchyard-cache-")) }),
      { kind: "cpu" },
      { intraOpThreads: 1, batching: DEFAULT_BATCHING },
      () => undefined,
    );
    const { session: loaded, bytes } = await loader.load(`${MLP}:1`);
    expect(bytes).toBeGreaterThan(0);
    expect(loaded.session.running).toBe(true);
    expect(loaded.inputs).toEqual(loaded.session.inputs);
    await loader.release(loaded);
    expect(loaded.session.running).toBe(false);
  });

  test("its sessions' threads spin for the spinMs it was given (a GPU replica's --spin-ms)", async () => {
    const loader = new OnnxModelLoader(
      openRepository(REPO_DIR, { cacheDir: mkdtempSync(join(tmpdir(), "switchyard-cache-")) }),
      { kind: "cpu" },
      { intraOpThreads: 1, batching: DEFAULT_BATCHING, spinMs: 400 },
      () => undefined,
    );
    const { session: loaded } = await loader.load(`${MLP}:1`);
    await loaded.session.run([mlpInput(1)], ["y"]);
    expect(await cpuMsOver(200)).toBeGreaterThan(60);
    await loader.release(loaded);
  });
});
