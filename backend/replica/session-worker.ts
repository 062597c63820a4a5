/**
 * The worker thread that holds one loaded model's onnxruntime session (worker-session.ts starts it).
 * onnxruntime-node creates and runs sessions synchronously on the calling JavaScript thread; here that
 * thread is this one, so the agent's main thread (other models, heartbeats, HTTP) never waits for them.
 * Requests are handled one after another in the order they arrive: a release waits for the runs sent
 * before it, and two runs of one session never overlap (onnxruntime would serialize them anyway).
 */
import { parentPort } from "node:worker_threads";
import * as ort from "onnxruntime-node";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { BufferPool, recycleInputs } from "./buffer-pool.ts";
import { fromOrtTensor, sessionSpecs, toOrtTensor } from "./ort-tensors.ts";
import {
  type Envelope,
  type SessionReply,
  type SessionRequest,
  transferablesOf,
} from "./session-protocol.ts";
import { stackInputs } from "./tensor-batch.ts";

const port = parentPort;
if (port === null) throw new Error("session-worker.ts runs in a worker thread (see worker-session.ts)");

let session: ort.InferenceSession | undefined;
/**
 * The batches stacked here, reused run after run: a bucket's session sees one batch size, so its one
 * buffer comes back every time (a fresh one pays a page fault per page, buffer-pool.ts).
 */
const batchBuffers = new BufferPool(256 * 1024 * 1024);
let queue: Promise<void> = Promise.resolve();

port.on("message", (request: Envelope<SessionRequest>) => {
  queue = queue.then(() => handle(request)).catch(crash);
});

/**
 * handle() answers every failure itself: what escapes it (a reply that could not be posted) is a bug, and
 * crashes the worker, so the replica fails what it waits for instead of waiting forever.
 */
function crash(error: unknown): void {
  process.nextTick(() => {
    throw error;
  });
}

async function handle(request: Envelope<SessionRequest>): Promise<void> {
  // Once the run is over, its parts go back to the replica, success or not.
  const parts = request.type === "run" ? request.parts : undefined;
  try {
    const answered = await answer(request);
    reply(request.id, answered.type === "result" ? { ...answered, parts } : answered);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    reply(request.id, parts === undefined ? { type: "error", message } : { type: "error", message, parts });
  }
}

async function answer(request: SessionRequest): Promise<SessionReply> {
  switch (request.type) {
    case "create": {
      if (session !== undefined) throw new Error("this worker already holds a session");
      session = await ort.InferenceSession.create(request.path, request.options);
      return { type: "ready", ...sessionSpecs(session) };
    }
    case "run": {
      if (session === undefined) throw new Error("this worker holds no session");
      const stackStarted = performance.now();
      const stacked = stackInputs(request.parts, request.padTo, batchBuffers);
      const feeds: Record<string, ort.Tensor> = {};
      for (const feed of stacked) feeds[feed.name] = toOrtTensor(feed);
      const started = performance.now();
      try {
        const results = await session.run(feeds, request.outputs);
        const sessionMs = performance.now() - started;
        const outputs = request.outputs.map((name): Tensor => {
          const value = results[name];
          if (value === undefined) throw new Error(`onnxruntime returned no output '${name}'`);
          return fromOrtTensor(name, value);
        });
        return { type: "result", outputs, sessionMs, stackMs: started - stackStarted };
      } finally {
        // A batch stacked here is read by nothing once the run is over (outputs are buffers of their own).
        if (!stacked.every((feed, index) => feed === request.parts[0]?.[index])) {
          recycleInputs([stacked], batchBuffers);
        }
      }
    }
    case "release": {
      const released = session;
      session = undefined;
      await released?.release();
      return { type: "released" };
    }
  }
}

function reply(id: number, message: SessionReply): void {
  const envelope: Envelope<SessionReply> = { ...message, id };
  // Outputs were made here for the replica alone: their buffers move instead of being copied, and so do
  // the parts' buffers it gives back.
  const moved = message.type === "result" ? transferablesOf(message.outputs) : [];
  const returned =
    message.type === "result" || message.type === "error"
      ? transferablesOf((message.parts ?? []).flat())
      : [];
  port?.postMessage(envelope, [...new Set([...moved, ...returned])]);
}
