import { describe, expect, test } from "vitest";
import { ModelTimingsTable } from "../../../backend/replica/model-timings.ts";

// The figures a replica keeps of each model, and what of them each state sent to the gateway carries.

describe("ModelTimingsTable", () => {
  test("a result's report carries the models held and those changed since the last state frame's; a state frame's then counts them as sent", () => {
    const table = new ModelTimingsTable();
    table.recordLoad("a:1", 100);
    table.recordRun("a:1", 4);
    table.recordLoad("b:1", 50);
    const both = {
      "a:1": { loads: 1, runs: 1, loadMs: 100, inferMs: 4 },
      "b:1": { loads: 1, runs: 0, loadMs: 50 },
    };
    // Reports with results count as nothing sent: they may be dropped on the way.
    expect(table.unsent(["a:1"])).toEqual(both);
    expect(table.unsent([])).toEqual(both);
    expect(table.takeUnsent(["a:1"], false)).toEqual(both);
    // Nothing changed: only the models held, and never a model it has no figures of.
    expect(table.unsent(["a:1", "unmeasured:1"])).toEqual({ "a:1": both["a:1"] });
    table.recordRun("b:1", 10);
    expect(Object.keys(table.takeUnsent([], false))).toEqual(["b:1"]);
    expect(table.takeUnsent([], false)).toEqual({});
    // A whole report carries every model's figures, changed or not.
    expect(Object.keys(table.takeUnsent([], true)).sort()).toEqual(["a:1", "b:1"]);
    expect(Object.keys(table.all()).sort()).toEqual(["a:1", "b:1"]);
  });

  test("a report keeps the figures it was given: later runs replace a model's entry, never change it", () => {
    const table = new ModelTimingsTable();
    table.recordRun("a:1", 4);
    const sent = table.unsent(["a:1"]);
    const whole = table.takeUnsent([], true);
    table.recordRun("a:1", 8);
    expect(sent["a:1"]).toEqual({ loads: 0, runs: 1, inferMs: 4 });
    expect(whole["a:1"]).toEqual({ loads: 0, runs: 1, inferMs: 4 });
    expect(table.all()["a:1"]?.runs).toBe(2);
  });
});
