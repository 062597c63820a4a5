import { describe, expect, test } from "vitest";
import { placementOrder } from "../../../shared/routing/placement.ts";
import { loadedModel, replicaState } from "../../support/replica-state.ts";

const candidate = (id: string, fields: Parameters<typeof replicaState>[0], bytes?: number) => ({
  id,
  state: replicaState({ id, ...fields }),
  bytes,
});
const ids = (list: ReadonlyArray<{ id: string }>) => list.map((entry) => entry.id);

describe("where pinned copies go", () => {
  test("a replica holding the version first (nothing to read), then the most free memory", () => {
    const order = placementOrder(
      [
        candidate("full", { memoryBudgetBytes: 10_000, loaded: [loadedModel("other", { bytes: 9000 })] }),
        candidate("empty", { memoryBudgetBytes: 10_000 }),
        candidate("holder", { memoryBudgetBytes: 10_000, loaded: [loadedModel("m", { bytes: 5000 })] }),
      ],
      { name: "m", version: "1" },
    );
    expect(ids(order)).toEqual(["holder", "empty", "full"]);
  });

  test("another version held is no reason to go first", () => {
    const order = placementOrder(
      [
        candidate("old version", { loaded: [loadedModel("m", { version: "1", bytes: 5e8 })] }),
        candidate("empty", {}),
      ],
      { name: "m", version: "2" },
    );
    expect(ids(order)).toEqual(["empty", "old version"]);
  });

  test("replicas where the copy would not fit beside their pins are left out; unpinned models do not count", () => {
    const pinned = (name: string, bytes: number) => loadedModel(name, { bytes, pinned: true });
    const order = placementOrder(
      [
        candidate("pins use the memory", { memoryBudgetBytes: 1000, loaded: [pinned("a", 800)] }, 300),
        candidate(
          "pins use every model slot",
          { maxModels: 2, loaded: [pinned("a", 1), pinned("b", 1)] },
          300,
        ),
        candidate(
          "only unpinned",
          { memoryBudgetBytes: 1000, loaded: [loadedModel("a", { bytes: 900 })] },
          300,
        ),
        // Its own older version's pin is about to be released: it does not stand in the way.
        candidate("own older pin", { memoryBudgetBytes: 1000, loaded: [pinned("m", 900)] }, 300),
      ],
      { name: "m", version: "2" },
    );
    expect(ids(order).sort()).toEqual(["only unpinned", "own older pin"]);
  });

  test("a size not known yet only needs a free model slot", () => {
    const order = placementOrder([candidate("any", { memoryBudgetBytes: 1 })], { name: "m" });
    expect(ids(order)).toEqual(["any"]);
  });
});
