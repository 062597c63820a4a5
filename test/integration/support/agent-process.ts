import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { REPO_DIR } from "../../fixtures/paths.ts";

export const AGENT_BIN = fileURLToPath(new URL("../../../backend/bin/switchyard-agent.ts", import.meta.url));

export interface AgentProcess {
  child: ChildProcess;
  /** The standalone server's base URL, once it listens. */
  url: string;
  /** Everything the agent wrote to stderr so far. */
  log: () => string;
  /** SIGTERM, then SIGKILL if it lingers; resolves with the exit code. */
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

/** Runs the real agent CLI (node backend/bin/switchyard-agent.ts) with `args`. */
export function runAgent(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, [AGENT_BIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Starts a standalone agent on a free port and waits until it reports ready. */
export async function startStandaloneAgent(args: string[], timeoutMs = 60_000): Promise<AgentProcess> {
  const child = runAgent(["--standalone", "--port", "0", ...args]);
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stdout?.resume();
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      // Not left running once its test gave up on it (it would outlive the test run, holding its port).
      child.kill("SIGKILL");
      reject(new Error(`agent not ready in ${timeoutMs} ms:\n${stderr}`));
    }, timeoutMs);
    let listening: string | undefined;
    child.stderr?.on("data", (chunk: string) => {
      stderr += chunk;
      // (Not "metrics listening url=...", which --metrics-port adds.)
      listening ??= / standalone server listening url=(\S+)/.exec(stderr)?.[1];
      if (listening !== undefined && stderr.includes("agent ready")) {
        clearTimeout(timer);
        resolve(listening);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code}:\n${stderr}`));
    });
  });
  return {
    child,
    url,
    log: () => stderr,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode !== null) return child.exitCode;
      const exited = once(child, "exit");
      child.kill(signal);
      const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const [code] = (await exited) as [number | null];
      clearTimeout(killer);
      return code;
    },
  };
}

/**
 * A standalone agent on the fixture repository (one onnxruntime thread) that batches `model` up to 8 rows
 * and keeps a request that arrives alone waiting `holdMs` for company, its slot taken meanwhile: a request
 * that stays in flight that long on any machine. `extra` adds flags.
 */
export function startHoldingAgent(model: string, holdMs: number, extra: string[]): Promise<AgentProcess> {
  return startStandaloneAgent([
    "--models",
    REPO_DIR,
    "--threads",
    "1",
    "--max-batch-size",
    "8",
    "--max-queue-delay-us",
    String(holdMs * 1000),
    "--preload",
    model,
    ...extra,
  ]);
}
