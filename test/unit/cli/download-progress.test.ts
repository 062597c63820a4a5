import { Writable } from "node:stream";
import { describe, expect, test } from "vitest";
import { DownloadDisplay } from "../../../backend/cli/download-progress.ts";
import { createLog } from "../../../backend/log.ts";
import { LogSettings } from "../../../backend/log-settings.ts";

// What a person sees while the agent downloads a model: a bar redrawn in place on a terminal, plain log
// events in a journal.

function capture(): { stream: Writable & { columns: number }; text: () => string } {
  let text = "";
  const stream = Object.assign(
    new Writable({
      write(chunk, _encoding, done) {
        text += String(chunk);
        done();
      },
    }),
    { columns: 120 },
  );
  return { stream, text: () => text };
}

const MiB = 2 ** 20;

describe("download progress", () => {
  test("on a terminal: a bar redrawn in place, cleared for log lines, and a final line when done", async () => {
    const { stream, text } = capture();
    const display = new DownloadDisplay({ stream, tty: true });
    display.attach(createLog({ stream, statusLine: display }));
    display.onProgress({ name: "det", version: "1", received: 0, total: 20 * MiB });
    display.onProgress({ name: "det", version: "1", received: 5 * MiB, total: 20 * MiB });
    await new Promise((resolve) => setTimeout(resolve, 120));
    display.onProgress({ name: "det", version: "1", received: 10 * MiB, total: 20 * MiB });
    display.onProgress({ name: "det", version: "1", received: 20 * MiB, total: 20 * MiB });
    // "⟲" stands for what redraws the terminal's last line: a carriage return and "erase line".
    const output = text().replaceAll("\r\x1b[2K", "⟲");
    expect(output).toMatch(/⟲⇣ det:1 {2}█{12}░{12} {2}50% {2}10\.0 MiB \/ 20\.0 MiB/);
    // Each log line starts on a cleared line and ends with a newline; the bar never ends with one.
    expect(output).toMatch(/⟲\S+ model downloaded model=det:1 size="20\.0 MiB"/);
    expect(output.endsWith("\n")).toBe(true);
  });

  test("elsewhere: log lines at the start, at each quarter and at the end, and no bar", () => {
    const { stream, text } = capture();
    const display = new DownloadDisplay({ stream, tty: false });
    display.attach(createLog({ stream, settings: new LogSettings({ format: "json" }), statusLine: display }));
    for (let received = 0; received <= 100; received += 5) {
      display.onProgress({ name: "big", version: "2", received, total: 100 });
    }
    const events = text()
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { event: string; percent?: number; model: string });
    expect(events.map((event) => [event.event, event.percent])).toEqual([
      ["downloading model", undefined],
      ["download progress", 25],
      ["download progress", 50],
      ["download progress", 75],
      ["model downloaded", undefined],
    ]);
    expect(text()).not.toContain("\r");
  });
});
