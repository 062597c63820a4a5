import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  bundleWorker,
  configuredVars,
  onFreePort,
  REPO_ROOT,
  startWranglerDev,
} from "../../../scripts/lib/wrangler-dev.ts";
import type { ManagedProcess } from "./process-group.ts";

export { REPO_ROOT };

/** The secrets every test gateway runs with: the local development defaults, given explicitly. */
export const SECRETS = {
  apiKey: "local-dev-key",
  agentToken: "local-agent-token",
  adminKey: "local-admin-key",
} as const;

const SECRET_NAMES = ["API_KEYS", "AGENT_TOKENS", "ADMIN_KEY", "METRICS_TOKEN"];

export interface GatewayProcess {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** ws://127.0.0.1:<port>, what agents take as --gateway */
  readonly wsUrl: string;
  readonly persistTo: string;
  /**
   * The configuration it runs with, secrets left out: wrangler.toml's [vars] with the test's `vars` over them,
   * every one given with --var so that neither .dev.vars nor the environment changes it. What a benchmark
   * reports as its setup.
   */
  readonly vars: Readonly<Record<string, string>>;
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

/**
 * The vitest project "integration-sharded" runs the routing and failure suites again on pools of
 * SWITCHYARD_TEST_REGISTRY_SHARDS registry shards (vitest.config.ts); a test's own `vars` still win.
 */
function shardedRun(): Record<string, string> {
  return SHARDED ? { REGISTRY_SHARDS: String(process.env.SWITCHYARD_TEST_REGISTRY_SHARDS) } : {};
}

/**
 * Whether this run's pools are sharded. Agents of different shards never meet in one routing decision, so
 * the few assertions about ties between two agents (which one an idle pair's first request goes to) accept
 * either agent there; everything a client relies on is asserted as is.
 */
export const SHARDED = Number(process.env.SWITCHYARD_TEST_REGISTRY_SHARDS ?? "1") > 1;

/**
 * A real `wrangler dev` (workerd with local Durable Objects and R2) on its own port with its own
 * --persist-to directory, so tests never share state with each other or with `npm start`.
 *
 * It serves the Worker as `wrangler deploy` would upload it (bundled once, up front, with `deploy
 * --dry-run`), not the sources: `wrangler dev` reloads the Worker whenever a source file changes, which
 * drops every agent's websocket, and a test must not fail because someone saved a file meanwhile.
 */
export async function startGateway(options: GatewayOptions = {}): Promise<GatewayProcess> {
  const secrets = { API_KEYS: SECRETS.apiKey, AGENT_TOKENS: SECRETS.agentToken, ADMIN_KEY: SECRETS.adminKey };
  const given = { ...secrets, ...(await configuredVars()), ...shardedRun(), ...options.vars };
  // Every setting but the secrets, for reports (a test may give secrets of its own in `vars`).
  const vars = Object.fromEntries(Object.entries(given).filter(([name]) => !SECRET_NAMES.includes(name)));
  const persistTo = mkdtempSync(join(tmpdir(), "switchyard-wrangler-"));
  let bundle = "";
  const launch = (port: number) =>
    startWranglerDev({
      name: `wrangler dev :${port}`,
      port,
      bundle,
      persistTo: join(persistTo, "state"),
      vars: given,
      apiKey: SECRETS.apiKey,
      startTimeoutMs: options.startTimeoutMs ?? 90_000,
    });

  let port: number;
  let first: ManagedProcess;
  try {
    bundle = await bundleWorker(join(persistTo, "bundle"));
    // A restart keeps this port (below): the agents reconnect to it.
    ({ port, started: first } = await onFreePort(launch));
  } catch (error) {
    // Nothing is left behind when it cannot start.
    rmSync(persistTo, { recursive: true, force: true });
    throw error;
  }
  const gateway: GatewayProcess = {
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    persistTo,
    vars,
    process: first,
    async restart() {
      await gateway.process.stop();
      gateway.process = await launch(port);
    },
    async stop() {
      await gateway.process.stop();
      rmSync(persistTo, { recursive: true, force: true });
    },
  };
  return gateway;
}
