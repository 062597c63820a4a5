import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { MLP_INPUT } from "../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS, REPO_DIR } from "../fixtures/paths.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import { call, eventually, mlpRequest } from "./harness/oip-client.ts";
import { describeProcesses } from "./harness/process-group.ts";
import { type GatewayProcess, REPO_ROOT, SECRETS, startGateway } from "./harness/wrangler-dev.ts";
import { AGENT_BIN } from "./support/agent-process.ts";

// The operator's command-line tools as processes: `switchyard models push/ls` against a real wrangler dev,
// then an agent that takes those models from the gateway with JSON logs; and the agent's config file.

const SWITCHYARD_BIN = join(REPO_ROOT, "backend", "bin", "switchyard.ts");
const [FIRST = "m000", SECOND = "m001"] = MULTIPLEX_MODELS;

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(bin: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

describe("switchyard models push / ls, and an agent that serves what was pushed", () => {
  let gateway: GatewayProcess;
  let agent: AgentProcess | undefined;
  let repo: string;

  beforeAll(async () => {
    gateway = await startGateway();
    // A repository of two versions: one with a config.json of its own.
    repo = mkdtempSync(join(tmpdir(), "switchyard-push-"));
    for (const name of [FIRST, SECOND]) cpSync(join(REPO_DIR, name), join(repo, name), { recursive: true });
    // Its warm-up runs on a data file, which goes to the gateway with it and from there to the agent.
    writeFileSync(
      join(repo, SECOND, "1", "config.json"),
      JSON.stringify({
        description: "pushed by a test",
        model_warmup: [
          { name: "row", inputs: { [MLP_INPUT]: { dims: [16], input_data_file: "rows/one.bin" } } },
        ],
      }),
    );
    mkdirSync(join(repo, SECOND, "warmup", "rows"), { recursive: true });
    writeFileSync(
      join(repo, SECOND, "warmup", "rows", "one.bin"),
      new Uint8Array(new Float32Array(16).fill(0.5).buffer),
    );
  });

  afterEach((context) => {
    if (context.task.result?.state === "fail") {
      console.log(describeProcesses([gateway.process, ...(agent === undefined ? [] : [agent.process])]));
    }
  });

  afterAll(async () => {
    await agent?.stop();
    await gateway?.stop();
    rmSync(repo, { recursive: true, force: true });
  });

  const admin = { SWITCHYARD_ADMIN_KEY: SECRETS.adminKey };

  test("push uploads every version with its sha256; ls lists them; pushing again changes nothing", async () => {
    const pushed = await run(SWITCHYARD_BIN, ["models", "push", repo, "--gateway", gateway.wsUrl], admin);
    expect(pushed.stderr).toBe("");
    expect(pushed.code).toBe(0);
    const modelSha = sha256(join(repo, FIRST, "1", "model.onnx"));
    const configSha = sha256(join(repo, SECOND, "1", "config.json"));
    expect(pushed.stdout).toContain(`↑ ${FIRST}:1 model.onnx`);
    expect(pushed.stdout).toContain(`sha256 ${modelSha}`);
    expect(pushed.stdout).toContain(`↑ ${SECOND}:1 config.json`);
    expect(pushed.stdout).toContain(`sha256 ${configSha}`);
    const warmupSha = sha256(join(repo, SECOND, "warmup", "rows", "one.bin"));
    expect(pushed.stdout).toContain(`↑ ${SECOND}:1 warmup/rows/one.bin  64 B`);
    expect(pushed.stdout).toMatch(/pushed 2, unchanged 0/);

    const listed = await run(SWITCHYARD_BIN, ["models", "ls", "--gateway", gateway.url, "--json"], admin);
    expect(listed.code).toBe(0);
    const versions = JSON.parse(listed.stdout) as Array<{
      name: string;
      version: string;
      files: Record<string, { sha256: string }>;
    }>;
    expect(versions.find((entry) => entry.name === FIRST)?.files["model.onnx"]?.sha256).toBe(modelSha);
    expect(versions.find((entry) => entry.name === SECOND)?.files["config.json"]?.sha256).toBe(configSha);
    expect(versions.find((entry) => entry.name === SECOND)?.files["warmup/rows/one.bin"]?.sha256).toBe(
      warmupSha,
    );
    const table = await run(SWITCHYARD_BIN, ["models", "ls", "--gateway", gateway.url], admin);
    expect(table.stdout.split("\n")[0]).toMatch(/^MODEL\s+VERSION\s+SIZE\s+SHA256\s+CONFIG\s+UPLOADED$/);
    expect(table.stdout).toContain(modelSha);

    const again = await run(SWITCHYARD_BIN, ["models", "push", repo, "--gateway", gateway.url], admin);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/pushed 0, unchanged 2/);
  });

  test("push stops before uploading a version whose warm-up names a file that is not there", async () => {
    const broken = mkdtempSync(join(tmpdir(), "switchyard-push-broken-"));
    try {
      cpSync(join(REPO_DIR, FIRST), join(broken, "lost"), { recursive: true });
      writeFileSync(
        join(broken, "lost", "config.json"),
        JSON.stringify({
          model_warmup: [{ inputs: { [MLP_INPUT]: { dims: [16], input_data_file: "gone.bin" } } }],
        }),
      );
      const pushed = await run(SWITCHYARD_BIN, ["models", "push", broken, "--gateway", gateway.url], admin);
      expect(pushed.code).toBe(1);
      expect(pushed.stderr).toContain(
        `lost:1: config.json's model_warmup names input_data_file 'gone.bin', but ${join(broken, "lost", "warmup", "gone.bin")} is not there`,
      );
      const listed = await run(SWITCHYARD_BIN, ["models", "ls", "--gateway", gateway.url, "--json"], admin);
      expect(listed.stdout).not.toContain('"lost"');
    } finally {
      rmSync(broken, { recursive: true, force: true });
    }
  });

  test("a wrong admin key or a missing gateway is one line that says what to fix", async () => {
    const refused = await run(SWITCHYARD_BIN, [
      "models",
      "ls",
      "--gateway",
      gateway.url,
      "--admin-key",
      "nope",
    ]);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split("\n")).toHaveLength(1);
    expect(refused.stderr).toMatch(/refused the admin key \(403.*check --admin-key or SWITCHYARD_ADMIN_KEY/);
    expect(refused.stderr).not.toContain("nope");

    const nowhere = await run(SWITCHYARD_BIN, ["models", "ls"], { ...admin, SWITCHYARD_GATEWAY: "" });
    expect(nowhere.code).toBe(1);
    expect(nowhere.stderr).toMatch(/^switchyard: --gateway is required/);
  });

  test("an agent downloads the pushed models from the gateway and logs JSON lines with request ids", async () => {
    agent = await startAgent({
      gateway: gateway.wsUrl,
      name: "json-agent",
      models: null,
      args: ["--log-format", "json", "--log-requests"],
    });
    const outcome = await call(gateway.url, SECOND, { id: "req-42", ...mlpRequest(1) });
    expect(outcome.ok).toBe(true);
    const current = agent;
    await eventually("the request's log line", async () =>
      current.process.output().includes('"event":"request"'),
    );

    const lines = current.process
      .output()
      .split("\n")
      .filter((line) => line.trim() !== "");
    // Every line is one JSON object with a time, a level and an event: what a log shipper needs.
    const events = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    for (const event of events)
      expect(event).toMatchObject({ time: expect.any(String), level: expect.any(String) });
    expect(events.find((event) => event.event === "agent starting")).toMatchObject({ name: "json-agent" });
    expect(events.find((event) => event.event === "model downloaded")).toMatchObject({
      model: `${SECOND}:1`,
    });
    const request = events.find((event) => event.event === "request");
    expect(request).toMatchObject({ requestId: "req-42", model: `${SECOND}:1`, status: 200, cache: "miss" });
    expect(lines.join("\n")).not.toContain(SECRETS.agentToken);
  });
});

describe("switchyard-agent --config", () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "switchyard-config-"));
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function configFile(content: unknown): string {
    const path = join(dir, `agent-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content));
    return path;
  }

  /** Starts a standalone agent, reads its startup event, stops it. */
  async function startupEvent(args: string[], env: NodeJS.ProcessEnv): Promise<Record<string, unknown>> {
    const child = spawn(process.execPath, [AGENT_BIN, "--log-format", "json", ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    try {
      await eventually("agent ready", async () => stderr.includes('"event":"agent ready"'), 30_000);
    } finally {
      child.kill("SIGTERM");
    }
    const line = stderr.split("\n").find((entry) => entry.includes('"event":"agent starting"'));
    return JSON.parse(line ?? "{}") as Record<string, unknown>;
  }

  test("flags win over the environment, which wins over the file, which wins over the defaults", async () => {
    const file = configFile({
      models: REPO_DIR,
      standalone: true,
      port: 0,
      threads: 1,
      name: "from-file",
      "max-models": 5,
      "max-concurrency": 2,
      preload: [FIRST],
    });
    const event = await startupEvent(["--config", file, "--name", "from-flag"], {
      SWITCHYARD_MAX_CONCURRENCY: "7",
      SWITCHYARD_NAME: "from-env",
    });
    expect(event).toMatchObject({ name: "from-flag", config: file });
    expect(event.replicas).toEqual([
      expect.objectContaining({ maxModels: 5, maxConcurrency: 7, threads: 1, device: "cpu" }),
    ]);
  });

  test("a mistake in the file stops the agent with one line naming the file, the key and the fix", async () => {
    const typo = configFile({ models: REPO_DIR, "max-modles": 4 });
    const ran = await run(AGENT_BIN, ["--config", typo]);
    expect(ran.code).toBe(2);
    expect(ran.stderr.trim().split("\n")).toHaveLength(1);
    expect(ran.stderr).toContain(`--config ${typo}: unknown key "max-modles" (did you mean "max-models"?)`);

    const broken = configFile("{ models: ");
    expect((await run(AGENT_BIN, ["--config", broken])).stderr).toMatch(/not valid JSON/);
    const missing = await run(AGENT_BIN, ["--config", join(dir, "absent.json")]);
    expect(missing.stderr).toMatch(/cannot read it \(no such file\)/);
    const badValue = configFile({ models: REPO_DIR, "max-models": "lots" });
    expect((await run(AGENT_BIN, ["--config", badValue])).stderr).toMatch(/--max-models must be a number/);
  });
});
