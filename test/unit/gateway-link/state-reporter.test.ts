import { describe, expect, test, vi } from "vitest";
import {
  STATE_FRAME_INTERVAL_MS,
  StateReporter,
  WHOLE_TIMINGS_EVERY_MS,
} from "../../../backend/gateway-link/state-reporter.ts";

// When the agent tells the gateway of its replicas' changes: coalesced state frames, and now and then one
// with every model's timings (ReplicaState.timings).

describe("StateReporter", () => {
  test("a state frame carries every model's timings once WHOLE_TIMINGS_EVERY_MS has passed since the hello or the last that did", () => {
    vi.useFakeTimers();
    try {
      let now = 0;
      const wholes: boolean[] = [];
      const reporter = new StateReporter(
        (whole) => {
          wholes.push(whole);
          return [];
        },
        () => {},
        () => now,
      );
      const changeAt = (at: number) => {
        now = at;
        reporter.changed();
        vi.advanceTimersByTime(STATE_FRAME_INTERVAL_MS);
        now = at + STATE_FRAME_INTERVAL_MS;
      };
      reporter.start();
      changeAt(1_000);
      changeAt(WHOLE_TIMINGS_EVERY_MS - 1_000);
      changeAt(WHOLE_TIMINGS_EVERY_MS + 1_000);
      changeAt(WHOLE_TIMINGS_EVERY_MS + 2_000);
      changeAt(2 * WHOLE_TIMINGS_EVERY_MS + 2_000);
      expect(wholes).toEqual([false, false, true, false, true]);
      reporter.stop();
    } finally {
      vi.useRealTimers();
    }
  });
});
