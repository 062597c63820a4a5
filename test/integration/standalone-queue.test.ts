import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { infer, OipHttpError } from "../../shared/oip/http-client.ts";
import { mlpWeights, referenceMlp } from "../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS, MULTIPLEX_SPECS } from "../fixtures/paths.ts";
import { expectAllClose } from "../support/close-to.ts";
import { type AgentProcess, startHoldingAgent } from "./support/agent-process.ts";

// The standalone agent's queue (requests waiting for a replica) as its clients see it, on both servers: a
// client that gives up while its request waits there frees its place for the next. "Gives up" is a reset
// connection: one that only sends FIN may be a client that half-closed after its request and still reads
// its answer (the server keeps half-open connections: standalone-server.ts), so it is not taken as gone.

const MODEL = MULTIPLEX_MODELS[3] ?? "m003";
const SPEC = MULTIPLEX_SPECS[3];
// A request alone waits this long in its batch for company, holding the replica's one slot meanwhile: the
// queue behind it stays put for that long, whatever the machine's speed.
const HOLD_MS = 4000;

const rowOf = (index: number) =>
  Float32Array.from({ length: 16 }, (_, column) => Math.cos(index * 7 + column));
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each([0, 2])("the standalone queue, HTTP on %i threads", (httpThreads) => {
  let agent: AgentProcess;

  beforeAll(async () => {
    agent = await startHoldingAgent(MODEL, HOLD_MS, [
      "--http-threads",
      String(httpThreads),
      "--max-concurrency",
      "1",
      "--max-queue",
      "1",
    ]);
  });
  afterAll(async () => {
    await agent?.stop();
  });

  const send = (index: number, model = MODEL) =>
    infer(agent.url, model, {
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], data: rowOf(index) }],
    });

  /** A client that sends its request, then resets its connection after `leaveAfterMs`. */
  async function sendAndReset(index: number, leaveAfterMs: number): Promise<void> {
    const { hostname, port } = new URL(agent.url);
    const socket = connect(Number(port), hostname);
    await new Promise((resolve) => socket.once("connect", resolve));
    const body = JSON.stringify({
      inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], data: Array.from(rowOf(index)) }],
    });
    socket.write(
      `POST /v2/models/${MODEL}/infer HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    let answered = false;
    socket.once("data", () => {
      answered = true;
    });
    await pause(leaveAfterMs);
    socket.resetAndDestroy();
    // It waited behind the request that holds the slot: no answer could have come yet.
    expect(answered).toBe(false);
  }

  test("a client that leaves its place in the queue lets the next one in instead of a 429", {
    timeout: 30_000,
  }, async () => {
    // The replica's one slot: taken for HOLD_MS.
    const holding = send(1);
    await pause(500);
    // The queue's one place: taken, then given up.
    await sendAndReset(2, 500);
    await pause(500);
    // Well before the slot frees: its place is free again (it was taken by a request nobody waited for).
    const next = send(3).catch((error: unknown) => {
      throw error instanceof OipHttpError ? new Error(`refused: ${error.status} ${error.message}`) : error;
    });
    const answers = await Promise.all([holding, next]);
    if (SPEC === undefined) throw new Error("fixture spec missing");
    answers.forEach((answer, position) => {
      expectAllClose(
        Array.from(answer.response.outputs[0]?.data as Float32Array),
        referenceMlp(mlpWeights(SPEC), rowOf(position === 0 ? 1 : 3), 1),
      );
    });
  });

  test("with the queue full of clients still waiting, one more gets 429 at once", {
    timeout: 30_000,
  }, async () => {
    // A model no request was answered for yet: its requests all pass through the main thread's queue. (Once
    // one is answered, an HTTP thread gets a lane to the model's session, which bounds what comes down it
    // by itself: standalone-lanes.test.ts.)
    const fresh = MULTIPLEX_MODELS[4] ?? "m004";
    const holding = send(4, fresh);
    await pause(500);
    const waiting = send(5, fresh);
    await pause(500);
    const refused = await send(6, fresh).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(OipHttpError);
    expect((refused as OipHttpError).status).toBe(429);
    await Promise.all([holding, waiting]);
  });
});
