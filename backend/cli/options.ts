import os from "node:os";
import { parseArgs } from "node:util";
import { z } from "zod";
import type { AgentOptions } from "../agent-options.ts";
import { readConfigFile } from "./config-file.ts";
import {
  type DefaultContext,
  envName,
  FLAG_SPECS,
  type FlagName,
  type FlagSpec,
  type Machine,
} from "./flag-specs.ts";
import { helpText } from "./help.ts";

/**
 * The agent's command line: flags, environment variables (SWITCHYARD_<FLAG>) and a config file (--config),
 * merged in that order of precedence over the defaults, checked and resolved into the options the agent
 * runs with. What each flag is lives in flag-specs.ts.
 */

type Specs = typeof FLAG_SPECS;

/** A flag with a plain default always has a value (its default text, parsed like a user's); others may not. */
type Field<Spec extends FlagSpec> = Spec extends { default: string | boolean }
  ? z.ZodPrefault<Spec["schema"]>
  : z.ZodOptional<Spec["schema"]>;

const shape = Object.fromEntries(
  Object.entries(FLAG_SPECS).map(([flag, spec]: [string, FlagSpec]) => [
    flag,
    spec.default === undefined ? spec.schema.optional() : spec.schema.prefault(spec.default),
  ]),
) as { [Flag in FlagName]: Field<Specs[Flag]> };

const FlagsSchema = z.object(shape).superRefine((flags, context) => {
  if (flags.models === undefined && flags.gateway === undefined) {
    context.addIssue({
      code: "custom",
      message:
        "--models is required: a model repository directory or URL (or --gateway, to use the gateway's)",
    });
  }
  if (flags["allow-client-shm"] && !flags.standalone) {
    context.addIssue({
      code: "custom",
      message:
        "--allow-client-shm needs --standalone: shared memory is for clients of the standalone server on this host",
    });
  }
  if (flags["grpc-port"] !== undefined && !flags.standalone) {
    context.addIssue({
      code: "custom",
      message: "--grpc-port needs --standalone: gRPC serves the standalone server's API",
    });
  }
  if (flags.gateway !== undefined && flags.token === undefined) {
    context.addIssue({
      code: "custom",
      message: "--gateway needs --token (or SWITCHYARD_TOKEN): the agent token",
    });
  }
});

type Flags = z.output<typeof FlagsSchema>;

/** This host, as the derived defaults see it. */
export function thisMachine(): Machine {
  return {
    hostname: os.hostname(),
    homedir: os.homedir(),
    cores: os.availableParallelism(),
    memoryBytes: os.totalmem(),
  };
}

export type ParsedCommandLine = { kind: "help"; text: string } | { kind: "run"; options: AgentOptions };

/** Parses argv and the environment; throws an Error whose message is one line saying what to fix. */
export function parseCommandLine(
  argv: string[],
  env: NodeJS.ProcessEnv,
  machine: Machine = thisMachine(),
): ParsedCommandLine {
  let given: Partial<Record<FlagName, string | boolean>>;
  try {
    const parseOptions = Object.fromEntries(
      Object.entries(FLAG_SPECS).map(([flag, spec]) => [flag, { type: spec.type }]),
    );
    given = parseArgs({ args: argv, options: parseOptions, strict: true, allowPositionals: false })
      .values as typeof given;
  } catch (error) {
    // node:util's messages can span lines ("argument is ambiguous..."): the agent reports one line.
    throw new Error(`${(error as Error).message.replace(/\s*\n\s*/g, " ")} (see --help)`);
  }
  if (given.help) return { kind: "help", text: helpText() };
  const parsed = FlagsSchema.safeParse(merge(given, env));
  if (!parsed.success) {
    // Each message names its flag (zod's defaults do not, so they get it in front); a list of bad GPU ids
    // is one mistake, said once.
    const messages = parsed.error.issues.map((issue) =>
      issue.message.startsWith("--") ? issue.message : `--${String(issue.path[0])}: ${issue.message}`,
    );
    throw new Error(`${[...new Set(messages)].join("; ")} (see --help)`);
  }
  return { kind: "run", options: resolve(parsed.data, machine) };
}

/** Flags > environment > config file; what none of them gives is left to the defaults (FlagsSchema). */
function merge(
  given: Partial<Record<FlagName, string | boolean>>,
  env: NodeJS.ProcessEnv,
): Record<string, string | boolean> {
  // An empty variable (SWITCHYARD_PORT=) counts as unset, as shells and env files mean it.
  const fromEnv = (flag: string) => env[envName(flag)] || undefined;
  const configFile = given.config ?? fromEnv("config");
  const fromFile = typeof configFile === "string" ? readConfigFile(configFile, FLAG_SPECS) : {};
  const merged: Record<string, string | boolean> = {};
  for (const [flag, spec] of Object.entries(FLAG_SPECS) as [FlagName, FlagSpec][]) {
    const variable = fromEnv(flag);
    const value =
      given[flag] ??
      (variable === undefined ? undefined : spec.type === "boolean" ? isTrue(variable) : variable) ??
      fromFile[flag];
    if (value !== undefined) merged[flag] = value;
  }
  return merged;
}

const isTrue = (text: string) => ["1", "true", "yes", "on"].includes(text.toLowerCase());

/** The checked flags as the agent's options, with the derived defaults of those given nowhere. */
function resolve(flags: Flags, machine: Machine): AgentOptions {
  const settled = {
    machine,
    gateway: flags.gateway,
    gpus: flags.gpus,
    replicas: flags.replicas,
    maxBatchSize: flags["max-batch-size"],
  };
  const context: DefaultContext = {
    ...settled,
    device: flags.device ?? FLAG_SPECS.device.derived.from(settled),
  };
  const gateway = flags.gateway;
  const metricsPort = flags["metrics-port"] ?? FLAG_SPECS["metrics-port"].derived.from(context);
  return {
    // FlagsSchema refused to go on with neither --models nor --gateway.
    models: flags.models ?? FLAG_SPECS.models.derived.from(context) ?? "",
    cacheDir: flags["cache-dir"] ?? FLAG_SPECS["cache-dir"].derived.from(context),
    device: context.device,
    gpus: flags.gpus,
    replicas: flags.replicas,
    threads: flags.threads ?? FLAG_SPECS.threads.derived.from(context),
    maxModels: flags["max-models"],
    maxModelMemory: flags["max-model-memory"] ?? FLAG_SPECS["max-model-memory"].derived.from(context),
    maxConcurrency: flags["max-concurrency"] ?? FLAG_SPECS["max-concurrency"].derived.from(context),
    maxBatchSize: flags["max-batch-size"],
    maxQueueDelayMicroseconds: flags["max-queue-delay-us"],
    batchBuckets: flags["batch-buckets"],
    sessionConfig: flags["session-config"],
    maxQueue: flags["max-queue"],
    preload: flags.preload,
    keepAliveSeconds: flags["keep-alive"],
    timeoutSeconds: flags.timeout,
    maxBodyBytes: flags["max-body"],
    standalone: flags.standalone,
    host: flags.host,
    port: flags.port,
    ...(flags["grpc-port"] === undefined ? {} : { grpcPort: flags["grpc-port"] }),
    allowClientShm: flags["allow-client-shm"],
    httpThreads: flags["http-threads"] ?? FLAG_SPECS["http-threads"].derived.from(context),
    spinMs: flags["spin-ms"],
    name: flags.name ?? FLAG_SPECS.name.derived.from(context),
    ...(metricsPort === undefined ? {} : { metrics: { port: metricsPort, host: flags["metrics-host"] } }),
    logFormat: flags["log-format"],
    logRequests: flags["log-requests"],
    ...(flags.config === undefined ? {} : { configFile: flags.config }),
    ...(gateway === undefined
      ? {}
      : { gateway: { url: gateway, token: flags.token ?? "", hints: flags.hints, pool: flags.pool } }),
  };
}
