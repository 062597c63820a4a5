import { describe, expect, test } from "vitest";
import { DirectAdmission } from "../../../../gateway/agent-relay/direct-admission.ts";
import type { RunOrder, RunResult } from "../../../../gateway/pool-calls.ts";
import { replicaState } from "../../../support/replica-state.ts";

const order = (model = "m", replicaId = "0"): RunOrder => ({
  model,
  body: new Uint8Array(0),
  timeoutMs: 1_000,
  budgetMs: 1_000,
  pool: "default",
  shard: 0,
  ticket: "t",
  agentId: "a",
  channel: "c",
  replicaId,
  replica: `a/${replicaId}`,
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
const permitted = (admission: DirectAdmission, model = "m", replicaId = "0") =>
  admission.noteDecision(order(model, replicaId), ok, { again: false, direct: { capacity: 2 } }, 0);

describe("DirectAdmission: an agent's relay deciding on a direct hit", () => {
  test("admits a model's hits once its agent reported it loaded and a release answered with a permit", () => {
    const admission = new DirectAdmission();
    expect(admission.refusal(order(), [], 0)).toBe("no permit");
    permitted(admission);
    expect(admission.refusal(order(), [], 0)).toBe("no state");
    admission.noteState(replicaState({ loaded: ["m"], maxConcurrency: 2, seq: 3 }));
    expect(admission.refusal(order(), ["m"], 0)).toBeUndefined();
    expect(admission.refusal(order(), ["m", "m"], 0)).toBe("no free slot");
    // A permit is per model.
    expect(admission.refusal(order("other"), [], 0)).toBe("no permit");
  });

  test("refuses while one of its runs there is for a model the state does not show loaded: a load under way may evict", () => {
    const admission = new DirectAdmission();
    admission.noteState(replicaState({ loaded: ["m"], maxConcurrency: 4 }));
    permitted(admission);
    expect(admission.refusal(order(), ["n"], 0)).toBe("a load is under way");
  });

  test("a release answered without a permit, or a run that failed, withdraws it; a freed slot's release does not", () => {
    const admission = new DirectAdmission();
    admission.noteState(replicaState({ loaded: ["m"], maxConcurrency: 2 }));
    permitted(admission);
    admission.noteDecision(order(), { kind: "freed" }, { again: false }, 0);
    expect(admission.refusal(order(), [], 0)).toBeUndefined();
    admission.noteDecision(order(), ok, { again: false }, 0);
    expect(admission.refusal(order(), [], 0)).toBe("no permit");
    for (const failed of [
      { kind: "error", status: 500, message: "x", started: true },
      { kind: "lost", why: "gone", started: true },
      { kind: "timed-out" },
      { kind: "expired" },
    ] satisfies RunResult[]) {
      permitted(admission);
      admission.noteDecision(order(), failed, { again: false }, 0);
      expect(admission.refusal(order(), [], 0)).toBe("no permit");
    }
  });

  test("an adopt answered `over` withdraws that replica's permits until a release renews them; `refused` every permit", () => {
    const admission = new DirectAdmission();
    for (const replicaId of ["0", "1"])
      admission.noteState(replicaState({ id: replicaId, loaded: ["m", "n"], maxConcurrency: 2 }));
    permitted(admission, "m", "0");
    permitted(admission, "n", "0");
    permitted(admission, "m", "1");
    admission.noteAdopt("0", "taken");
    expect(admission.refusal(order("m", "0"), [], 0)).toBeUndefined();
    admission.noteAdopt("0", "over");
    expect(admission.refusal(order("m", "0"), [], 0)).toBe("no permit");
    expect(admission.refusal(order("n", "0"), [], 0)).toBe("no permit");
    expect(admission.refusal(order("m", "1"), [], 0)).toBeUndefined();
    permitted(admission, "m", "0");
    expect(admission.refusal(order("m", "0"), [], 0)).toBeUndefined();
    admission.noteAdopt("1", "refused");
    expect(admission.refusal(order("m", "0"), [], 0)).toBe("no permit");
    expect(admission.refusal(order("m", "1"), [], 0)).toBe("no permit");
  });

  test("a state older than the one known (it came the longer way) does not replace it", () => {
    const admission = new DirectAdmission();
    permitted(admission);
    admission.noteState(replicaState({ loaded: [], seq: 5 }));
    admission.noteState(replicaState({ loaded: ["m"], seq: 4 }));
    expect(admission.refusal(order(), [], 0)).toBe("not loaded");
    admission.noteState(replicaState({ loaded: ["m"], seq: 6 }));
    expect(admission.refusal(order(), [], 0)).toBeUndefined();
  });
});
