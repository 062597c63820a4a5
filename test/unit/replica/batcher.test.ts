import { describe, expect, test } from "vitest";
import { ModelBatcher } from "../../../backend/replica/batcher.ts";

// The batcher's scheduling on its own, with a runner that records what it was given. Each item carries the
// value the runner answers with; "poison" makes any batch holding it fail, as a model refusing one
// request's values at run time would.

interface Item {
  size: number;
  value: string;
}

function recordingRunner(runMs = 5) {
  const batches: string[][] = [];
  let running = 0;
  let overlapped = false;
  const run = async (items: Item[]) => {
    running += 1;
    if (running > 1) overlapped = true;
    batches.push(items.map((item) => item.value));
    await new Promise((resolve) => setTimeout(resolve, runMs));
    running -= 1;
    if (items.some((item) => item.value === "poison")) throw new Error("the model refused a value");
    return items.map((item) => `out:${item.value}`);
  };
  return { run, batches, overlapped: () => overlapped };
}

const settings = { maxBatchSize: 8, maxQueueDelayMs: 0, preferredBatchSizes: [] };

describe("ModelBatcher", () => {
  test("a batch that fails is run again request by request, so only the bad request fails", async () => {
    const runner = recordingRunner();
    const batcher = new ModelBatcher<Item, string>(settings, runner.run);
    const results = await Promise.allSettled(
      ["a", "poison", "b"].map((value) => batcher.submit({ size: 1, value }, "g")),
    );
    expect(results.map((result) => result.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect((results[0] as PromiseFulfilledResult<{ result: string }>).value.result).toBe("out:a");
    expect((results[2] as PromiseFulfilledResult<{ result: string }>).value.result).toBe("out:b");
    expect(runner.batches).toEqual([["a", "poison", "b"], ["a"], ["poison"], ["b"]]);
  });

  test("what arrives while a batch runs goes right behind it as the next batch, whatever its size", async () => {
    const runner = recordingRunner(20);
    let started = 0;
    const batcher = new ModelBatcher<Item, string>(settings, (items) => {
      started += 1;
      return runner.run(items);
    });
    const first = batcher.submit({ size: 1, value: "first" }, "g");
    await new Promise((resolve) => setTimeout(resolve, 5));
    const later = ["b", "c", "d"].map((value) => batcher.submit({ size: 1, value }, "g"));
    await new Promise((resolve) => setTimeout(resolve, 5));
    // Sent while "first" still runs: it waits, stacked, on the session's thread, which goes from one run to
    // the next without waiting for a message to and from the main thread in between.
    expect(started).toBe(2);
    await Promise.all([first, ...later]);
    expect(runner.batches).toEqual([["first"], ["b", "c", "d"]]);
  });

  test("at most two batches are out at once; what arrives meanwhile gathers into the next", async () => {
    const runner = recordingRunner(20);
    let started = 0;
    const batcher = new ModelBatcher<Item, string>({ ...settings, maxBatchSize: 2 }, (items) => {
      started += 1;
      return runner.run(items);
    });
    const first = batcher.submit({ size: 1, value: "first" }, "g");
    await new Promise((resolve) => setTimeout(resolve, 5));
    // While "first" runs: two full batches of two arrive, then two lone requests.
    const full = ["a", "b", "c", "d"].map((value) => batcher.submit({ size: 1, value }, "g"));
    await new Promise((resolve) => setTimeout(resolve, 5));
    // One batch went behind the running one at once; a third waits for one of them to end.
    expect(started).toBe(2);
    const lone = ["e", "f"].map((value) => batcher.submit({ size: 1, value }, "g"));
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(started).toBe(2);
    await Promise.all([first, ...full, ...lone]);
    expect(runner.batches).toEqual([["first"], ["a", "b"], ["c", "d"], ["e", "f"]]);
  });

  test("with one batch out at a time, what arrives while it runs waits for it, and goes as one batch", async () => {
    const runner = recordingRunner(20);
    const batcher = new ModelBatcher<Item, string>(settings, runner.run, { batchesOut: 1 });
    const first = batcher.submit({ size: 1, value: "first" }, "g");
    await new Promise((resolve) => setTimeout(resolve, 5));
    const later = ["b", "c"].map((value) => batcher.submit({ size: 1, value }, "g"));
    await new Promise((resolve) => setTimeout(resolve, 5));
    const last = batcher.submit({ size: 1, value: "d" }, "g");
    await Promise.all([first, ...later, last]);
    expect(runner.batches).toEqual([["first"], ["b", "c", "d"]]);
    expect(runner.overlapped()).toBe(false);
  });

  test("groups never share a batch, and the oldest group goes first", async () => {
    const runner = recordingRunner();
    const batcher = new ModelBatcher<Item, string>(settings, runner.run);
    await Promise.all([
      batcher.submit({ size: 1, value: "x1" }, "x"),
      batcher.submit({ size: 1, value: "y1" }, "y"),
      batcher.submit({ size: 1, value: "x2" }, "x"),
      batcher.submit({ size: 1, value: "y2" }, "y"),
    ]);
    expect(runner.batches).toEqual([
      ["x1", "x2"],
      ["y1", "y2"],
    ]);
  });

  test("every request learns the run that served it: its wait, the batch's time and size", async () => {
    const runner = recordingRunner(30);
    const batcher = new ModelBatcher<Item, string>(settings, runner.run);
    const outcomes = await Promise.all(
      [2, 3].map((size, index) => batcher.submit({ size, value: String(index) }, "g")),
    );
    for (const outcome of outcomes) {
      expect(outcome.requests).toBe(2);
      expect(outcome.rows).toBe(5);
      expect(outcome.runMs).toBeGreaterThanOrEqual(25);
      expect(outcome.queuedMs).toBeLessThan(25);
    }
  });
});
