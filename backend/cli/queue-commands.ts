import { readFile, writeFile } from "node:fs/promises";
import type { QueueClient } from "../../shared/queue/queue-client.ts";
import { isFinished } from "../../shared/queue/queue-status.ts";

/**
 * `switchyard queue ...`: the managed queue from a shell, through the same client users import
 * (shared/queue/queue-client.ts).
 *   submit <model> <request.json>   prints the request's handles (JSON); --wait follows it to the result
 *   status <model> <id>             prints its status (JSON)
 *   result <model> <id>             prints its result (--out <file> writes it there; binary results need one)
 *   cancel <model> <id>             prints CANCELLATION_REQUESTED or ALREADY_COMPLETED
 */
export interface QueueCommand {
  command: string;
  args: string[];
  client: QueueClient;
  out: NodeJS.WritableStream;
  wait: boolean;
  /** Where `result` writes the result's body; default: stdout. */
  outFile?: string | undefined;
  webhook?: string | undefined;
}

/** The exit code: 0 done; 1 the result is an error; 3 no result yet (still queued or running). */
export async function runQueueCommand({
  command,
  args,
  client,
  out,
  wait,
  outFile,
  webhook,
}: QueueCommand): Promise<number> {
  const print = (value: unknown) => out.write(`${JSON.stringify(value, null, 2)}\n`);
  const [model, target, ...extra] = args;
  if (model === undefined || target === undefined || extra.length > 0) {
    throw new Error(
      command === "submit"
        ? "queue submit takes a model and a request file: switchyard queue submit m000 request.json"
        : `queue ${command} takes a model and a request id: switchyard queue ${command} m000 <request_id>`,
    );
  }
  switch (command) {
    case "submit": {
      const body = new Uint8Array(await readFile(target));
      const submitted = await client.submitBody(model, body, webhook === undefined ? {} : { webhook });
      if (!wait) {
        print(submitted);
        return 0;
      }
      if (!isFinished(submitted.status)) {
        for await (const status of client.statusStream(submitted)) {
          const where =
            status.queue_position !== undefined
              ? ` (position ${status.queue_position})`
              : status.replica !== undefined && !isFinished(status.status)
                ? ` on ${status.replica}`
                : "";
          process.stderr.write(`${status.status}${where}\n`);
        }
      }
      return await writeResult(client, client.handles(model, submitted.request_id), out, outFile);
    }
    case "status":
      print(await client.status(client.handles(model, target)));
      return 0;
    case "result":
      return await writeResult(client, client.handles(model, target), out, outFile);
    case "cancel":
      out.write(`${await client.cancel(client.handles(model, target))}\n`);
      return 0;
    default:
      throw new Error(`unknown command 'queue ${command}': use submit, status, result or cancel`);
  }
}

async function writeResult(
  client: QueueClient,
  handles: { response_url: string },
  out: NodeJS.WritableStream,
  outFile: string | undefined,
): Promise<number> {
  const response = await client.rawResult(handles);
  if (response === undefined) {
    process.stderr.write("no result yet: the request is still queued or running\n");
    return 3;
  }
  const body = new Uint8Array(await response.arrayBuffer());
  const json = response.headers.get("content-type")?.startsWith("application/json") === true;
  if (outFile !== undefined) await writeFile(outFile, body);
  else if (json) out.write(`${new TextDecoder().decode(body)}\n`);
  else throw new Error("the result has binary tensors: write it to a file with --out <file>");
  return response.ok ? 0 : 1;
}
