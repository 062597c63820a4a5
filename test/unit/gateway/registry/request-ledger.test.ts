import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { SlotAnswer, SlotAsk } from "../../../../gateway/pool-calls.ts";
import {
  ABANDONED_GRACE_MS,
  CLAIM_WINDOW_MS,
  type Held,
  type PendingAsk,
  RequestLedger,
  RUN_CLAIM_AFTER_MS,
} from "../../../../gateway/registry/request-ledger.ts";

const ask = (timeoutMs = 1_000): SlotAsk => ({
  model: "m",
  pass: "never",
  timeoutMs,
  budgetMs: timeoutMs,
  attempts: 0,
  reruns: 0,
});

const on = (agentId: string, replicaId = "0") => ({ agentId, replicaId, address: `${agentId}/${replicaId}` });

describe("RequestLedger", () => {
  let deadlines: PendingAsk[];
  let expired: Held[];
  let ledger: RequestLedger;

  beforeEach(() => {
    vi.useFakeTimers();
    deadlines = [];
    expired = [];
    ledger = new RequestLedger({
      now: Date.now,
      onDeadline: (pending) => deadlines.push(pending),
      onHeldExpired: (held) => expired.push(held),
    });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("answers each ask exactly once, whether with a failure or a grant", () => {
    const answers: SlotAnswer[] = [];
    const failed = ledger.open(ask(), (answer) => answers.push(answer));
    const granted = ledger.open(ask(), (answer) => answers.push(answer));
    expect(ledger.settle(failed, { ok: false, status: 503, message: "first" })).toBe(true);
    expect(ledger.settle(failed, { ok: false, status: 504, message: "second" })).toBe(false);
    expect(ledger.grant(failed, on("a"), "channel")).toBe(false);
    vi.advanceTimersByTime(5);
    expect(ledger.grant(granted, on("a"), "channel")).toBe(true);
    expect(ledger.settle(granted, { ok: false, status: 504, message: "late" })).toBe(false);
    expect(answers).toEqual([
      { ok: false, status: 503, message: "first" },
      {
        ok: true,
        grant: {
          ticket: granted.id,
          agentId: "a",
          replicaId: "0",
          replica: "a/0",
          channel: "channel",
          queuedMs: 5,
        },
      },
    ]);
    expect(ledger.isOpen(failed) || ledger.isOpen(granted)).toBe(false);
  });

  it("calls onDeadline when a waiting ask's deadline passes, never for an answered one", () => {
    const late = ledger.open(ask(1_000), () => {});
    const answered = ledger.open(ask(1_000), () => {});
    ledger.grant(answered, on("a"), "channel");
    vi.advanceTimersByTime(999);
    expect(deadlines).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(deadlines).toEqual([late]);
  });

  it("holds a granted slot until released, and stays busy while it does", () => {
    const pending = ledger.open(ask(), () => {});
    ledger.grant(pending, on("a"), "channel");
    expect(ledger.busy).toBe(true);
    expect(ledger.release(pending.id)).toMatchObject({
      ticket: pending.id,
      address: "a/0",
      route: { model: "m" },
    });
    expect(ledger.release(pending.id)).toBeUndefined();
    expect(ledger.busy).toBe(false);
  });

  it("frees a grant nobody took up after the claim window, long before its deadline", () => {
    const pending = ledger.open(ask(60_000), () => {});
    ledger.grant(pending, on("a"), "channel");
    vi.advanceTimersByTime(CLAIM_WINDOW_MS - 1);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired.map((held) => held.ticket)).toEqual([pending.id]);
  });

  it("keeps a claimed slot until its deadline and the grace after it", () => {
    const pending = ledger.open(ask(60_000), () => {});
    ledger.grant(pending, on("a"), "channel");
    vi.advanceTimersByTime(RUN_CLAIM_AFTER_MS);
    ledger.claim(pending.id);
    vi.advanceTimersByTime(60_000 - RUN_CLAIM_AFTER_MS + ABANDONED_GRACE_MS - 1);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired.map((held) => held.ticket)).toEqual([pending.id]);
  });

  it("frees a claimed slot whose release never came once its deadline and the grace after it are over", () => {
    const pending = ledger.open(ask(1_000), () => {});
    ledger.grant(pending, on("a"), "channel");
    ledger.claim(pending.id);
    vi.advanceTimersByTime(1_000 + ABANDONED_GRACE_MS - 1);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired.map((held) => held.ticket)).toEqual([pending.id]);
    expect(ledger.release(pending.id)).toBeUndefined();
    expect(ledger.busy).toBe(false);
  });

  it("forgets the slots of an agent that left, and only those", () => {
    const left = ledger.open(ask(), () => {});
    const stays = ledger.open(ask(), () => {});
    ledger.grant(left, on("a"), "one");
    ledger.grant(stays, on("b"), "two");
    ledger.forgetAgent("a");
    expect(ledger.heldCount).toBe(1);
    expect(ledger.release(left.id)).toBeUndefined();
    expect(ledger.release(stays.id)).toBeDefined();
    vi.advanceTimersByTime(60 * 60_000);
    expect(expired).toEqual([]);
  });

  it("gives every ask an id of its own", () => {
    const ids = new Set(Array.from({ length: 100 }, () => ledger.open(ask(), () => {}).id));
    expect(ids.size).toBe(100);
  });
});
