/**
 * One booted session worker kept ready for the next load. Starting a worker thread (a fresh V8 isolate,
 * onnxruntime-node's JavaScript, and from sources Node's TypeScript stripper) takes tens of milliseconds
 * on an idle machine and a few hundred on a busy one, which would otherwise be added to every load: a
 * small model takes a few milliseconds to load. The spare is idle (no session, no device memory) and
 * unref'd, so it never keeps the process alive.
 */
import { Worker } from "node:worker_threads";

/** The spare of each worker entry, by URL (tests run other entries). */
const spares = new Map<string, Worker>();

/** A worker started at `entry`: the spare when there is one, else a new one. */
export function takeWorker(entry: URL): Worker {
  const spare = spares.get(entry.href);
  if (spare === undefined) return new Worker(entry);
  spares.delete(entry.href);
  return spare;
}

/**
 * Boots a spare for `entry` unless one is there. Called once a load is over rather than when it starts,
 * so that booting never competes with the load for the CPU.
 */
export function keepSpare(entry: URL): void {
  if (spares.has(entry.href)) return;
  const worker = new Worker(entry);
  worker.unref();
  // A spare that fails while idle is simply not used; the next load starts a worker of its own.
  const forget = () => {
    if (spares.get(entry.href) === worker) spares.delete(entry.href);
  };
  worker.on("error", forget);
  worker.once("exit", forget);
  spares.set(entry.href, worker);
}
