import { describe, expect, it } from "vitest";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { errorOf, freshPool, infer } from "./support/gateway.ts";

describe("replicas that fail", () => {
  it("takes a model out of routing on a replica after three server errors in a row there", async () => {
    const pool = freshPool();
    // Two equal holders: policies break the tie by the first (baseline: connection order; switchyard: the
    // address), "crashy", until it is ejected.
    const crashy = await FakeAgent.connect(pool, {
      name: "crashy",
      replicas: [replicaState({ loaded: ["m"] })],
    });
    const steady = await FakeAgent.connect(pool, {
      name: "steady",
      replicas: [replicaState({ loaded: ["m"] })],
    });
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const response = infer("m", { pool });
      crashy.fail(await crashy.nextInfer(), {
        status: 500,
        message: "CUDA error: an illegal memory access",
        started: true,
      });
      const failed = await response;
      expect(failed.status).toBe(500);
      expect(await errorOf(failed)).toBe("CUDA error: an illegal memory access");
    }
    const response = infer("m", { pool });
    steady.answer(await steady.nextInfer());
    expect((await response).headers.get("X-Switchyard-Replica")).toBe("steady/0");
    expect(crashy.pendingInfers).toBe(0);
    crashy.close();
    steady.close();
  });

  it("still tries a model that failed everywhere, and the client gets the actual error", async () => {
    const pool = freshPool();
    const failed = { ...replicaState(), failed: [{ name: "m", version: "1", reason: "not an ONNX file" }] };
    const agent = await FakeAgent.connect(pool, { name: "only", replicas: [failed] });
    const response = infer("m", { pool });
    // The load fails each time (the agent never started the run): it is tried again, up to three times.
    for (let attempt = 0; attempt < 3; attempt += 1) {
      agent.fail(await agent.nextInfer(), {
        status: 500,
        message: "model 'm:1' failed to load: not an ONNX file",
        started: false,
        state: failed,
      });
    }
    const answered = await response;
    expect(answered.status).toBe(500);
    expect(await errorOf(answered)).toBe("model 'm:1' failed to load: not an ONNX file");
    expect(answered.headers.get("X-Switchyard-Replica")).toBe("only/0");
    agent.close();
  });
});
