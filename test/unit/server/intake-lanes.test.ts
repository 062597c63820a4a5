import { afterEach, describe, expect, test } from "vitest";
import type { LaneSettings } from "../../../backend/replica/lane-protocol.ts";
import { sessionOptions } from "../../../backend/replica/session-options.ts";
import { WorkerSession } from "../../../backend/replica/worker-session.ts";
import { IntakeLanes } from "../../../backend/server/intake-lanes.ts";
import type { LaneNotice } from "../../../backend/server/intake-protocol.ts";
import { Deadline } from "../../../shared/deadline.ts";
import { SwitchyardError } from "../../../shared/errors.ts";
import { requestedModelKey } from "../../../shared/model-names.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import { MULTIPLEX_MODELS, repoModelPath } from "../../fixtures/paths.ts";

// An intake thread's lanes against a real session's thread (real onnxruntime, a real port): which requests
// take a lane, when a lane stops taking them and closes, and what its requests get when the session goes.

const MLP = MULTIPLEX_MODELS[0] ?? "";
const OPTIONS = sessionOptions({ kind: "cpu" }, { intraOpThreads: 1 });
const sessions: WorkerSession[] = [];
afterEach(async () => {
  await Promise.all(sessions.splice(0).map((session) => session.release()));
});

const input = (): Tensor => ({
  name: "x",
  datatype: "FP32",
  shape: [1, 16],
  data: Float32Array.from({ length: 16 }, (_, index) => index),
});
const call = (extra: { hint?: string; version?: string; timeoutMs?: number } = {}) => ({
  model: MLP,
  inputs: [input()],
  deadline: Deadline.in(extra.timeoutMs ?? 30_000),
  ...(extra.hint === undefined ? {} : { hint: extra.hint }),
  ...(extra.version === undefined ? {} : { version: extra.version }),
});

/** IntakeLanes with one lane to a real session of MLP, granted for `lifetimeMs`. */
async function withLane(lifetimeMs: number, settings: Partial<LaneSettings> = {}) {
  const session = await WorkerSession.create(repoModelPath(MLP), OPTIONS);
  sessions.push(session);
  const port = await session.openLane(
    {
      model: MLP,
      inputs: session.inputs,
      outputs: session.outputs,
      maxConcurrency: 4,
      maxQueue: 4,
      ...settings,
    },
    () => {},
  );
  const notices: LaneNotice[] = [];
  const lanes = new IntakeLanes((notice) => notices.push(notice));
  lanes.open({
    type: "lane",
    laneId: 7,
    key: requestedModelKey(MLP, undefined),
    port,
    model: { name: MLP, version: "1" },
    replica: "0",
    lifetimeMs,
  });
  return { session, lanes, notices };
}

describe("an intake thread's lanes", () => {
  test("requests for the lane's model without a hint take it and are answered from the session's thread", async () => {
    const { lanes } = await withLane(10_000);
    expect(lanes.has(call())).toBe(true);
    expect(lanes.has(call({ hint: "h" }))).toBe(false);
    expect(lanes.has(call({ version: "1" }))).toBe(false);
    expect(lanes.has({ ...call(), model: "other" })).toBe(false);
    const outcome = await lanes.infer(call());
    expect(outcome.model).toEqual({ name: MLP, version: "1" });
    expect(outcome.replica).toBe("0");
    expect(outcome.cache).toBe("hit");
    expect(outcome.outputs[0]?.shape).toEqual([1, 8]);
  });

  test("after its lifetime a lane takes no new request, and closes once the ones it has are answered", async () => {
    // A request alone waits 400 ms in its batch for company: it is still out when the lane's 100 ms are over.
    const { lanes, notices } = await withLane(100, {
      batching: { maxBatchSize: 8, maxQueueDelayMs: 400, preferredBatchSizes: [] },
    });
    const out = lanes.infer(call());
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(lanes.has(call())).toBe(false);
    expect(notices).toEqual([{ type: "lane-retired", laneId: 7 }]);
    expect((await out).outputs[0]?.shape).toEqual([1, 8]);
    expect(notices).toEqual([
      { type: "lane-retired", laneId: 7 },
      { type: "lane-closed", laneId: 7 },
    ]);
  });

  test("a revoked lane closes at once when it has nothing out", async () => {
    const { lanes, notices } = await withLane(10_000);
    lanes.revoke(7);
    expect(lanes.has(call())).toBe(false);
    expect(notices).toEqual([
      { type: "lane-retired", laneId: 7 },
      { type: "lane-closed", laneId: 7 },
    ]);
  });

  test("a request whose deadline passes on the lane gets 504; one whose session goes away gets 503", async () => {
    const { lanes, session, notices } = await withLane(10_000, {
      batching: { maxBatchSize: 8, maxQueueDelayMs: 5_000, preferredBatchSizes: [] },
    });
    const late = await lanes.infer(call({ timeoutMs: 100 })).catch((error: unknown) => error);
    expect(late).toBeInstanceOf(SwitchyardError);
    expect((late as SwitchyardError).status).toBe(504);
    const waiting = lanes.infer(call()).catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await session.release();
    const gone = await waiting;
    expect(gone).toBeInstanceOf(SwitchyardError);
    expect((gone as SwitchyardError).status).toBe(503);
    expect(lanes.has(call())).toBe(false);
    expect(notices.at(-1)).toEqual({ type: "lane-closed", laneId: 7 });
  });
});
