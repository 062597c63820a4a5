import { describe, expect, test, vi } from "vitest";
import { Deadline, MAX_TIMEOUT_MS, requestDeadline } from "../../shared/deadline.ts";
import { SwitchyardError } from "../../shared/errors.ts";

const headers = (entries: Record<string, string>) => new Headers(entries);
const timeoutOf = (h: Record<string, string>, parameters?: Record<string, unknown>) =>
  requestDeadline(headers(h), parameters, 60_000, 0).remainingMs(0);

describe("requestDeadline", () => {
  test("the header in seconds, the OIP parameter in microseconds, the smaller wins, else the default", () => {
    expect(timeoutOf({})).toBe(60_000);
    expect(timeoutOf({ "X-Request-Timeout": "2.5" })).toBe(2500);
    expect(timeoutOf({}, { timeout: 300_000 })).toBe(300);
    expect(timeoutOf({ "X-Request-Timeout": "2" }, { timeout: 300_000 })).toBe(300);
    // A day is more than any request may ask for.
    expect(timeoutOf({ "X-Request-Timeout": "86400" })).toBe(MAX_TIMEOUT_MS);
  });

  test.each([
    ["0", undefined],
    ["-1", undefined],
    ["5e-324", undefined],
    ["soon", undefined],
    [undefined, 0],
    [undefined, 999],
    [undefined, "5"],
  ])("header %s / parameter %s is bad input (a deadline that could only end in 504)", (header, parameter) => {
    const call = () =>
      requestDeadline(
        headers(header === undefined ? {} : { "X-Request-Timeout": header }),
        parameter === undefined ? undefined : { timeout: parameter },
        60_000,
      );
    expect(call).toThrow(SwitchyardError);
    expect(call).toThrow(/timeout/i);
  });
});

describe("Deadline", () => {
  test("what is left of it travels as milliseconds; it is passed at its moment, not before", () => {
    const deadline = Deadline.in(1_000, 10_000);
    expect(deadline.remainingMs(10_400)).toBe(600);
    expect(deadline.passed(10_999)).toBe(false);
    expect(deadline.passed(11_000)).toBe(true);
    expect(deadline.remainingMs(12_000)).toBe(0);
    // The next hop rebuilds it from what is left, on its own clock.
    expect(Deadline.in(deadline.remainingMs(10_400), 500).at).toBe(1_100);
  });

  test("a hop that carries the client's budget keeps it for messages; one that does not says what was left", () => {
    const carried = Deadline.in(299, 1_000, 300);
    expect(carried.at).toBe(1_299);
    expect(carried.exceeded("no replica became free").message).toBe(
      "no replica became free within the request's deadline of 300 ms",
    );
    expect(Deadline.in(299, 1_000).exceeded("x").message).toMatch(/deadline of 299 ms/);
  });

  test("a 504 names the budget as the client wrote it, to the microsecond, not as floating point computed it", () => {
    // X-Request-Timeout: 0.0010000000000000002 (a generated header, fuzz-requests.test.ts) is 1.0000000000000002 ms.
    const headers = {
      get: (name: string) => (name === "x-request-timeout" ? "0.0010000000000000002" : null),
    };
    const fromSeconds = requestDeadline(headers, undefined, 60_000, 0);
    expect(fromSeconds.exceeded("no replica became free").message).toBe(
      "no replica became free within the request's deadline of 1 ms",
    );
    expect(Deadline.in(1.5004, 0).exceeded("x").message).toBe("x within the request's deadline of 1.5 ms");
    expect(Deadline.in(2.0016, 0).exceeded("x").message).toBe("x within the request's deadline of 2.002 ms");
  });

  test("its watch aborts at the deadline with the 504 a client gets, unless stopped first", async () => {
    vi.useFakeTimers();
    try {
      const deadline = Deadline.in(50);
      const stopped = deadline.watch("unused");
      stopped.stop();
      const { signal } = deadline.watch("no replica became free");
      vi.advanceTimersByTime(49);
      expect(signal.aborted).toBe(false);
      vi.advanceTimersByTime(1);
      expect(signal.aborted).toBe(true);
      const reason = signal.reason as SwitchyardError;
      expect(reason.status).toBe(504);
      expect(reason.message).toBe("no replica became free within the request's deadline of 50 ms");
      expect(stopped.signal.aborted).toBe(false);
    } finally {
      vi.useRealTimers();
    }
  });

  test("its watch follows the caller's signal: aborted with its reason, before the deadline or already", async () => {
    vi.useFakeTimers();
    try {
      const deadline = Deadline.in(50);
      const client = new AbortController();
      const watched = deadline.watch("unused", { follow: client.signal });
      vi.advanceTimersByTime(10);
      const gone = new Error("the client went away");
      client.abort(gone);
      expect(watched.signal.aborted).toBe(true);
      expect(watched.signal.reason).toBe(gone);
      // The deadline's timer went with it: the reason stays the client's.
      vi.advanceTimersByTime(100);
      expect(watched.signal.reason).toBe(gone);

      const already = deadline.watch("unused", { follow: client.signal });
      expect(already.signal.reason).toBe(gone);
    } finally {
      vi.useRealTimers();
    }
  });

  test("a stopped watch no longer follows the caller's signal", () => {
    const client = new AbortController();
    const watched = Deadline.in(50).watch("unused", { follow: client.signal });
    watched.stop();
    client.abort(new Error("late"));
    expect(watched.signal.aborted).toBe(false);
  });
});
