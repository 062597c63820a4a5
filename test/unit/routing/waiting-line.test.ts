import fc from "fast-check";
import { describe, expect, test } from "vitest";
import type { QueuedView } from "../../../shared/routing/types.ts";
import { WaitingLine } from "../../../shared/routing/waiting-line.ts";
import { waiting } from "./fixtures.ts";

// The dispatcher's queue: requests in arrival order (those that yield behind the others), and each model's
// requests in the same order, found without scanning the line.

/** A waiting request that yields to the others (a managed-queue request, QUEUE_ASYNC_PRIORITY=below). */
const background = (model: string, enqueuedAt: number): QueuedView => ({
  request: { model, background: true },
  enqueuedAt,
});

/** A line with these requests pushed in turn. */
function lineOf(...requests: QueuedView[]): WaitingLine<QueuedView> {
  const line = new WaitingLine<QueuedView>();
  for (const request of requests) line.push(request);
  return line;
}

/** Each model's requests as enqueue times, models sorted by name (the index promises no model order). */
const indexOf = (line: WaitingLine<QueuedView>) =>
  Object.fromEntries(
    [...line.byModel.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, requests]) => [name, requests.map((request) => request.enqueuedAt)]),
  );

describe("WaitingLine", () => {
  test("an empty line holds nothing and indexes no model", () => {
    const line = lineOf();
    expect(line.length).toBe(0);
    expect(line.items).toEqual([]);
    expect(line.byModel.size).toBe(0);
  });

  test("keeps requests in arrival order, and each model's requests oldest first", () => {
    const first = waiting("det", 100);
    const line = lineOf(
      first,
      waiting("ocr", 200),
      waiting("det", 300),
      waiting("cls", 400),
      waiting("ocr", 500),
    );
    expect(line.length).toBe(5);
    expect(line.items.map((request) => `${request.request.model}@${request.enqueuedAt}`)).toEqual([
      "det@100",
      "ocr@200",
      "det@300",
      "cls@400",
      "ocr@500",
    ]);
    expect(indexOf(line)).toEqual({ cls: [400], det: [100, 300], ocr: [200, 500] });
    // The very requests pushed, not copies: the dispatcher finds its payloads on them.
    expect(line.items[0]).toBe(first);
    expect(line.byModel.get("det")?.[0]).toBe(first);
  });

  test("a request taken out leaves the line and its model's index, the others keep their order", () => {
    const line = lineOf(waiting("det", 100), waiting("ocr", 200), waiting("det", 300), waiting("det", 400));
    const taken = line.removeAt(2);
    expect(taken).toEqual(waiting("det", 300));
    expect(line.length).toBe(3);
    expect(line.items.map((request) => request.enqueuedAt)).toEqual([100, 200, 400]);
    expect(indexOf(line)).toEqual({ det: [100, 400], ocr: [200] });
  });

  test("a model whose last waiting request leaves drops out of the index", () => {
    const line = lineOf(waiting("det", 100), waiting("ocr", 200));
    line.removeAt(1);
    expect(line.byModel.has("ocr")).toBe(false);
    expect([...line.byModel.keys()]).toEqual(["det"]);
    // And comes back, alone, when a request for it arrives again.
    line.push(waiting("ocr", 300));
    expect(indexOf(line)).toEqual({ det: [100], ocr: [300] });
  });

  test("taking out past the end takes nothing and changes nothing", () => {
    const line = lineOf(waiting("det", 100), waiting("ocr", 200));
    expect(line.removeAt(2)).toBeUndefined();
    expect(line.removeAt(50)).toBeUndefined();
    expect(line.length).toBe(2);
    expect(indexOf(line)).toEqual({ det: [100], ocr: [200] });
  });

  test("a request that yields (background) stands behind every other waiting request; among themselves, oldest first", () => {
    const line = lineOf(
      background("det", 100),
      waiting("det", 200),
      background("ocr", 300),
      waiting("ocr", 400),
      waiting("det", 500),
    );
    expect(line.items.map((request) => request.enqueuedAt)).toEqual([200, 400, 500, 100, 300]);
    expect(indexOf(line)).toEqual({ det: [200, 500, 100], ocr: [400, 300] });
    // Taken out from the front, the next foreground request still goes before the background ones.
    line.removeAt(0);
    line.push(waiting("det", 600));
    expect(line.items.map((request) => request.enqueuedAt)).toEqual([400, 500, 600, 100, 300]);
    expect(indexOf(line)).toEqual({ det: [500, 600, 100], ocr: [400, 300] });
  });

  test("whatever is pushed and taken out, the line is its requests in arrival order, background ones last, and the index agrees with it", () => {
    const operation = fc.oneof(
      fc.record({ push: fc.constantFrom("det", "ocr", "cls", "big"), background: fc.boolean() }),
      fc.record({ removeAt: fc.nat({ max: 12 }) }),
    );
    fc.assert(
      fc.property(fc.array(operation, { maxLength: 60 }), (operations) => {
        const line = new WaitingLine<QueuedView>();
        /** Every request in the line, in arrival order. */
        const arrived: QueuedView[] = [];
        const expected = () => [
          ...arrived.filter((request) => request.request.background !== true),
          ...arrived.filter((request) => request.request.background === true),
        ];
        let clock = 0;
        for (const each of operations) {
          if ("push" in each) {
            clock += 1;
            const request = (each.background ? background : waiting)(each.push, clock);
            line.push(request);
            arrived.push(request);
          } else {
            const removed = expected()[each.removeAt];
            expect(line.removeAt(each.removeAt)).toBe(removed);
            if (removed !== undefined) arrived.splice(arrived.indexOf(removed), 1);
          }
          expect(line.length).toBe(arrived.length);
        }
        expect(line.items).toEqual(expected());
        // Every model with a request waiting, and only those, each with its requests in line order.
        const grouped = new Map<string, QueuedView[]>();
        for (const request of expected()) {
          grouped.set(request.request.model, [...(grouped.get(request.request.model) ?? []), request]);
        }
        expect(new Map(line.byModel)).toEqual(grouped);
        for (const requests of line.byModel.values()) expect(requests.length).toBeGreaterThan(0);
      }),
      { numRuns: 300 },
    );
  });
});
