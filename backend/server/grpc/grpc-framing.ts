import { promisify } from "node:util";
import { gunzip, inflate } from "node:zlib";
import { requestBuffers } from "../../replica/buffer-pool.ts";
import { GrpcFailure, GrpcStatus } from "./grpc-status.ts";

/**
 * gRPC's framing over HTTP/2 (the protocol's PROTOCOL-HTTP2.md): each message is a compressed flag (1 byte),
 * its length (4 bytes, big-endian), then its bytes; the call's deadline comes as grpc-timeout and a status
 * message goes percent-encoded in grpc-message.
 */
export const PREFIX_BYTES = 5;

/** Message encodings the agent reads (grpc-encoding); its own answers go uncompressed. */
export const MESSAGE_ENCODINGS = ["identity", "gzip", "deflate"] as const;
export type MessageEncoding = (typeof MESSAGE_ENCODINGS)[number];

export const isMessageEncoding = (value: string): value is MessageEncoding =>
  (MESSAGE_ENCODINGS as readonly string[]).includes(value);

/** Messages this large and up are read into the agent's pooled buffers (buffer-pool.ts). */
const POOLED_FROM_BYTES = 64 * 1024;

/** A request message as it arrived. */
export interface ReceivedMessage {
  /** Its length as it came (compressed, when it was). */
  bytes: number;
  /**
   * Its bytes, uncompressed: decompressed on libuv's threads (a multi-megabyte gzip would hold the main
   * thread, and every other call on it, for tens of milliseconds); a failure is the call's status.
   */
  read(): Promise<Buffer>;
  /** Gives its memory back to the pool: call once nothing reads its bytes (or anything decoded from them). */
  release(): void;
}

const gunzipAsync = promisify(gunzip);
const inflateAsync = promisify(inflate);

/**
 * Reads a call's messages out of its DATA chunks. A message's chunks are kept as they come and copied once
 * it is whole into a buffer of its own length, pooled when large (so a multi-megabyte tensor costs no fresh
 * buffer, and no garbage for the collector). The buffer is taken only then: a client that announces a large
 * message and sends none of it holds nothing.
 */
export class MessageReader {
  readonly #maxBytes: number;
  readonly #encoding: MessageEncoding;
  readonly #prefix = Buffer.alloc(PREFIX_BYTES);
  #prefixFill = 0;
  /** The announced length of the message being read; undefined between messages. */
  #length: number | undefined;
  #parts: Uint8Array[] = [];
  #bodyFill = 0;

  constructor(maxBytes: number, encoding: MessageEncoding) {
    this.#maxBytes = maxBytes;
    this.#encoding = encoding;
  }

  /** Whether a message has begun and not ended. */
  get partial(): boolean {
    return this.#prefixFill > 0 || this.#length !== undefined;
  }

  /** The bytes received of a message not yet whole (0 between messages). */
  get partialBytes(): number {
    return this.#length === undefined ? this.#prefixFill : PREFIX_BYTES + this.#bodyFill;
  }

  /** The messages `chunk` completes, in order; a message past the limit fails the call. */
  push(chunk: Uint8Array): ReceivedMessage[] {
    const done: ReceivedMessage[] = [];
    let at = 0;
    try {
      while (at < chunk.length) {
        if (this.#length === undefined) {
          const take = Math.min(PREFIX_BYTES - this.#prefixFill, chunk.length - at);
          this.#prefix.set(chunk.subarray(at, at + take), this.#prefixFill);
          this.#prefixFill += take;
          at += take;
          if (this.#prefixFill < PREFIX_BYTES) break;
          this.#begin(this.#prefix.readUInt32BE(1));
        }
        const length = this.#length as number;
        const take = Math.min(length - this.#bodyFill, chunk.length - at);
        // A view of the chunk, not a copy: copied once, when the message is whole.
        if (take > 0) this.#parts.push(chunk.subarray(at, at + take));
        this.#bodyFill += take;
        at += take;
        if (this.#bodyFill === length) done.push(this.#finish(length));
      }
    } catch (error) {
      for (const message of done) message.release();
      throw error;
    }
    return done;
  }

  /** Drops a message begun and never finished (the call ended midway). */
  discard(): void {
    this.#length = undefined;
    this.#parts = [];
    this.#prefixFill = 0;
  }

  #begin(length: number): void {
    if (length > this.#maxBytes) {
      throw new GrpcFailure(
        GrpcStatus.RESOURCE_EXHAUSTED,
        `Received message larger than max (${length} vs ${this.#maxBytes})`,
      );
    }
    this.#length = length;
    this.#bodyFill = 0;
  }

  #finish(length: number): ReceivedMessage {
    const compressed = this.#prefix[0] === 1;
    const pooled = length >= POOLED_FROM_BYTES ? requestBuffers.acquire(length) : undefined;
    const body = pooled === undefined ? Buffer.allocUnsafe(length) : Buffer.from(pooled, 0, length);
    let offset = 0;
    for (const part of this.#parts) {
      body.set(part, offset);
      offset += part.byteLength;
    }
    this.discard();
    let released = false;
    const release = () => {
      if (pooled !== undefined && !released) requestBuffers.release(pooled);
      released = true;
    };
    if (!compressed) return { bytes: length, read: async () => body, release };
    if (this.#encoding === "identity") {
      release();
      throw new GrpcFailure(
        GrpcStatus.INTERNAL,
        "a message is marked compressed but the call's grpc-encoding is identity",
      );
    }
    // Decompressed once, into a buffer of its own: the compressed one goes back to the pool when that is done.
    const decompressed = this.#decompress(this.#encoding, body).finally(release);
    decompressed.catch(() => {});
    return { bytes: length, read: () => decompressed, release: () => {} };
  }

  async #decompress(encoding: "gzip" | "deflate", body: Buffer): Promise<Buffer> {
    try {
      const options = { maxOutputLength: Math.max(1, this.#maxBytes) };
      return await (encoding === "gzip" ? gunzipAsync(body, options) : inflateAsync(body, options));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ERR_BUFFER_TOO_LARGE") {
        throw new GrpcFailure(
          GrpcStatus.RESOURCE_EXHAUSTED,
          `Received message larger than max (more than ${this.#maxBytes} once decompressed)`,
        );
      }
      throw new GrpcFailure(GrpcStatus.INTERNAL, `a ${encoding} message could not be decompressed`);
    }
  }
}

/** The prefix of an uncompressed message of `length` bytes. */
export function messagePrefix(length: number): Buffer {
  const prefix = Buffer.allocUnsafe(PREFIX_BYTES);
  prefix[0] = 0;
  prefix.writeUInt32BE(length, 1);
  return prefix;
}

const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 1e-6 };

/** grpc-timeout (at most 8 digits, then H, M, S, m, u or n) in milliseconds; undefined without one. */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const match = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (match === null) throw new GrpcFailure(GrpcStatus.INTERNAL, `Invalid grpc-timeout: ${value}`);
  return Number(match[1]) * (TIMEOUT_UNIT_MS[match[2] as string] as number);
}

/** grpc-message's form: printable ASCII as is, every other byte (and '%') as %XX of its UTF-8. */
export function encodeGrpcMessage(message: string): string {
  let encoded = "";
  for (const byte of Buffer.from(message, "utf8")) {
    encoded +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return encoded;
}
