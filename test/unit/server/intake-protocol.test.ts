import { MessageChannel, type MessagePort } from "node:worker_threads";
import { describe, expect, test } from "vitest";
import { requestBuffers } from "../../../backend/replica/buffer-pool.ts";
import { splitRows } from "../../../backend/replica/tensor-batch.ts";
import {
  fromWireCall,
  inputBuffers,
  outputsForTransfer,
  toWireCall,
} from "../../../backend/server/intake-protocol.ts";
import { Deadline } from "../../../shared/deadline.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";

/** Posts `value` with `transfer` over a real MessageChannel and resolves with what arrives. */
async function across<T>(value: T, transfer: ArrayBuffer[]): Promise<T> {
  const { port1, port2 } = new MessageChannel();
  const arrived = new Promise<T>((resolve) => (port2 as MessagePort).once("message", resolve));
  port1.postMessage(value, transfer);
  const received = await arrived;
  port1.close();
  return received;
}

describe("outputs on their way to an intake thread", () => {
  test("a batch's rows are copied out: every request gets its own, and the batch stays readable for the others", async () => {
    const batch: Tensor = {
      name: "y",
      datatype: "FP32",
      shape: [3, 2],
      data: Float32Array.from([1, 2, 3, 4, 5, 6]),
    };
    const rows = splitRows(batch, [1, 2]);
    const first = outputsForTransfer([rows[0] as Tensor]);
    const received = await across(first.outputs, first.transfer);
    expect(Array.from(received[0]?.data as Float32Array)).toEqual([1, 2]);
    // The second request's rows view the same batch buffer: moving the first's must not empty it.
    expect(Array.from(rows[1]?.data as Float32Array)).toEqual([3, 4, 5, 6]);
    expect((batch.data as Float32Array).byteLength).toBe(24);
  });

  test("an output that is all of its buffer moves without a copy (detached here afterwards)", async () => {
    const own: Tensor = { name: "y", datatype: "INT64", shape: [2], data: BigInt64Array.from([7n, -8n]) };
    const moved = outputsForTransfer([own]);
    expect(moved.outputs[0]?.data).toBe(own.data);
    const received = await across(moved.outputs, moved.transfer);
    expect(Array.from(received[0]?.data as BigInt64Array)).toEqual([7n, -8n]);
    expect((own.data as BigInt64Array).byteLength).toBe(0);
  });

  test("BYTES outputs are cloned as they are", () => {
    const strings: Tensor = {
      name: "s",
      datatype: "BYTES",
      shape: [1],
      data: [new TextEncoder().encode("ab")],
    };
    expect(outputsForTransfer([strings]).transfer).toEqual([]);
  });
});

describe("inputs on their way to the main thread", () => {
  test("every buffer under the tensors, typed arrays and BYTES elements alike, once each", () => {
    const body = new ArrayBuffer(64);
    const inputs: Tensor[] = [
      { name: "a", datatype: "FP32", shape: [2], data: new Float32Array(body, 0, 2) },
      { name: "b", datatype: "FP32", shape: [2], data: new Float32Array(body, 8, 2) },
      { name: "c", datatype: "BYTES", shape: [1], data: [new Uint8Array(body, 16, 4)] },
      { name: "d", datatype: "INT32", shape: [1], data: Int32Array.from([5]) },
    ];
    const buffers = inputBuffers(inputs);
    expect(buffers).toHaveLength(2);
    expect(buffers).toContain(body);
  });
});

describe("calls and errors across threads", () => {
  test("the deadline keeps its moment and its budget; the inputs may be handed over", async () => {
    const deadline = Deadline.in(5000, Date.now(), 8000);
    const wire = await across(
      toWireCall({ model: "m", version: "2", hint: "h", inputs: [], outputs: ["y"], deadline }),
      [],
    );
    const call = fromWireCall(wire, new AbortController().signal);
    expect(call).toMatchObject({ model: "m", version: "2", hint: "h", outputs: ["y"], handOverInputs: true });
    expect(call.deadline.at).toBe(deadline.at);
    expect(call.deadline.budgetMs).toBe(8000);
    expect(wire.spareBytes).toEqual([]);
  });

  test("the sizes of the pooled buffers its inputs came in go with it, read before they move", () => {
    // A body read into a pooled buffer (two inputs view it), a shared memory input in another, and a JSON
    // input's array, which no pool hands out.
    const body = requestBuffers.acquire(3 << 20);
    const shared = requestBuffers.acquire(5 << 20);
    const inputs = [
      { name: "a", datatype: "FP32" as const, shape: [4], data: new Float32Array(body, 0, 4) },
      { name: "b", datatype: "FP32" as const, shape: [4], data: new Float32Array(body, 16, 4) },
      { name: "c", datatype: "FP32" as const, shape: [4], data: new Float32Array(shared, 0, 4) },
      { name: "d", datatype: "FP32" as const, shape: [3], data: Float32Array.of(1, 2, 3) },
    ];
    const wire = toWireCall({ model: "m", inputs, deadline: Deadline.in(1000) });
    expect(wire.spareBytes).toEqual([body.byteLength, shared.byteLength]);
  });
});
