/**
 * The worker thread that holds one loaded model's onnxruntime session (worker-session.ts starts it).
 * onnxruntime-node creates and runs sessions synchronously on the calling JavaScript thread; here that
 * thread is this one, so the agent's main thread (other models, heartbeats, HTTP) never waits for them.
 * A release (and the create) waits for everything sent before it, and what is sent after waits for it. Runs
 * do not wait for each other: onnxruntime-node runs a session synchronously inside a setImmediate callback,
 * so two runs never overlap on this thread anyway, and runs started in one turn all run in the next check
 * phase, back to back. Chained one after another instead, each run waited for a turn of the event loop of
 * its own (on the H200 an unbatched MLP's runs took twice their time alone:
 * bench/results/hot-path-reports-runs.md).
 */
import { parentPort } from "node:worker_threads";
import * as ort from "onnxruntime-node";
import { SwitchyardError } from "../../shared/errors.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import type { MailPort } from "../server/tick-mailbox.ts";
import { BufferPool, poolableParts, recycleInputs } from "./buffer-pool.ts";
import { HotLoop } from "./hot-loop.ts";
import { onnxOpTypes } from "./onnx-op-types.ts";
import { fromOrtTensor, sessionSpecs, toOrtTensor } from "./ort-tensors.ts";
import { SessionLanes } from "./session-lanes.ts";
import { SessionPeer } from "./session-peer.ts";
import {
  type Envelope,
  type SessionReply,
  type SessionRequest,
  transferablesOf,
} from "./session-protocol.ts";
import { stackInputs } from "./tensor-batch.ts";

if (parentPort === null) throw new Error("session-worker.ts runs in a worker thread (see worker-session.ts)");
const parent = parentPort;

let session: ort.InferenceSession | undefined;
/** Spins around runs (hot-loop.ts), from the create request: a GPU session's window, else never. */
let hot = new HotLoop(0);
/**
 * The batches stacked here, reused run after run: a bucket's session sees one batch size, so its one
 * buffer comes back every time (a fresh one pays a page fault per page, buffer-pool.ts).
 */
const batchBuffers = new BufferPool(256 * 1024 * 1024);
/** The last create or release: what is sent after it waits for it. */
let queue: Promise<void> = Promise.resolve();
/** Runs not yet over: a release waits for them. */
const running = new Set<Promise<void>>();
const settled = (promise: Promise<unknown>): Promise<void> =>
  promise.then(
    () => undefined,
    () => undefined,
  );

/** Runs `work` after everything sent before it, runs included (a create, a release). */
function serially<T>(work: () => Promise<T>): Promise<T> {
  const done = Promise.all([queue, ...running]).then(work);
  queue = settled(done);
  return done;
}

/** Runs a run's `work` after the create or release sent before it, beside other runs. */
function alongside<T>(work: () => Promise<T>): Promise<T> {
  const done = queue.then(work);
  const over = settled(done);
  running.add(over);
  void over.then(() => running.delete(over));
  return done;
}

/** Requests from intake threads, straight to this session (lane-protocol.ts); their runs take turns here. */
const lanes = new SessionLanes(
  (parts, outputs, padTo) => alongside(() => runParts(parts, outputs, padTo)),
  (report, transfer) => parent.postMessage(report, transfer),
);

parent.on("message", (request: Envelope<SessionRequest>) => {
  // Out of turn: a reader of the statistics waits for this, not for the runs and releases chained before it
  // (only for the runs of the check phase under way, if any).
  if (request.type === "report-lanes") handle(request).catch(crash);
  else orderedFor(request)(() => handle(request)).catch(crash);
});

/** Runs go alongside each other; everything else in order with them. */
function orderedFor(request: SessionRequest): <T>(work: () => Promise<T>) => Promise<T> {
  return request.type === "run" ? alongside : serially;
}

/**
 * handle() answers every failure itself: what escapes it (a reply that could not be posted) is a bug, and
 * crashes the worker, so the replica fails what it waits for instead of waiting forever.
 */
function crash(error: unknown): void {
  process.nextTick(() => {
    throw error;
  });
}

/** Answers a request from `from`: the replica (the parent port), or a peer session's thread. */
async function handle(request: Envelope<SessionRequest>, from: MailPort = parent): Promise<void> {
  // Once the run is over, its parts go back to the replica: after a failure all of them (each request runs
  // again alone from them), after a success those a pool can reuse (buffer-pool.ts poolableParts).
  const parts = request.type === "run" ? request.parts : undefined;
  try {
    const answered = await answer(request);
    reply(
      from,
      request.id,
      answered.type === "result" && parts !== undefined
        ? { ...answered, parts: poolableParts(parts) }
        : answered,
    );
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    reply(
      from,
      request.id,
      parts === undefined ? { type: "error", message } : { type: "error", message, parts },
    );
  }
}

async function answer(request: SessionRequest): Promise<SessionReply> {
  switch (request.type) {
    case "create": {
      if (session !== undefined) throw new Error("this worker already holds a session");
      hot = new HotLoop(request.spinMs);
      session = await ort.InferenceSession.create(request.path, request.options);
      return { type: "ready", ...sessionSpecs(session), opTypes: opTypesOf(request.path) };
    }
    case "run": {
      const ran = await runParts(request.parts, request.outputs, request.padTo);
      return { type: "result", ...ran };
    }
    case "lane": {
      lanes.open(request.port, request.settings);
      return { type: "lane-opened" };
    }
    case "peer": {
      const peer = request.port;
      peer.on("message", (envelope: Envelope<SessionRequest>) => {
        orderedFor(envelope)(() => handle(envelope, peer)).catch(crash);
      });
      return { type: "connected" };
    }
    case "bucket": {
      lanes.addBucket(request.size, new SessionPeer(request.port));
      return { type: "connected" };
    }
    case "report-lanes": {
      lanes.reportNow();
      return { type: "lanes-reported" };
    }
    case "release": {
      // The thread ends after this: what its lanes served and did not report yet is reported first.
      lanes.reportNow();
      const released = session;
      session = undefined;
      await released?.release();
      return { type: "released" };
    }
  }
}

/**
 * One run for one or more requests' feeds: stacked along the first dimension (and padded to `padTo` rows)
 * into a buffer of this thread's pool, run, and the named outputs read back as OIP tensors.
 */
async function runParts(
  parts: Tensor[][],
  outputs: string[],
  padTo?: number,
): Promise<{ outputs: Tensor[]; sessionMs: number; stackMs: number }> {
  // (A lane's request after a release: the lane closes with the thread.)
  if (session === undefined) throw new SwitchyardError("unavailable", "this worker holds no session");
  const stackStarted = performance.now();
  const stacked = stackInputs(parts, padTo, batchBuffers);
  const feeds: Record<string, ort.Tensor> = {};
  for (const feed of stacked) feeds[feed.name] = toOrtTensor(feed);
  const started = performance.now();
  // onnxruntime-node runs the session in a setImmediate callback queued by run(): this one, queued just
  // before it, tells when the run began, after the runs queued before it in the same check phase.
  let began = started;
  setImmediate(() => {
    began = performance.now();
  });
  try {
    hot.touch();
    const results = await session.run(feeds, outputs);
    hot.touch();
    const sessionMs = performance.now() - began;
    const read = outputs.map((name): Tensor => {
      const value = results[name];
      if (value === undefined) throw new Error(`onnxruntime returned no output '${name}'`);
      return fromOrtTensor(name, value);
    });
    return { outputs: read, sessionMs, stackMs: started - stackStarted };
  } finally {
    // A batch stacked here is read by nothing once the run is over (outputs are buffers of their own).
    if (!stacked.every((feed, index) => feed === parts[0]?.[index])) {
      recycleInputs([stacked], batchBuffers);
    }
  }
}

/** The graph's operator types; null when the file cannot be walked (onnxruntime read it: it is a model). */
function opTypesOf(path: string): string[] | null {
  try {
    return [...onnxOpTypes(path)].sort();
  } catch {
    return null;
  }
}

function reply(to: MailPort, id: number, message: SessionReply): void {
  const envelope: Envelope<SessionReply> = { ...message, id };
  // Outputs were made here for the replica alone: their buffers move instead of being copied, and so do
  // the parts' buffers it gives back.
  const moved = message.type === "result" ? transferablesOf(message.outputs) : [];
  const returned =
    message.type === "result" || message.type === "error"
      ? transferablesOf((message.parts ?? []).flat())
      : [];
  to.postMessage(envelope, [...new Set([...moved, ...returned])]);
}
