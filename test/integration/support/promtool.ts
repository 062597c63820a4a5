import { spawn } from "node:child_process";

/**
 * `promtool check metrics` (Debian's prometheus package): Prometheus' own parser and linter run over a
 * scrape. Resolves with what it printed; a scrape it cannot parse, or that breaks a naming rule, fails.
 */
export const PROMTOOL = process.env.PROMTOOL ?? "/usr/bin/promtool";

export function checkMetrics(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL, ["check", "metrics"], { stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.once("error", (error) =>
      reject(new Error(`cannot run ${PROMTOOL} (${error.message}): apt-get install prometheus`)),
    );
    child.once("close", (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}
