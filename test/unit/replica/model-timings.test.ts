import { describe, expect, test } from "vitest";
import { ModelTimingsTable } from "../../../backend/replica/model-timings.ts";

// The figures a replica keeps of each model, and what of them each state sent to the gateway carries.

describe("ModelTimingsTable", () => {
  test("a report carries the models asked for and those changed since the previous report, each once", () => {
    const table = new ModelTimingsTable();
    table.recordLoad("a:1", 100);
    table.recordRun("a:1", 4);
    table.recordLoad("b:1", 50);
    expect(table.takeReport(["a:1"])).toEqual({
      "a:1": { loads: 1, runs: 1, loadMs: 100, inferMs: 4 },
      "b:1": { loads: 1, runs: 0, loadMs: 50 },
    });
    // Nothing changed: only what is asked for (the models held), and never a model it has no figures of.
    expect(table.takeReport(["a:1", "unmeasured:1"])).toEqual({
      "a:1": { loads: 1, runs: 1, loadMs: 100, inferMs: 4 },
    });
    table.recordRun("b:1", 10);
    expect(Object.keys(table.takeReport([]))).toEqual(["b:1"]);
    expect(table.takeReport([])).toEqual({});
    // Every model's figures, whatever was reported.
    expect(Object.keys(table.all()).sort()).toEqual(["a:1", "b:1"]);
  });

  test("a report is a copy: figures recorded after it do not change what was sent", () => {
    const table = new ModelTimingsTable();
    table.recordRun("a:1", 4);
    const sent = table.takeReport(["a:1"]);
    table.recordRun("a:1", 8);
    expect(sent["a:1"]).toEqual({ loads: 0, runs: 1, inferMs: 4 });
  });
});
