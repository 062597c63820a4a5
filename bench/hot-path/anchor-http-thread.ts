/**
 * One HTTP thread of the threaded anchor (anchor-server.ts --http-threads): it listens on the anchor's port
 * beside the others (SO_REUSEPORT), decodes each request, hands its tensors to the thread that holds the
 * session (by transfer, a turn's requests in one message) and writes the answer. Two hops per request, as
 * many as a server can have whose HTTP is not on the session's thread.
 */
import { createServer } from "node:http";
import { parentPort, workerData } from "node:worker_threads";
import { eachMessage, TickMailbox } from "../../backend/server/tick-mailbox.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import {
  type AnchorAnswer,
  type AnchorAsk,
  type AnchorOutput,
  type AnchorThreadData,
  anchorListener,
} from "./anchor-http.ts";

if (parentPort === null) throw new Error("anchor-http-thread.ts runs as a worker thread (anchor-server.ts)");
const main = parentPort;
const { host, port } = workerData as AnchorThreadData;

const waiting = new Map<number, (outputs: AnchorOutput[]) => void>();
let nextId = 0;
const toMain = new TickMailbox<AnchorAsk>(main, (_message, error) => {
  throw error;
});

function run(feeds: Tensor[]): Promise<AnchorOutput[]> {
  nextId += 1;
  const id = nextId;
  return new Promise((resolve) => {
    waiting.set(id, resolve);
    toMain.post(
      { id, feeds },
      feeds.map((feed) => (feed.data as Float32Array).buffer as ArrayBuffer),
    );
  });
}

main.on(
  "message",
  eachMessage((answer: AnchorAnswer) => {
    const resolve = waiting.get(answer.id);
    waiting.delete(answer.id);
    resolve?.(answer.outputs);
  }),
);

createServer(anchorListener(run)).listen({ host, port, reusePort: true }, () =>
  main.postMessage({ listening: true }),
);
