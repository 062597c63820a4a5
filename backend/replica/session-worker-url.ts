/** Where the session worker's entry is: session-worker.ts beside this module, or dist/session-worker.mjs. */
import { workerEntryUrl } from "../worker-entry-url.ts";

export function sessionWorkerUrl(): URL {
  return workerEntryUrl(import.meta.url, "session-worker");
}
