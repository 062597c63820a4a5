import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { AgentWait } from "../../../../gateway/registry/agent-wait.ts";

describe("AgentWait", () => {
  let expectedUntil: number | undefined;
  let givenUp: string[][];
  let wait: AgentWait<string>;

  beforeEach(() => {
    vi.useFakeTimers({ now: 0 });
    expectedUntil = 1_000;
    givenUp = [];
    wait = new AgentWait<string>({
      now: Date.now,
      expectedBackUntil: (now) =>
        expectedUntil !== undefined && now < expectedUntil ? expectedUntil : undefined,
      giveUp: (waiting) => givenUp.push(waiting),
    });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("keeps requests while agents are expected back, and hands them all over when one serves", () => {
    const until = wait.expectedUntil();
    expect(until).toBe(1_000);
    wait.wait("a", 1_000);
    wait.wait("b", 1_000);
    expect(wait.size).toBe(2);
    expect(wait.release()).toEqual(["a", "b"]);
    vi.advanceTimersByTime(2_000);
    expect(givenUp).toEqual([]);
  });

  it("says when no agent is expected back", () => {
    expectedUntil = undefined;
    expect(wait.expectedUntil()).toBeUndefined();
  });

  it("gives up every waiting request when the grace ends, later when it was extended meanwhile", () => {
    wait.wait("a", 1_000);
    wait.wait("b", 1_000);
    wait.delete("b");
    expectedUntil = 1_500;
    vi.advanceTimersByTime(1_000);
    expect(givenUp).toEqual([]);
    vi.advanceTimersByTime(500);
    expect(givenUp).toEqual([["a"]]);
    expect(wait.size).toBe(0);
  });
});
