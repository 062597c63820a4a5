#!/usr/bin/env node
import { startAgent } from "../agent.ts";
import { DownloadDisplay } from "../cli/download-progress.ts";
import { parseCommandLine } from "../cli/options.ts";
import { summaryLines } from "../cli/startup-summary.ts";
import { createLog } from "../log.ts";
import { LogSettings } from "../log-settings.ts";
import type { StartupInfo } from "../startup-info.ts";

const DRAIN_GRACE_MS = 30_000;

let command: ReturnType<typeof parseCommandLine>;
try {
  command = parseCommandLine(process.argv.slice(2), process.env);
} catch (error) {
  process.stderr.write(`switchyard-agent: ${(error as Error).message}\n`);
  process.exit(2);
}
if (command.kind === "help") {
  process.stdout.write(command.text);
  process.exit(0);
}

const { logFormat } = command.options;
// Progress bars only where a person watches a terminal; journals and pipes get plain lines.
const display = new DownloadDisplay({
  stream: process.stderr,
  tty: process.stderr.isTTY === true && logFormat === "text",
});
// The agent changes these while it runs (Triton's logging extension); the log reads them at each line.
const logSettings = new LogSettings({
  format: logFormat,
  verboseLevel: command.options.logRequests ? 1 : 0,
});
const log = createLog({ settings: logSettings, statusLine: display });
display.attach(log);
// The startup summary, between redraws of the progress bars.
const announce = (info: StartupInfo) => {
  display.clear();
  process.stderr.write(`${summaryLines(info).join("\n")}\n`);
  display.redraw();
};

// Signals are handled from the first moment: a SIGTERM during startup still drains what has started.
let stopping = false;
const starting = startAgent(
  command.options,
  { log, settings: logSettings },
  { announce, onProgress: display.onProgress },
);
const onSignal = (signal: NodeJS.Signals) => {
  if (stopping) {
    log("second signal: exiting now", { signal });
    // Die of the signal itself, as its default action would: no exit handlers, no native teardown.
    // (process.exit() while onnxruntime is in the middle of a run aborts in its destructors instead.)
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
    return;
  }
  stopping = true;
  log("draining", { signal, graceSeconds: DRAIN_GRACE_MS / 1000 });
  starting
    .then((agent) => agent.stop(DRAIN_GRACE_MS))
    .then(
      () => process.exit(0),
      (error: unknown) => {
        log("stop failed", { error: String(error) });
        process.exit(1);
      },
    );
};
process.on("SIGTERM", onSignal);
process.on("SIGINT", onSignal);

try {
  await starting;
} catch (error) {
  // One line that says what is wrong and how to fix it (the errors are written that way).
  const message = (error as Error).message.replace(/\s*\n\s*/g, " ");
  if (logFormat === "json") log("start failed", { error: message });
  else {
    display.clear();
    process.stderr.write(`switchyard-agent: ${message}\n`);
  }
  process.exit(1);
}
