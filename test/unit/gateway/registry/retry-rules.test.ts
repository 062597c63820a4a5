import { describe, expect, it } from "vitest";
import {
  MAX_ATTEMPTS,
  MAX_RERUNS,
  rerunRefusal,
  retriesAfterError,
} from "../../../../gateway/registry/retry-rules.ts";

describe("retriesAfterError", () => {
  const fresh = { attempts: 1, deadlinePassed: false };

  it("sends a request its replica never started elsewhere after a server error or a 404 there", () => {
    expect(retriesAfterError({ started: false, status: 503 }, fresh)).toBe(true);
    expect(retriesAfterError({ started: false, status: 500 }, fresh)).toBe(true);
    // Another replica may have the model in its repository (an agent with a repository of its own).
    expect(retriesAfterError({ started: false, status: 404 }, fresh)).toBe(true);
  });

  it("answers the client when another replica would fail the same way, or the request may have run", () => {
    expect(retriesAfterError({ started: false, status: 400 }, fresh)).toBe(false);
    expect(retriesAfterError({ started: false, status: 413 }, fresh)).toBe(false);
    expect(retriesAfterError({ started: true, status: 503 }, fresh)).toBe(false);
  });

  it("stops after MAX_ATTEMPTS tries, and once the deadline has passed", () => {
    const error = { started: false, status: 503 };
    expect(retriesAfterError(error, { attempts: MAX_ATTEMPTS - 1, deadlinePassed: false })).toBe(true);
    expect(retriesAfterError(error, { attempts: MAX_ATTEMPTS, deadlinePassed: false })).toBe(false);
    expect(retriesAfterError(error, { attempts: 1, deadlinePassed: true })).toBe(false);
  });
});

describe("rerunRefusal", () => {
  const rerunnable = { model: "m", reruns: 0, idempotent: true, deadlinePassed: false };

  it("allows one rerun of an idempotent model's request within its deadline", () => {
    expect(rerunRefusal(rerunnable)).toBeUndefined();
  });

  it("says why it refuses: run again already, not idempotent, or past the deadline", () => {
    expect(rerunRefusal({ ...rerunnable, reruns: MAX_RERUNS })).toBe("it had been run again once already");
    expect(rerunRefusal({ ...rerunnable, idempotent: false })).toBe(
      "'m' is not idempotent (its config.json says so)",
    );
    expect(rerunRefusal({ ...rerunnable, deadlinePassed: true })).toBe("its deadline has passed");
  });
});
