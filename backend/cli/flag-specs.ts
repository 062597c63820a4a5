import path from "node:path";
import { z } from "zod";
import { DEFAULT_POOL, isPoolName, POOL_NAME_RULE } from "../../shared/pool-names.ts";
import { MAX_HINT_LENGTH, MAX_HINTS } from "../../shared/protocol/frames.ts";
import { gatewayHttpBase, gatewayModelsUrl } from "../gateway-link/gateway-urls.ts";
import { LOG_FORMATS } from "../log-settings.ts";
import { type BucketMode, DEFAULT_BATCHING } from "../replica/batch-settings.ts";
import type { DeviceOption } from "../replica/device.ts";
import { GPU_MODEL_MEMORY_SHARE } from "../replica/model-memory-budget.ts";
import { parseSize } from "./size.ts";

/**
 * The agent's flags, each declared once: how its text is parsed and checked (with the message a user sees),
 * what applies when it is given nowhere, and how --help shows it. Parsing (options.ts) and --help (help.ts)
 * are both built from this table, so a default cannot be written twice and drift.
 *
 * A default is either the text a user would write (`default: "256"`), parsed by the flag's own schema as if
 * given, so --help shows exactly what applies; or derived at start from the machine and other flags
 * (`derived`), with the words --help shows for it.
 */

/** The facts about this host that defaults are derived from (a parameter, so tests can pin them). */
export interface Machine {
  hostname: string;
  homedir: string;
  cores: number;
  memoryBytes: number;
}

/** What a derived default may read: the host, and the settled values of the flags it follows from. */
export interface DefaultContext {
  machine: Machine;
  gateway: string | undefined;
  gpus: readonly number[];
  replicas: number;
  maxBatchSize: number;
  /** --device, or its own default: settled first, the defaults of threads and memory depend on it. */
  device: DeviceOption;
}

export interface DerivedDefault<Context, Value> {
  /** How --help says it ("cores / replicas"). */
  shown: string;
  from: (context: Context) => Value;
}

export interface FlagSpec {
  /** A switch (`--standalone`) takes no value; everything else takes one. */
  type: "string" | "boolean";
  /** Turns the flag's text (command line, environment, config file) into its value. */
  schema: z.ZodType;
  /** The value's placeholder in --help (`--port <port>`). */
  value?: string;
  help: string;
  /** The text that applies when the flag is given nowhere, parsed by `schema` like a user's (false: a switch). */
  default?: string | boolean;
  /** Or a default computed at start; each names the context it reads (device's reads only --gpus). */
  derived?: DerivedDefault<never, unknown>;
}

const derive = <Value>(
  shown: string,
  from: (context: DefaultContext) => Value,
): DerivedDefault<DefaultContext, Value> => ({ shown, from });

/** A switch: off unless given (in the environment, 1, true, yes or on turn it on). */
const toggle = (help: string) => ({ type: "boolean", schema: z.boolean(), default: false, help }) as const;

const positiveInt = (flag: string) =>
  z.coerce
    .number({ error: `--${flag} must be a number` })
    .int(`--${flag} must be a whole number`)
    .positive(`--${flag} must be at least 1`);

const port = (flag: string) => {
  const message = `--${flag} must be a whole number 0-65535`;
  return z.coerce.number({ error: message }).int(message).min(0, message).max(65535, message);
};

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

function isGatewayUrl(url: string): boolean {
  try {
    gatewayHttpBase(url);
    return true;
  } catch {
    return false;
  }
}

/** Replicas that share this host's cores and RAM: with a GPU, one CPU replica at most (auto's fallback). */
const cpuReplicas = ({ device, replicas }: DefaultContext) => (device === "cpu" ? replicas : 1);

/**
 * HTTP intake threads by default: on a host with cores to spare, enough to read a GPU's worth of large
 * bodies (bench/results/hot-path-cuda.md); on a small one the main thread serves, as the hop to a thread
 * costs more than it frees.
 */
export function httpThreads(cores: number): number {
  return cores < 8 ? 0 : Math.min(4, Math.floor(cores / 4));
}

export const FLAG_SPECS = {
  models: {
    type: "string",
    schema: z.string().min(1, "--models must not be empty"),
    value: "<dir|url>",
    help: "model repository: a directory in Triton's layout (<model>/<version>/model.onnx) or an http(s) URL",
    // Without --gateway there is none: options.ts refuses to start, saying what --models is.
    derived: derive("the gateway's repository with --gateway", ({ gateway }) =>
      gateway === undefined ? undefined : gatewayModelsUrl(gateway),
    ),
  },
  "cache-dir": {
    type: "string",
    schema: z.string(),
    value: "<dir>",
    help: "where models from a URL are downloaded and verified",
    derived: derive("~/.cache/switchyard", ({ machine }) =>
      path.join(machine.homedir, ".cache", "switchyard"),
    ),
  },
  device: {
    type: "string",
    schema: z.enum(["cpu", "cuda", "auto"] satisfies DeviceOption[], {
      error: "--device must be cpu, cuda or auto",
    }),
    value: "cpu|cuda|auto",
    help: "cuda: one replica per --gpus entry, refuses to start without a working CUDA provider; auto: CUDA where it works, else the CPU",
    // Settled before the other derived defaults, which depend on it: it can only read --gpus.
    derived: {
      shown: "cuda when --gpus is given, else cpu",
      from: ({ gpus }: Pick<DefaultContext, "gpus">): DeviceOption => (gpus.length > 0 ? "cuda" : "cpu"),
    },
  },
  gpus: {
    type: "string",
    schema: list
      .transform((ids) => ids.map(Number))
      .pipe(z.array(z.number({ error: "--gpus takes GPU ids like 0,1" }).int().nonnegative())),
    value: "<ids>",
    help: "GPU ids, comma separated: one replica per GPU (e.g. 0,1)",
    default: "",
  },
  replicas: {
    type: "string",
    schema: positiveInt("replicas"),
    value: "<n>",
    help: "number of CPU replicas (with --device cpu)",
    default: "1",
  },
  threads: {
    type: "string",
    schema: positiveInt("threads"),
    value: "<n>",
    help: "onnxruntime intra-op threads per CPU replica",
    derived: derive("cores / replicas", (context) =>
      Math.max(1, Math.floor(context.machine.cores / cpuReplicas(context))),
    ),
  },
  "max-models": {
    type: "string",
    schema: positiveInt("max-models"),
    value: "<n>",
    help: "models kept loaded per replica (least recently used is evicted first)",
    default: "3",
  },
  "max-model-memory": {
    type: "string",
    schema: size("max-model-memory"),
    value: "<size>",
    help: "bytes of loaded models per replica, e.g. 4GiB; on a GPU what a model takes is measured on the device",
    // On a GPU the budget is read from the card when its replica starts (backend/replica/model-memory-budget.ts).
    derived: derive(
      `half the RAM / replicas (cpu), ${GPU_MODEL_MEMORY_SHARE * 100}% of the GPU's memory / replicas on it (cuda)`,
      (context) =>
        context.device === "cpu"
          ? Math.floor(context.machine.memoryBytes / 2 / cpuReplicas(context))
          : undefined,
    ),
  },
  "max-concurrency": {
    type: "string",
    schema: positiveInt("max-concurrency"),
    value: "<n>",
    help: "requests a replica takes at once, running or gathering into a batch; more wait in line (to batch, give at least twice the batch size)",
    // With batching a replica takes one batch to run and the next (behind it, or gathering); without, a few
    // runs at once.
    derived: derive("4, or twice --max-batch-size when that is above 1", ({ maxBatchSize }) =>
      maxBatchSize > 1 ? 2 * maxBatchSize : 4,
    ),
  },
  "max-batch-size": {
    type: "string",
    schema: positiveInt("max-batch-size"),
    value: "<n>",
    help: "dynamic batching for every model whose inputs and outputs have a dynamic first dimension: requests are stacked up to this many rows (config.json's max_batch_size wins, per model); 1 is off",
    default: String(DEFAULT_BATCHING.maxBatchSize),
  },
  "max-queue-delay-us": {
    type: "string",
    schema: z.coerce
      .number({ error: "--max-queue-delay-us must be microseconds" })
      .int("--max-queue-delay-us must be a whole number of microseconds")
      .nonnegative("--max-queue-delay-us must not be negative"),
    value: "<µs>",
    help: "how long a request may wait for others to join its batch (config.json's dynamic_batching.max_queue_delay_microseconds wins); 0: a request that finds its model idle runs at once",
    default: String(DEFAULT_BATCHING.maxQueueDelayMicroseconds),
  },
  "batch-buckets": {
    type: "string",
    schema: z.enum(["auto", "on", "off"] satisfies BucketMode[], {
      error: "--batch-buckets must be auto, on or off",
    }),
    value: "auto|on|off",
    help: "batches padded up to a few fixed sizes (the model's preferred batch sizes, else powers of two), each with a session of its own warmed at load, so a batch never pays a re-plan; auto: on with --device cuda for a model whose graph has convolutions, which cuDNN re-plans whenever the batch size changes",
    default: "auto",
  },
  "session-config": {
    type: "string",
    schema: list
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
      .transform(
        (pairs): Record<string, string> =>
          Object.fromEntries(
            pairs.map((pair) => [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)]),
          ),
      ),
    value: "<key=value,…>",
    help: "onnxruntime session config entries for every model, e.g. session.use_device_allocator_for_initializers=1",
    default: "",
  },
  "max-queue": {
    type: "string",
    schema: positiveInt("max-queue"),
    value: "<n>",
    help: "requests that may wait for a replica (standalone); one more gets 429",
    default: "256",
  },
  preload: {
    type: "string",
    // Each entry is a model spec, "name" or "name:version" (shared/model-names.ts parseModelSpec).
    schema: list,
    value: "<a,b>",
    help: "models to load at start (name or name:version), before the agent reports ready",
    default: "",
  },
  "keep-alive": {
    type: "string",
    schema: z.coerce.number({ error: "--keep-alive must be seconds" }).nonnegative(),
    value: "<seconds>",
    help: "unload a model idle this long; 0 keeps it until evicted (a model's config.json keep_alive_s wins)",
    default: "0",
  },
  timeout: {
    type: "string",
    schema: z.coerce.number({ error: "--timeout must be seconds" }).positive(),
    value: "<seconds>",
    help: "deadline of a request that sets none",
    default: "60",
  },
  "max-body": {
    type: "string",
    schema: size("max-body"),
    value: "<size>",
    help: "largest request body accepted (413 above)",
    default: "64MiB",
  },
  standalone: toggle("serve the Open Inference Protocol v2 over HTTP on --host:--port"),
  host: {
    type: "string",
    schema: z.string(),
    value: "<addr>",
    help: "address the standalone server listens on",
    default: "127.0.0.1",
  },
  "allow-client-shm": toggle(
    "offer Triton's system shared memory to the standalone server's clients on this host: they register regions of /dev/shm objects and name them instead of sending tensors; any client that reaches --host:--port may then read and write the objects the agent's user can",
  ),
  "http-threads": {
    type: "string",
    schema: z.coerce
      .number({ error: "--http-threads must be a number" })
      .int("--http-threads must be a whole number")
      .min(0, "--http-threads must not be negative"),
    value: "<n>",
    help: "threads that read, decode, encode and write the standalone server's HTTP and gRPC's inference calls, so the main thread only routes (Linux: they share --port, and --grpc-port); 0: the main thread serves both itself",
    derived: derive("cores / 4, at most 4; 0 below 8 cores", ({ machine }) => httpThreads(machine.cores)),
  },
  "spin-ms": {
    type: "string",
    schema: z.coerce
      .number({ error: "--spin-ms must be milliseconds" })
      .nonnegative("--spin-ms must not be negative")
      .max(1000, "--spin-ms must be at most 1000"),
    value: "<ms>",
    help: "with a GPU: how long the HTTP threads and each session's thread keep polling after their last work instead of sleeping (a woken thread answers and runs slower; it costs a core while it spins); 0: sleep at once",
    default: "2",
  },
  port: {
    type: "string",
    schema: port("port"),
    value: "<port>",
    help: "port of the standalone server (0: any free port)",
    default: "8000",
  },
  "grpc-port": {
    type: "string",
    schema: port("grpc-port"),
    value: "<port>",
    help: "also serve the standalone server's API over gRPC (KServe v2 / Triton's GRPCInferenceService) on this port, e.g. 8001 as Triton does (0: any free port)",
    derived: derive("off", () => undefined),
  },
  name: {
    type: "string",
    schema: z.string().min(1, "--name must not be empty"),
    value: "<name>",
    help: "this agent's name in logs, headers and the gateway",
    derived: derive("the host name", ({ machine }) => machine.hostname),
  },
  gateway: {
    type: "string",
    schema: z
      .string()
      .refine(isGatewayUrl, "--gateway must be a ws:// or wss:// URL, e.g. wss://gateway.example.com"),
    value: "<ws(s) url>",
    help: "join this gateway: dial <url>/agent/connect (reconnecting by itself) and serve what it routes here; combine with --standalone to serve both",
  },
  token: {
    type: "string",
    schema: z.string().min(1, "--token must not be empty"),
    value: "<token>",
    help: "agent token for --gateway (prefer the environment variable: it stays out of ps)",
  },
  hints: {
    type: "string",
    // The gateway's limits on a hello (shared/protocol/frames.ts): refused here rather than at every connect.
    schema: list.pipe(
      z
        .array(z.string().max(MAX_HINT_LENGTH, `--hints: each hint is at most ${MAX_HINT_LENGTH} characters`))
        .max(MAX_HINTS, `--hints: at most ${MAX_HINTS}`),
    ),
    value: "<a,b>",
    help: "routing hints (X-Runner-Hint) this agent answers to beyond its model names",
    default: "",
  },
  pool: {
    type: "string",
    // The gateway's pool names: checked here so a typo fails at start, not at every reconnect.
    schema: z.string().refine(isPoolName, `--pool takes ${POOL_NAME_RULE}`),
    value: "<name>",
    help: "the gateway pool to join",
    default: DEFAULT_POOL,
  },
  "metrics-port": {
    type: "string",
    schema: port("metrics-port"),
    value: "<port>",
    help: "serve Prometheus metrics on http://<metrics-host>:<port>/metrics (0: any free port)",
    derived: derive("off", () => undefined),
  },
  "metrics-host": {
    type: "string",
    schema: z.string().min(1, "--metrics-host must not be empty"),
    value: "<addr>",
    help: "address the metrics server listens on; 0.0.0.0 lets a Prometheus on another host scrape it",
    default: "127.0.0.1",
  },
  "log-format": {
    type: "string",
    schema: z.enum(LOG_FORMATS, { error: `--log-format must be ${LOG_FORMATS.join(" or ")}` }),
    value: "text|json",
    help: "text: lines for people; json: one JSON object per line, for log shippers",
    default: "text",
  },
  "log-requests": toggle(
    "log one line per request: its id, model, replica, status, cache hit or miss, and timings",
  ),
  config: {
    type: "string",
    schema: z.string(),
    value: "<file.json>",
    help: "read settings from a JSON file whose keys are these flags' names; flags and environment variables win over it",
  },
  help: toggle("show this help"),
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof FLAG_SPECS;

/** Every flag can also come from the environment: SWITCHYARD_ + the flag in upper snake case. */
export const envName = (flag: string): string => `SWITCHYARD_${flag.toUpperCase().replaceAll("-", "_")}`;
