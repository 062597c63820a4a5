#!/usr/bin/env node
import { parseArgs } from "node:util";
import { QueueClient } from "../../shared/queue/queue-client.ts";
import { AdminClient, gatewayHttpBase } from "../cli/admin-client.ts";
import { modelsTable } from "../cli/models-list.ts";
import { pushModels } from "../cli/models-push.ts";
import { runQueueCommand } from "../cli/queue-commands.ts";

/**
 * `switchyard`: the operator's tool for a gateway (the agent is `switchyard-agent`).
 *   switchyard models push <dir> [--model m]... [--force]
 *   switchyard models ls [--json]
 *   switchyard queue submit|status|result|cancel ... (backend/cli/queue-commands.ts)
 * All take --gateway <url> (or SWITCHYARD_GATEWAY); models take --admin-key <key> (or SWITCHYARD_ADMIN_KEY,
 * which keeps the key out of `ps` and shell history), queue --api-key <key> (or SWITCHYARD_API_KEY).
 */
const HELP = `switchyard: manage a Switchyard gateway

Usage:
  switchyard models push <dir>   upload a model repository (<model>/<version>/model.onnx, config.json)
                                 with progress; verifies each file's sha256 against the gateway's;
                                 versions already there with the same sha256 are skipped
  switchyard models ls           list the gateway's models: versions, sizes, sha256
  switchyard queue submit <model> <request.json>
                                 submit an OIP infer request to the managed queue; prints its handles,
                                 or with --wait follows it and prints the result
  switchyard queue status <model> <request_id>    its status (JSON)
  switchyard queue result <model> <request_id>    its result (exit 3 while it has none yet)
  switchyard queue cancel <model> <request_id>    cancel it

Options:
  --gateway <url>     the gateway (https://… or the agents' wss://…)     env SWITCHYARD_GATEWAY
  --admin-key <key>   the gateway's ADMIN_KEY                             env SWITCHYARD_ADMIN_KEY
  --api-key <key>     queue: a client API key                             env SWITCHYARD_API_KEY
  --pool <name>       queue: the pool (default: the default pool)
  --wait              queue submit: follow it to the result
  --webhook <url>     queue submit: POST there when it finished
  --out <file>        queue result: write the result's body there
  --model <name>      push only this model (repeatable)
  --force             upload even what the gateway already has
  --json              ls: print JSON
  --help              show this help
`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      gateway: { type: "string" },
      "admin-key": { type: "string" },
      model: { type: "string", multiple: true },
      force: { type: "boolean" },
      json: { type: "boolean" },
      help: { type: "boolean" },
      "api-key": { type: "string" },
      pool: { type: "string" },
      wait: { type: "boolean" },
      webhook: { type: "string" },
      out: { type: "string" },
    },
  });
  const [group, command, ...rest] = positionals;
  if (values.help || group === undefined) {
    process.stdout.write(HELP);
    return values.help ? 0 : 2;
  }
  const known = (group === "models" && (command === "push" || command === "ls")) || group === "queue";
  if (!known) {
    throw new Error(
      `unknown command '${positionals.join(" ")}': use 'models push <dir>', 'models ls' or 'queue submit|status|result|cancel'`,
    );
  }
  const gateway = values.gateway ?? (process.env.SWITCHYARD_GATEWAY || undefined);
  if (gateway === undefined) {
    throw new Error(
      "--gateway is required (or SWITCHYARD_GATEWAY), e.g. --gateway https://switchyard.example.com",
    );
  }
  if (group === "queue") {
    const apiKey = values["api-key"] ?? (process.env.SWITCHYARD_API_KEY || undefined);
    if (apiKey === undefined)
      throw new Error("--api-key is required (or SWITCHYARD_API_KEY): a client API key");
    return runQueueCommand({
      command: command ?? "",
      args: rest,
      client: new QueueClient({
        baseUrl: gatewayHttpBase(gateway).href.replace(/\/$/, ""),
        apiKey,
        ...(values.pool === undefined ? {} : { pool: values.pool }),
      }),
      out: process.stdout,
      wait: values.wait ?? false,
      outFile: values.out,
      webhook: values.webhook,
    });
  }
  const adminKey = values["admin-key"] ?? (process.env.SWITCHYARD_ADMIN_KEY || undefined);
  if (adminKey === undefined)
    throw new Error("--admin-key is required (or SWITCHYARD_ADMIN_KEY): the gateway's ADMIN_KEY");
  const client = new AdminClient(gateway, adminKey);

  if (command === "ls") {
    const versions = await client.list();
    process.stdout.write(values.json ? `${JSON.stringify(versions, null, 2)}\n` : modelsTable(versions));
    return 0;
  }
  const [dir, ...extra] = rest;
  if (dir === undefined || extra.length > 0) {
    throw new Error(
      "models push takes one directory: switchyard models push ./models --gateway … --admin-key …",
    );
  }
  await pushModels({
    dir,
    models: values.model ?? [],
    force: values.force ?? false,
    client,
    out: process.stdout,
  });
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`switchyard: ${message.replace(/\s*\n\s*/g, " ")}\n`);
    process.exit(error instanceof TypeError && "code" in error ? 2 : 1);
  },
);
