import { describe, expect, test } from "vitest";
import { ReceiveBudget } from "../../../../backend/server/grpc/receive-budget.ts";

// One connection's budget for request bytes (its transport-level behaviour, on real streams, is in
// grpc-transport.test.ts): who may be read, and who is woken when.

describe("a connection's receive budget", () => {
  test("under its limit everyone is read; over it with whole messages held, nobody until one is answered", () => {
    const budget = new ReceiveBudget<string>(100);
    budget.arriving("a", 60, true);
    expect(budget.mayRead("a")).toBe(true);
    const answered = budget.holdWhole(60);
    budget.arriving("a", 0, false);
    budget.arriving("b", 50, true);
    expect(budget.heldBytes).toBe(110);
    expect(budget.mayRead("b")).toBe(false);
    const woken: string[] = [];
    budget.wait("b", () => woken.push("b"));
    expect(woken).toEqual([]);
    answered();
    expect(woken).toEqual(["b"]);
    // Given back once, however often called.
    answered();
    expect(budget.heldBytes).toBe(50);
  });

  test("over its limit with nothing whole, the message that began first goes on, and only it", () => {
    const budget = new ReceiveBudget<string>(100);
    budget.arriving("a", 40, true);
    budget.arriving("b", 40, true);
    budget.arriving("c", 40, true);
    expect(["a", "b", "c"].map((caller) => budget.mayRead(caller))).toEqual([true, false, false]);
    // a's message is whole and held: nobody goes on until it is answered.
    const answered = budget.holdWhole(60);
    budget.arriving("a", 0, false);
    expect(["a", "b", "c"].map((caller) => budget.mayRead(caller))).toEqual([false, false, false]);
    const woken: string[] = [];
    budget.wait("b", () => woken.push("b"));
    budget.wait("c", () => woken.push("c"));
    answered();
    // Under the limit again (b's and c's 80 of 100): both woken.
    expect(woken).toEqual(["b", "c"]);
  });

  test("a new message takes its place behind those already arriving; a caller that ended frees its bytes", () => {
    const budget = new ReceiveBudget<string>(50);
    budget.arriving("a", 30, true);
    budget.arriving("b", 30, true);
    expect(budget.mayRead("a")).toBe(true);
    // a finished its message (given back at once) and began another: b's began first now.
    budget.holdWhole(30)();
    budget.arriving("a", 30, true);
    expect([budget.mayRead("a"), budget.mayRead("b")]).toEqual([false, true]);
    const woken: string[] = [];
    budget.wait("a", () => woken.push("a"));
    budget.forget("b");
    expect(budget.heldBytes).toBe(30);
    expect(woken).toEqual(["a"]);
  });
});
