import path from "node:path";
import { describe, expect, test } from "vitest";
import type { AgentOptions } from "../../../backend/agent-options.ts";
import { envName, FLAG_SPECS, type FlagSpec, type Machine } from "../../../backend/cli/flag-specs.ts";
import { helpText, shownDefault } from "../../../backend/cli/help.ts";
import { parseCommandLine } from "../../../backend/cli/options.ts";
import { DEFAULT_POOL } from "../../../shared/pool-names.ts";
import { tempDir } from "../models/temp-files.ts";

// What --help promises against what the agent does: both come from backend/cli/flag-specs.ts, and these
// tests hold them to each other, so a default shown in --help is the default a user gets.

const GiB = 2 ** 30;

/** A host pinned for the derived defaults (hostname, home, cores and RAM). */
const MACHINE: Machine = { hostname: "gpu-box-7", homedir: "/home/ops", cores: 16, memoryBytes: 64 * GiB };

function options(argv: string[], env: NodeJS.ProcessEnv = {}): AgentOptions {
  const parsed = parseCommandLine(argv, env, MACHINE);
  if (parsed.kind !== "run") throw new Error("expected options, got the help text");
  return parsed.options;
}

const SPECS = Object.entries(FLAG_SPECS) as [string, FlagSpec][];

/** The flag's row in --help: its own line and the env line under it. */
function helpRow(flag: string): string {
  const lines = helpText().split("\n");
  const at = lines.findIndex((line) => line.trimStart().split(" ")[0] === `--${flag}`);
  expect(at, `--${flag} is not in --help`).toBeGreaterThanOrEqual(0);
  return `${lines[at]}\n${lines[at + 1]}`;
}

describe("--help is generated from the flag specs", () => {
  test.each(SPECS)("--%s is listed with its value, help, default and variable", (flag, spec) => {
    const row = helpRow(flag);
    expect(row).toContain(`--${flag}${spec.value === undefined ? "" : ` ${spec.value}`}`);
    expect(row).toContain(spec.help);
    expect(row).toContain(`env ${envName(flag)}`);
    const shown = shownDefault(spec);
    if (shown === undefined) expect(row).not.toContain("(default:");
    else expect(row).toContain(`(default: ${shown})`);
  });

  test("each flag is listed once", () => {
    const flags = helpText()
      .split("\n")
      .map((line) => /^ {2}--([a-z-]+)/.exec(line)?.[1])
      .filter((flag) => flag !== undefined);
    expect(flags).toEqual(Object.keys(FLAG_SPECS));
  });

  test("--pool shows the gateway's default pool", () => {
    expect(helpRow("pool")).toContain(`(default: ${DEFAULT_POOL})`);
  });
});

describe("a default shown in --help is the default applied", () => {
  // Enough that every flag matters: a gateway (for --pool, --hints) and metrics (for --metrics-host).
  const BASE = [
    "--models",
    "./models",
    "--gateway",
    "wss://gw.example",
    "--token",
    "t",
    "--metrics-port",
    "9464",
  ];
  const plain = SPECS.filter(
    ([flag, spec]) => typeof spec.default === "string" && !BASE.includes(`--${flag}`),
  ).map(([flag, spec]) => [flag, spec.default as string] as const);

  test("every flag that takes a value has a plain default, a derived one, or is optional by nature", () => {
    const withoutDefault = SPECS.filter(
      ([, spec]) => spec.type === "string" && spec.default === undefined && spec.derived === undefined,
    ).map(([flag]) => flag);
    expect(withoutDefault.sort()).toEqual(["config", "gateway", "token"]);
  });

  test.each(plain)("--%s: given nothing is the same as giving %j", (flag, text) => {
    expect(options(BASE)).toEqual(options([...BASE, `--${flag}=${text}`]));
  });

  test("switches are off unless given", () => {
    expect(options(BASE)).toMatchObject({ standalone: false, logRequests: false, allowClientShm: false });
    expect(options([...BASE, "--standalone", "--log-requests", "--allow-client-shm"])).toMatchObject({
      standalone: true,
      logRequests: true,
      allowClientShm: true,
    });
  });

  test("--allow-client-shm without --standalone says what it needs", () => {
    expect(() => options([...BASE, "--allow-client-shm"])).toThrow(
      "--allow-client-shm needs --standalone: shared memory is for clients of the standalone server on this host",
    );
  });

  test("--grpc-port serves gRPC beside the standalone server, and needs it", () => {
    expect(options([...BASE, "--standalone"])).not.toHaveProperty("grpcPort");
    expect(options([...BASE, "--standalone", "--grpc-port", "8001"])).toMatchObject({ grpcPort: 8001 });
    expect(() => options([...BASE, "--grpc-port", "8001"])).toThrow(
      "--grpc-port needs --standalone: gRPC serves the standalone server's API",
    );
    expect(() => options([...BASE, "--standalone", "--grpc-port", "70000"])).toThrow(
      "--grpc-port must be a whole number 0-65535",
    );
  });

  // The derived defaults, as --help words them, on a pinned machine (16 cores, 64 GiB, "gpu-box-7").
  const derived: [flag: string, argv: string[], expected: Partial<AgentOptions>][] = [
    ["name", ["--models", "m"], { name: "gpu-box-7" }],
    ["cache-dir", ["--models", "m"], { cacheDir: path.join("/home/ops", ".cache", "switchyard") }],
    ["device", ["--models", "m"], { device: "cpu" }],
    ["device", ["--models", "m", "--gpus", "0,1"], { device: "cuda" }],
    ["threads", ["--models", "m"], { threads: 16 }],
    ["threads", ["--models", "m", "--replicas", "3"], { threads: 5 }],
    ["threads", ["--models", "m", "--gpus", "0,1", "--replicas", "4"], { threads: 16 }],
    ["http-threads", ["--models", "m"], { httpThreads: 4 }],
    ["max-model-memory", ["--models", "m"], { maxModelMemory: 32 * GiB }],
    ["max-model-memory", ["--models", "m", "--replicas", "4"], { maxModelMemory: 8 * GiB }],
    ["max-model-memory", ["--models", "m", "--gpus", "0"], { maxModelMemory: undefined }],
    ["max-concurrency", ["--models", "m"], { maxConcurrency: 4 }],
    ["max-concurrency", ["--models", "m", "--max-batch-size", "8"], { maxConcurrency: 16 }],
    [
      "models",
      ["--gateway", "wss://gw.example/sy", "--token", "t"],
      { models: "https://gw.example/sy/agent/models" },
    ],
  ];

  test.each(derived)("--%s: %j gives what --help says", (flag, argv, expected) => {
    expect(FLAG_SPECS[flag as keyof typeof FLAG_SPECS]).toHaveProperty("derived");
    expect(options(argv)).toMatchObject(expected);
  });

  test("--metrics-port: off, so nothing is served", () => {
    expect(shownDefault(FLAG_SPECS["metrics-port"])).toBe("off");
    expect(options(["--models", "m"]).metrics).toBeUndefined();
  });

  test("--grpc-port: off, so no gRPC is served", () => {
    expect(shownDefault(FLAG_SPECS["grpc-port"])).toBe("off");
  });

  test("every derived default is covered above", () => {
    const covered = new Set([...derived.map(([flag]) => flag), "metrics-port", "grpc-port"]);
    const all = SPECS.filter(([, spec]) => spec.derived !== undefined).map(([flag]) => flag);
    expect(all.filter((flag) => !covered.has(flag))).toEqual([]);
  });
});

describe("precedence: flags > environment > config file > defaults", () => {
  const layers: [flag: string, key: keyof AgentOptions, file: number, env: number, given: number][] = [
    ["max-queue", "maxQueue", 10, 20, 30],
    ["max-models", "maxModels", 4, 5, 6],
    ["port", "port", 7000, 7001, 7002],
    ["max-concurrency", "maxConcurrency", 2, 3, 5],
    ["threads", "threads", 1, 2, 3],
  ];

  test.each(layers)("--%s", async (flag, key, file, env, given) => {
    const dir = await tempDir({ "agent.json": JSON.stringify({ models: "./m", [flag]: file }) });
    const config = ["--config", `${dir}/agent.json`];
    const variable = { [envName(flag)]: String(env) };
    expect(options(["--models", "./m"])[key]).not.toBe(file);
    expect(options(config)[key]).toBe(file);
    expect(options(config, variable)[key]).toBe(env);
    expect(options([...config, `--${flag}`, String(given)], variable)[key]).toBe(given);
  });

  test("a switch: the environment's off beats the file's on; the flag beats both", async () => {
    const dir = await tempDir({ "agent.json": JSON.stringify({ models: "./m", standalone: true }) });
    const config = ["--config", `${dir}/agent.json`];
    expect(options(config).standalone).toBe(true);
    expect(options(config, { SWITCHYARD_STANDALONE: "0" }).standalone).toBe(false);
    expect(options([...config, "--standalone"], { SWITCHYARD_STANDALONE: "0" }).standalone).toBe(true);
  });

  test("a value from the file still feeds the derived defaults", async () => {
    const dir = await tempDir({ "agent.json": JSON.stringify({ models: "./m", "max-batch-size": 4 }) });
    expect(options(["--config", `${dir}/agent.json`]).maxConcurrency).toBe(8);
  });
});
