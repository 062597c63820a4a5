import { setImmediate as nextTurn } from "node:timers/promises";
import { MessageChannel, type MessagePort } from "node:worker_threads";
import { afterEach, describe, expect, test } from "vitest";
import { eachMessage, type Gather, TickMailbox } from "../../../backend/server/tick-mailbox.ts";

interface Mail {
  id: number;
  data?: unknown;
}

const channels: MessagePort[] = [];
afterEach(() => {
  for (const port of channels.splice(0)) port.close();
});

/** A mailbox on one end of a real MessageChannel; what arrives at the other end, batch by batch. */
function mailbox(gather?: Gather) {
  const { port1, port2 } = new MessageChannel();
  channels.push(port1, port2);
  const batches: Mail[][] = [];
  const received: Mail[] = [];
  const lost: { message: Mail; error: unknown }[] = [];
  port2.on("message", (batch: Mail[]) => batches.push(batch));
  port2.on(
    "message",
    eachMessage((message: Mail) => received.push(message)),
  );
  const box = new TickMailbox<Mail>(port1, (message, error) => lost.push({ message, error }), gather);
  const arrived = (count: number) => expect.poll(() => received.length).toBe(count);
  return { box, batches, received, lost, arrived };
}

describe("a thread's messages gathered per turn of the event loop", () => {
  test("one turn's messages cross as one batch, in the order they were posted, with their buffers moved", async () => {
    const { box, batches, received, arrived } = mailbox();
    const buffers = [new Float32Array([1, 2]).buffer, new Float32Array([3]).buffer];
    box.post({ id: 1, data: new Float32Array(buffers[0] as ArrayBuffer) }, [buffers[0] as ArrayBuffer]);
    box.post({ id: 2 });
    box.post({ id: 3, data: new Float32Array(buffers[1] as ArrayBuffer) }, [buffers[1] as ArrayBuffer]);
    // Nothing leaves before the turn's end.
    expect(buffers[0]?.byteLength).toBe(8);
    await arrived(3);
    expect(batches).toHaveLength(1);
    expect(received.map((message) => message.id)).toEqual([1, 2, 3]);
    expect(Array.from(received[0]?.data as Float32Array)).toEqual([1, 2]);
    expect(Array.from(received[2]?.data as Float32Array)).toEqual([3]);
    // Moved, not copied: detached on this side.
    expect(buffers.map((buffer) => buffer?.byteLength)).toEqual([0, 0]);
  });

  test("messages of later turns make batches of their own", async () => {
    const { box, batches, arrived } = mailbox();
    box.post({ id: 1 });
    await nextTurn();
    box.post({ id: 2 });
    box.post({ id: 3 });
    await arrived(3);
    expect(batches.map((batch) => batch.map((message) => message.id))).toEqual([[1], [2, 3]]);
  });

  test("flush sends at once what is gathered, and the turn's end then has nothing left to send", async () => {
    const { box, batches, arrived } = mailbox();
    box.post({ id: 1 });
    box.flush();
    await arrived(1);
    await nextTurn();
    await nextTurn();
    expect(batches).toHaveLength(1);
  });

  test("a message that cannot cross is reported alone; the others of its batch arrive with their buffers", async () => {
    const { box, received, lost, arrived } = mailbox();
    const buffer = new Uint8Array([7, 8]).buffer;
    box.post({ id: 1, data: new Uint8Array(buffer) }, [buffer]);
    // A function cannot be cloned: the batch as a whole fails to post.
    box.post({ id: 2, data: () => undefined });
    box.post({ id: 3 });
    await arrived(2);
    expect(received.map((message) => message.id)).toEqual([1, 3]);
    expect(Array.from(received[0]?.data as Uint8Array)).toEqual([7, 8]);
    expect(lost.map(({ message }) => message.id)).toEqual([2]);
    expect(String(lost[0]?.error)).toMatch(/could not be cloned/);
  });

  test("a buffer already moved fails only the message that names it", async () => {
    const { box, received, lost, arrived } = mailbox();
    const view = new Uint8Array([1]);
    const gone = view.buffer;
    structuredClone(gone, { transfer: [gone] });
    const kept = new Uint8Array([2]).buffer;
    box.post({ id: 1, data: view }, [gone]);
    box.post({ id: 2, data: new Uint8Array(kept) }, [kept]);
    await arrived(1);
    expect(received.map((message) => message.id)).toEqual([2]);
    expect(Array.from(received[0]?.data as Uint8Array)).toEqual([2]);
    expect(lost.map(({ message }) => message.id)).toEqual([1]);
  });
});

describe("a thread's messages gathered per task (a callback and its promise reactions)", () => {
  test("what a task and its reactions post leaves as one batch, before the turn's check phase", async () => {
    const { box, batches, arrived } = mailbox("task");
    const buffer = new Float32Array([1]).buffer;
    let sentBeforeCheckPhase: boolean | undefined;
    await new Promise<void>((done) => {
      // A task of the timers phase; the check phase comes after it in the same turn.
      setTimeout(() => {
        setImmediate(() => {
          sentBeforeCheckPhase = buffer.byteLength === 0;
          done();
        });
        box.post({ id: 1, data: new Float32Array(buffer) }, [buffer]);
        void Promise.resolve()
          .then(() => undefined)
          .then(() => box.post({ id: 2 }));
      }, 0);
    });
    await arrived(2);
    expect(batches.map((batch) => batch.map((message) => message.id))).toEqual([[1, 2]]);
    expect(sentBeforeCheckPhase).toBe(true);
  });

  test("two callbacks of one turn send a batch each", async () => {
    const { box, batches, arrived } = mailbox("task");
    setImmediate(() => box.post({ id: 1 }));
    setImmediate(() => box.post({ id: 2 }));
    await arrived(2);
    expect(batches.map((batch) => batch.map((message) => message.id))).toEqual([[1], [2]]);
  });
});
