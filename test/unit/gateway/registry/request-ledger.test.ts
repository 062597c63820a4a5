import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ProtocolViolation } from "../../../../gateway/registry/protocol-violation.ts";
import type { RelayedRequest, RelayOutcome } from "../../../../gateway/registry/relay-types.ts";
import {
  ABANDONED_GRACE_MS,
  type PendingRequest,
  RequestLedger,
  type Sent,
} from "../../../../gateway/registry/request-ledger.ts";

const call = (bytes: number, timeoutMs = 1_000): RelayedRequest => ({
  model: "m",
  body: new Uint8Array(bytes),
  timeoutMs,
  budgetMs: timeoutMs,
});

const sentTo = (pending: PendingRequest, agentId: string, replicaId = "0"): Sent => {
  const sent = { route: pending.route, agentId, replicaId, address: `${agentId}/${replicaId}`, sentAt: 0 };
  pending.sent = sent;
  return sent;
};

describe("RequestLedger", () => {
  let deadlines: PendingRequest[];
  let expired: Sent[];
  let ledger: RequestLedger;

  beforeEach(() => {
    vi.useFakeTimers();
    deadlines = [];
    expired = [];
    ledger = new RequestLedger({
      now: Date.now,
      onDeadline: (pending) => deadlines.push(pending),
      onAbandonedExpired: (sent) => expired.push(sent),
    });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("settles each request exactly once, and gives its bytes back then", () => {
    const outcomes: RelayOutcome[] = [];
    const pending = ledger.open(call(100), (outcome) => outcomes.push(outcome), 0);
    ledger.open(call(50), () => {}, 0);
    expect(ledger.bytes).toBe(150);
    expect(ledger.busy).toBe(true);
    const failure: RelayOutcome = { ok: false, status: 503, message: "first" };
    expect(ledger.settle(pending, failure)).toBe(true);
    expect(ledger.settle(pending, { ok: false, status: 504, message: "second" })).toBe(false);
    expect(outcomes).toEqual([failure]);
    expect(ledger.bytes).toBe(50);
    expect(ledger.isOpen(pending)).toBe(false);
  });

  it("calls onDeadline when an open request's deadline passes, never for a settled one", () => {
    const late = ledger.open(call(1, 1_000), () => {}, 0);
    const answered = ledger.open(call(1, 1_000), () => {}, 0);
    ledger.settle(answered, { ok: false, status: 400, message: "done" });
    vi.advanceTimersByTime(999);
    expect(deadlines).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(deadlines).toEqual([late]);
  });

  it("gives out ids no other open request has, and keeps the rerun count it is given", () => {
    const ids = new Set(Array.from({ length: 100 }, () => ledger.open(call(1), () => {}, 1).id));
    expect(ids.size).toBe(100);
    expect(ledger.open(call(1), () => {}, 1).reruns).toBe(1);
  });

  it("matches an answer to the agent and replica it was sent to, and refuses any other", () => {
    const pending = ledger.open(call(1), () => {}, 0);
    const sent = sentTo(pending, "a");
    expect(() => ledger.claim("b", pending.id, "0")).toThrow(ProtocolViolation);
    expect(() => ledger.claim("a", pending.id, "1")).toThrow(/it was sent to 0/);
    expect(ledger.claim("a", pending.id, "0")).toEqual({ kind: "pending", pending, sent });
    expect(ledger.sentTo("a")).toEqual([pending]);
    expect(ledger.sentTo("b")).toEqual([]);
  });

  it("ignores answers to another incarnation's ids, and refuses made-up ones", () => {
    expect(ledger.claim("a", "0badcafe-1", "0")).toEqual({ kind: "stale" });
    expect(() => ledger.claim("a", "whatever", "0")).toThrow(/unknown request id/);
    const mine = ledger.open(call(1), () => {}, 0);
    const otherIncarnation = mine.id.startsWith("0badcafe") ? "1badcafe-1" : "0badcafe-1";
    expect(ledger.claim("a", otherIncarnation, "0")).toEqual({ kind: "stale" });
  });

  it("keeps an abandoned request's slot until its agent answers or the grace runs out", () => {
    const answered = ledger.open(call(1), () => {}, 0);
    const silent = ledger.open(call(1), () => {}, 0);
    const answeredSent = sentTo(answered, "a");
    const silentSent = sentTo(silent, "a");
    for (const pending of [answered, silent]) ledger.settle(pending, { ok: false, status: 504, message: "" });
    ledger.abandon(answered.id, answeredSent);
    ledger.abandon(silent.id, silentSent);
    expect(ledger.busy).toBe(true);
    expect(ledger.claim("a", answered.id, "0")).toEqual({ kind: "abandoned", sent: answeredSent });
    vi.advanceTimersByTime(ABANDONED_GRACE_MS);
    // The answered one's timer was cleared: only the silent one expires.
    expect(expired).toEqual([silentSent]);
    expect(ledger.busy).toBe(false);
  });

  it("forgets an agent's abandoned requests when it leaves (their slots went with it)", () => {
    const pending = ledger.open(call(1), () => {}, 0);
    const sent = sentTo(pending, "a");
    ledger.settle(pending, { ok: false, status: 504, message: "" });
    ledger.abandon(pending.id, sent);
    ledger.forgetAbandonedBy("a");
    vi.advanceTimersByTime(ABANDONED_GRACE_MS);
    expect(expired).toEqual([]);
    expect(ledger.busy).toBe(false);
  });
});
