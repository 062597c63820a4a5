import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./free-port.ts";
import { type ManagedProcess, spawnGroup, tail } from "./process-group.ts";

export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const WRANGLER_JS = join(REPO_ROOT, "node_modules", "wrangler", "bin", "wrangler.js");

/** The secrets every test gateway runs with: the local development defaults, given explicitly. */
export const SECRETS = {
  apiKey: "local-dev-key",
  agentToken: "local-agent-token",
  adminKey: "local-admin-key",
} as const;

export interface GatewayProcess {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** ws://127.0.0.1:<port>, what agents take as --gateway */
  readonly wsUrl: string;
  readonly persistTo: string;
  process: ManagedProcess;
  /** Stops wrangler dev and starts it again on the same port and local state (a gateway restart). */
  restart(): Promise<void>;
  /** Stops wrangler dev and deletes its local state. */
  stop(): Promise<void>;
}

export interface GatewayOptions {
  /** Extra `--var NAME:VALUE` settings, e.g. { QUEUE_LIMIT: "2" }. */
  vars?: Record<string, string>;
  startTimeoutMs?: number;
}

const WRANGLER_ENV = { WRANGLER_SEND_METRICS: "false", CI: "true", NO_COLOR: "1" };

/**
 * A real `wrangler dev` (workerd with local Durable Objects and R2) on its own port with its own
 * --persist-to directory, so tests never share state with each other or with `npm start`.
 *
 * It serves the Worker as `wrangler deploy` would upload it (bundled once, up front, with `deploy
 * --dry-run`), not the sources: `wrangler dev` reloads the Worker whenever a source file changes, which
 * drops every agent's websocket, and a test must not fail because someone saved a file meanwhile.
 */
export async function startGateway(options: GatewayOptions = {}): Promise<GatewayProcess> {
  const port = await freePort();
  const persistTo = mkdtempSync(join(tmpdir(), "switchyard-wrangler-"));
  const bundle = await bundleWorker(join(persistTo, "bundle"));
  const url = `http://127.0.0.1:${port}`;
  const vars = {
    API_KEYS: SECRETS.apiKey,
    AGENT_TOKENS: SECRETS.agentToken,
    ADMIN_KEY: SECRETS.adminKey,
    ...options.vars,
  };
  const args = [WRANGLER_JS, "dev", bundle, "--config", join(REPO_ROOT, "wrangler.toml"), "--no-bundle"];
  args.push("--ip", "127.0.0.1", "--port", String(port), "--persist-to", join(persistTo, "state"));
  for (const [name, value] of Object.entries(vars)) args.push("--var", `${name}:${value}`);
  const launch = async () => {
    const process = spawnGroup(`wrangler dev :${port}`, globalThis.process.execPath, args, {
      cwd: REPO_ROOT,
      env: WRANGLER_ENV,
    });
    try {
      await waitUntilLive(url, process, options.startTimeoutMs ?? 90_000);
    } catch (error) {
      await process.stop("SIGKILL");
      throw error;
    }
    return process;
  };

  const gateway: GatewayProcess = {
    url,
    wsUrl: `ws://127.0.0.1:${port}`,
    persistTo,
    process: await launch(),
    async restart() {
      await gateway.process.stop();
      gateway.process = await launch();
    },
    async stop() {
      await gateway.process.stop();
      rmSync(persistTo, { recursive: true, force: true });
    },
  };
  return gateway;
}

/** The Worker bundled as `wrangler deploy` would upload it; the path of its entry module. */
async function bundleWorker(outDir: string): Promise<string> {
  const build = spawnGroup(
    "wrangler deploy --dry-run",
    globalThis.process.execPath,
    [WRANGLER_JS, "deploy", "--dry-run", "--outdir", outDir],
    { cwd: REPO_ROOT, env: WRANGLER_ENV },
  );
  const code = await build.exited;
  if (code !== 0) throw new Error(`bundling the Worker failed (${code}):\n${tail(build.output())}`);
  return join(outDir, "index.js");
}

async function waitUntilLive(url: string, process: ManagedProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (process.child.exitCode !== null) {
      throw new Error(`wrangler dev exited with ${process.child.exitCode}:\n${tail(process.output())}`);
    }
    try {
      const response = await fetch(`${url}/v2/health/live`, {
        headers: { Authorization: `Bearer ${SECRETS.apiKey}` },
        signal: AbortSignal.timeout(2_000),
      });
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(
    `wrangler dev did not serve /v2/health/live within ${timeoutMs} ms:\n${tail(process.output())}`,
  );
}
