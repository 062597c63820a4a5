/**
 * One GET whose body is hashed while it streams and then checked against everything that vouches for it:
 * sizes and SHA-256 digests from the caller (repository.json, config.json) and from the response's own
 * Content-Length and digest headers. A body that fails any check is never handed back; a file download
 * that fails leaves no file behind.
 *
 * Errors: the server unreachable, answering with an error status, or cutting the body short is
 * `unavailable` (worth retrying later); a body that arrives whole but is not what was promised is
 * `model_load_failed`. A 404 is not an error here: the caller decides what absence means.
 */
import { createHash, type Hash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { SwitchyardError } from "../../shared/errors.ts";
import { sha256FromHeaders } from "./digest-headers.ts";

/** Something a source promises about the body; `source` names it in errors ("repository.json"). */
export interface Expectation {
  source: string;
  size?: number;
  sha256?: string;
}

export interface DownloadRequest {
  url: URL;
  /** The file in repository terms, for messages: "det/1/model.onnx". */
  label: string;
  fetch: typeof fetch;
  headers: Record<string, string>;
  expected: Expectation[];
  onProgress?: (received: number, total: number | undefined) => void;
}

export interface Downloaded {
  bytes: number;
  sha256: string;
}

/** Streams the body into `partialPath`; undefined when the server has no such file (404). */
export async function downloadToFile(
  request: DownloadRequest,
  partialPath: string,
): Promise<Downloaded | undefined> {
  const response = await get(request);
  if (response === undefined) return undefined;
  const tally = new Tally(request, response);
  const file = createWriteStream(partialPath);
  try {
    await pipeline(tally.chunks(response), file).catch((error: unknown) => {
      if (error instanceof SwitchyardError) throw error;
      throw new SwitchyardError(
        "model_load_failed",
        `cannot write ${request.label} to the model cache: ${describe(error)}`,
        {
          cause: error,
        },
      );
    });
    return tally.verify();
  } catch (error) {
    // A body that fails at once can fail before the file is even open: its open still creates the file, so
    // wait for the stream to close (opened and closed again) before removing it.
    if (!file.closed) await new Promise<void>((resolve) => file.once("close", () => resolve()));
    await rm(partialPath, { force: true });
    throw error;
  }
}

/** The whole body in memory, for small files; refuses bodies over `maxBytes`. */
export async function downloadToMemory(
  request: DownloadRequest,
  maxBytes: number,
): Promise<(Downloaded & { body: Uint8Array }) | undefined> {
  const response = await get(request);
  if (response === undefined) return undefined;
  const tally = new Tally(request, response, maxBytes);
  const parts: Uint8Array[] = [];
  for await (const chunk of tally.chunks(response)) parts.push(chunk);
  return { ...tally.verify(), body: Buffer.concat(parts) };
}

/** The response to a GET, or undefined for 404; any other failure throws. */
async function get(request: DownloadRequest): Promise<Response | undefined> {
  const where = `${request.url.origin}${request.url.pathname}`;
  let response: Response;
  try {
    // Identity encoding, so that Content-Length and the digest headers describe the bytes we receive.
    response = await request.fetch(request.url, {
      headers: { ...request.headers, "accept-encoding": "identity" },
    });
  } catch (error) {
    throw new SwitchyardError(
      "unavailable",
      `cannot reach the model repository for ${where}: ${describe(error)}`,
      {
        cause: error,
      },
    );
  }
  if (response.ok && response.body !== null) return response;
  await response.body?.cancel();
  if (response.status === 404) return undefined;
  const hint = response.status === 401 || response.status === 403 ? " (check the agent's credentials)" : "";
  const retryAfter = Number(response.headers.get("retry-after"));
  throw new SwitchyardError(
    "unavailable",
    `the model repository answered ${response.status} ${response.statusText} for ${where}${hint}`,
    Number.isInteger(retryAfter) && retryAfter > 0 ? { retryAfterSeconds: retryAfter } : undefined,
  );
}

/** Counts and hashes a body as it streams, then checks it against every expectation. */
class Tally {
  readonly #request: DownloadRequest;
  readonly #expected: Expectation[];
  readonly #maxBytes: number;
  readonly #hash: Hash = createHash("sha256");
  #received = 0;

  constructor(request: DownloadRequest, response: Response, maxBytes = Number.POSITIVE_INFINITY) {
    this.#request = request;
    this.#maxBytes = maxBytes;
    this.#expected = [...request.expected, ...fromResponseHeaders(response.headers)];
  }

  /** The most bytes worth receiving before giving up: the smallest size anyone promised, or the cap. */
  get #limit(): number {
    const sizes = this.#expected.flatMap((expectation) =>
      expectation.size === undefined ? [] : [expectation.size],
    );
    return Math.min(this.#maxBytes, ...sizes);
  }

  async *chunks(response: Response): AsyncGenerator<Uint8Array> {
    const body = response.body;
    if (body === null) return;
    const limit = this.#limit;
    const total = this.#expected.find((expectation) => expectation.size !== undefined)?.size;
    try {
      for await (const chunk of body) {
        this.#received += chunk.byteLength;
        if (this.#received > limit) this.#fail(`it is larger than the ${limit} bytes expected`);
        this.#hash.update(chunk);
        this.#request.onProgress?.(this.#received, total);
        yield chunk;
      }
    } catch (error) {
      if (error instanceof SwitchyardError) throw error;
      throw new SwitchyardError(
        "unavailable",
        `download of ${this.#request.label} was interrupted after ${this.#received} bytes: ${describe(error)}`,
        { cause: error },
      );
    }
  }

  verify(): Downloaded {
    const sha256 = this.#hash.digest("hex");
    for (const { source, size, sha256: expected } of this.#expected) {
      if (size !== undefined && size !== this.#received) {
        this.#fail(`size mismatch: ${source} says ${size} bytes, received ${this.#received}`);
      }
      if (expected !== undefined && expected !== sha256) {
        this.#fail(`sha256 mismatch: ${source} says ${expected}, received ${sha256}`);
      }
    }
    return { bytes: this.#received, sha256 };
  }

  #fail(problem: string): never {
    throw new SwitchyardError("model_load_failed", `download of ${this.#request.label} rejected, ${problem}`);
  }
}

/** What the response says about its own body; nothing when it is encoded, since fetch decodes it. */
function fromResponseHeaders(headers: Headers): Expectation[] {
  const encoding = headers.get("content-encoding");
  if (encoding !== null && encoding.trim().toLowerCase() !== "identity") return [];
  const expectations: Expectation[] = sha256FromHeaders(headers).map(({ header, sha256 }) => ({
    source: `the ${header} header`,
    sha256,
  }));
  const length = headers.get("content-length");
  if (length !== null && /^\d+$/.test(length.trim())) {
    expectations.push({ source: "the Content-Length header", size: Number(length) });
  }
  return expectations;
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // fetch reports "fetch failed" / "terminated" and keeps the reason (ECONNREFUSED, socket closed) in cause.
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : "";
  return `${error.message}${cause}`;
}
