/**
 * `npm start`: the whole of Switchyard on this machine, in one command.
 *
 *   1. writes the demo models (four small MLPs m000…m003 and PP-OCRv4 text detection) unless present
 *   2. starts `wrangler dev` (the gateway in workerd, local Durable Objects and R2 under .wrangler/)
 *   3. uploads the demo models to local R2 through the gateway's admin endpoint
 *   4. starts one CPU agent that joins the gateway and takes its models from it
 *   5. waits for /v2/health/ready, sends the example request once, and prints it as a curl command
 *
 * Ctrl-C (or SIGTERM) stops everything it started: each child runs in its own process group and the whole
 * group is signalled, so workerd goes down with wrangler. SWITCHYARD_PORT picks another port than 8787.
 * The secrets are the local development defaults unless .dev.vars or the environment set others.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { PPOCR_DET_PATH } from "../test/fixtures/ppocr.ts";
import {
  modelPath,
  multiplexModelName,
  multiplexRepository,
  writeModelRepository,
} from "../test/fixtures/repository.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const HOST = "127.0.0.1";
const PORT = Number(process.env.SWITCHYARD_PORT ?? 8787);
const GATEWAY = `http://${HOST}:${PORT}`;
// Local state lives under .wrangler/ (git ignores it), next to wrangler's own.
const DEMO_MODELS_DIR = join(ROOT, ".wrangler", "demo-models");
const AGENT_CACHE_DIR = join(ROOT, ".wrangler", "agent-cache");
const DEMO_MLPS = 4;
const READY_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 10_000;

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

interface DemoModel {
  name: string;
  version: string;
  path: string;
}

// ---- processes ----

interface Started {
  name: string;
  child: ChildProcess;
}

const started: Started[] = [];
let stopping = false;

function startGroup(name: string, args: string[], env: NodeJS.ProcessEnv): Started {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    // Its own process group, so that stopping it stops what it started (wrangler runs workerd).
    detached: true,
  });
  const entry = { name, child };
  started.push(entry);
  for (const stream of [child.stdout, child.stderr]) prefixLines(stream, name);
  child.once("exit", (code, signal) => {
    signalGroup(child, "SIGKILL");
    if (stopping) return;
    say(`${name} exited (${signal ?? code}); stopping everything`);
    void stopAll(1);
  });
  return entry;
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}

const isRunning = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

async function stopAll(exitCode: number): Promise<never> {
  if (stopping) {
    // A second Ctrl-C: no more waiting.
    for (const { child } of started) signalGroup(child, "SIGKILL");
    process.exit(130);
  }
  stopping = true;
  // The agent first, so that it drains while the gateway still listens.
  for (const { child } of [...started].reverse()) {
    if (!isRunning(child)) continue;
    signalGroup(child, "SIGTERM");
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const grace = new Promise((resolve) => setTimeout(resolve, STOP_GRACE_MS));
    await Promise.race([exited, grace]);
    signalGroup(child, "SIGKILL");
  }
  say("stopped");
  process.exit(exitCode);
}

// The Request.cf lookup needs the internet; offline it fails harmlessly, with a stack trace each time.
const HARMLESS = [
  /Unable to fetch the `Request\.cf` object/,
  /ENOTFOUND workers\.cloudflare\.com/,
  /^\s+at /,
];

function prefixLines(stream: NodeJS.ReadableStream | null, name: string): void {
  if (stream === null) return;
  let pending = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    const lines = (pending + chunk).split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines) {
      if (line.trim() === "" || HARMLESS.some((pattern) => pattern.test(line))) continue;
      process.stdout.write(`[${name}] ${line}\n`);
    }
  });
}

function say(message: string): void {
  process.stdout.write(`[start] ${message}\n`);
}

// ---- steps ----

/** The secrets wrangler dev will use: .dev.vars wins over the environment, which wins over the defaults. */
function localSecrets(): Record<SecretName, string> {
  const fromFile: Record<string, string> = {};
  const devVars = join(ROOT, ".dev.vars");
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

/** Writes the demo repository; files already there with the same content are left alone. */
function writeDemoModels(): DemoModel[] {
  multiplexRepository(DEMO_MODELS_DIR, { count: DEMO_MLPS, targetBytes: 256 * 1024, seedBase: 0 });
  writeModelRepository(DEMO_MODELS_DIR, [{ name: "det", bytes: readFileSync(PPOCR_DET_PATH) }]);
  const names = [...Array.from({ length: DEMO_MLPS }, (_, index) => multiplexModelName(index)), "det"];
  return names.map((name) => ({ name, version: "1", path: modelPath(DEMO_MODELS_DIR, name) }));
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

async function upload(model: DemoModel, adminKey: string): Promise<void> {
  const response = await fetch(`${GATEWAY}/admin/models/${model.name}/${model.version}`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${adminKey}`, "Content-Type": "application/octet-stream" },
    body: readFileSync(model.path),
  });
  const text = await response.text();
  if (!response.ok)
    throw new Error(`uploading ${model.name}/${model.version} failed: ${response.status} ${text}`);
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
  say(`demo models in ${DEMO_MODELS_DIR}: ${models.map((model) => model.name).join(", ")}`);

  await assertPortFree();
  const wranglerJs = join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
  startGroup("gateway", [wranglerJs, "dev", "--ip", HOST, "--port", String(PORT)], {
    ...secrets,
    WRANGLER_SEND_METRICS: "false",
    CI: "true",
  });
  await waitFor("the gateway", async () => (await status("/v2/health/live", apiKey)) === 200);
  say(`gateway up at ${GATEWAY}`);

  for (const model of models) await upload(model, secrets.ADMIN_KEY);
  say(`uploaded ${models.length} models to the gateway's local R2`);

  startGroup(
    "agent",
    [
      join(ROOT, "backend", "bin", "switchyard-agent.ts"),
      "--gateway",
      `ws://${HOST}:${PORT}`,
      "--token",
      firstOf(secrets.AGENT_TOKENS),
      "--name",
      "local-cpu",
      "--cache-dir",
      AGENT_CACHE_DIR,
    ],
    {},
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
      `Models: ${models.map((model) => model.name).join(", ")}. Ctrl-C stops the gateway and the agent.`,
      "",
    ].join("\n"),
  );
}

main().catch((error: unknown) => {
  if (stopping) return;
  say(`failed: ${error instanceof Error ? error.message : String(error)}`);
  void stopAll(1);
});
