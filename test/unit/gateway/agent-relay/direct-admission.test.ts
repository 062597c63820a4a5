import { describe, expect, test } from "vitest";
import { DirectAdmission } from "../../../../gateway/agent-relay/direct-admission.ts";
import type { RunOrder, RunResult } from "../../../../gateway/pool-calls.ts";
import { replicaState } from "../../../support/replica-state.ts";

const order = (model = "m"): RunOrder => ({
  model,
  body: new Uint8Array(0),
  timeoutMs: 1_000,
  budgetMs: 1_000,
  pool: "default",
  shard: 0,
  ticket: "t",
  agentId: "a",
  channel: "c",
  replicaId: "0",
  replica: "a/0",
  queuedMs: 0,
  attempts: 1,
  reruns: 0,
});
const ok: RunResult = {
  kind: "ok",
  model: { name: "m", version: "1" },
  cache: "hit",
  phases: { queueMs: 0, loadMs: 0, inferMs: 1 },
};

describe("DirectAdmission: an agent's relay deciding on a direct hit", () => {
  test("admits a model's hits once its agent reported it loaded and a release answered with a permit", () => {
    const admission = new DirectAdmission();
    expect(admission.refusal(order(), 0, 0)).toBe("no permit");
    admission.noteDecision(order(), ok, { again: false, direct: { capacity: 2 } }, 0);
    expect(admission.refusal(order(), 0, 0)).toBe("no state");
    admission.noteState(replicaState({ loaded: ["m"], maxConcurrency: 2, seq: 3 }));
    expect(admission.refusal(order(), 1, 0)).toBeUndefined();
    expect(admission.refusal(order(), 2, 0)).toBe("no free slot");
    // A permit is per model.
    expect(admission.refusal(order("other"), 0, 0)).toBe("no permit");
  });

  test("a release answered without a permit, or a run that failed, withdraws it; a freed slot's release does not", () => {
    const admission = new DirectAdmission();
    admission.noteState(replicaState({ loaded: ["m"], maxConcurrency: 2 }));
    const permitted = () => admission.noteDecision(order(), ok, { again: false, direct: { capacity: 2 } }, 0);
    permitted();
    admission.noteDecision(order(), { kind: "freed" }, { again: false }, 0);
    expect(admission.refusal(order(), 0, 0)).toBeUndefined();
    admission.noteDecision(order(), ok, { again: false }, 0);
    expect(admission.refusal(order(), 0, 0)).toBe("no permit");
    permitted();
    admission.noteDecision(
      order(),
      { kind: "error", status: 500, message: "x", started: true },
      { again: false },
      0,
    );
    expect(admission.refusal(order(), 0, 0)).toBe("no permit");
    permitted();
    admission.withdrawAll();
    expect(admission.refusal(order(), 0, 0)).toBe("no permit");
  });

  test("a state older than the one known (it came the longer way) does not replace it", () => {
    const admission = new DirectAdmission();
    admission.noteDecision(order(), ok, { again: false, direct: { capacity: 2 } }, 0);
    admission.noteState(replicaState({ loaded: [], seq: 5 }));
    admission.noteState(replicaState({ loaded: ["m"], seq: 4 }));
    expect(admission.refusal(order(), 0, 0)).toBe("not loaded");
    admission.noteState(replicaState({ loaded: ["m"], seq: 6 }));
    expect(admission.refusal(order(), 0, 0)).toBeUndefined();
  });
});
