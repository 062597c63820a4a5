import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
import { isPoolName, POOL_NAME_RULE } from "../../shared/pool-names.ts";
import { MAX_HINT_LENGTH, MAX_HINTS } from "../../shared/protocol/frames.ts";
import { agentConnectUrl, gatewayModelsUrl } from "../gateway-link/gateway-urls.ts";
import { DEFAULT_BATCHING } from "../replica/batch-settings.ts";
import { readConfigFile } from "./config-file.ts";
import { parseSize } from "./size.ts";

/**
 * The agent's flags. Each can also come from an environment variable (SWITCHYARD_ + the flag in
 * upper snake case); a flag given on the command line wins. This table is the single source for parsing,
 * validation and `--help`.
 */
interface FlagSpec {
  type: "string" | "boolean";
  value?: string;
  help: string;
  /** What happens when the flag is not given (for --help). */
  byDefault?: string;
}

export const FLAGS = {
  models: {
    type: "string",
    value: "<dir|url>",
    help: "model repository: a directory in Triton's layout (<model>/<version>/model.onnx) or an http(s) URL",
    byDefault: "the gateway's repository with --gateway",
  },
  "cache-dir": {
    type: "string",
    value: "<dir>",
    help: "where models from a URL are downloaded and verified",
    byDefault: "~/.cache/switchyard",
  },
  device: {
    type: "string",
    value: "cpu|cuda|auto",
    help: "cuda: one replica per --gpus entry, refuses to start without a working CUDA provider; auto: CUDA where it works, else the CPU",
    byDefault: "cuda when --gpus is given, else cpu",
  },
  gpus: { type: "string", value: "<ids>", help: "GPU ids, comma separated: one replica per GPU (e.g. 0,1)" },
  replicas: {
    type: "string",
    value: "<n>",
    help: "number of CPU replicas (with --device cpu)",
    byDefault: "1",
  },
  threads: {
    type: "string",
    value: "<n>",
    help: "onnxruntime intra-op threads per CPU replica",
    byDefault: "cores / replicas",
  },
  "max-models": {
    type: "string",
    value: "<n>",
    help: "models kept loaded per replica (least recently used is evicted first)",
    byDefault: "3",
  },
  "max-model-memory": {
    type: "string",
    value: "<size>",
    help: "bytes of loaded models per replica, e.g. 4GiB; on a GPU what a model takes is measured on the device",
    byDefault: "half the RAM / replicas (cpu), 80% of the GPU's memory / replicas on it (cuda)",
  },
  "max-concurrency": {
    type: "string",
    value: "<n>",
    help: "requests a replica takes at once, running or gathering into a batch; more wait in line (to batch, give at least twice the batch size; with --max-batch-size above 1 the default is twice that)",
    byDefault: "4",
  },
  "max-batch-size": {
    type: "string",
    value: "<n>",
    help: "dynamic batching for every model whose inputs and outputs have a dynamic first dimension: requests are stacked up to this many rows (config.json's max_batch_size wins, per model); 1 is off",
    byDefault: `${DEFAULT_BATCHING.maxBatchSize}: off, unless a model's config.json sets max_batch_size`,
  },
  "max-queue-delay-us": {
    type: "string",
    value: "<µs>",
    help: "how long a request may wait for others to join its batch (config.json's dynamic_batching.max_queue_delay_microseconds wins)",
    byDefault: `${DEFAULT_BATCHING.maxQueueDelayMicroseconds}: a request that finds its model idle runs at once`,
  },
  "session-config": {
    type: "string",
    value: "<key=value,…>",
    help: "onnxruntime session config entries for every model, e.g. session.use_device_allocator_for_initializers=1",
  },
  "max-queue": {
    type: "string",
    value: "<n>",
    help: "requests that may wait for a replica (standalone); one more gets 429",
    byDefault: "256",
  },
  preload: {
    type: "string",
    value: "<a,b>",
    help: "models to load at start (name or name:version), before the agent reports ready",
  },
  "keep-alive": {
    type: "string",
    value: "<seconds>",
    help: "unload a model idle this long; 0 keeps it until evicted",
    byDefault: "0",
  },
  timeout: {
    type: "string",
    value: "<seconds>",
    help: "deadline of a request that sets none",
    byDefault: "60",
  },
  "max-body": {
    type: "string",
    value: "<size>",
    help: "largest request body accepted (413 above)",
    byDefault: "64MiB",
  },
  standalone: { type: "boolean", help: "serve the Open Inference Protocol v2 over HTTP on --host:--port" },
  host: {
    type: "string",
    value: "<addr>",
    help: "address the standalone server listens on",
    byDefault: "127.0.0.1",
  },
  port: { type: "string", value: "<port>", help: "port of the standalone server", byDefault: "8000" },
  name: {
    type: "string",
    value: "<name>",
    help: "this agent's name in logs, headers and the gateway",
    byDefault: "the host name",
  },
  gateway: {
    type: "string",
    value: "<ws(s) url>",
    help: "join this gateway: dial <url>/agent/connect (reconnecting by itself) and serve what it routes here; combine with --standalone to serve both",
  },
  token: {
    type: "string",
    value: "<token>",
    help: "agent token for --gateway (prefer the environment variable: it stays out of ps)",
  },
  hints: {
    type: "string",
    value: "<a,b>",
    help: "routing hints (X-Runner-Hint) this agent answers to beyond its model names",
  },
  pool: { type: "string", value: "<name>", help: "the gateway pool to join", byDefault: "default" },
  "metrics-port": {
    type: "string",
    value: "<port>",
    help: "serve Prometheus metrics on http://<metrics-host>:<port>/metrics (0: any free port)",
    byDefault: "off",
  },
  "metrics-host": {
    type: "string",
    value: "<addr>",
    help: "address the metrics server listens on; 0.0.0.0 lets a Prometheus on another host scrape it",
    byDefault: "127.0.0.1",
  },
  "log-format": {
    type: "string",
    value: "text|json",
    help: "text: lines for people; json: one JSON object per line, for log shippers",
    byDefault: "text",
  },
  "log-requests": {
    type: "boolean",
    help: "log one line per request: its id, model, replica, status, cache hit or miss, and timings",
  },
  config: {
    type: "string",
    value: "<file.json>",
    help: "read settings from a JSON file whose keys are these flags' names; flags and environment variables win over it",
  },
  help: { type: "boolean", help: "show this help" },
} as const satisfies Record<string, FlagSpec>;

type FlagName = keyof typeof FLAGS;

const envName = (flag: string) => `SWITCHYARD_${flag.toUpperCase().replaceAll("-", "_")}`;

const positiveInt = (flag: string) =>
  z.coerce
    .number({ error: `--${flag} must be a number` })
    .int(`--${flag} must be a whole number`)
    .positive(`--${flag} must be at least 1`);

const size = (flag: string) =>
  z.string().transform((text, context) => {
    try {
      return parseSize(text);
    } catch (error) {
      context.addIssue({ code: "custom", message: `--${flag}: ${(error as Error).message}` });
      return z.NEVER;
    }
  });

// The gateway's pool names (gateway/pool.ts): checked here so a typo fails at start, not at every reconnect.

function isGatewayUrl(url: string): boolean {
  try {
    agentConnectUrl(url, undefined);
    return true;
  } catch {
    return false;
  }
}

const list = z.string().transform((text) =>
  text
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean),
);

const AgentOptionsSchema = z
  .object({
    models: z.string().min(1, "--models must not be empty").optional(),
    "cache-dir": z.string().default(path.join(os.homedir(), ".cache", "switchyard")),
    device: z.enum(["cpu", "cuda", "auto"], { error: "--device must be cpu, cuda or auto" }).optional(),
    gpus: list
      .transform((ids) => ids.map(Number))
      .pipe(z.array(z.number({ error: "--gpus takes GPU ids like 0,1" }).int().nonnegative()))
      .default([]),
    replicas: positiveInt("replicas").default(1),
    threads: positiveInt("threads").optional(),
    "max-models": positiveInt("max-models").default(3),
    "max-model-memory": size("max-model-memory").optional(),
    "max-concurrency": positiveInt("max-concurrency").optional(),
    "max-batch-size": positiveInt("max-batch-size").default(DEFAULT_BATCHING.maxBatchSize),
    "max-queue-delay-us": z.coerce
      .number({ error: "--max-queue-delay-us must be microseconds" })
      .int("--max-queue-delay-us must be a whole number of microseconds")
      .nonnegative("--max-queue-delay-us must not be negative")
      .default(DEFAULT_BATCHING.maxQueueDelayMicroseconds),
    "session-config": list
      .pipe(
        z.array(
          z
            .string()
            .regex(
              /^[^=\s]+=.*$/,
              "--session-config takes key=value pairs, e.g. session.disable_prepacking=1",
            ),
        ),
      )
      .transform((pairs) =>
        Object.fromEntries(
          pairs.map((pair) => [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)]),
        ),
      )
      .default({}),
    "max-queue": positiveInt("max-queue").default(256),
    preload: list.default([]),
    "keep-alive": z.coerce.number({ error: "--keep-alive must be seconds" }).nonnegative().default(0),
    timeout: z.coerce.number({ error: "--timeout must be seconds" }).positive().default(60),
    "max-body": size("max-body").default(64 * 2 ** 20),
    standalone: z.boolean().default(false),
    host: z.string().default("127.0.0.1"),
    port: z.coerce
      .number({ error: "--port must be a whole number 0-65535" })
      .int()
      .min(0)
      .max(65535)
      .default(8000),
    name: z.string().min(1, "--name must not be empty").default(os.hostname()),
    "metrics-port": z.coerce
      .number({ error: "--metrics-port must be a whole number 0-65535" })
      .int("--metrics-port must be a whole number 0-65535")
      .min(0, "--metrics-port must be a whole number 0-65535")
      .max(65535, "--metrics-port must be a whole number 0-65535")
      .optional(),
    "metrics-host": z.string().min(1, "--metrics-host must not be empty").default("127.0.0.1"),
    "log-format": z.enum(["text", "json"], { error: "--log-format must be text or json" }).default("text"),
    "log-requests": z.boolean().default(false),
    config: z.string().optional(),
    gateway: z
      .string()
      .refine(
        (url) => isGatewayUrl(url),
        "--gateway must be a ws:// or wss:// URL, e.g. wss://gateway.example.com",
      )
      .optional(),
    token: z.string().min(1, "--token must not be empty").optional(),
    // The gateway's limits on a hello (shared/protocol/frames.ts): refused here rather than at every connect.
    hints: list
      .pipe(
        z
          .array(
            z.string().max(MAX_HINT_LENGTH, `--hints: each hint is at most ${MAX_HINT_LENGTH} characters`),
          )
          .max(MAX_HINTS, `--hints: at most ${MAX_HINTS}`),
      )
      .default([]),
    pool: z.string().refine(isPoolName, `--pool takes ${POOL_NAME_RULE}`).optional(),
  })
  .superRefine((options, context) => {
    if (options.models === undefined && options.gateway === undefined) {
      context.addIssue({
        code: "custom",
        message:
          "--models is required: a model repository directory or URL (or --gateway, to use the gateway's)",
      });
    }
    if (options.gateway !== undefined && options.token === undefined) {
      context.addIssue({
        code: "custom",
        message: "--gateway needs --token (or SWITCHYARD_TOKEN): the agent token",
      });
    }
  })
  .transform((options) => {
    const device = options.device ?? (options.gpus.length > 0 ? "cuda" : "cpu");
    const cpuReplicas = device === "cpu" ? options.replicas : 1;
    const gateway = options.gateway;
    return {
      // With --gateway and no --models, the gateway's own repository (R2 behind the agent token).
      models: options.models ?? gatewayModelsUrl(gateway ?? ""),
      cacheDir: options["cache-dir"],
      device,
      gpus: options.gpus,
      replicas: options.replicas,
      threads: options.threads ?? Math.max(1, Math.floor(os.availableParallelism() / cpuReplicas)),
      maxModels: options["max-models"],
      // On a GPU the default is read from the card at start (backend/replica/model-memory-budget.ts).
      maxModelMemory:
        options["max-model-memory"] ??
        (device === "cpu" ? Math.floor(os.totalmem() / 2 / cpuReplicas) : undefined),
      // With batching a replica takes one batch to run and one gathering; without, a few runs at once.
      maxConcurrency:
        options["max-concurrency"] ?? (options["max-batch-size"] > 1 ? 2 * options["max-batch-size"] : 4),
      maxBatchSize: options["max-batch-size"],
      maxQueueDelayMicroseconds: options["max-queue-delay-us"],
      sessionConfig: options["session-config"],
      maxQueue: options["max-queue"],
      preload: options.preload,
      keepAliveSeconds: options["keep-alive"],
      timeoutSeconds: options.timeout,
      maxBodyBytes: options["max-body"],
      standalone: options.standalone,
      host: options.host,
      port: options.port,
      name: options.name,
      ...(options["metrics-port"] === undefined
        ? {}
        : { metrics: { port: options["metrics-port"], host: options["metrics-host"] } }),
      logFormat: options["log-format"],
      logRequests: options["log-requests"],
      ...(options.config === undefined ? {} : { configFile: options.config }),
      ...(gateway === undefined
        ? {}
        : {
            gateway: {
              url: gateway,
              token: options.token ?? "",
              hints: options.hints,
              ...(options.pool === undefined ? {} : { pool: options.pool }),
            },
          }),
    };
  });

export type AgentOptions = z.output<typeof AgentOptionsSchema>;

export type ParsedCommandLine = { kind: "help"; text: string } | { kind: "run"; options: AgentOptions };

/** Parses argv and the environment; throws an Error whose message is one line saying what to fix. */
export function parseCommandLine(argv: string[], env: NodeJS.ProcessEnv): ParsedCommandLine {
  let values: Partial<Record<FlagName, string | boolean>>;
  try {
    const parseOptions = Object.fromEntries(
      Object.entries(FLAGS).map(([flag, spec]) => [flag, { type: spec.type }]),
    );
    values = parseArgs({ args: argv, options: parseOptions, strict: true, allowPositionals: false })
      .values as typeof values;
  } catch (error) {
    // node:util's messages can span lines ("argument is ambiguous..."): the agent reports one line.
    throw new Error(`${(error as Error).message.replace(/\s*\n\s*/g, " ")} (see --help)`);
  }
  if (values.help) return { kind: "help", text: helpText() };
  // Flags > environment > config file > defaults.
  const configFile = values.config ?? (env[envName("config")] || undefined);
  const fromFile = typeof configFile === "string" ? readConfigFile(configFile, FLAGS) : {};
  const merged: Record<string, string | boolean> = {};
  for (const [flag, spec] of Object.entries(FLAGS) as [FlagName, FlagSpec][]) {
    // An empty variable (SWITCHYARD_PORT=) counts as unset, as shells and env files mean it.
    const fromEnv = env[envName(flag)] || undefined;
    const value =
      values[flag] ??
      (fromEnv === undefined ? undefined : spec.type === "boolean" ? isTrue(fromEnv) : fromEnv) ??
      fromFile[flag];
    if (value !== undefined) merged[flag] = value;
  }
  const parsed = AgentOptionsSchema.safeParse(merged);
  if (!parsed.success) {
    // Each message names its flag (zod's defaults do not, so they get it in front); a list of bad GPU ids
    // is one mistake, said once.
    const messages = parsed.error.issues.map((issue) =>
      issue.message.startsWith("--") ? issue.message : `--${String(issue.path[0])}: ${issue.message}`,
    );
    throw new Error(`${[...new Set(messages)].join("; ")} (see --help)`);
  }
  return { kind: "run", options: parsed.data };
}

const isTrue = (text: string) => ["1", "true", "yes", "on"].includes(text.toLowerCase());

export function helpText(): string {
  const rows = Object.entries(FLAGS).map(([flag, spec]: [string, FlagSpec]) => {
    const left = `  --${flag}${"value" in spec && spec.value ? ` ${spec.value}` : ""}`;
    const defaults = spec.byDefault === undefined ? "" : ` (default: ${spec.byDefault})`;
    return `${left.padEnd(34)}${spec.help}${defaults}\n${" ".repeat(34)}env ${envName(flag)}`;
  });
  return [
    "switchyard-agent: serve ONNX models from this host, one replica per GPU (or on the CPU)",
    "",
    "Usage:",
    "  switchyard-agent --standalone --port 8000 --models ./models       serve OIP v2 over HTTP",
    "  switchyard-agent --gpus 0,1 --models ./models --standalone        one replica per GPU",
    "  SWITCHYARD_TOKEN=… switchyard-agent --gateway wss://gw.example --gpus 0,1   join a gateway",
    "  switchyard-agent --config /etc/switchyard/agent.json --metrics-port 9464       settings from a file",
    "",
    "Options:",
    ...rows,
    "",
  ].join("\n");
}
