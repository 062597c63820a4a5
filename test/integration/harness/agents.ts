import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_DIR } from "../../fixtures/paths.ts";
import { type ManagedProcess, spawnGroup } from "./process-group.ts";
import { REPO_ROOT, SECRETS } from "./wrangler-dev.ts";

const AGENT_BIN = join(REPO_ROOT, "backend", "bin", "switchyard-agent.ts");

export interface AgentOptions {
  /** ws(s) URL of the gateway. */
  gateway: string;
  /** Also the replica label prefix the gateway reports in X-Switchyard-Replica. */
  name: string;
  token?: string;
  /** The gateway pool to join (tests isolate their agents in pools of their own). */
  pool?: string;
  /** A model repository; null: none, so the agent takes its models from the gateway. */
  models?: string | null;
  /** Extra flags, e.g. ["--max-concurrency", "1"]. */
  args?: readonly string[];
  /** Wait for the gateway's welcome (default); false returns as soon as the process runs. */
  waitConnected?: boolean;
}

export interface AgentProcess {
  readonly name: string;
  readonly process: ManagedProcess;
  readonly cacheDir: string;
  /** SIGTERM (drain) by default; resolves with the exit code. Removes the agent's cache directory. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** A real agent process (`node backend/bin/switchyard-agent.ts --gateway ...`) on the CPU, one thread. */
export async function startAgent(options: AgentOptions): Promise<AgentProcess> {
  const cacheDir = mkdtempSync(join(tmpdir(), "switchyard-agent-cache-"));
  const models = options.models === undefined ? REPO_DIR : options.models;
  const args = [
    AGENT_BIN,
    "--gateway",
    options.gateway,
    "--token",
    options.token ?? SECRETS.agentToken,
    "--name",
    options.name,
    "--cache-dir",
    cacheDir,
    "--threads",
    "1",
    ...(options.pool === undefined ? [] : ["--pool", options.pool]),
    ...(models === null ? [] : ["--models", models]),
    ...(options.args ?? []),
  ];
  const process = spawnGroup(`agent ${options.name}`, globalThis.process.execPath, args, { cwd: REPO_ROOT });
  const agent: AgentProcess = {
    name: options.name,
    process,
    cacheDir,
    async stop(signal = "SIGTERM") {
      const code = await process.stop(signal, 15_000);
      rmSync(cacheDir, { recursive: true, force: true });
      return code;
    },
  };
  if (options.waitConnected ?? true) {
    try {
      await process.waitForOutput(/connected to the gateway/, 60_000);
    } catch (error) {
      await agent.stop("SIGKILL");
      throw error;
    }
  }
  return agent;
}
