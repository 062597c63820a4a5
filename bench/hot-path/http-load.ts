/**
 * The hot-path benchmark's client: one pre-encoded OIP request posted again and again over kept-alive
 * `node:http` connections, one per concurrent client, so the client costs as little as a client can (no
 * fetch, no re-encoding). Each answer's status is checked, and the server's Server-Timing phases are kept
 * (those of a trailer too).
 */
import { Agent, request } from "node:http";
import { INFERENCE_HEADER_CONTENT_LENGTH } from "../../shared/oip/codec.ts";
import { parseServerTiming } from "../../shared/oip/request-options.ts";
import { round } from "../gpu/measure.ts";

export interface PreparedRequest {
  path: string;
  /** None: a GET. */
  body?: Uint8Array;
  headers: Record<string, string>;
}

export interface Answer {
  body: Buffer;
  headers: Record<string, string | string[] | undefined>;
  /** Server-Timing phases in milliseconds, where the server sends them. */
  timing: Record<string, number>;
}

export class HttpLoad {
  readonly #base: URL;
  readonly #agent: Agent;

  constructor(base: string, connections: number) {
    this.#base = new URL(base);
    this.#agent = new Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });
  }

  send(prepared: PreparedRequest): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const call = request(
        {
          host: this.#base.hostname,
          port: this.#base.port,
          method: prepared.body === undefined ? "GET" : "POST",
          path: prepared.path,
          agent: this.#agent,
          headers:
            prepared.body === undefined
              ? prepared.headers
              : { ...prepared.headers, "Content-Length": String(prepared.body.byteLength) },
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => chunks.push(chunk));
          response.on("end", () => {
            const body = Buffer.concat(chunks);
            if (response.statusCode !== 200) {
              reject(new Error(`HTTP ${response.statusCode}: ${body.toString().slice(0, 300)}`));
              return;
            }
            resolve({
              body,
              headers: response.headers,
              // The standalone agent's `send` comes in a trailer, to a client that asked (TE: trailers).
              timing: {
                ...parseServerTiming(String(response.headers["server-timing"] ?? "")),
                ...parseServerTiming(response.trailers["server-timing"]),
              },
            });
          });
          response.on("error", reject);
        },
      );
      call.on("error", reject);
      call.end(prepared.body);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}

/** The headers of a binary request (Inference-Header-Content-Length), or of a JSON one. */
export function requestHeaders(headerLength: number | undefined, extra: Record<string, string> = {}) {
  return {
    "Content-Type": headerLength === undefined ? "application/json" : "application/octet-stream",
    ...(headerLength === undefined ? {} : { [INFERENCE_HEADER_CONTENT_LENGTH]: String(headerLength) }),
    ...extra,
  };
}

/** Server-Timing phases summed over answers, for their means; sums from several threads add up. */
export class PhaseSum {
  readonly #sums = new Map<string, number>();
  #count = 0;

  add(timing: Record<string, number>, count = 1): void {
    this.#count += count;
    for (const [name, ms] of Object.entries(timing)) this.#sums.set(name, (this.#sums.get(name) ?? 0) + ms);
  }

  /** What a PhaseSum elsewhere (another thread) gathered: add it with `add(sums, count)`. */
  get totals(): { sums: Record<string, number>; count: number } {
    return { sums: Object.fromEntries(this.#sums), count: this.#count };
  }

  mean(): Record<string, number> {
    return Object.fromEntries(
      [...this.#sums].map(([name, sum]) => [name, round(sum / Math.max(1, this.#count), 3)]),
    );
  }
}
