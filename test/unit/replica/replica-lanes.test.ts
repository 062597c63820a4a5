import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, test } from "vitest";
import { openRepository } from "../../../backend/models/open-repository.ts";
import type { LaneAnswer, LaneRequest } from "../../../backend/replica/lane-protocol.ts";
import { type LaneGrant, Replica } from "../../../backend/replica/replica.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import type { ModelRef } from "../../../shared/protocol/replica-state.ts";
import { buildSlowModel, SLOW_WIDTH } from "../../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS } from "../../fixtures/paths.ts";
import { copyOf, temporaryRepository } from "../../integration/harness/behaviour-models.ts";
import { useTestReplicas } from "./test-replicas.ts";

// A replica's lanes (backend/replica/lane-protocol.ts) on real CPU sessions: when it grants one, what its
// lease keeps, and what the replica counts of what lanes served.

const replicaWith = useTestReplicas();

/** A replica that counts the runs its hook hears of (MeteredReplica's runs metric counts them so). */
class RunCountingReplica extends Replica {
  runs = 0;
  protected override modelRan(_model: ModelRef, runs: number): void {
    this.runs += runs;
  }
}
const countingReplicaWith = useTestReplicas({}, (options) => new RunCountingReplica(options));
const MLP = MULTIPLEX_MODELS[0] ?? "";
const input = (): Tensor => ({
  name: "x",
  datatype: "FP32",
  shape: [1, 16],
  data: Float32Array.from({ length: 16 }, (_, index) => index / 16),
});

/** Sends `count` requests down the lane and resolves with their answers. */
async function serve(grant: LaneGrant, count: number): Promise<LaneAnswer[]> {
  const answers: LaneAnswer[] = [];
  const done = new Promise<void>((resolve) =>
    grant.port.on("message", (batch: LaneAnswer[]) => {
      answers.push(...batch);
      if (answers.length >= count) resolve();
    }),
  );
  const requests: LaneRequest[] = Array.from({ length: count }, (_, id) => ({
    type: "infer",
    id,
    requests: 1,
    requestIds: [`request-${id}`],
    inputs: [input()],
    deadlineAt: Date.now() + 60_000,
    budgetMs: 60_000,
  }));
  grant.port.postMessage(requests);
  await done;
  return answers;
}

describe("Replica lanes", () => {
  test("a model that is not loaded gets no lane; once loaded it does, and what the lane serves is counted", async () => {
    const replica = replicaWith();
    const revoke = () => {};
    expect(await replica.openLane(MLP, undefined, { maxQueue: 8, revoke })).toBeUndefined();
    await replica.infer({ model: MLP, inputs: [input()] });
    const grant = await replica.openLane(MLP, undefined, { maxQueue: 8, revoke });
    if (grant === undefined) throw new Error("no lane for a loaded model");
    expect(grant.model).toEqual({ name: MLP, version: "1" });
    const answers = await serve(grant, 5);
    expect(answers.every((answer) => answer.type === "outcome")).toBe(true);
    // Reports cross at most every LANE_REPORT_INTERVAL_MS; a reader asks for what is left first.
    await replica.lanesReported();
    const [stats] = replica.statistics(MLP);
    expect(stats?.inference_stats.success.count).toBe(6);
    grant.port.close();
    grant.close();
  });

  test("its outcomes and its lanes say how the model's outputs are classified: batched as config.json declares, its labels", async () => {
    const dir = temporaryRepository("classes", [
      copyOf(MLP, "declared", {
        max_batch_size: 4,
        output: [{ name: "y", label_filename: "classes/y.txt" }],
      }),
      copyOf(MLP, "plain"),
    ]);
    mkdirSync(join(dir, "declared", "classes"));
    writeFileSync(join(dir, "declared", "classes", "y.txt"), "cat\r\ndog\n\nbird\n");
    const replica = replicaWith({
      repository: openRepository(dir, { cacheDir: mkdtempSync(join(tmpdir(), "switchyard-cache-")) }),
    });
    const revoke = () => {};
    for (const [model, classes] of [
      ["declared", { batched: true, labels: new Map([["y", ["cat", "dog", "", "bird"]]]) }],
      ["plain", { batched: false, labels: new Map() }],
    ] as const) {
      expect((await replica.infer({ model, inputs: [input()] })).classes, model).toEqual(classes);
      const grant = await replica.openLane(model, undefined, { maxQueue: 8, revoke });
      expect(grant?.classes, model).toEqual(classes);
      grant?.port.close();
      grant?.close();
    }
  });

  test("a label file that is missing, or one for an output the model does not have, fails the load", async () => {
    const replica = replicaWith({
      repository: openRepository(
        temporaryRepository("bad-labels", [
          copyOf(MLP, "missing", { output: [{ name: "y", label_filename: "labels.txt" }] }),
          copyOf(MLP, "misnamed", { output: [{ name: "probs", label_filename: "config.json" }] }),
        ]),
        { cacheDir: mkdtempSync(join(tmpdir(), "switchyard-cache-")) },
      ),
    });
    await expect(replica.infer({ model: "missing", inputs: [input()] })).rejects.toThrow(
      "reading missing/1's labels failed: output 'y': label_filename 'labels.txt' is not in the model's directory",
    );
    await expect(replica.infer({ model: "misnamed", inputs: [input()] })).rejects.toThrow(
      "reading misnamed/1's labels failed: config.json's output 'probs' has a label_filename, but the model has no such output (outputs: y)",
    );
  });

  test("the runs a lane's requests took are told as the replica's own are, as its timings count them", async () => {
    const replica = countingReplicaWith();
    const revoke = () => {};
    await replica.infer({ model: MLP, inputs: [input()] });
    expect(replica.runs).toBe(1);
    const grant = await replica.openLane(MLP, undefined, { maxQueue: 8, revoke });
    if (grant === undefined) throw new Error("no lane for a loaded model");
    await serve(grant, 5);
    await replica.lanesReported();
    const runs = replica.state().timings[`${MLP}:1`]?.runs ?? 0;
    expect(runs).toBeGreaterThan(1);
    expect(replica.runs).toBe(runs);
    grant.port.close();
    grant.close();
  });

  test("an unload tells the model's lanes to stop and completes once they closed", async () => {
    const replica = replicaWith();
    await replica.infer({ model: MLP, inputs: [input()] });
    let revoked = 0;
    const grant = await replica.openLane(MLP, undefined, { maxQueue: 8, revoke: () => (revoked += 1) });
    if (grant === undefined) throw new Error("no lane for a loaded model");
    let unloaded = false;
    const unloading = replica.unload(MLP).then((result) => {
      unloaded = true;
      return result;
    });
    expect(revoked).toBe(1);
    // Its lease holds the session while the lane's requests may still come.
    expect((await serve(grant, 2)).every((answer) => answer.type === "outcome")).toBe(true);
    await sleep(50);
    expect(unloaded).toBe(false);
    grant.port.close();
    grant.close();
    expect(await unloading).toBe(true);
    expect(replica.isLoaded({ name: MLP, version: "1" })).toBe(false);
    // Closing twice ends the lease once.
    grant.close();
  });

  test("a reader of the figures waits about 250 ms for a session busy in a long run, not for the run", async () => {
    const repository = temporaryRepository("slow", [{ name: "slow", bytes: buildSlowModel() }]);
    const replica = replicaWith({
      repository: openRepository(repository, { cacheDir: mkdtempSync(join(tmpdir(), "switchyard-cache-")) }),
    });
    const rows = (count: number): Tensor => ({
      name: "x",
      datatype: "FP32",
      shape: [count, SLOW_WIDTH],
      data: new Float32Array(count * SLOW_WIDTH).fill(1),
    });
    await replica.infer({ model: "slow", inputs: [rows(1)] });
    const grant = await replica.openLane("slow", undefined, { maxQueue: 8, revoke: () => {} });
    if (grant === undefined) throw new Error("no lane for a loaded model");
    // A run of 1,024 rows: seconds on one thread (test/fixtures/onnx-builder.ts buildSlowModel).
    const sent = performance.now();
    const answered = new Promise<number>((resolve) =>
      grant.port.once("message", () => resolve(performance.now())),
    );
    const request: LaneRequest = {
      type: "infer",
      id: 1,
      requests: 1,
      requestIds: [""],
      inputs: [rows(1024)],
      deadlineAt: Date.now() + 60_000,
      budgetMs: 60_000,
    };
    grant.port.postMessage([request]);
    await sleep(100);
    const asked = performance.now();
    await replica.lanesReported();
    const waited = performance.now() - asked;
    const runMs = (await answered) - sent;
    expect(waited).toBeGreaterThanOrEqual(240);
    expect(waited).toBeLessThan(1000);
    expect(runMs).toBeGreaterThan(100 + waited + 250);
    grant.port.close();
    grant.close();
  });
});
