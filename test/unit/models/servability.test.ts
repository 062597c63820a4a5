import { describe, expect, test } from "vitest";
import { whyNotServable } from "../../../shared/models/servability.ts";
import { replicaState } from "../../support/replica-state.ts";

const model = { name: "m", version: "1" };
const failed = (reason: string) => [{ ...model, reason }];

describe("why a model could not be served (the agent's readiness and the gateway's)", () => {
  test("servable when one replica can hold it and has not just failed to load it", () => {
    expect(whyNotServable({ ...model, bytes: 100 }, [replicaState({ memoryBudgetBytes: 1000 })])).toBe(
      undefined,
    );
    expect(
      whyNotServable(model, [replicaState({ failed: failed("bad graph") }), replicaState({ id: "1" })]),
    ).toBe(undefined);
  });

  test("too big for every replica: its size and the largest budget", () => {
    expect(
      whyNotServable({ ...model, bytes: 5000 }, [
        replicaState({ memoryBudgetBytes: 1000 }),
        replicaState({ id: "1", memoryBudgetBytes: 2000 }),
      ]),
    ).toBe("it takes 5000 bytes, more than any replica's memory budget (2000 bytes)");
  });

  test("failed on every replica that could hold it: the failure (a replica too small for it does not count)", () => {
    expect(
      whyNotServable({ ...model, bytes: 1500 }, [
        replicaState({ memoryBudgetBytes: 1000 }),
        replicaState({ id: "1", memoryBudgetBytes: 2000, failed: failed("Protobuf parsing failed") }),
      ]),
    ).toBe("its last load failed: Protobuf parsing failed");
  });

  test("no replica at all", () => {
    expect(whyNotServable(model, [])).toBe("there is no replica");
  });
});
