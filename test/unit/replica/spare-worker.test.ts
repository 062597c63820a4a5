import type { Worker } from "node:worker_threads";
import { afterEach, describe, expect, test } from "vitest";
import { sessionWorkerUrl } from "../../../backend/replica/session-worker-url.ts";
import { keepSpare, takeWorker } from "../../../backend/replica/spare-worker.ts";

// The booted worker kept ready so that a load does not wait for a thread to start.

const started: Worker[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((worker) => worker.terminate()));
});

/** A spare carries the listeners that forget it should it die while idle; a fresh worker has none. */
const isSpare = (worker: Worker) => worker.listenerCount("exit") > 0;

describe("spare session worker", () => {
  test("a load takes the spare once; without one it starts a worker of its own", async () => {
    const entry = sessionWorkerUrl();
    keepSpare(entry);
    keepSpare(entry); // one spare at most
    const first = takeWorker(entry);
    const second = takeWorker(entry);
    started.push(first, second);
    expect([isSpare(first), isSpare(second)]).toEqual([true, false]);
    // Each is a real session worker: it answers a release (it holds no session yet).
    for (const worker of [first, second]) {
      const reply = await new Promise((resolve) => {
        worker.once("message", resolve);
        worker.postMessage({ id: 1, type: "release" });
      });
      expect(reply).toEqual({ id: 1, type: "released" });
    }
  });
});
