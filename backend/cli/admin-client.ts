import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import {
  contentTypeOf,
  type ModelFile,
  ModelListingSchema,
  type StoredFile,
  type StoredVersion,
} from "../../shared/protocol/model-listing.ts";

/**
 * The gateway's admin API as `switchyard models` uses it (gateway/routes/admin-models.ts):
 *   GET /admin/models                               every stored version, its files' sizes and sha256
 *   PUT /admin/models/{model}/{version}[?file=config.json|warmup/<name>|labels/<name>]   one file; answers
 *                                                   its size and sha256
 * Failures become one-line Errors that say what to do.
 */
export type { StoredFile, StoredVersion };

export class AdminClient {
  readonly base: URL;
  readonly #key: string;

  constructor(gateway: string, adminKey: string) {
    this.base = gatewayHttpBase(gateway);
    this.#key = adminKey;
  }

  async list(): Promise<StoredVersion[]> {
    const response = await this.#fetch("admin/models", { method: "GET" });
    const listing = ModelListingSchema.safeParse(await response.json());
    if (!listing.success) throw new Error(`${this.base} answered /admin/models with an unexpected listing`);
    return listing.data.models;
  }

  /** Uploads a file, streamed from disk; `onSent` hears how many bytes went so far. */
  async put(
    name: string,
    version: string,
    file: ModelFile,
    path: string,
    size: number,
    onSent: (bytes: number) => void,
  ): Promise<StoredFile & { sha256: string }> {
    let sent = 0;
    const counted = Readable.toWeb(
      createReadStream(path).on("data", (chunk) => {
        sent += chunk.length;
        onSent(sent);
      }),
    ) as ReadableStream<Uint8Array>;
    const query = file === "model.onnx" ? "" : `?file=${encodeURIComponent(file)}`;
    const response = await this.#fetch(`admin/models/${name}/${version}${query}`, {
      method: "PUT",
      headers: {
        "Content-Type": contentTypeOf(file),
        "Content-Length": String(size),
      },
      body: counted,
      duplex: "half",
    });
    return (await response.json()) as StoredFile & { sha256: string };
  }

  async #fetch(path: string, init: RequestInit & { duplex?: "half" }): Promise<Response> {
    const url = new URL(path, this.base);
    let response: Response;
    try {
      response = await fetch(url, {
        ...init,
        headers: { ...(init.headers as Record<string, string>), Authorization: `Bearer ${this.#key}` },
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (error as Error).message;
      throw new Error(
        `cannot reach the gateway at ${this.base.origin} (${why}): check --gateway and that it runs`,
      );
    }
    if (response.ok) return response;
    const text = await response.text();
    let message = text.slice(0, 300);
    try {
      const parsed = JSON.parse(text) as { error?: unknown };
      if (typeof parsed.error === "string") message = parsed.error;
    } catch {
      // Not an OIP error body: the text as it is.
    }
    if (response.status === 401 || response.status === 403) {
      throw new Error(
        `the gateway refused the admin key (${response.status}: ${message}): check --admin-key or SWITCHYARD_ADMIN_KEY`,
      );
    }
    if (response.status === 413) {
      throw new Error(`the gateway refused the file as too large (${message}): raise its MAX_MODEL_BYTES`);
    }
    throw new Error(`${init.method} ${url.pathname} failed with ${response.status}: ${message}`);
  }
}

/** The gateway's http(s) base from what a user gives: the agents' ws(s) URL works too. */
export function gatewayHttpBase(gateway: string): URL {
  let url: URL;
  try {
    url = new URL(gateway);
  } catch {
    throw new Error(
      `--gateway must be a URL such as https://switchyard.example.com, got ${JSON.stringify(gateway)}`,
    );
  }
  const scheme = { "http:": "http:", "https:": "https:", "ws:": "http:", "wss:": "https:" }[url.protocol];
  if (scheme === undefined)
    throw new Error(`--gateway must be an http(s) or ws(s) URL, got ${JSON.stringify(gateway)}`);
  return new URL(`${scheme}//${url.host}${url.pathname.replace(/\/*$/, "/")}`);
}
