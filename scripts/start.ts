/**
 * `npm start`: the whole of Switchyard on this machine, in one command.
 *
 *   1. writes the demo models (four small MLPs m000…m003 and PP-OCRv4 text detection) unless present
 *   2. starts `wrangler dev` (the gateway in workerd, local Durable Objects and R2 under .wrangler/)
 *   3. uploads the demo models to local R2 as `switchyard models push` does (versions already there are skipped)
 *   4. starts one CPU agent that joins the gateway and takes its models from it
 *   5. waits for /v2/health/ready, sends the example request once, and prints it as a curl command
 *
 * Ctrl-C (or SIGTERM) stops everything it started: each child runs in its own process group and the whole
 * group is signalled, so workerd goes down with wrangler. SWITCHYARD_PORT picks another port than 8787.
 * The secrets are the local development defaults unless .dev.vars or the environment set others.
 *
 * The pieces are shared with the tests and benchmarks through scripts/lib/: the demo models' builder and
 * repository writer, process groups and starting `wrangler dev`; the upload is the switchyard CLI's.
 */
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { Writable } from "node:stream";
import { AdminClient } from "../backend/cli/admin-client.ts";
import { pushModels } from "../backend/cli/models-push.ts";
import { multiplexModelName, multiplexRepository, writeModelRepository } from "./lib/model-repository.ts";
import { PPOCR_DET_PATH } from "./lib/ppocr-model.ts";
import { isRunning, type ManagedProcess, spawnGroup } from "./lib/process-group.ts";
import { REPO_ROOT, startWranglerDev } from "./lib/wrangler-dev.ts";

const HOST = "127.0.0.1";
const PORT = Number(process.env.SWITCHYARD_PORT ?? 8787);
const GATEWAY = `http://${HOST}:${PORT}`;
// Local state lives under .wrangler/ (git ignores it), next to wrangler's own.
const DEMO_MODELS_DIR = join(REPO_ROOT, ".wrangler", "demo-models");
const AGENT_CACHE_DIR = join(REPO_ROOT, ".wrangler", "agent-cache");
const DEMO_MLPS = 4;
const READY_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 10_000;
// What is kept of each child's output (for the message when it fails); the rest is only shown.
const KEEP_OUTPUT_CHARS = 64 * 1024;

const DEFAULT_SECRETS = {
  API_KEYS: "local-dev-key",
  AGENT_TOKENS: "local-agent-token",
  ADMIN_KEY: "local-admin-key",
} as const;
type SecretName = keyof typeof DEFAULT_SECRETS;

const EXAMPLE_MODEL = "m000";
const EXAMPLE_BODY = JSON.stringify({
  inputs: [
    {
      name: "x",
      shape: [1, 16],
      datatype: "FP32",
      data: Array.from({ length: 16 }, (_, index) => Number((index / 10).toFixed(1))),
    },
  ],
});

// ---- processes ----

/** What was started, in order; stopped in reverse (the agent drains while the gateway still listens). */
const started: ManagedProcess[] = [];
let stopping = false;

// The Request.cf lookup needs the internet; offline it fails harmlessly, with a stack trace each time.
const HARMLESS = [
  /Unable to fetch the `Request\.cf` object/,
  /ENOTFOUND workers\.cloudflare\.com/,
  /^\s+at /,
];

/** Shows a child's output line by line under its name. */
const show =
  (name: string) =>
  (line: string): void => {
    if (line.trim() === "" || HARMLESS.some((pattern) => pattern.test(line))) return;
    process.stdout.write(`[${name}] ${line}\n`);
  };

/** Keeps track of a started child: when it ends on its own, everything stops. */
function track(child: ManagedProcess, name: string): ManagedProcess {
  started.push(child);
  void child.exited.then((code) => {
    if (stopping) return;
    say(`${name} exited (${code ?? child.child.signalCode}); stopping everything`);
    void stopAll(1);
  });
  return child;
}

async function stopAll(exitCode: number): Promise<never> {
  if (stopping) {
    // A second Ctrl-C: no more waiting.
    await Promise.all(started.map((child) => child.stop("SIGKILL")));
    process.exit(130);
  }
  stopping = true;
  for (const child of [...started].reverse()) {
    if (isRunning(child)) await child.stop("SIGTERM", STOP_GRACE_MS);
  }
  say("stopped");
  process.exit(exitCode);
}

function say(message: string): void {
  process.stdout.write(`[start] ${message}\n`);
}

// ---- steps ----

/** The secrets wrangler dev will use: .dev.vars wins over the environment, which wins over the defaults. */
function localSecrets(): Record<SecretName, string> {
  const fromFile: Record<string, string> = {};
  const devVars = join(REPO_ROOT, ".dev.vars");
  if (existsSync(devVars)) {
    for (const line of readFileSync(devVars, "utf8").split("\n")) {
      const match = /^\s*([A-Z_][A-Z0-9_]*)\s*=\s*"?([^"]*?)"?\s*$/.exec(line);
      if (match?.[1] !== undefined && match[2] !== undefined) fromFile[match[1]] = match[2];
    }
  }
  const pick = (name: SecretName) => fromFile[name] ?? process.env[name] ?? DEFAULT_SECRETS[name];
  return { API_KEYS: pick("API_KEYS"), AGENT_TOKENS: pick("AGENT_TOKENS"), ADMIN_KEY: pick("ADMIN_KEY") };
}

const firstOf = (list: string) => list.split(",")[0]?.trim() ?? "";

/** Writes the demo repository (files already there with the same content are left alone); its model names. */
function writeDemoModels(): string[] {
  multiplexRepository(DEMO_MODELS_DIR, { count: DEMO_MLPS, targetBytes: 256 * 1024, seedBase: 0 });
  writeModelRepository(DEMO_MODELS_DIR, [{ name: "det", bytes: readFileSync(PPOCR_DET_PATH) }]);
  return [...Array.from({ length: DEMO_MLPS }, (_, index) => multiplexModelName(index)), "det"];
}

function assertPortFree(): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", () =>
      reject(
        new Error(`${HOST}:${PORT} is in use (another npm start?); set SWITCHYARD_PORT to use another port`),
      ),
    );
    server.listen(PORT, HOST, () => server.close(() => resolve()));
  });
}

async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (stopping) throw new Error("stopped");
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`${what} not reached within ${READY_TIMEOUT_MS / 1000} s`);
}

async function status(path: string, apiKey: string): Promise<number> {
  const response = await fetch(`${GATEWAY}${path}`, {
    headers: { Authorization: `Bearer ${apiKey}` },
    signal: AbortSignal.timeout(5_000),
  });
  await response.arrayBuffer();
  return response.status;
}

/** `switchyard models push`'s report, one line at a time under [push]. */
function pushOutput(): Writable {
  const line = show("push");
  let pending = "";
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      const lines = (pending + chunk.toString("utf8")).split("\n");
      pending = lines.pop() ?? "";
      for (const each of lines) line(each);
      done();
    },
  });
}

function curlCommand(apiKey: string): string {
  return [
    `curl -s ${GATEWAY}/v2/models/${EXAMPLE_MODEL}/infer \\`,
    `  -H 'Authorization: Bearer ${apiKey}' -H 'Content-Type: application/json' \\`,
    `  -d '${EXAMPLE_BODY}'`,
  ].join("\n");
}

async function main(): Promise<void> {
  process.on("SIGINT", () => void stopAll(0));
  process.on("SIGTERM", () => void stopAll(0));
  const secrets = localSecrets();
  const apiKey = firstOf(secrets.API_KEYS);

  const models = writeDemoModels();
  say(`demo models in ${DEMO_MODELS_DIR}: ${models.join(", ")}`);

  await assertPortFree();
  // The sources, not a bundle: wrangler dev reloads the Worker when one changes. State under .wrangler/.
  const gateway = startWranglerDev({
    name: "gateway",
    port: PORT,
    ip: HOST,
    inspectorPort: "wrangler",
    env: secrets,
    apiKey,
    startTimeoutMs: READY_TIMEOUT_MS,
    onLine: show("gateway"),
    keepOutputChars: KEEP_OUTPUT_CHARS,
  });
  // Tracked only once it serves: until then startWranglerDev reports (and stops) a wrangler that fails.
  track(await gateway, "gateway");
  say(`gateway up at ${GATEWAY}`);

  await pushModels({
    dir: DEMO_MODELS_DIR,
    models,
    force: false,
    client: new AdminClient(GATEWAY, secrets.ADMIN_KEY),
    out: pushOutput(),
  });

  track(
    spawnGroup(
      "agent",
      process.execPath,
      [
        join(REPO_ROOT, "backend", "bin", "switchyard-agent.ts"),
        "--gateway",
        `ws://${HOST}:${PORT}`,
        "--token",
        firstOf(secrets.AGENT_TOKENS),
        "--name",
        "local-cpu",
        "--cache-dir",
        AGENT_CACHE_DIR,
      ],
      { cwd: REPO_ROOT, onLine: show("agent"), keepOutputChars: KEEP_OUTPUT_CHARS },
    ),
    "agent",
  );
  await waitFor("readiness", async () => (await status("/v2/health/ready", apiKey)) === 200);

  // The printed command is checked before it is printed.
  const response = await fetch(`${GATEWAY}/v2/models/${EXAMPLE_MODEL}/infer`, {
    method: "POST",
    headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
    body: EXAMPLE_BODY,
  });
  const answer = await response.text();
  if (!response.ok) throw new Error(`the example request failed: ${response.status} ${answer}`);

  process.stdout.write(
    [
      "",
      `Switchyard is running at ${GATEWAY} (API key ${apiKey}). Try:`,
      "",
      curlCommand(apiKey),
      "",
      `Dashboard: ${GATEWAY}/dashboard (admin key ${secrets.ADMIN_KEY}); metrics: ${GATEWAY}/metrics.`,
      `Models: ${models.join(", ")}. Ctrl-C stops the gateway and the agent.`,
      "",
    ].join("\n"),
  );
}

main().catch((error: unknown) => {
  if (stopping) return;
  say(`failed: ${error instanceof Error ? error.message : String(error)}`);
  void stopAll(1);
});
