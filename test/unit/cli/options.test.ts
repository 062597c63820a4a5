import os from "node:os";
import path from "node:path";
import { describe, expect, test } from "vitest";
import type { AgentOptions } from "../../../backend/agent-options.ts";
import { httpThreads } from "../../../backend/cli/flag-specs.ts";
import { helpText } from "../../../backend/cli/help.ts";
import { parseCommandLine } from "../../../backend/cli/options.ts";
import { DEFAULT_BATCHING } from "../../../backend/replica/batch-settings.ts";

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** The options of a command line that must parse. */
function options(argv: string[], env: NodeJS.ProcessEnv = {}): AgentOptions {
  const parsed = parseCommandLine(argv, env);
  if (parsed.kind !== "run") throw new Error("expected options, got the help text");
  return parsed.options;
}

/** The message of a command line that must be refused. */
function refusal(argv: string[], env: NodeJS.ProcessEnv = {}): string {
  try {
    parseCommandLine(argv, env);
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error(`expected '${argv.join(" ")}' to be refused`);
}

const withModels = (...argv: string[]) => ["--models", "./models", ...argv];

describe("parseCommandLine: defaults", () => {
  test("only --models: CPU, one replica, the documented defaults", () => {
    expect(options(withModels())).toEqual({
      models: "./models",
      cacheDir: path.join(os.homedir(), ".cache", "switchyard"),
      device: "cpu",
      gpus: [],
      replicas: 1,
      threads: Math.max(1, os.availableParallelism()),
      maxModels: 3,
      maxModelMemory: Math.floor(os.totalmem() / 2),
      // Batching is off by default (config.json turns it on per model).
      maxConcurrency: 4,
      maxBatchSize: DEFAULT_BATCHING.maxBatchSize,
      maxQueueDelayMicroseconds: DEFAULT_BATCHING.maxQueueDelayMicroseconds,
      batchBuckets: "auto",
      sessionConfig: {},
      maxQueue: 256,
      preload: [],
      keepAliveSeconds: 0,
      timeoutSeconds: 60,
      maxBodyBytes: 64 * MiB,
      standalone: false,
      host: "127.0.0.1",
      port: 8000,
      allowClientShm: false,
      httpThreads: httpThreads(os.availableParallelism()),
      spinMs: 2,
      name: os.hostname(),
      logFormat: "text",
      logRequests: false,
    } satisfies AgentOptions);
  });

  test("CPU replicas share the cores and half the RAM between them", () => {
    const parsed = options(withModels("--replicas", "2"));
    expect(parsed.replicas).toBe(2);
    expect(parsed.threads).toBe(Math.max(1, Math.floor(os.availableParallelism() / 2)));
    expect(parsed.maxModelMemory).toBe(Math.floor(os.totalmem() / 2 / 2));
  });

  test("HTTP intake threads: none on a small host, a quarter of the cores up to 4 on a larger one", () => {
    expect([2, 4, 7, 8, 12, 16, 64].map(httpThreads)).toEqual([0, 0, 0, 2, 3, 4, 4]);
    expect(options(withModels("--http-threads", "0")).httpThreads).toBe(0);
    expect(refusal(withModels("--http-threads=-1"))).toContain("--http-threads must not be negative");
    expect(refusal(withModels("--spin-ms=-1"))).toContain("--spin-ms must not be negative");
    expect(refusal(withModels("--spin-ms", "5000"))).toContain("--spin-ms must be at most 1000");
  });

  test("without --models (flag or env) it refuses, saying what --models is", () => {
    const message = refusal([]);
    expect(message).toContain("--models");
    expect(message).toMatch(/directory or URL/);
  });
});

describe("parseCommandLine: flags", () => {
  test("every flag is parsed into its option", () => {
    const parsed = options([
      "--models",
      "https://models.example.com/repo",
      "--cache-dir",
      "/var/cache/sy",
      "--device",
      "auto",
      "--gpus",
      "2,3",
      "--replicas",
      "5",
      "--threads",
      "6",
      "--max-models",
      "7",
      "--max-model-memory",
      "3GiB",
      "--max-concurrency",
      "8",
      "--max-batch-size",
      "16",
      "--max-queue-delay-us",
      "500",
      "--batch-buckets",
      "off",
      "--session-config",
      "session.use_device_allocator_for_initializers=1,session.disable_prepacking=1",
      "--max-queue",
      "9",
      "--preload",
      "resnet, bert:2",
      "--keep-alive",
      "300",
      "--timeout",
      "12.5",
      "--max-body",
      "16MiB",
      "--standalone",
      "--host",
      "0.0.0.0",
      "--port",
      "9001",
      "--http-threads",
      "3",
      "--spin-ms",
      "0.5",
      "--name",
      "gpu-box-1",
    ]);
    expect(parsed).toEqual({
      models: "https://models.example.com/repo",
      cacheDir: "/var/cache/sy",
      device: "auto",
      gpus: [2, 3],
      replicas: 5,
      threads: 6,
      maxModels: 7,
      maxModelMemory: 3 * GiB,
      maxConcurrency: 8,
      maxBatchSize: 16,
      maxQueueDelayMicroseconds: 500,
      batchBuckets: "off",
      sessionConfig: {
        "session.use_device_allocator_for_initializers": "1",
        "session.disable_prepacking": "1",
      },
      maxQueue: 9,
      preload: ["resnet", "bert:2"],
      keepAliveSeconds: 300,
      timeoutSeconds: 12.5,
      maxBodyBytes: 16 * MiB,
      standalone: true,
      host: "0.0.0.0",
      port: 9001,
      allowClientShm: false,
      httpThreads: 3,
      spinMs: 0.5,
      name: "gpu-box-1",
      logFormat: "text",
      logRequests: false,
    } satisfies AgentOptions);
  });

  test("--flag=value works like --flag value", () => {
    const parsed = options(["--models=./m", "--max-models=5", "--port=0", "--keep-alive=0"]);
    expect(parsed).toMatchObject({ models: "./m", maxModels: 5, port: 0, keepAliveSeconds: 0 });
  });

  test("sizes take decimal and binary units, or plain bytes", () => {
    const memory = (text: string) => options(withModels("--max-model-memory", text)).maxModelMemory;
    expect(memory("512MiB")).toBe(512 * MiB);
    expect(memory("2GB")).toBe(2_000_000_000);
    expect(memory("1.5GiB")).toBe(1.5 * GiB);
    expect(memory("1048576")).toBe(1_048_576);
    expect(options(withModels("--max-body", "2GB")).maxBodyBytes).toBe(2_000_000_000);
    expect(options(withModels("--max-body", "512mib")).maxBodyBytes).toBe(512 * MiB);
  });

  test("--gpus 0,1 means one CUDA replica per GPU, each sizing its memory from its card, all the cores by default", () => {
    const parsed = options(withModels("--gpus", "0,1"));
    expect(parsed.device).toBe("cuda");
    expect(parsed.gpus).toEqual([0, 1]);
    // Read from each GPU when its replica starts (model-memory-budget.test.ts).
    expect(parsed.maxModelMemory).toBeUndefined();
    expect(parsed.threads).toBe(Math.max(1, os.availableParallelism()));
  });

  test("--gpus tolerates spaces; an explicit --device still wins", () => {
    expect(options(withModels("--gpus", " 0 , 1 ")).gpus).toEqual([0, 1]);
    expect(options(withModels("--gpus", "0", "--device", "cpu")).device).toBe("cpu");
    expect(options(withModels("--device", "cuda")).device).toBe("cuda");
  });

  test("--max-batch-size above 1 batches every model that can, and a replica takes two batches' worth", () => {
    expect(DEFAULT_BATCHING.maxBatchSize).toBe(1);
    expect(options(withModels("--max-batch-size", "1"))).toMatchObject({
      maxBatchSize: 1,
      maxConcurrency: 4,
    });
    expect(options(withModels("--max-batch-size", "8")).maxConcurrency).toBe(16);
    expect(options(withModels("--max-batch-size", "8", "--max-concurrency", "3")).maxConcurrency).toBe(3);
  });

  test("batching and session flags refuse what they cannot use, naming the flag", () => {
    expect(refusal(withModels("--max-batch-size", "0"))).toMatch(/--max-batch-size/);
    expect(refusal(withModels("--max-queue-delay-us", "-5"))).toMatch(/--max-queue-delay-us/);
    expect(refusal(withModels("--session-config", "session.disable_prepacking"))).toMatch(/key=value/);
  });

  test("--preload is a comma separated list; empty items are dropped", () => {
    expect(options(withModels("--preload", "a,,b:3,")).preload).toEqual(["a", "b:3"]);
  });
});

describe("parseCommandLine: environment", () => {
  const cases: [env: string, value: string, flag: string, expected: Partial<AgentOptions>][] = [
    ["SWITCHYARD_MODELS", "/srv/models", "/cli/models", { models: "/srv/models" }],
    ["SWITCHYARD_CACHE_DIR", "/env/cache", "/cli/cache", { cacheDir: "/env/cache" }],
    ["SWITCHYARD_DEVICE", "auto", "cpu", { device: "auto" }],
    ["SWITCHYARD_GPUS", "1,2", "3", { gpus: [1, 2] }],
    ["SWITCHYARD_REPLICAS", "3", "4", { replicas: 3 }],
    ["SWITCHYARD_THREADS", "2", "3", { threads: 2 }],
    ["SWITCHYARD_MAX_MODELS", "5", "6", { maxModels: 5 }],
    ["SWITCHYARD_MAX_MODEL_MEMORY", "512MiB", "1GiB", { maxModelMemory: 512 * MiB }],
    ["SWITCHYARD_MAX_CONCURRENCY", "16", "2", { maxConcurrency: 16 }],
    ["SWITCHYARD_MAX_BATCH_SIZE", "8", "4", { maxBatchSize: 8 }],
    ["SWITCHYARD_MAX_QUEUE_DELAY_US", "250", "100", { maxQueueDelayMicroseconds: 250 }],
    ["SWITCHYARD_MAX_QUEUE", "1000", "10", { maxQueue: 1000 }],
    ["SWITCHYARD_PRELOAD", "a,b", "c", { preload: ["a", "b"] }],
    ["SWITCHYARD_KEEP_ALIVE", "120", "30", { keepAliveSeconds: 120 }],
    ["SWITCHYARD_TIMEOUT", "5", "6", { timeoutSeconds: 5 }],
    ["SWITCHYARD_MAX_BODY", "2GB", "1MiB", { maxBodyBytes: 2_000_000_000 }],
    ["SWITCHYARD_HOST", "0.0.0.0", "::1", { host: "0.0.0.0" }],
    ["SWITCHYARD_PORT", "9000", "9001", { port: 9000 }],
    ["SWITCHYARD_NAME", "from-env", "from-flag", { name: "from-env" }],
  ];

  test.each(cases)("%s is used when its flag is absent", (env, value, _flag, expected) => {
    const argv = env === "SWITCHYARD_MODELS" ? [] : withModels();
    expect(options(argv, { [env]: value })).toMatchObject(expected);
  });

  test.each(cases)("%s is overridden by its flag", (env, value, flagValue, expected) => {
    const flag = `--${env.slice("SWITCHYARD_".length).toLowerCase().replaceAll("_", "-")}`;
    const argv = env === "SWITCHYARD_MODELS" ? [flag, flagValue] : withModels(flag, flagValue);
    const fromFlag = options(argv, { [env]: value });
    const fromFlagOnly = options(argv, {});
    const key = Object.keys(expected)[0] as keyof AgentOptions;
    expect(fromFlag[key]).toEqual(fromFlagOnly[key]);
    expect(fromFlag[key]).not.toEqual(expected[key]);
  });

  test("SWITCHYARD_STANDALONE reads 1/true/yes/on as on, anything else as off; --standalone wins", () => {
    for (const on of ["1", "true", "TRUE", "yes", "on"]) {
      expect(options(withModels(), { SWITCHYARD_STANDALONE: on }).standalone).toBe(true);
    }
    for (const off of ["0", "false", "no", "off", ""]) {
      expect(options(withModels(), { SWITCHYARD_STANDALONE: off }).standalone).toBe(false);
    }
    expect(options(withModels("--standalone"), { SWITCHYARD_STANDALONE: "0" }).standalone).toBe(true);
  });

  test("SWITCHYARD_GPUS implies CUDA like --gpus does", () => {
    expect(options(withModels(), { SWITCHYARD_GPUS: "0" })).toMatchObject({ device: "cuda", gpus: [0] });
  });

  test("variables outside the SWITCHYARD_ prefix are ignored", () => {
    expect(options(withModels(), { MODELS: "/elsewhere", PORT: "1", MAX_MODELS: "9" })).toMatchObject({
      models: "./models",
      port: 8000,
      maxModels: 3,
    });
  });

  test("a bad value in the environment is refused, naming the flag it stands for", () => {
    expect(refusal(withModels(), { SWITCHYARD_MAX_MODELS: "many" })).toContain("--max-models");
  });
});

describe("parseCommandLine: bad values", () => {
  const bad: [argv: string[], flag: string][] = [
    [withModels("--max-models", "abc"), "--max-models"],
    [withModels("--max-models", "0"), "--max-models"],
    [withModels("--max-models", "2.5"), "--max-models"],
    [withModels("--max-concurrency", "-1"), "--max-concurrency"],
    [withModels("--max-queue", "none"), "--max-queue"],
    [withModels("--replicas", "x"), "--replicas"],
    [withModels("--threads", "0"), "--threads"],
    [withModels("--device", "tpu"), "--device"],
    [withModels("--gpus", "a,b"), "--gpus"],
    [withModels("--gpus", "0,-1"), "--gpus"],
    [withModels("--gpus", "1.5"), "--gpus"],
    [withModels("--max-model-memory", "lots"), "--max-model-memory"],
    [withModels("--max-body", "12XB"), "--max-body"],
    [withModels("--keep-alive", "soon"), "--keep-alive"],
    [withModels("--keep-alive=-5"), "--keep-alive"],
    [withModels("--timeout", "0"), "--timeout"],
    [withModels("--timeout", "abc"), "--timeout"],
    [withModels("--port", "abc"), "--port"],
    [withModels("--port", "70000"), "--port"],
    [withModels("--port", "80.5"), "--port"],
    [withModels("--name", ""), "--name"],
    [withModels("--frobnicate"), "--frobnicate"],
    [withModels("--max-models"), "--max-models"],
    [withModels("--port", "-1"), "--port"],
  ];

  test.each(bad)("%j is refused with one line naming %s", (argv, flag) => {
    const message = refusal(argv);
    expect(message).toContain(flag);
    expect(message).not.toContain("\n");
    expect(message).toMatch(/--help/);
  });

  test("two bad values are reported together, each once", () => {
    const message = refusal(withModels("--max-models", "abc", "--port", "abc"));
    expect(message).toContain("--max-models");
    expect(message).toContain("--port");
    expect(message).not.toContain("\n");
  });

  test("a bad --gpus list is reported once, not once per bad id", () => {
    const message = refusal(withModels("--gpus", "a,b,c"));
    expect(message.match(/--gpus/g)).toHaveLength(1);
  });

  test("positional arguments are refused", () => {
    const message = refusal(withModels("serve"));
    expect(message).toContain("serve");
    expect(message).not.toContain("\n");
  });

  test("a boolean flag takes no value", () => {
    expect(refusal(withModels("--standalone=yes"))).toContain("--standalone");
  });
});

describe("--help", () => {
  const FLAGS = [
    "models",
    "cache-dir",
    "device",
    "gpus",
    "replicas",
    "threads",
    "max-models",
    "max-model-memory",
    "max-concurrency",
    "max-queue",
    "preload",
    "keep-alive",
    "timeout",
    "max-body",
    "standalone",
    "host",
    "port",
    "name",
  ];

  test("--help returns the help text instead of options, even without --models or with bad values", () => {
    expect(parseCommandLine(["--help"], {})).toEqual({ kind: "help", text: helpText() });
    expect(parseCommandLine(withModels("--max-models", "abc", "--help"), {}).kind).toBe("help");
  });

  test.each(FLAGS)("lists --%s with its environment variable", (flag) => {
    const text = helpText();
    const env = `SWITCHYARD_${flag.toUpperCase().replaceAll("-", "_")}`;
    const lines = text.split("\n");
    const at = lines.findIndex(
      (line) => line.trimStart().startsWith(`--${flag} `) || line.trim() === `--${flag}`,
    );
    expect(at, `--${flag} is not listed`).toBeGreaterThanOrEqual(0);
    // The variable is named right under the flag's line.
    expect(lines[at + 1]?.trim()).toBe(`env ${env}`);
  });

  test("shows the defaults a user needs to know", () => {
    const text = helpText();
    expect(text).toMatch(/--max-models <n>\s+.*\(default: 3\)/);
    // The default doubles with batching; --help used to say only "4".
    expect(text).toMatch(
      /--max-concurrency <n>\s+.*\(default: 4, or twice --max-batch-size when that is above 1\)/,
    );
    expect(text).toMatch(/--port <port>\s+.*\(default: 8000\)/);
    expect(text).toMatch(/--max-body <size>\s+.*\(default: 64MiB\)/);
    expect(text).toContain("Usage:");
  });
});

describe("parseCommandLine: empty environment variables", () => {
  test("an empty variable counts as unset, not as a value", () => {
    const parsed = options(withModels(), {
      SWITCHYARD_PORT: "",
      SWITCHYARD_KEEP_ALIVE: "",
      SWITCHYARD_STANDALONE: "",
    });
    expect(parsed.port).toBe(8000);
    expect(parsed.keepAliveSeconds).toBe(0);
    expect(parsed.standalone).toBe(false);
  });
});
