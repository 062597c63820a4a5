import { describe, expect, test } from "vitest";
import { DirectTargets, directKey } from "../../../gateway/direct-targets.ts";
import { DIRECT_PERMIT_MS } from "../../../shared/routing/direct-hits.ts";

const target = (agentId: string) => ({
  agentId,
  replicaId: "0",
  replica: `${agentId}/0`,
  channel: `channel-${agentId}`,
  shard: 0,
});

describe("DirectTargets: where a Worker isolate sends a model's next hit", () => {
  test("remembers the last replica for a request's model, version and hint, in its pool, no longer than a permit lasts", () => {
    const targets = new DirectTargets();
    const key = directKey("default", { model: "m" });
    targets.remember(key, target("a"), 1_000);
    expect(targets.get(key, 1_000 + DIRECT_PERMIT_MS)).toEqual(target("a"));
    // Another pool, version or hint is another key.
    expect(targets.get(directKey("other", { model: "m" }), 1_000)).toBeUndefined();
    expect(targets.get(directKey("default", { model: "m", version: "2" }), 1_000)).toBeUndefined();
    expect(targets.get(directKey("default", { model: "m", hint: "h" }), 1_000)).toBeUndefined();
    expect(targets.get(key, 1_001 + DIRECT_PERMIT_MS)).toBeUndefined();
    expect(targets.size).toBe(0);
  });

  test("a refused or failed hit is forgotten; a later success replaces the replica", () => {
    const targets = new DirectTargets();
    const key = directKey("default", { model: "m" });
    targets.remember(key, target("a"), 0);
    targets.forget(key);
    expect(targets.get(key, 0)).toBeUndefined();
    targets.remember(key, target("a"), 0);
    targets.remember(key, target("b"), 1);
    expect(targets.get(key, 1)?.agentId).toBe("b");
  });

  test("holds a bounded number of keys whatever clients name, the least recently used going first", () => {
    const targets = new DirectTargets();
    for (let index = 0; index < 1_500; index += 1) {
      targets.remember(directKey("default", { model: `m${index}` }), target("a"), 0);
      // The first key stays in use.
      targets.remember(directKey("default", { model: "m0" }), target("a"), 0);
    }
    expect(targets.size).toBe(1_000);
    expect(targets.get(directKey("default", { model: "m0" }), 0)).toBeDefined();
    expect(targets.get(directKey("default", { model: "m1" }), 0)).toBeUndefined();
  });

  test("keys cannot collide through the characters of a name", () => {
    expect(directKey("a", { model: "b/c" })).not.toBe(directKey("a/b", { model: "c" }));
    expect(directKey("p", { model: "m", hint: "1" })).not.toBe(directKey("p", { model: "m", version: "1" }));
  });
});
