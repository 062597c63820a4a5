import { describe, expect, test } from "vitest";
import type { PooledInferCall, PooledOutcome } from "../../../backend/pool/replica-pool.ts";
import type { LaneSettings } from "../../../backend/replica/lane-protocol.ts";
import { type GroupLane, LaneGroups, type LaneSettlement } from "../../../backend/server/lane-groups.ts";
import { Deadline } from "../../../shared/deadline.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";

// What a real session cannot be made to do on cue: refuse a group's stacked inputs at run time although each
// request passed the checks (onnxruntime refusing a value, say). The lane here is scripted; everything else
// about groups runs against a real session's thread in intake-lanes.test.ts.

const SETTINGS: LaneSettings = {
  model: "m",
  inputs: [{ name: "x", datatype: "FP32", shape: [-1, 2] }],
  outputs: [{ name: "y", datatype: "FP32", shape: [-1, 2] }],
  batching: { maxBatchSize: 8, maxQueueDelayMs: 0, preferredBatchSizes: [] },
  maxConcurrency: 4,
  maxQueue: 4,
};

const callOf = (value: number): PooledInferCall => ({
  model: "m",
  inputs: [{ name: "x", datatype: "FP32", shape: [1, 2], data: Float32Array.of(value, value) }],
  deadline: Deadline.in(30_000),
});

const outcome = (outputs: Tensor[]): PooledOutcome => ({
  model: { name: "m", version: "1" },
  replica: "0",
  outputs,
  cache: "hit",
  timings: { poolQueueMs: 0, queueMs: 0, loadMs: 0, inferMs: 0, sessionMs: 0 },
});

describe("a group the model refuses at run time", () => {
  test("each of its requests runs again alone: only the one at fault fails", async () => {
    const sent: number[] = [];
    const alone: number[] = [];
    const lane: GroupLane = {
      send: (request, _transfer, settle: (settlement: LaneSettlement) => void) => {
        sent.push(request.requests);
        setImmediate(() =>
          settle({
            type: "failure",
            id: 1,
            error: { code: "bad_input", message: "onnxruntime refused a value" },
          }),
        );
        return 1;
      },
      abort: () => {},
      flush: () => {},
      alone: (call) => {
        const data = call.inputs[0]?.data as Float32Array | undefined;
        const value = data?.[0] ?? 0;
        alone.push(value);
        return value === 2
          ? Promise.reject(new Error("onnxruntime refused 2"))
          : Promise.resolve(outcome(call.inputs));
      },
      outcome: (_answer, outputs) => outcome(outputs),
      changed: () => {},
    };
    const groups = new LaneGroups(lane, SETTINGS, 8);
    const settled = await Promise.allSettled([1, 2, 3].map((value) => groups.add(callOf(value))));
    expect(sent).toEqual([3]);
    expect(alone).toEqual([1, 2, 3]);
    expect(settled.map((each) => each.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(groups.busy).toBe(false);
  });

  test("any other failure fails the whole group as it is", async () => {
    const lane: GroupLane = {
      send: (_request, _transfer, settle) => {
        setImmediate(() =>
          settle({
            type: "failure",
            id: 1,
            error: { code: "queue_full", message: "busy", retryAfterSeconds: 1 },
          }),
        );
        return 1;
      },
      abort: () => {},
      flush: () => {},
      alone: () => Promise.reject(new Error("not expected")),
      outcome: (_answer, outputs) => outcome(outputs),
      changed: () => {},
    };
    const groups = new LaneGroups(lane, SETTINGS, 8);
    const settled = await Promise.allSettled([1, 2].map((value) => groups.add(callOf(value))));
    for (const each of settled) {
      expect(each.status).toBe("rejected");
      expect((each as PromiseRejectedResult).reason).toMatchObject({ status: 429 });
    }
  });
});
