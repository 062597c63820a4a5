/**
 * One HTTP thread of the threaded anchor (anchor-server.ts --http-threads): it listens on the anchor's port
 * beside the others (SO_REUSEPORT), decodes each request, hands its tensors to the thread that holds the
 * session (by transfer, a turn's requests in one message) and writes the answer. Two hops per request, as
 * many as a server can have whose HTTP is not on the session's thread.
 *
 * With `memo` (anchor-server.ts --memo), a request whose inputs equal those of the last request whose answer
 * came back is answered here with that answer's outputs (MEMO_HEADER: hit): a client that sends one request
 * over and over, as the benchmark's does, never leaves its HTTP thread after the first. What it serves then
 * is what HTTP alone costs on the host with these threads (the body read and decoded, the answer written, the
 * client's own work).
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
  MEMO_HEADER,
} from "./anchor-http.ts";

if (parentPort === null) throw new Error("anchor-http-thread.ts runs as a worker thread (anchor-server.ts)");
const main = parentPort;
const { host, port, memo } = workerData as AnchorThreadData;

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

/** The inputs of the last request whose answer came back, and its outputs (with `memo`). */
let remembered: { feeds: Tensor[]; outputs: AnchorOutput[] } | undefined;
/** The answers given from memory (each a fresh array of the remembered outputs). */
const fromMemory = new WeakSet<AnchorOutput[]>();

const bytesOf = ({ data }: Tensor) => {
  const floats = data as Float32Array;
  return Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength);
};

function sameFeeds(a: readonly Tensor[], b: readonly Tensor[]): boolean {
  return (
    a.length === b.length &&
    a.every((feed, index) => {
      const other = b[index] as Tensor;
      return (
        feed.name === other.name &&
        feed.shape.join() === other.shape.join() &&
        bytesOf(feed).equals(bytesOf(other))
      );
    })
  );
}

async function runOrRemember(feeds: Tensor[]): Promise<AnchorOutput[]> {
  if (remembered !== undefined && sameFeeds(feeds, remembered.feeds)) {
    const answer = [...remembered.outputs];
    fromMemory.add(answer);
    return answer;
  }
  // Kept before the feeds' buffers move to the session's thread.
  const kept = feeds.map((feed) => ({ ...feed, data: (feed.data as Float32Array).slice() }));
  const outputs = await run(feeds);
  remembered = { feeds: kept, outputs };
  return outputs;
}

const memoHeader = (outputs: AnchorOutput[]) => ({ [MEMO_HEADER]: fromMemory.has(outputs) ? "hit" : "miss" });

main.on(
  "message",
  eachMessage((answer: AnchorAnswer) => {
    const resolve = waiting.get(answer.id);
    waiting.delete(answer.id);
    resolve?.(answer.outputs);
  }),
);

createServer(memo ? anchorListener(runOrRemember, memoHeader) : anchorListener(run)).listen(
  { host, port, reusePort: true },
  () => main.postMessage({ listening: true }),
);
