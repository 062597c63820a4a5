import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
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
    help: "bytes of loaded models per replica, e.g. 4GiB",
    byDefault: "half the RAM / replicas (cpu), 8GiB (cuda)",
  },
  "max-concurrency": {
    type: "string",
    value: "<n>",
    help: "requests running at once per replica; more wait in line",
    byDefault: "4",
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

const list = z.string().transform((text) =>
  text
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean),
);

const AgentOptionsSchema = z
  .object({
    models: z.string({ error: "--models is required: a model repository directory or URL" }).min(1),
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
    "max-concurrency": positiveInt("max-concurrency").default(4),
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
  })
  .transform((options) => {
    const device = options.device ?? (options.gpus.length > 0 ? "cuda" : "cpu");
    const cpuReplicas = device === "cpu" ? options.replicas : 1;
    return {
      models: options.models,
      cacheDir: options["cache-dir"],
      device,
      gpus: options.gpus,
      replicas: options.replicas,
      threads: options.threads ?? Math.max(1, Math.floor(os.availableParallelism() / cpuReplicas)),
      maxModels: options["max-models"],
      maxModelMemory:
        options["max-model-memory"] ??
        (device === "cpu" ? Math.floor(os.totalmem() / 2 / cpuReplicas) : 8 * 2 ** 30),
      maxConcurrency: options["max-concurrency"],
      maxQueue: options["max-queue"],
      preload: options.preload,
      keepAliveSeconds: options["keep-alive"],
      timeoutSeconds: options.timeout,
      maxBodyBytes: options["max-body"],
      standalone: options.standalone,
      host: options.host,
      port: options.port,
      name: options.name,
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
  const merged: Record<string, string | boolean> = {};
  for (const [flag, spec] of Object.entries(FLAGS) as [FlagName, FlagSpec][]) {
    // An empty variable (SWITCHYARD_PORT=) counts as unset, as shells and env files mean it.
    const fromEnv = env[envName(flag)] || undefined;
    const value =
      values[flag] ??
      (fromEnv === undefined ? undefined : spec.type === "boolean" ? isTrue(fromEnv) : fromEnv);
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
    "",
    "Options:",
    ...rows,
    "",
  ].join("\n");
}
