import { describe, expect, test } from "vitest";
import { SerialTask } from "../../../../gateway/registry/serial-task.ts";

describe("SerialTask", () => {
  test("runs one at a time, and once more after a run that was asked for again, however often", async () => {
    const started: number[] = [];
    let release: () => void = () => {};
    const task = new SerialTask(
      () => {
        started.push(started.length);
        return new Promise<void>((resolve) => {
          release = resolve;
        });
      },
      () => {},
    );
    task.run();
    task.run();
    task.run();
    expect(started).toEqual([0]);
    release();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(started).toEqual([0, 1]);
    release();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(started).toEqual([0, 1]);
  });

  test("a failed run is reported, and the next request runs it again", async () => {
    const failures: unknown[] = [];
    let runs = 0;
    const task = new SerialTask(
      async () => {
        runs += 1;
        throw new Error(`run ${runs}`);
      },
      (error) => failures.push(error),
    );
    task.run();
    await new Promise((resolve) => setTimeout(resolve, 0));
    task.run();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(runs).toBe(2);
    expect(failures.map(String)).toEqual(["Error: run 1", "Error: run 2"]);
  });
});
