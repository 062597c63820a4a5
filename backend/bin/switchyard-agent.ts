#!/usr/bin/env node
import { startAgent } from "../agent.ts";
import { parseCommandLine } from "../cli/options.ts";
import { createLog } from "../log.ts";

const DRAIN_GRACE_MS = 30_000;

const log = createLog();
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

// Signals are handled from the first moment: a SIGTERM during startup still drains what has started.
let stopping = false;
const starting = startAgent(command.options, log);
const onSignal = (signal: NodeJS.Signals) => {
  if (stopping) {
    log("second signal: exiting now", { signal });
    process.exit(130);
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
  process.stderr.write(`switchyard-agent: ${(error as Error).message}\n`);
  process.exit(1);
}
