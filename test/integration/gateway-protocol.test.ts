import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { describeOnnxFile } from "../../backend/models/file-byte-source.ts";
import { parseAgentMessage } from "../../gateway/registry/agent-messages.ts";
import { decodeInferResponse, encodeInferRequest } from "../../shared/oip/codec.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import {
  AgentTextFrameSchema,
  AnswerSchema,
  decodeBinaryFrame,
  type ErrorFrame,
  HelloSchema,
  QUERY_ANSWERS,
  type Query,
  type QueryFrame,
  type ResultHeader,
  ResultHeaderSchema,
  StateSchema,
} from "../../shared/protocol/frames.ts";
import { mlpWeights, referenceMlp } from "../fixtures/onnx-builder.ts";
import {
  BIG_MODEL,
  DET_MODEL,
  LOADABLE_MODELS,
  MULTIPLEX_MODELS,
  MULTIPLEX_SPECS,
  repoModelPath,
} from "../fixtures/paths.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import { mlpRequest } from "./harness/oip-client.ts";
import { withAgentFrozen } from "./harness/pool-probes.ts";
import { describeProcesses } from "./harness/process-group.ts";
import { type AgentConnection, type ReceivedFrame, ScriptedGateway } from "./harness/scripted-gateway.ts";

// The agent's side of the wire protocol, held to shared/protocol/frames.ts by a scripted gateway that sends
// exactly what a test wants (malformed frames too) and records what a real agent process answers.

const TOKEN = "scripted-token";
const HEARTBEAT_MS = 200;
let gateway: ScriptedGateway;
let agent: AgentProcess;
let first: AgentConnection;

beforeAll(async () => {
  gateway = await ScriptedGateway.start();
  agent = await startAgent({
    gateway: gateway.url,
    name: "proto",
    token: TOKEN,
    pool: "protopool",
    args: [
      "--max-concurrency",
      "1",
      "--preload",
      MULTIPLEX_MODELS[0] ?? "",
      "--hints",
      "adapter-a,adapter-b",
    ],
    waitConnected: false,
  });
  first = await gateway.connection(0);
});

afterEach((context) => {
  if (context.task.result?.state === "fail") {
    const seen = gateway.connections.flatMap((connection) =>
      connection.frames.map((frame) =>
        frame.binary === undefined
          ? (frame.text ?? "").slice(0, 160)
          : `result ${decodeBinaryFrame(frame.binary, ResultHeaderSchema).header.id}`,
      ),
    );
    console.log(
      describeProcesses([agent.process]),
      "\n---- frames ----\n",
      seen.filter((text) => text !== "ping").join("\n"),
    );
  }
});

afterAll(async () => {
  await agent?.stop("SIGKILL");
  await gateway?.stop();
});

const jsonBody = (batch: number, seed = 1, binaryOutputs?: boolean) =>
  encodeInferRequest(mlpRequest(batch, seed), {
    binaryInputs: false,
    ...(binaryOutputs === undefined ? {} : { binaryOutputs }),
  });

/** The result frame for `id`, which must come on the data socket (a result on the control one never matches). */
function resultFor(id: string) {
  return (frame: ReceivedFrame) => {
    if (frame.binary === undefined || frame.on !== "data") return undefined;
    const decoded = decodeBinaryFrame(frame.binary, ResultHeaderSchema);
    return decoded.header.id === id ? decoded : undefined;
  };
}

/** Runs `send` while the agent process is stopped (SIGSTOP), then lets it go on with everything queued. */
async function whileFrozen(frozen: AgentProcess, send: () => void): Promise<void> {
  await withAgentFrozen(frozen, async () => {
    send();
    await new Promise((resolve) => setTimeout(resolve, 200));
  });
}

/** The error frame for `id`, which must come on the data socket. */
const errorFor = async (connection: AgentConnection, id: string) => {
  const error = (await connection.waitForJson("error", (frame) => frame.id === id)) as ErrorFrame;
  expect(connection.json().find((frame) => frame.type === "error" && frame.id === id)?.on).toBe("data");
  return error;
};

describe("joining", () => {
  test("dials /agent/connect with the token and the pool, and says hello with its replicas and hints", async () => {
    expect(first.request.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(new URL(first.request.url ?? "", "ws://x").searchParams.get("pool")).toBe("protopool");
    const hello = HelloSchema.parse(await first.waitForJson("hello"));
    // Its data socket was open before the hello that names it.
    expect(first.data.readyState).toBe(first.data.OPEN);
    expect(hello.agent.name).toBe("proto");
    expect(hello.hints).toEqual(["adapter-a", "adapter-b"]);
    expect(hello.replicas).toHaveLength(1);
    // The preload finished before the agent joined, so the gateway knows about it from the start.
    expect(hello.replicas[0]?.loaded.map((model) => model.name)).toEqual([MULTIPLEX_MODELS[0]]);
    expect(hello.replicas[0]?.maxConcurrency).toBe(1);
  });

  test("after the welcome it pings every heartbeatMs", async () => {
    const welcomedAt = performance.now();
    // On each socket: a data socket through a proxy can die as silently as a control one.
    const pings = (on: string) => first.frames.filter((frame) => frame.text === "ping" && frame.on === on);
    // None before the welcome (the hello test above ran first, so the agent had time to send any).
    expect(pings("control")).toHaveLength(0);
    expect(pings("data")).toHaveLength(0);
    first.welcome(HEARTBEAT_MS);
    await agent.process.waitForOutput(/connected to the gateway agentId=scripted/, 5_000);
    // Counted as they come rather than in a fixed window, which a stall of either process would empty.
    for (const on of ["control", "data"]) {
      await first.waitFor(`five pings on the ${on} socket`, () => (pings(on).length >= 5 ? true : undefined));
    }
    const elapsed = performance.now() - welcomedAt;
    for (const on of ["control", "data"]) {
      const at = pings(on).map((frame) => frame.at);
      // Not more often than every heartbeatMs...
      expect(at.length, on).toBeLessThanOrEqual(Math.floor(elapsed / HEARTBEAT_MS) + 1);
      // ...nor less often: a stall of the agent stretches one gap, a stall of this process bunches arrivals,
      // but an agent that pinged every other beat would have no gap this short.
      const gaps = at.slice(1).map((time, index) => time - (at[index] ?? 0));
      expect(Math.min(...gaps), on).toBeLessThanOrEqual(1.5 * HEARTBEAT_MS);
    }
  });
});

/**
 * The contract between the real agent and the registry: every frame the agent process writes must parse
 * with the very schemas the registry reads them with (shared/protocol/frames.ts), fields without defaults
 * included. The workers tests' fake agent builds its frames from the same types, so neither side can
 * drift from the other without a test failing.
 */
describe("the contract with the registry's schemas", () => {
  let queries = 0;
  async function ask<K extends Query["kind"]>(query: Extract<Query, { kind: K }>) {
    queries += 1;
    const id = `contract-${queries}`;
    const frame: QueryFrame = { type: "query", id, query };
    first.socket.send(JSON.stringify(frame));
    const answer = AnswerSchema.parse(await first.waitForJson("answer", (candidate) => candidate.id === id));
    return answer.result;
  }

  test("every frame the agent sent parses as the registry parses it (its own parser, limits included)", async () => {
    await first.waitForJson("hello");
    const texts = first.frames.filter(
      (frame) => frame.text !== undefined && frame.text !== "ping" && frame.text !== "pong",
    );
    expect(texts.length).toBeGreaterThan(0);
    for (const frame of texts) {
      AgentTextFrameSchema.parse(JSON.parse(frame.text ?? ""));
      expect(parseAgentMessage(frame.text ?? "").kind).toBe("text");
    }
    // And a result frame, from a request answered now.
    const id = "contract-result";
    first.infer({ id, replica: "0", model: MULTIPLEX_MODELS[0] ?? "", timeoutMs: 30_000 }, jsonBody(1).body);
    const bytes = await first.waitFor(`result ${id}`, (frame) =>
      resultFor(id)(frame) === undefined ? undefined : frame.binary,
    );
    // The registry gets each websocket message as an ArrayBuffer of its own.
    const parsed = parseAgentMessage(Uint8Array.from(bytes).buffer);
    expect(parsed.kind === "result" && parsed.header.timings.agentMs).toBeGreaterThan(0);
  });

  test("the hello carries the signature of every model of its repository, read without loading them", async () => {
    const hello = HelloSchema.parse(await first.waitForJson("hello"));
    expect(hello.repository.kind).toBe("own");
    const described = new Map(
      hello.signatures.map((signature) => [`${signature.name}:${signature.version}`, signature]),
    );
    for (const { name, versions } of LOADABLE_MODELS) {
      for (const version of versions) {
        const signature = described.get(`${name}:${version ?? "1"}`);
        expect(signature, `${name}:${version}`).toBeDefined();
        expect({ inputs: signature?.inputs, outputs: signature?.outputs }).toEqual(
          await describeOnnxFile(repoModelPath(name, version)),
        );
      }
    }
    // Only the preloaded model was loaded to do it.
    expect(hello.replicas[0]?.loaded.map((model) => model.name)).toEqual([MULTIPLEX_MODELS[0]]);
  });

  test("answers describe, stats, load and unload queries with values of the agreed schemas", async () => {
    const described = await ask({ kind: "describe", model: DET_MODEL });
    expect(described.ok).toBe(true);
    if (described.ok) expect(QUERY_ANSWERS.describe.parse(described.value).name).toBe(DET_MODEL);

    const missing = await ask({ kind: "describe", model: "nope" });
    expect(missing).toEqual({ ok: false, status: 404, message: "model 'nope' not found" });

    const loaded = await ask({ kind: "load", replica: "0", model: MULTIPLEX_MODELS[1] ?? "", pin: true });
    expect(loaded.ok).toBe(true);
    if (loaded.ok) {
      const { state } = QUERY_ANSWERS.load.parse(loaded.value);
      expect(state.loaded.find((model) => model.name === MULTIPLEX_MODELS[1])?.pinned).toBe(true);
    }
    const stats = await ask({ kind: "stats" });
    expect(stats.ok && QUERY_ANSWERS.stats.parse(stats.value)).toBeTruthy();

    const unloaded = await ask({ kind: "unload", model: MULTIPLEX_MODELS[1] ?? "", evict: true });
    expect(unloaded).toEqual({ ok: true, value: { unloaded: true } });
    const noReplica = await ask({ kind: "load", replica: "7", model: DET_MODEL, pin: false });
    expect(noReplica.ok ? 200 : noReplica.status).toBe(404);
    // The state frames that followed parse too.
    for (const frame of first.json().filter((candidate) => candidate.type === "state"))
      StateSchema.parse(frame);
  });
});

describe("requests", () => {
  test("a result frame carries the OIP response as the client gets it, with fresh state", async () => {
    const model = MULTIPLEX_MODELS[1] ?? "";
    const body = jsonBody(2, 3);
    first.infer({ id: "r-json", replica: "0", model, timeoutMs: 30_000 }, body.body);
    const { header, body: response } = await first.waitFor("result r-json", resultFor("r-json"));
    expect(header).toMatchObject({
      replica: "0",
      model: { name: model, version: "1" },
      cache: "miss",
      contentType: "application/json",
    } satisfies Partial<ResultHeader>);
    expect(header.headerLength).toBeUndefined();
    expect(header.state?.loaded.map((loaded) => loaded.name)).toContain(model);
    expect(header.state?.inFlight).toBe(0);
    const decoded = decodeInferResponse(response);
    const spec = MULTIPLEX_SPECS[1];
    if (spec === undefined) throw new Error("fixture spec missing");
    const input = mlpRequest(2, 3).inputs[0] as Tensor;
    const expected = referenceMlp(mlpWeights(spec), input.data as Float32Array, 2);
    const got = decoded.outputs[0]?.data as Float32Array;
    expect(Math.max(...got.map((value, index) => Math.abs(value - (expected[index] ?? 0))))).toBeLessThan(
      1e-4,
    );
  });

  test("binary_data_output gives a binary body and its header length", async () => {
    const body = jsonBody(1, 4, true);
    first.infer(
      { id: "r-bin", replica: "0", model: MULTIPLEX_MODELS[1] ?? "", timeoutMs: 30_000 },
      body.body,
    );
    const { header, body: response } = await first.waitFor("result r-bin", resultFor("r-bin"));
    expect(header.cache).toBe("hit");
    expect(header.contentType).toBe("application/octet-stream");
    expect(header.headerLength).toBeGreaterThan(0);
    expect(decodeInferResponse(response, header.headerLength).outputs[0]?.shape).toEqual([1, 8]);
  });

  test("state frames follow the replica's changes, at most one per 50 ms, the last one current", async () => {
    const since = performance.now();
    first.infer(
      { id: "r-state", replica: "0", model: MULTIPLEX_MODELS[2] ?? "", timeoutMs: 30_000 },
      jsonBody(1).body,
    );
    await first.waitFor("result r-state", resultFor("r-state"));
    await new Promise((resolve) => setTimeout(resolve, 150));
    const windowMs = performance.now() - since;
    const states = first.json().filter((frame) => frame.type === "state" && frame.at >= since);
    expect(states.length).toBeGreaterThan(0);
    // Every one was sent within the window, where the agent may send one per 50 ms. (Arrival times cannot be
    // compared one by one: the test process may read several frames in one go.)
    expect(states.length).toBeLessThanOrEqual(Math.floor(windowMs / 50) + 1);
    const last = StateSchema.parse(states.at(-1));
    expect(last.replicas[0]?.inFlight).toBe(0);
    expect(last.replicas[0]?.loaded.map((model) => model.name)).toContain(MULTIPLEX_MODELS[2]);
  });

  test("bad input, an unknown model and an unknown replica: errors that say the replica never started", async () => {
    const wrongShape = encodeInferRequest(
      { inputs: [{ name: "x", datatype: "FP32", shape: [1, 3], data: new Float32Array(3) }] },
      { binaryInputs: false },
    );
    first.infer(
      { id: "e-shape", replica: "0", model: MULTIPLEX_MODELS[1] ?? "", timeoutMs: 30_000 },
      wrongShape.body,
    );
    first.infer(
      { id: "e-json", replica: "0", model: MULTIPLEX_MODELS[1] ?? "", timeoutMs: 30_000 },
      "{not json",
    );
    first.infer({ id: "e-model", replica: "0", model: "no_such_model", timeoutMs: 30_000 }, jsonBody(1).body);
    first.infer(
      { id: "e-replica", replica: "7", model: MULTIPLEX_MODELS[1] ?? "", timeoutMs: 30_000 },
      jsonBody(1).body,
    );
    const errors = await Promise.all(
      ["e-shape", "e-json", "e-model", "e-replica"].map((id) => errorFor(first, id)),
    );
    expect(errors.map(({ status, started }) => ({ status, started }))).toEqual([
      { status: 400, started: false },
      { status: 400, started: false },
      { status: 404, started: false },
      { status: 503, started: false },
    ]);
    expect(errors[3]?.message).toMatch(/no replica '7'/);
  });

  test("malformed frames are ignored (and answered when they name a request); the agent carries on", async () => {
    first.socket.send("{ this is not json");
    first.socket.send(JSON.stringify({ type: "welcome", protocol: 99 }));
    first.socket.send(JSON.stringify({ type: "launch-missiles" }));
    first.socket.send(Uint8Array.of(1, 2));
    first.data.send("{ this is not json either");
    first.data.send(JSON.stringify({ type: "query", id: "q-wrong-socket", query: { kind: "stats" } }));
    first.data.send(Uint8Array.of(1, 2));
    // A header that parses as JSON but not as an infer header: its id is still readable, so it is answered.
    const header = new TextEncoder().encode(JSON.stringify({ type: "infer", id: "e-header", replica: "0" }));
    const frame = new Uint8Array(4 + header.length);
    new DataView(frame.buffer).setUint32(0, header.length, true);
    frame.set(header, 4);
    first.data.send(frame);
    const refused = await errorFor(first, "e-header");
    expect(refused).toMatchObject({ status: 400, started: false });

    first.infer(
      { id: "after", replica: "0", model: MULTIPLEX_MODELS[1] ?? "", timeoutMs: 30_000 },
      jsonBody(1).body,
    );
    await first.waitFor("result after", resultFor("after"));
    expect(first.socket.readyState).toBe(first.socket.OPEN);
    expect(first.data.readyState).toBe(first.data.OPEN);
    expect(agent.process.output()).toMatch(/ignored a frame/);
    // A query on the data socket is not answered there (queries belong to the control socket).
    expect(
      first.json().some((received) => received.type === "answer" && received.id === "q-wrong-socket"),
    ).toBe(false);
  });

  test("a request still waiting at its timeoutMs is answered 504; a cancelled one is answered when its run ends", async () => {
    const slow = encodeInferRequest(mlpRequest(2000, 1), { binaryInputs: true });
    const small = MULTIPLEX_MODELS[1] ?? "";
    // Both models loaded and their versions known first, so the three below take the slot in arrival order.
    first.infer({ id: "warm-big", replica: "0", model: BIG_MODEL, timeoutMs: 30_000 }, jsonBody(1).body);
    first.infer({ id: "warm-small", replica: "0", model: small, timeoutMs: 30_000 }, jsonBody(1).body);
    await first.waitFor("result warm-big", resultFor("warm-big"));
    await first.waitFor("result warm-small", resultFor("warm-small"));
    // The agent is frozen while these go out, so it reads all four at once, in order, before running any,
    // however the machine paces the test's sends against the agent's reads.
    await whileFrozen(agent, () => {
      first.infer(
        { id: "slow", replica: "0", model: BIG_MODEL, timeoutMs: 30_000, headerLength: slow.headerLength },
        slow.body,
      );
      // One slot: these wait behind the slow one, and their deadlines pass meanwhile. (When the run ends,
      // the first in line takes the slot before its timer gets to run; the second cannot.)
      first.infer({ id: "late-1", replica: "0", model: small, timeoutMs: 100 }, jsonBody(1).body);
      first.infer({ id: "late-2", replica: "0", model: small, timeoutMs: 100 }, jsonBody(1).body);
      first.data.send(JSON.stringify({ type: "cancel", id: "slow" }));
    });
    expect(await errorFor(first, "late-2")).toMatchObject({ status: 504, started: true });
    const cancelled = await errorFor(first, "slow");
    expect(cancelled).toMatchObject({ status: 504, started: true, message: "cancelled by the gateway" });
    // Exactly one answer each: late-1 was answered one way or the other, slow never with its outputs.
    await first.waitFor(
      "an answer to late-1",
      (frame) => resultFor("late-1")(frame) ?? (frame.text?.includes('"id":"late-1"') ? true : undefined),
    );
    expect(first.frames.some((received) => resultFor("slow")(received) !== undefined)).toBe(false);
  });
});

describe("the connection", () => {
  test("a gateway that stops answering pings is dropped; the agent reconnects and says hello again", async () => {
    first.answerPings = false;
    const { code } = await first.closed;
    expect(code).toBe(1006);
    const second = await gateway.connection(1, 10_000);
    const hello = HelloSchema.parse(await second.waitForJson("hello"));
    // The full state again: what it loaded on the previous connection is still there.
    expect(hello.replicas[0]?.loaded.map((model) => model.name)).toEqual(
      expect.arrayContaining([MULTIPLEX_MODELS[1], MULTIPLEX_MODELS[2]]),
    );
    second.welcome(HEARTBEAT_MS);
    // Neither socket is answered, so whichever of them the heartbeat finds silent first ends the connection.
    expect(agent.process.output()).toMatch(/(the gateway|the data socket) went silent, reconnecting/);
  });

  test("a connection closed by the gateway is dialled again after a backoff", async () => {
    const second = await gateway.connection(1);
    second.socket.close(1012, "gateway restarting");
    const third = await gateway.connection(2, 10_000);
    await third.waitForJson("hello");
    third.welcome(HEARTBEAT_MS);
    await agent.process.waitForOutput(/disconnected from the gateway .*code=1012/, 1_000);
  });

  test("a data socket closed by the gateway ends the connection: the agent closes its control socket and dials both again", async () => {
    const third = await gateway.connection(2);
    third.data.close(1011, "relay failed");
    expect(await third.closed).toMatchObject({ code: 1001 });
    const fourth = await gateway.connection(3, 10_000);
    const hello = HelloSchema.parse(await fourth.waitForJson("hello"));
    // A new channel: nothing of the broken connection is reused.
    expect(hello.channel).not.toBe(third.channel);
    fourth.welcome(HEARTBEAT_MS);
    await agent.process.waitForOutput(/disconnected from the gateway .*the data socket closed/, 5_000);
  });

  test("SIGTERM: drain frame, the requests in flight are answered, then close 1001 and exit 0", async () => {
    const third = await gateway.connection(3);
    // Three runs in line, read together (see whileFrozen), so that work is in flight whenever the agent reads
    // a frame; the signal goes once the first is answered.
    const ids = ["last-1", "last-2", "last-3"];
    await whileFrozen(agent, () => {
      for (const [index, id] of ids.entries()) {
        const slow = encodeInferRequest(mlpRequest(1000, index), { binaryInputs: true });
        third.infer(
          { id, replica: "0", model: BIG_MODEL, timeoutMs: 30_000, headerLength: slow.headerLength },
          slow.body,
        );
      }
    });
    await third.waitFor("result last-1", resultFor("last-1"));
    const exitCode = agent.stop("SIGTERM");
    await third.waitForJson("drain");
    // Sent after the drain: refused so that the gateway can send it elsewhere.
    third.infer(
      { id: "too-late", replica: "0", model: MULTIPLEX_MODELS[1] ?? "", timeoutMs: 30_000 },
      jsonBody(1).body,
    );
    expect(await errorFor(third, "too-late")).toMatchObject({ status: 503, started: false });
    for (const id of ids) await third.waitFor(`result ${id}`, resultFor(id));
    expect(await third.closed).toEqual({ code: 1001, reason: "agent draining" });
    expect(await exitCode).toBe(0);
  });
});
