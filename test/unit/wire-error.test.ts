import { MessageChannel, type MessagePort } from "node:worker_threads";
import { expect, test } from "vitest";
import { fromWireError, toWireError } from "../../backend/wire-error.ts";
import { describeError, SwitchyardError } from "../../shared/errors.ts";

/** Posts `value` over a real MessageChannel and resolves with what arrives. */
async function across<T>(value: T): Promise<T> {
  const { port1, port2 } = new MessageChannel();
  const arrived = new Promise<T>((resolve) => (port2 as MessagePort).once("message", resolve));
  port1.postMessage(value);
  const received = await arrived;
  port1.close();
  return received;
}

test("an error keeps its status, message and Retry-After; anything else is a bare 500", async () => {
  const busy = new SwitchyardError("queue_full", "the queue is full", { retryAfterSeconds: 3 });
  const back = fromWireError(await across(toWireError(busy)));
  expect(back.status).toBe(429);
  expect(back.message).toBe("the queue is full");
  expect(back.headers()).toEqual({ "Retry-After": "3" });
  const hidden = fromWireError(await across(toWireError(new Error("/secret/path exploded"))));
  expect(hidden.status).toBe(500);
  expect(hidden.message).not.toContain("secret");
  expect(hidden.toBody()).toEqual({ error: "internal error" });
  // What caused it crosses for the log on the other side (an intake thread logs the 5xx it answers).
  expect(describeError(hidden)).toBe("internal error (/secret/path exploded)");
  const plain = fromWireError(await across(toWireError(new SwitchyardError("bad_input", "no such input"))));
  expect(describeError(plain)).toBe("no such input");
});
