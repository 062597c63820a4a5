import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { encodeMlp } from "../../scripts/lib/onnx-builder.ts";
import { encodeInferRequest } from "../../shared/oip/codec.ts";
import {
  decodeBinaryFrame,
  HelloSchema,
  MAX_SIGNATURES_PER_FRAME,
  ResultHeaderSchema,
  StateSchema,
} from "../../shared/protocol/frames.ts";
import { MULTIPLEX_MODELS } from "../fixtures/paths.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import { temporaryRepository } from "./harness/behaviour-models.ts";
import { mlpRequest } from "./harness/oip-client.ts";
import { type ReceivedFrame, ScriptedGateway } from "./harness/scripted-gateway.ts";

// What a real agent process with many models tells the gateway, and that its frames do not grow with them:
// its models' timings (ReplicaState.timings), every one in its hello, and in each result frame only those of
// the models it holds and of those changed since its last state frame; their signatures, each once, a frame's
// worth at a time.

let gateway: ScriptedGateway;
let agent: AgentProcess;

beforeAll(async () => {
  gateway = await ScriptedGateway.start();
  agent = await startAgent({
    gateway: gateway.url,
    name: "timings",
    token: "scripted-token",
    args: ["--max-models", "1"],
    waitConnected: false,
  });
});

afterAll(async () => {
  await agent?.stop("SIGKILL");
  await gateway?.stop();
});

const model = (index: number) => MULTIPLEX_MODELS[index] ?? "";
const body = encodeInferRequest(mlpRequest(1), { binaryInputs: false }).body;

function resultFor(id: string) {
  return (frame: ReceivedFrame) => {
    if (frame.binary === undefined || frame.on !== "data") return undefined;
    const decoded = decodeBinaryFrame(frame.binary, ResultHeaderSchema);
    return decoded.header.id === id ? decoded.header : undefined;
  };
}

describe("a replica's timings on the wire", () => {
  test("a result frame carries the timings of the model it holds, not of those it ran before; a new hello carries all of them, and every signature again", async () => {
    const first = await gateway.connection(0);
    const firstHello = HelloSchema.parse(await first.waitForJson("hello"));
    first.welcome(1_000);
    const timingsOf = async (id: string, index: number) => {
      first.infer({ id, replica: "0", model: model(index), timeoutMs: 30_000 }, body);
      const header = await first.waitFor(`result ${id}`, resultFor(id));
      // The state frame that follows carries the run's figures (it goes straight to the registry): from then
      // on they count as sent.
      await first.waitForJson("state", (frame) => {
        const state = StateSchema.safeParse(frame);
        return state.success && (state.data.replicas[0]?.timings[`${model(index)}:1`]?.runs ?? 0) >= 1;
      });
      return Object.keys(header.state?.timings ?? {});
    };
    // One model at a time (--max-models 1): each evicts the one before, whose figures a state frame carried.
    expect(await timingsOf("t0", 0)).toEqual([`${model(0)}:1`]);
    expect(await timingsOf("t1", 1)).toEqual([`${model(1)}:1`]);
    expect(await timingsOf("t2", 2)).toEqual([`${model(2)}:1`]);
    // A connection of its own starts from the hello: it has every model's figures.
    first.socket.close(1012, "gateway restarting");
    const second = await gateway.connection(1, 10_000);
    const hello = HelloSchema.parse(await second.waitForJson("hello"));
    expect(Object.keys(hello.replicas[0]?.timings ?? {}).sort()).toEqual(
      [0, 1, 2].map((index) => `${model(index)}:1`).sort(),
    );
    expect(hello.replicas[0]?.timings[`${model(0)}:1`]).toMatchObject({ loads: 1, runs: 1 });
    // And every signature again, as to any new connection.
    expect(hello.signatures.map((signature) => signature.name).sort()).toEqual(
      firstHello.signatures.map((signature) => signature.name).sort(),
    );
    expect(hello.signatures.length).toBeGreaterThan(0);
  });
});

describe("signatures on the wire", () => {
  let repository: string;
  let many: ScriptedGateway;
  let manyAgent: AgentProcess;
  const count = MAX_SIGNATURES_PER_FRAME + 40;

  beforeAll(async () => {
    repository = temporaryRepository(
      "many-models",
      Array.from({ length: count }, (_, index) => {
        const name = `many-${String(index).padStart(4, "0")}`;
        return { name, bytes: encodeMlp({ inputDim: 16, hiddenDim: 4, outputDim: 2, seed: index, name }) };
      }),
    );
    many = await ScriptedGateway.start();
    manyAgent = await startAgent({
      gateway: many.url,
      name: "many",
      token: "scripted-token",
      models: repository,
      waitConnected: false,
    });
  });

  afterAll(async () => {
    await manyAgent?.stop("SIGKILL");
    await many?.stop();
    if (repository !== undefined) rmSync(repository, { recursive: true, force: true });
  });

  test("a repository of more models than a frame carries: the hello carries a frame's worth, the state frames after the welcome the rest, each once", async () => {
    const connection = await many.connection(0, 60_000);
    const hello = HelloSchema.parse(await connection.waitForJson("hello", () => true, 60_000));
    expect(hello.signatures).toHaveLength(MAX_SIGNATURES_PER_FRAME);
    connection.welcome(1_000);
    await connection.waitForJson(
      "state",
      (frame) => Array.isArray(frame.signatures) && frame.signatures.length > 0,
    );
    // Whatever more state frames follow carry none again.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const states = connection
      .json()
      .filter((frame) => frame.type === "state")
      .map((frame) => StateSchema.parse(frame));
    const names = [...hello.signatures, ...states.flatMap((state) => state.signatures)].map(
      (signature) => signature.name,
    );
    expect(names).toHaveLength(count);
    expect(new Set(names).size).toBe(count);
  });
});
