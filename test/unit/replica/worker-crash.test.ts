import { describe, expect, test, vi } from "vitest";
import { SwitchyardError } from "../../../shared/errors.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import { mlpWeights, referenceMlp, seededFloats } from "../../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS, MULTIPLEX_SPECS } from "../../fixtures/paths.ts";
import { expectAllClose } from "../../support/close-to.ts";
import { CRASH_EXIT_CODE, CRASH_VALUE } from "./crash-trigger.ts";
import { useTestReplicas } from "./test-replicas.ts";

// A replica whose sessions run in crashing-session-worker.ts: the real worker, which exits its thread on
// a run whose first input starts with CRASH_VALUE.
vi.mock("../../../backend/replica/session-worker-url.ts", () => ({
  sessionWorkerUrl: () => new URL("./crashing-session-worker.ts", import.meta.url),
}));

const replica = useTestReplicas({ maxConcurrency: 8 });

const model = (index: number) => MULTIPLEX_MODELS[index] ?? "";
const input = (first?: number): Tensor => {
  const data = seededFloats(5, 2 * 16);
  if (first !== undefined) data[0] = first;
  return { name: "x", datatype: "FP32", shape: [2, 16], data };
};
const expected = (index: number, tensor: Tensor) => {
  const spec = MULTIPLEX_SPECS[index];
  if (spec === undefined) throw new Error("fixture spec missing");
  return referenceMlp(mlpWeights(spec), tensor.data as Float32Array, 2);
};

describe("a session worker that dies", () => {
  test("fails its requests with a clear 500, leaves the cache, and the model loads again", async () => {
    const agent = replica();
    await agent.infer({ model: model(0), inputs: [input()] });
    await agent.infer({ model: model(1), inputs: [input()] });

    const outcomes = await Promise.allSettled([
      agent.infer({ model: model(0), inputs: [input(CRASH_VALUE)] }),
      agent.infer({ model: model(0), inputs: [input()] }),
      agent.infer({ model: model(1), inputs: [input()] }),
    ]);
    const [crashed, beside, other] = outcomes;
    expect(crashed?.status).toBe("rejected");
    const failure = (crashed as PromiseRejectedResult).reason as SwitchyardError;
    expect(failure).toBeInstanceOf(SwitchyardError);
    expect(failure.status).toBe(500);
    expect(failure.message).toContain(`model '${model(0)}' could not run`);
    expect(failure.message).toContain(`exit code ${CRASH_EXIT_CODE}`);
    // The other request on the same worker either ran before the crash or failed with it: none hangs.
    if (beside?.status === "rejected") expect((beside.reason as SwitchyardError).status).toBe(500);
    // Another model's worker is untouched.
    expect(other?.status).toBe("fulfilled");

    await expect.poll(() => agent.isLoaded({ name: model(0), version: "1" })).toBe(false);
    const again = await agent.infer({ model: model(0), inputs: [input()] });
    expect(again.cache).toBe("miss");
    expectAllClose(again.outputs[0]?.data as Float32Array, expected(0, input()));
    expect(agent.isLoaded({ name: model(1), version: "1" })).toBe(true);
  });
});
