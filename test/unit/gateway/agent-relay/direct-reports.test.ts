import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import {
  DIRECT_ADOPT_WITHIN_MS,
  DIRECT_REPORT_WITHIN_MS,
  DirectReports,
} from "../../../../gateway/agent-relay/direct-reports.ts";
import type { DirectEntry, DirectRun, DirectSettled, RunReport } from "../../../../gateway/pool-calls.ts";

const run = (ticket: string): DirectRun => ({
  ticket,
  agentId: "a",
  channel: "c",
  replicaId: "0",
  model: "m",
  timeoutMs: 1_000,
});
const report = (ticket: string): RunReport => ({
  ticket,
  channel: "c",
  agentId: "a",
  replicaId: "0",
  replica: "a/0",
  model: "m",
  deadlinePassed: false,
  totalMs: 3,
  attempts: 1,
  reruns: 0,
  result: {
    kind: "ok",
    model: { name: "m", version: "1" },
    cache: "hit",
    phases: { queueMs: 0, loadMs: 0, inferMs: 1 },
  },
});

/** A registry that takes every slot and gives a permit with every release, recording each call. */
function registry(answer?: (entries: DirectEntry[]) => Promise<DirectSettled[]>) {
  const calls: DirectEntry[][] = [];
  const settle = (entries: DirectEntry[]) => {
    calls.push(entries.map((entry) => ({ ...entry })));
    return (
      answer?.(entries) ??
      Promise.resolve(
        entries.map(({ release }) =>
          release === undefined
            ? { adopt: "taken" as const }
            : { adopt: "taken" as const, decision: { again: false as const, direct: { capacity: 2 } } },
        ),
      )
    );
  };
  return { calls, settle };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("DirectReports: an agent's relay telling its registry about direct hits", () => {
  test("hits that ended before their adopt was due reach the registry as one call, each adopted and released", async () => {
    const { calls, settle } = registry();
    const reports = new DirectReports({ settle });
    const adopted = [reports.adopt(run("d-1")), reports.adopt(run("d-2"))];
    const released = [reports.release(report("d-1")), reports.release(report("d-2"))];
    // Nothing is held for them any more: they wait for the longer interval.
    await vi.advanceTimersByTimeAsync(DIRECT_ADOPT_WITHIN_MS * 2);
    expect(calls).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(DIRECT_REPORT_WITHIN_MS);
    expect(calls).toHaveLength(1);
    expect(calls[0]?.map(({ adopt, release }) => [adopt.ticket, release?.ticket])).toEqual([
      ["d-1", "d-1"],
      ["d-2", "d-2"],
    ]);
    expect(await Promise.all(adopted)).toEqual(["taken", "taken"]);
    expect(await Promise.all(released)).toEqual([
      { again: false, direct: { capacity: 2 } },
      { again: false, direct: { capacity: 2 } },
    ]);
  });

  test("a hit still running is told within DIRECT_ADOPT_WITHIN_MS, taking the ended ones along; its release then goes on its own", async () => {
    const { calls, settle } = registry();
    const reports = new DirectReports({ settle });
    void reports.adopt(run("d-1"));
    void reports.release(report("d-1"));
    await vi.advanceTimersByTimeAsync(10);
    const adopted = reports.adopt(run("d-2"));
    await vi.advanceTimersByTimeAsync(DIRECT_ADOPT_WITHIN_MS - 1);
    expect(calls).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(
      calls.map((entries) => entries.map(({ adopt, release }) => [adopt.ticket, release?.ticket])),
    ).toEqual([
      [
        ["d-1", "d-1"],
        ["d-2", undefined],
      ],
    ]);
    expect(await adopted).toBe("taken");
    // Its adopt left without it: the caller releases it as any run.
    expect(reports.release(report("d-2"))).toBeUndefined();
    expect(reports.release(report("unknown"))).toBeUndefined();
    // Nothing left: no more calls.
    await vi.advanceTimersByTimeAsync(DIRECT_REPORT_WITHIN_MS * 2);
    expect(calls).toHaveLength(1);
  });

  test("flush sends at once (a failed hit's release needs its adopt in the registry's books first)", async () => {
    const { calls, settle } = registry();
    const reports = new DirectReports({ settle });
    const adopted = reports.adopt(run("d-1"));
    reports.flush();
    expect(calls).toHaveLength(1);
    expect(await adopted).toBe("taken");
    // Nothing waits: no empty call, and the timer went with the batch.
    reports.flush();
    await vi.advanceTimersByTimeAsync(DIRECT_REPORT_WITHIN_MS * 2);
    expect(calls).toHaveLength(1);
  });

  test("a full batch goes at once", () => {
    const { calls, settle } = registry();
    const reports = new DirectReports({ settle, maxEntries: 3 });
    for (const ticket of ["d-1", "d-2", "d-3", "d-4"]) void reports.adopt(run(ticket));
    expect(calls.map((entries) => entries.length)).toEqual([3]);
  });

  test("a registry that fails or answers short: adopts count as refused and releases as unreached", async () => {
    const failing = new DirectReports({ settle: () => Promise.reject(new Error("reset")) });
    const adopted = failing.adopt(run("d-1"));
    const released = failing.release(report("d-1"));
    failing.flush();
    expect(await adopted).toBe("refused");
    expect(await released).toMatchObject({ again: false });
    const short = new DirectReports({ settle: () => Promise.resolve([]) });
    const shortAdopted = short.adopt(run("d-2"));
    short.flush();
    expect(await shortAdopted).toBe("refused");
  });
});
