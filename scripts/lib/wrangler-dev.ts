import { join } from "node:path";
import { freePort } from "./free-port.ts";
import { type ManagedProcess, spawnGroup, tail } from "./process-group.ts";
import { repositoryRoot } from "./repository-root.ts";

/**
 * Starting the gateway with `wrangler dev` (workerd with local Durable Objects and R2), as `npm start`, the
 * integration tests and the benchmarks do (scripts/lib/: development tooling they share, not part of the
 * agent or the gateway). Each caller picks what differs: `npm start` serves the sources on 8787 with the
 * local state under .wrangler/; the tests serve a bundle on a free port with a state directory of their own.
 */
export const REPO_ROOT = repositoryRoot(import.meta.dirname);
export const WRANGLER_JS = join(REPO_ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
export const WRANGLER_CONFIG = join(REPO_ROOT, "wrangler.toml");

/**
 * Whether `wrangler dev` collects local traces: X_LOCAL_OBSERVABILITY as the environment sets it, else off.
 * wrangler (4.x) turns its trace collector on by default: every event of the Worker and its objects (each
 * request, RPC call, websocket message, timer) streams to a collector that writes its spans to SQLite, for
 * wrangler's local explorer. On the 2-core machine that more than doubled what workerd spent per tiny
 * inference through the gateway (3.0 ms of CPU against 1.3) and added 1.4 ms at p50 (4.8 against 3.4), the
 * relay anchor's and the floor's requests likewise (bench/results/hot-path-cpu-local-traces.md): a cost no
 * deployed gateway has. `X_LOCAL_OBSERVABILITY=true npm start` brings the traces back (wrangler takes
 * "true" or "false" in any case and refuses anything else; lower-cased here, as the report and tests read it).
 */
export const LOCAL_TRACES = (process.env.X_LOCAL_OBSERVABILITY ?? "false").toLowerCase();

/** No telemetry, no prompts, no colours in what it prints; local traces as LOCAL_TRACES says. */
export const WRANGLER_ENV = {
  WRANGLER_SEND_METRICS: "false",
  CI: "true",
  NO_COLOR: "1",
  X_LOCAL_OBSERVABILITY: LOCAL_TRACES,
} as const;

export interface WranglerDevOptions {
  /** The name its output is reported under. */
  name: string;
  port: number;
  /**
   * Its devtools port. Default: one the OS picks. "wrangler" keeps wrangler's own, the first free from 9229
   * up, which suits one gateway (npm start) but not several started at once (parallel test files): two
   * take the same port and one fails with "Address already in use (socket direct:1:default)".
   */
  inspectorPort?: number | "wrangler";
  /** Default 127.0.0.1. */
  ip?: string;
  /** Default wrangler.toml. */
  config?: string;
  /** A bundled Worker (see bundleWorker), served with --no-bundle; default: the config's `main`, built by wrangler. */
  bundle?: string;
  /** --persist-to; default wrangler's own (.wrangler/state next to the config). */
  persistTo?: string;
  /** `--var NAME:VALUE` for each: these win over wrangler.toml, .dev.vars and the environment. */
  vars?: Readonly<Record<string, string>>;
  /** Added to wrangler's environment (besides WRANGLER_ENV). */
  env?: NodeJS.ProcessEnv;
  /** Sent as a bearer key with the liveness probe, for a gateway whose health routes take one. */
  apiKey?: string;
  /** How long it may take to serve /v2/health/live; default 90 s. */
  startTimeoutMs?: number;
  /** Passed to spawnGroup. */
  onLine?: (line: string) => void;
  keepOutputChars?: number;
}

/** Starts `wrangler dev` in its own process group and resolves once it serves /v2/health/live. */
export async function startWranglerDev(options: WranglerDevOptions): Promise<ManagedProcess> {
  const ip = options.ip ?? "127.0.0.1";
  const args = [WRANGLER_JS, "dev"];
  if (options.bundle !== undefined) args.push(options.bundle, "--no-bundle");
  args.push("--config", options.config ?? WRANGLER_CONFIG, "--ip", ip, "--port", String(options.port));
  if (options.inspectorPort !== "wrangler")
    args.push("--inspector-port", String(options.inspectorPort ?? (await freePort())));
  if (options.persistTo !== undefined) args.push("--persist-to", options.persistTo);
  for (const [name, value] of Object.entries(options.vars ?? {})) args.push("--var", `${name}:${value}`);
  const wrangler = spawnGroup(options.name, process.execPath, args, {
    cwd: REPO_ROOT,
    env: { ...options.env, ...WRANGLER_ENV },
    ...(options.onLine === undefined ? {} : { onLine: options.onLine }),
    ...(options.keepOutputChars === undefined ? {} : { keepOutputChars: options.keepOutputChars }),
  });
  try {
    await waitUntilLive(`http://${ip}:${options.port}`, wrangler, options);
  } catch (error) {
    await wrangler.stop("SIGKILL");
    throw error;
  }
  return wrangler;
}

/**
 * Starts `start` on a port found free, and again on a new one when another process took it before wrangler
 * bound it (parallel test files and benchmarks start gateways and agents at once): wrangler then exits with
 * "Address already in use". Three tries. Only a first start: a restart must keep its port, where agents
 * reconnect.
 */
export async function onFreePort<T>(
  start: (port: number) => Promise<T>,
): Promise<{ port: number; started: T }> {
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    try {
      return { port, started: await start(port) };
    } catch (error) {
      if (attempt >= 3 || !String(error).includes("Address already in use")) throw error;
    }
  }
}

/** The Worker bundled as `wrangler deploy` would upload it, into `outDir`; the path of its entry module. */
export async function bundleWorker(outDir: string, config = WRANGLER_CONFIG): Promise<string> {
  const build = spawnGroup(
    "wrangler deploy --dry-run",
    process.execPath,
    [WRANGLER_JS, "deploy", "--dry-run", "--config", config, "--outdir", outDir],
    { cwd: REPO_ROOT, env: WRANGLER_ENV },
  );
  const code = await build.exited;
  if (code !== 0) throw new Error(`bundling the Worker failed (${code}):\n${tail(build.output())}`);
  return join(outDir, "index.js");
}

const configuredVarsCache = new Map<string, Promise<Record<string, string>>>();

/**
 * The [vars] of a wrangler configuration file, read by wrangler's own reader (the one `wrangler dev` uses),
 * so that a caller can state, or pin with --var, the configuration a gateway runs with.
 */
export function configuredVars(config = WRANGLER_CONFIG): Promise<Record<string, string>> {
  let known = configuredVarsCache.get(config);
  if (known === undefined) {
    known = import("wrangler").then(({ unstable_readConfig }) => {
      const vars: Record<string, string> = {};
      const read = unstable_readConfig({ config }, { hideWarnings: true });
      for (const [name, value] of Object.entries(read.vars)) {
        if (typeof value !== "string")
          throw new Error(`${config}: [vars] ${name} is not a string; the gateway reads only strings`);
        vars[name] = value;
      }
      return vars;
    });
    configuredVarsCache.set(config, known);
  }
  return known;
}

async function waitUntilLive(
  url: string,
  wrangler: ManagedProcess,
  options: Pick<WranglerDevOptions, "apiKey" | "startTimeoutMs">,
): Promise<void> {
  const timeoutMs = options.startTimeoutMs ?? 90_000;
  const headers: Record<string, string> =
    options.apiKey === undefined ? {} : { Authorization: `Bearer ${options.apiKey}` };
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (wrangler.child.exitCode !== null || wrangler.child.signalCode !== null) {
      throw new Error(
        `wrangler dev exited with ${wrangler.child.exitCode ?? wrangler.child.signalCode}:\n${tail(wrangler.output())}`,
      );
    }
    try {
      const response = await fetch(`${url}/v2/health/live`, { headers, signal: AbortSignal.timeout(2_000) });
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(
    `wrangler dev did not serve /v2/health/live within ${timeoutMs} ms:\n${tail(wrangler.output())}`,
  );
}
