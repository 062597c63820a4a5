/**
 * The agent CLI as its own process (standalone HTTP), and a client that posts one pre-encoded OIP request
 * again and again, as the benchmark's HTTP path.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { encodeInferRequest, INFERENCE_HEADER_CONTENT_LENGTH } from "../../shared/oip/codec.ts";
import { parseServerTiming } from "../../shared/oip/request-options.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";

export interface AgentProcess {
  url: string;
  stop(): Promise<void>;
}

/** The bundled agent beside this bundle (dist/), or the sources when run with `npm run bench:gpu`. */
function agentEntry(): string {
  const bundled = join(import.meta.dirname, "switchyard-agent.mjs");
  return existsSync(bundled)
    ? bundled
    : join(import.meta.dirname, "..", "..", "backend", "bin", "switchyard-agent.ts");
}

export function startAgent(args: string[]): Promise<AgentProcess> {
  const child: ChildProcess = spawn(
    process.execPath,
    [agentEntry(), "--standalone", "--port", "0", ...args],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let log = "";
  return new Promise((resolve, reject) => {
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      log += chunk;
      const url = /listening url=(\S+)/.exec(log)?.[1];
      if (url !== undefined && log.includes("agent ready")) {
        resolve({
          url,
          stop: () =>
            new Promise<void>((done) => {
              child.once("exit", () => done());
              child.kill("SIGTERM");
              setTimeout(() => child.kill("SIGKILL"), 5000).unref();
            }),
        });
      }
    });
    child.once("exit", (code) => reject(new Error(`agent exited with ${code}: ${log.slice(-2000)}`)));
  });
}

export interface HttpAnswer {
  /** The agent's own Server-Timing phases, in milliseconds. */
  timing: Record<string, number>;
  /** Requests in the batch that served it (X-Switchyard-Batch, where the server sends it). */
  batch?: number;
}

/** A request encoded once (binary tensor extension both ways) and sent as many times as asked. */
export function httpInferrer(url: string, model: string, inputs: Tensor[]): () => Promise<HttpAnswer> {
  const encoded = encodeInferRequest({ inputs }, { binaryInputs: true, binaryOutputs: true });
  const headers: Record<string, string> = { "Content-Type": encoded.contentType };
  if (encoded.headerLength !== undefined)
    headers[INFERENCE_HEADER_CONTENT_LENGTH] = String(encoded.headerLength);
  const body = encoded.body as Uint8Array<ArrayBuffer>;
  return async () => {
    const response = await fetch(`${url}/v2/models/${model}/infer`, { method: "POST", headers, body });
    const bytes = await response.arrayBuffer();
    if (!response.ok)
      throw new Error(`HTTP ${response.status}: ${new TextDecoder().decode(bytes).slice(0, 200)}`);
    return { timing: parseServerTiming(response.headers.get("server-timing")) };
  };
}
