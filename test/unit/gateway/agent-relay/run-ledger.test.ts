import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type Run, RunLedger } from "../../../../gateway/agent-relay/run-ledger.ts";
import type { RunOrder, RunOutcome } from "../../../../gateway/pool-calls.ts";
import { ProtocolViolation } from "../../../../gateway/registry/protocol-violation.ts";
import { Deadline } from "../../../../shared/deadline.ts";

const GRACE_MS = 30_000;

const runOf = (ticket: string, bytes: number, timeoutMs = 1_000): Run => {
  const order: RunOrder = {
    pool: "p",
    shard: 0,
    ticket,
    agentId: "a",
    channel: "c",
    replicaId: "0",
    replica: "a/0",
    model: "m",
    body: new Uint8Array(bytes),
    timeoutMs,
    budgetMs: timeoutMs,
    queuedMs: 0,
    attempts: 1,
    reruns: 0,
  };
  const now = Date.now();
  return { order, deadline: Deadline.in(timeoutMs, now), sentAt: now };
};

describe("RunLedger (an agent relay's runs)", () => {
  let deadlines: Run[];
  let expired: Run[];
  let stillRunning: Run[];
  let ledger: RunLedger;

  beforeEach(() => {
    vi.useFakeTimers();
    deadlines = [];
    expired = [];
    stillRunning = [];
    ledger = new RunLedger({
      abandonedGraceMs: GRACE_MS,
      onDeadline: (run) => deadlines.push(run),
      onAbandonedExpired: (run) => expired.push(run),
      claimAfterMs: 5_000,
      onStillRunning: (run) => stillRunning.push(run),
    });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("hands an answer to its run once, and counts the bytes held until then", () => {
    const answers: RunOutcome[] = [];
    ledger.open(runOf("t-1", 100), (outcome) => answers.push(outcome));
    ledger.open(runOf("t-2", 50), () => {});
    expect(ledger.bytes).toBe(150);
    const claim = ledger.claim("t-1", "0");
    expect(claim.kind).toBe("open");
    expect(ledger.bytes).toBe(50);
    // A second answer for the same run is not one the relay expects.
    expect(() => ledger.claim("t-1", "0")).toThrow(ProtocolViolation);
  });

  it("tells of a run still going after claimAfterMs, and of none answered before", () => {
    const long = runOf("t-long", 1, 60_000);
    ledger.open(long, () => {});
    ledger.open(runOf("t-short", 1, 60_000), () => {});
    vi.advanceTimersByTime(4_999);
    ledger.take("t-short");
    vi.advanceTimersByTime(1);
    expect(stillRunning).toEqual([long]);
  });

  it("refuses answers for runs it never sent, or from another replica", () => {
    ledger.open(runOf("t-1", 1), () => {});
    expect(() => ledger.claim("made-up", "0")).toThrow(/unknown request id/);
    // After a wake from hibernation an unknown id may be a run of the earlier life: late, not hostile.
    expect(ledger.claim("made-up", "0", true)).toEqual({ kind: "late" });
    expect(() => ledger.claim("t-1", "1")).toThrow(/from replica 1; it was sent to 0/);
    expect(ledger.has("t-1")).toBe(true);
  });

  it("calls onDeadline at a run's deadline; an abandoned run's answer frees it, a late one is harmless", () => {
    const run = runOf("t-1", 10, 500);
    ledger.open(run, () => {});
    vi.advanceTimersByTime(500);
    expect(deadlines).toEqual([run]);
    expect(ledger.take("t-1")).toBeDefined();
    ledger.abandon(run);
    expect(ledger.bytes).toBe(0);
    // The body is not kept for an answer nobody waits for.
    expect(ledger.claim("t-1", "0")).toMatchObject({
      kind: "abandoned",
      run: { order: { ticket: "t-1", body: new Uint8Array(0) } },
    });

    const slow = runOf("t-2", 10, 500);
    ledger.open(slow, () => {});
    ledger.take("t-2");
    ledger.abandon(slow);
    vi.advanceTimersByTime(GRACE_MS);
    expect(expired.map((run) => run.order.ticket)).toEqual(["t-2"]);
    expect(ledger.claim("t-2", "0")).toEqual({ kind: "late" });
  });

  it("takes everything out when its agent is gone", () => {
    const answers: string[] = [];
    ledger.open(runOf("t-1", 10), () => answers.push("t-1"));
    const abandoned = runOf("t-2", 10);
    ledger.open(abandoned, () => {});
    ledger.take("t-2");
    ledger.abandon(abandoned);
    const all = ledger.takeAll();
    expect(all.open.map(({ run }) => run.order.ticket)).toEqual(["t-1"]);
    expect(all.abandoned.map((run) => run.order.ticket)).toEqual(["t-2"]);
    expect(ledger.size).toBe(0);
    expect(ledger.bytes).toBe(0);
    // No timer outlives them.
    vi.advanceTimersByTime(GRACE_MS * 2);
    expect(deadlines).toEqual([]);
    expect(expired).toEqual([]);
  });
});
