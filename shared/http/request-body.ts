import { SwitchyardError } from "../errors.ts";

/**
 * A request body as bytes, for the gateway and the standalone agent alike. Bodies may be compressed
 * (`Content-Encoding: gzip` or `deflate`, as tritonclient's `request_compression_algorithm` sends them); the
 * size limit applies to the bytes after decompression, counted as they stream out, so a small body that
 * inflates without end (a zip bomb) is refused with 413 after `maxBytes`, never inflated in full. An oversized
 * plain body is refused by its Content-Length before anything is read. A body that breaks off or is not what
 * its encoding says is the request's fault: 400, never a 500.
 *
 * A compressed body is read whole as it came before it is decompressed, from memory: a decompression that
 * fails (a body that is not gzip) or stops at the limit then never cancels the request's own stream while
 * the client is still sending it. Local workerd (wrangler dev) answers such a cancel by dropping the
 * connection, so the client got a 500 "Network connection lost" instead of its 400 or 413, in about half of
 * the tries with a 3 MiB body under load, and at times even with a 5-byte one. (A body without a declared
 * length that grows past maxEncodedBytes as it comes is still refused mid-upload.)
 */
export const SUPPORTED_ENCODINGS = ["gzip", "deflate", "identity"] as const;

export async function readRequestBody(
  request: Request,
  maxBytes: number,
  what = "request body",
): Promise<Uint8Array> {
  const tooLarge = (after: string) => bodyTooLarge(maxBytes, what, after);
  const encodings = contentEncodings(request.headers);
  const declared = request.headers.get("content-length");
  const limit = encodings.length === 0 ? maxBytes : maxEncodedBytes(maxBytes);
  if (declared !== null && Number(declared) > limit) throw tooLarge("");
  if (request.body === null) return new Uint8Array(0);
  const body = request.body;
  const read = () => readEncoded(request, body, declared, limit, tooLarge, what, encodings);
  if (encodings.length === 0) return await read();
  // Not kept in a variable here: the compressed bytes go to the decompressor, which lets go of them.
  return await readLimited(
    inflating(await read(), encodings),
    maxBytes,
    () => tooLarge(" once decompressed"),
    what,
    encodings,
  );
}

/**
 * The most a compressed body may take as it comes: its limit once decompressed, and room for data that came
 * out no smaller (gzip adds a few bytes to what does not compress). One rule for every reader of bodies.
 */
export function maxEncodedBytes(maxBytes: number): number {
  return maxBytes + Math.ceil(maxBytes / 100) + 64 * 1024;
}

/**
 * The decompressed stream of `encoded`, its encodings undone in the reverse of the order they were listed
 * (RFC 9110, 8.4). The bytes are handed over once and not held here, so that the compressed copy can go
 * while the decompressed one grows.
 */
function inflating(
  encoded: Uint8Array,
  encodings: readonly ("gzip" | "deflate")[],
): ReadableStream<Uint8Array> {
  let pending: Uint8Array | undefined = encoded;
  let stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (pending !== undefined) controller.enqueue(pending);
      else controller.close();
      pending = undefined;
    },
  });
  for (const encoding of [...encodings].reverse()) {
    stream = stream.pipeThrough(
      new DecompressionStream(encoding) as ReadableWritablePair<Uint8Array, Uint8Array>,
    );
  }
  return stream;
}

/** The body as it came (compressed or not), at most `maxBytes`. */
async function readEncoded(
  request: Request,
  body: ReadableStream<Uint8Array>,
  declared: string | null,
  maxBytes: number,
  tooLarge: (after: string) => SwitchyardError,
  what: string,
  encodings: readonly string[],
): Promise<Uint8Array> {
  // A body of a declared length is read by the runtime in one piece: reading it chunk by chunk in JavaScript
  // cost the gateway 14 ms of CPU per MiB (bench/results/registry.md). The declared length bounds it.
  if (declared !== null && /^\d+$/.test(declared)) {
    const whole = await request.arrayBuffer().catch((error: unknown) => {
      throw bodyUnreadable(error, what, encodings);
    });
    // HTTP framing holds a body to its Content-Length; a Request built in code need not.
    if (whole.byteLength > maxBytes) throw tooLarge("");
    return new Uint8Array(whole);
  }
  return await readLimited(body, maxBytes, () => tooLarge(""), what, encodings);
}

/** Every chunk of `stream`, joined; past `maxBytes` the stream is cancelled and `tooLarge()` thrown. */
async function readLimited(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number,
  tooLarge: () => SwitchyardError,
  what: string,
  encodings: readonly string[],
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  const reader = stream.getReader();
  for (;;) {
    const next = await reader.read().catch((error: unknown) => {
      throw bodyUnreadable(error, what, encodings);
    });
    if (next.done) break;
    length += next.value.byteLength;
    if (length > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge();
    }
    chunks.push(next.value);
  }
  // The body owns its buffer (a chunk may be a view into a buffer the runtime reuses), so what is decoded
  // from it may move to another thread with it.
  const [only] = chunks;
  if (
    chunks.length === 1 &&
    only !== undefined &&
    only.byteOffset === 0 &&
    only.byteLength === only.buffer.byteLength
  )
    return only;
  const body = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

const MAX_ENCODINGS = 2;

/** The body's encodings, outermost last; identity dropped. Unknown ones, or too many: 415. */
function contentEncodings(headers: Headers): Array<"gzip" | "deflate"> {
  const header = headers.get("content-encoding");
  if (header === null) return [];
  const encodings: Array<"gzip" | "deflate"> = [];
  for (const raw of header.split(",")) {
    const encoding = raw.trim().toLowerCase();
    if (encoding === "" || encoding === "identity") continue;
    if (encoding === "gzip" || encoding === "x-gzip") encodings.push("gzip");
    else if (encoding === "deflate") encodings.push("deflate");
    else {
      throw new SwitchyardError(
        "unsupported_media_type",
        `Content-Encoding ${JSON.stringify(raw.trim().slice(0, 40))} is not supported; use ${SUPPORTED_ENCODINGS.join(", ")}`,
      );
    }
  }
  // Each layer is a decompressor stacked on the body: a client sends one, a long list is an attack.
  if (encodings.length > MAX_ENCODINGS) {
    throw new SwitchyardError(
      "unsupported_media_type",
      `a body with ${encodings.length} Content-Encoding layers is not supported; at most ${MAX_ENCODINGS}`,
    );
  }
  return encodings;
}

/** The 413 of a body past its limit, in the words of every reader of bodies (this one, the agent's servers). */
export function bodyTooLarge(maxBytes: number, what = "request body", after = ""): SwitchyardError {
  return new SwitchyardError("too_large", `${what} is larger than the limit of ${maxBytes} bytes${after}`);
}

/** The 400 of a body that broke off or is not what its encoding says, for every reader of bodies. */
export function bodyUnreadable(
  error: unknown,
  what = "request body",
  encodings: readonly string[] = [],
): SwitchyardError {
  // The runtime's own reason (zlib's, the socket's) differs between Node and workerd and helps no client.
  const message =
    encodings.length > 0
      ? `${what} is not valid ${encodings.join(" + ")} data, or it broke off`
      : `${what} could not be read: it broke off, or its transfer encoding is malformed`;
  return new SwitchyardError("bad_input", message, { cause: error });
}
