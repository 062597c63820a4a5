/**
 * A session worker that dies the way a real one can (its thread exits, as when its heap runs out): the
 * real worker, handling every message as usual, plus a listener that exits the thread as soon as a run
 * whose first input starts with CRASH_VALUE arrives. Tests point WorkerSession.create (or, through a mock
 * of session-worker-url.ts, a replica) at it.
 */
import { parentPort } from "node:worker_threads";
import type { Envelope, SessionRequest } from "../../../backend/replica/session-protocol.ts";
import { CRASH_EXIT_CODE, CRASH_VALUE } from "./crash-trigger.ts";
import "../../../backend/replica/session-worker.ts";

parentPort?.on("message", (request: Envelope<SessionRequest>) => {
  const first = request.type === "run" ? request.parts[0]?.[0]?.data : undefined;
  if (first !== undefined && !Array.isArray(first) && first[0] === CRASH_VALUE) process.exit(CRASH_EXIT_CODE);
});
