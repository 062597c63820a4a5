import * as ort from "onnxruntime-node";
import { beforeAll, describe, expect, test } from "vitest";
import { DIRECT_REPORT_WITHIN_MS } from "../../gateway/agent-relay/direct-reports.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { MLP_INPUT, seededFloats } from "../fixtures/onnx-builder.ts";
import { DET_MODEL, MULTIPLEX_MODELS, repoModelPath } from "../fixtures/paths.ts";
import { PPOCR_DET_DIMS, ppocrDetSampleInput } from "../fixtures/ppocr.ts";
import { expectAllClose } from "../support/close-to.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import { call, mlpRequest, type Outcome, waitForAgents } from "./harness/oip-client.ts";
import { poolMetric, waitForMetric, withAgentFrozen } from "./harness/pool-probes.ts";
import { watchProcesses } from "./harness/processes-under-test.ts";
import { type GatewayProcess, startGateway } from "./harness/wrangler-dev.ts";

// Direct hits (shared/routing/direct-hits.ts) with a real `wrangler dev` and real agents: once a model's
// request was granted as a hit while nothing waited and went well, its next ones go from the Worker straight to the agent's relay under the
// registry's permit. What a client must see: the same answers, no request lost or starved when the replica is
// contended or its agent dies, and the anchors' routing policies untouched.

const MODEL = MULTIPLEX_MODELS[0] ?? "m000";

/**
 * The direct hits a pool's registry counted, read once every relay's batch of them has reached it: a relay
 * tells its registry of a direct hit that ended within DIRECT_REPORT_WITHIN_MS (and half a second more here,
 * for a busy machine).
 */
async function directRuns(pool: string): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, DIRECT_REPORT_WITHIN_MS + 500));
  return await poolMetric(gateway.url, pool, DIRECT);
}
const DIRECT = "switchyard_gateway_direct_runs_total";

let gateway: GatewayProcess;
let anchorGateway: GatewayProcess;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  [gateway, anchorGateway] = await Promise.all([
    startGateway(),
    startGateway({ vars: { ROUTING_POLICY: "least-loaded" } }),
  ]);
  const started = await Promise.all([
    startAgent({ gateway: gateway.wsUrl, name: "single", pool: "direct", args: ["--preload", MODEL] }),
    // One slot: a second client's request must wait for it.
    startAgent({
      gateway: gateway.wsUrl,
      name: "slow",
      pool: "contended",
      args: ["--max-concurrency", "1", "--preload", DET_MODEL],
    }),
    startAgent({ gateway: gateway.wsUrl, name: "k1", pool: "twins", args: ["--preload", MODEL] }),
    startAgent({ gateway: gateway.wsUrl, name: "k2", pool: "twins", args: ["--preload", MODEL] }),
    startAgent({ gateway: anchorGateway.wsUrl, name: "anchor", pool: "anchor", args: ["--preload", MODEL] }),
  ]);
  agents.push(...started);
  await Promise.all([
    waitForAgents(gateway.url, 1, "direct"),
    waitForAgents(gateway.url, 1, "contended"),
    waitForAgents(gateway.url, 2, "twins"),
    waitForAgents(anchorGateway.url, 1, "anchor"),
  ]);
}, 120_000);

watchProcesses(() => ({ gateways: [gateway, anchorGateway], agents }), "SIGTERM");

function expectOk(outcome: Outcome): asserts outcome is Extract<Outcome, { ok: true }> {
  expect(outcome.ok ? "ok" : `${outcome.status} ${outcome.message}`).toBe("ok");
}

const replicaOf = (outcome: Outcome) =>
  outcome.ok ? outcome.result.headers.get("x-switchyard-replica") : `${outcome.status} ${outcome.message}`;

async function expectedOutput(batch: number, seed: number): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(repoModelPath(MODEL), { intraOpNumThreads: 1 });
  try {
    const input = new ort.Tensor("float32", seededFloats(seed, batch * 16), [batch, 16]);
    const outputs = await session.run({ [MLP_INPUT]: input });
    return (Object.values(outputs)[0] as ort.Tensor).data as Float32Array;
  } finally {
    await session.release();
  }
}

const outputOf = (outcome: Extract<Outcome, { ok: true }>) =>
  (outcome.result.response.outputs[0] as Tensor).data as Float32Array;

describe("direct hits", () => {
  test("once a model's hit was granted while nothing waited, its next hits go straight to the agent's relay, with the model's own answers", async () => {
    const expected = await expectedOutput(2, 7);
    // The first requests go through the registry: the path opens with a hit granted while nothing waited
    // (the first asks of a fresh pool may wait a moment for the agent's first state).
    let asked = 0;
    while ((await directRuns("direct")) === 0) {
      expect(asked).toBeLessThan(10);
      expectOk(await call(gateway.url, MODEL, mlpRequest(2, 7), { pool: "direct" }));
      asked += 1;
    }
    expect(asked).toBeGreaterThanOrEqual(2);
    // Every request so far counted (a direct one in the same report as its run), then the direct runs read:
    // a report later than directRuns allows would have let the loop send one more, itself direct.
    await waitForMetric(gateway.url, "direct", "switchyard_gateway_requests_total", asked, {
      model: MODEL,
      status: "200",
    });
    const opened = await poolMetric(gateway.url, "direct", DIRECT);
    for (let index = 0; index < 12; index += 1) {
      const outcome = await call(gateway.url, MODEL, mlpRequest(2, 7), { pool: "direct" });
      expectOk(outcome);
      expect(outcome.result.headers.get("x-switchyard-cache")).toBe("hit");
      expectAllClose(outputOf(outcome), expected);
    }
    // Every one of them went direct, and the registry counted each as a request of its model.
    await waitForMetric(gateway.url, "direct", DIRECT, opened + 12);
    await waitForMetric(gateway.url, "direct", "switchyard_gateway_requests_total", asked + 12, {
      model: MODEL,
      status: "200",
    });
    await waitForMetric(gateway.url, "direct", "switchyard_gateway_in_flight", 0);
  });

  test("a direct hit still running is in the registry's books within moments: the pool shows it in flight", async () => {
    const single = agents.find((agent) => agent.name === "single");
    if (single === undefined) throw new Error("no agent 'single'");
    // Until a request went direct (the path may have closed since the last test: its permit lasts 5 s).
    let before = await directRuns("direct");
    for (let index = 0; ; index += 1) {
      expect(index).toBeLessThan(10);
      expectOk(await call(gateway.url, MODEL, mlpRequest(1), { pool: "direct" }));
      const now = await directRuns("direct");
      const wentDirect = now > before;
      before = now;
      if (wentDirect) break;
    }
    // The agent stops answering: the next hit goes direct and stays running; its relay tells the registry
    // within DIRECT_ADOPT_WITHIN_MS, not when it ends.
    const { running } = await withAgentFrozen(single, async () => {
      const running = call(gateway.url, MODEL, mlpRequest(1), { pool: "direct" });
      await waitForMetric(gateway.url, "direct", "switchyard_gateway_in_flight", 1, {}, 5_000);
      expect(await poolMetric(gateway.url, "direct", DIRECT)).toBe(before + 1);
      return { running };
    });
    expectOk(await running);
    await waitForMetric(gateway.url, "direct", "switchyard_gateway_in_flight", 0);
  });

  test("a burst beyond the replica's slots is served through the registry's queue, and every slot comes back", async () => {
    const before = await directRuns("direct");
    const burst = await Promise.all(
      Array.from({ length: 16 }, (_, index) =>
        call(gateway.url, MODEL, mlpRequest(1, index), { pool: "direct" }),
      ),
    );
    for (const outcome of burst) expectOk(outcome);
    await waitForMetric(gateway.url, "direct", "switchyard_gateway_in_flight", 0);
    await waitForMetric(gateway.url, "direct", "switchyard_gateway_queue_depth", 0);
    // Some of the burst may have gone direct (while a slot was free), not all of it.
    const afterBurst = await directRuns("direct");
    expect(afterBurst - before).toBeLessThan(16);
    // Settled, the model's hits go direct again: a request that went through the registry renews the path.
    expectOk(await call(gateway.url, MODEL, mlpRequest(1), { pool: "direct" }));
    expectOk(await call(gateway.url, MODEL, mlpRequest(1), { pool: "direct" }));
    expect(await directRuns("direct")).toBeGreaterThan(afterBurst);
  });

  test("a second client's request for a one-slot replica is not starved by the first client's direct hits", async () => {
    const request = {
      inputs: [
        { name: "x", datatype: "FP32" as const, shape: [...PPOCR_DET_DIMS], data: ppocrDetSampleInput() },
      ],
    };
    const options = { pool: "contended", binaryInputs: true, binaryOutputs: true };
    for (let index = 0; index < 10 && (await directRuns("contended")) === 0; index += 1) {
      expectOk(await call(gateway.url, DET_MODEL, request, options));
    }
    expect(await directRuns("contended")).toBeGreaterThanOrEqual(1);
    // Client A keeps the replica's one slot busy, one request after another; client B asks once meanwhile.
    const finishedA: number[] = [];
    const clientA = (async () => {
      for (let index = 0; index < 6; index += 1) {
        const outcome = await call(gateway.url, DET_MODEL, request, options);
        expectOk(outcome);
        finishedA.push(outcome.finishedAt);
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const b = await call(gateway.url, DET_MODEL, request, options);
    await clientA;
    expectOk(b);
    // B waited for a slot, not for A's whole series.
    expect(b.finishedAt).toBeLessThan(finishedA[5] ?? 0);
    await waitForMetric(gateway.url, "contended", "switchyard_gateway_in_flight", 0);
  });

  test("an agent killed while its model's hits go direct: the next requests are served by its twin", async () => {
    // Until a request went direct (the first asks of a fresh registry may wait a moment, which opens no path).
    let warm: Outcome | undefined;
    for (let index = 0; index < 10 && (await directRuns("twins")) === 0; index += 1) {
      warm = await call(gateway.url, MODEL, mlpRequest(1), { pool: "twins" });
      expectOk(warm);
    }
    expect(await directRuns("twins")).toBeGreaterThanOrEqual(1);
    // The direct path leads to the replica of the last request.
    const servedBy = warm === undefined ? undefined : replicaOf(warm)?.split("/")[0];
    const victim = agents.find((agent) => agent.name === servedBy);
    expect(victim).toBeDefined();
    await victim?.stop("SIGKILL");
    const after: Outcome[] = [];
    for (let index = 0; index < 4; index += 1) {
      after.push(await call(gateway.url, MODEL, mlpRequest(1), { pool: "twins" }));
    }
    for (const outcome of after) expectOk(outcome);
    const twin = servedBy === "k1" ? "k2" : "k1";
    expect(after.map(replicaOf)).toEqual(after.map(() => `${twin}/0`));
  });

  test("a gateway routing with an anchor's policy takes no direct hits: each request is its policy's decision", async () => {
    for (let index = 0; index < 5; index += 1) {
      expectOk(await call(anchorGateway.url, MODEL, mlpRequest(1), { pool: "anchor" }));
    }
    await waitForMetric(anchorGateway.url, "anchor", "switchyard_gateway_requests_total", 5, {
      model: MODEL,
      status: "200",
    });
    expect(await poolMetric(anchorGateway.url, "anchor", DIRECT)).toBe(0);
  });
});
