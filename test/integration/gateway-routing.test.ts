import * as ort from "onnxruntime-node";
import { beforeAll, describe, expect, test } from "vitest";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { MLP_INPUT, seededFloats } from "../fixtures/onnx-builder.ts";
import { BIG_MODEL, DET_MODEL, MULTIPLEX_MODELS, repoModelPath } from "../fixtures/paths.ts";
import { PPOCR_DET_DIMS, PPOCR_DET_PATH, ppocrDetSampleInput } from "../fixtures/ppocr.ts";
import { expectAllClose } from "../support/close-to.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import { call, mlpRequest, type Outcome, waitForAgents } from "./harness/oip-client.ts";
import { waitForMetric, withAgentFrozen } from "./harness/pool-probes.ts";
import { watchProcesses } from "./harness/processes-under-test.ts";
import { type GatewayProcess, SECRETS, startGateway } from "./harness/wrangler-dev.ts";

// A real `wrangler dev` and real agent processes: what a client of the gateway sees when it routes.

let gateway: GatewayProcess;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  gateway = await startGateway();
  const started = await Promise.all([
    startAgent({ gateway: gateway.wsUrl, name: "alpha" }),
    startAgent({ gateway: gateway.wsUrl, name: "beta" }),
    // Alone in its pool, one request at a time: the queue test's agent.
    startAgent({
      gateway: gateway.wsUrl,
      name: "solo",
      pool: "queue",
      args: ["--max-concurrency", "1", "--preload", BIG_MODEL],
    }),
  ]);
  agents.push(...started);
  await waitForAgents(gateway.url, 2);
  await waitForAgents(gateway.url, 1, "queue");
});

// Stopped with SIGTERM: the agents drain what is left, as an operator's would.
watchProcesses(() => ({ gateways: [gateway], agents }), "SIGTERM");

const replicaOf = (outcome: Outcome) =>
  outcome.ok ? outcome.result.headers.get("x-switchyard-replica") : null;
const cacheOf = (outcome: Outcome) => (outcome.ok ? outcome.result.headers.get("x-switchyard-cache") : null);

function expectOk(outcome: Outcome): asserts outcome is Extract<Outcome, { ok: true }> {
  expect(outcome.ok ? "ok" : `${outcome.status} ${outcome.message}`).toBe("ok");
}

async function directRun(modelPath: string, feeds: Record<string, ort.Tensor>): Promise<ort.Tensor> {
  const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
  try {
    const outputs = await session.run(feeds);
    return Object.values(outputs)[0] as ort.Tensor;
  } finally {
    await session.release();
  }
}

describe("routing by model", () => {
  test("a model's requests go to the replica that loaded it: a miss first, then hits there", async () => {
    const [first, second] = [MULTIPLEX_MODELS[1] ?? "", MULTIPLEX_MODELS[2] ?? ""];
    const a = await call(gateway.url, first, mlpRequest(2));
    expectOk(a);
    expect(cacheOf(a)).toBe("miss");
    expect(replicaOf(a)).toMatch(/^(alpha|beta)\/0$/);
    const b = await call(gateway.url, second, mlpRequest(2));
    expectOk(b);
    expect(cacheOf(b)).toBe("miss");

    for (let round = 0; round < 3; round++) {
      const again = await Promise.all([
        call(gateway.url, first, mlpRequest(2)),
        call(gateway.url, second, mlpRequest(2)),
      ]);
      expect(again.map(replicaOf)).toEqual([replicaOf(a), replicaOf(b)]);
      expect(again.map(cacheOf)).toEqual(["hit", "hit"]);
    }
    expect(a.result.headers.get("server-timing")).toMatch(
      /queue;dur=[\d.]+, load;dur=[\d.]+, infer;dur=[\d.]+/,
    );
    // Each hop's share, nested: the agent's own time within the websocket round trip, within the registry's
    // time, within the Worker's total. workerd's clock moves in whole milliseconds, at I/O: 1 ms of slack
    // where two clocks meet.
    const phases = Object.fromEntries(
      [...(a.result.headers.get("server-timing") ?? "").matchAll(/(\w+);dur=([\d.]+)/g)].map((match) => [
        match[1],
        Number(match[2]),
      ]),
    );
    expect(Object.keys(phases)).toEqual([
      "queue",
      "load",
      "infer",
      "registry",
      "roundtrip",
      "agent",
      "total",
    ]);
    expect(phases.agent).toBeGreaterThanOrEqual(phases.infer ?? Number.NaN);
    expect(phases.roundtrip).toBeGreaterThanOrEqual((phases.agent ?? Number.NaN) - 1);
    expect(phases.registry).toBeGreaterThanOrEqual((phases.roundtrip ?? Number.NaN) - 0.01);
    expect(phases.total).toBeGreaterThanOrEqual((phases.registry ?? Number.NaN) - 1);
    expect(a.result.headers.get("x-request-id")).toBeTruthy();
  });

  test("concurrent requests for a model nobody holds share its load (coalescing); at most one load per replica", async () => {
    const model = MULTIPLEX_MODELS[5] ?? "";
    const outcomes = await Promise.all(
      Array.from({ length: 6 }, () => call(gateway.url, model, mlpRequest(1))),
    );
    for (const outcome of outcomes) expectOk(outcome);
    // Coalesced: the requests that came while the model was loading waited for that load instead of each
    // starting one. The switchyard policy may still place one more copy, on the other agent, when its
    // estimates say a load there beats waiting (this MLP usually loads in a few milliseconds, but a
    // replica's first session can take a few hundred): at most one load per replica, most requests hits.
    const misses = outcomes.filter((outcome) => cacheOf(outcome) === "miss");
    expect(new Set(misses.map(replicaOf)).size).toBe(misses.length);
    expect(misses.length).toBeLessThanOrEqual(2);
    expect(outcomes.length - misses.length).toBeGreaterThanOrEqual(4);
    const loadedBy = misses.map(replicaOf);
    const servedBy = new Set(outcomes.map(replicaOf));
    for (const replica of servedBy) expect(loadedBy).toContain(replica);
    const response = await fetch(`${gateway.url}/dashboard/api/pool`, {
      headers: { Authorization: `Bearer ${SECRETS.adminKey}` },
    });
    const view = (await response.json()) as {
      agents: Array<{ replicas: Array<{ loaded: Array<{ name: string }> }> }>;
    };
    const holders = view.agents
      .flatMap((agent) => agent.replicas)
      .filter((replica) => replica.loaded.some((each) => each.name === model));
    expect(holders).toHaveLength(servedBy.size);
  });
});

describe("what the client gets back", () => {
  test("an MLP's outputs (JSON) are those of a direct onnxruntime-node run", async () => {
    const model = MULTIPLEX_MODELS[3] ?? "";
    const x = seededFloats(7, 4 * 16);
    const expected = await directRun(repoModelPath(model), {
      [MLP_INPUT]: new ort.Tensor("float32", x, [4, 16]),
    });
    const outcome = await call(gateway.url, model, {
      id: "mlp-json",
      inputs: [{ name: MLP_INPUT, datatype: "FP32", shape: [4, 16], data: x }],
    });
    expectOk(outcome);
    const response = outcome.result.response;
    expect(response.id).toBe("mlp-json");
    expect(response.model_name).toBe(model);
    expect(response.model_version).toBe("1");
    const output = response.outputs[0] as Tensor;
    expect(output.shape).toEqual([...expected.dims]);
    expectAllClose(output.data as Float32Array, expected.data as Float32Array, 1e-6);
  });

  test("PP-OCRv4 detection over the binary extension equals a direct run, tensors as raw bytes both ways", async () => {
    const input = ppocrDetSampleInput();
    const expected = await directRun(PPOCR_DET_PATH, {
      x: new ort.Tensor("float32", input, [...PPOCR_DET_DIMS]),
    });
    const outcome = await call(
      gateway.url,
      DET_MODEL,
      { inputs: [{ name: "x", datatype: "FP32", shape: [...PPOCR_DET_DIMS], data: input }] },
      { binaryInputs: true, binaryOutputs: true },
    );
    expectOk(outcome);
    expect(outcome.result.headers.get("inference-header-content-length")).not.toBeNull();
    expect(outcome.result.headers.get("content-type")).toBe("application/octet-stream");
    const output = outcome.result.response.outputs[0] as Tensor;
    expect(output.shape).toEqual([...expected.dims]);
    // The detector found text in the sample, so the map is not trivially zero.
    expect((expected.data as Float32Array).some((value) => value > 0.5)).toBe(true);
    expectAllClose(output.data as Float32Array, expected.data as Float32Array, 1e-5);
  });

  test("an unknown model is 404 and bad input is 400, and the agents keep serving", async () => {
    const unknown = await call(gateway.url, "no_such_model", mlpRequest(1));
    expect(unknown.ok ? 200 : [unknown.status, unknown.message]).toEqual([
      404,
      expect.stringContaining("no_such_model"),
    ]);
    const wrongShape = await call(gateway.url, MULTIPLEX_MODELS[1] ?? "", {
      inputs: [{ name: MLP_INPUT, datatype: "FP32", shape: [1, 5], data: new Float32Array(5) }],
    });
    expect(wrongShape.ok ? 200 : wrongShape.status).toBe(400);
    expectOk(await call(gateway.url, MULTIPLEX_MODELS[1] ?? "", mlpRequest(1)));
  });
});

describe("the queue", () => {
  test("with every slot busy, requests wait in the gateway and are served in arrival order", async () => {
    // The agent takes one at a time. Frozen, it holds the first in its socket's buffer, and each later one
    // is in the gateway's queue before the next is sent: their order is the test's, not the machine's (sends
    // 60 ms apart could once arrive in another order).
    const solo = agents.find((agent) => agent.name === "solo");
    if (solo === undefined) throw new Error("no agent 'solo'");
    const send = (index: number) =>
      call(gateway.url, BIG_MODEL, mlpRequest(600, index), { pool: "queue", binaryInputs: true });
    const sent: Promise<Outcome>[] = [];
    await withAgentFrozen(solo, async () => {
      sent.push(send(0));
      await waitForMetric(gateway.url, "queue", "switchyard_gateway_in_flight", 1);
      for (let index = 1; index < 4; index++) {
        sent.push(send(index));
        await waitForMetric(gateway.url, "queue", "switchyard_gateway_queue_depth", index);
      }
    });
    const outcomes = await Promise.all(sent);
    for (const outcome of outcomes) expectOk(outcome);
    const finished = outcomes.map((outcome) => outcome.finishedAt);
    expect([...finished].sort((a, b) => a - b)).toEqual(finished);
    // The later ones waited for a slot, and the gateway says so.
    const queueMs = outcomes.map((outcome) =>
      Number(
        /queue;dur=([\d.]+)/.exec(outcome.ok ? (outcome.result.headers.get("server-timing") ?? "") : "")?.[1],
      ),
    );
    expect(queueMs[3]).toBeGreaterThan(queueMs[0] ?? 0);
    expect(queueMs[3]).toBeGreaterThan(100);
    expect(new Set(outcomes.map(replicaOf))).toEqual(new Set(["solo/0"]));
  });
});
