import { expect, test } from "vitest";
import { SwitchyardError } from "../../shared/errors.ts";
test("errors map to OIP statuses", () => {
  expect(new SwitchyardError("queue_full", "full", { retryAfterSeconds: 2 }).status).toBe(429);
});
