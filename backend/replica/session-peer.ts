/**
 * A session's thread asking another's to run (session-worker.ts "peer"): with batch buckets each bucket is
 * a session on a thread of its own (batch-buckets.ts), and the model's lanes, served on the first session's
 * thread, send each batch of another bucket's size there. One hop per batch, not per request.
 */
import type { MessagePort } from "node:worker_threads";
import { SwitchyardError } from "../../shared/errors.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { type Envelope, partsForTransfer, type SessionReply } from "./session-protocol.ts";

/** The run failed there; `parts` are the batch's parts, back on this thread (session-protocol.ts). */
export class PeerRunError extends Error {
  readonly parts: Tensor[][] | undefined;

  constructor(message: string, parts: Tensor[][] | undefined) {
    super(message);
    this.name = "PeerRunError";
    this.parts = parts;
  }
}

export class SessionPeer {
  readonly #port: MessagePort;
  readonly #waiting = new Map<
    number,
    { settle: (reply: SessionReply) => void; gone: (error: Error) => void }
  >();
  #nextId = 0;

  constructor(port: MessagePort) {
    this.#port = port;
    port.on("message", (reply: Envelope<SessionReply>) => {
      const waiter = this.#waiting.get(reply.id);
      this.#waiting.delete(reply.id);
      waiter?.settle(reply);
    });
    // The peer's thread ended (its model unloads, or its worker died): what it had is lost with it.
    port.once("close", () => {
      const gone = new SwitchyardError("unavailable", "the session of the batch's bucket went away");
      for (const waiter of this.#waiting.values()) waiter.gone(gone);
      this.#waiting.clear();
    });
  }

  /**
   * One run there of the parts (they move: the caller owns them) padded to `padTo` rows. Resolves with the
   * outputs and the parts back; rejects with a PeerRunError that gives the parts back.
   */
  run(
    parts: Tensor[][],
    outputs: string[],
    padTo: number | undefined,
  ): Promise<{ outputs: Tensor[]; sessionMs: number; stackMs: number; parts: Tensor[][] }> {
    this.#nextId += 1;
    const id = this.#nextId;
    const moved = partsForTransfer(
      parts,
      parts.map(() => true),
    );
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, {
        settle: (reply) => {
          if (reply.type === "result") resolve({ ...reply, parts: reply.parts ?? [] });
          else if (reply.type === "error") reject(new PeerRunError(reply.message, reply.parts));
          else reject(new Error(`the bucket's session answered '${reply.type}' to a run`));
        },
        gone: reject,
      });
      this.#port.postMessage(
        {
          type: "run",
          id,
          parts: moved.parts,
          outputs,
          ...(padTo === undefined ? {} : { padTo }),
        } satisfies Envelope<{ type: "run"; parts: Tensor[][]; outputs: string[]; padTo?: number }>,
        moved.transfer,
      );
    });
  }
}
