import { deflateSync, gzipSync } from "node:zlib";
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  encodeGrpcMessage,
  MessageReader,
  messagePrefix,
  parseGrpcTimeout,
} from "../../../../backend/server/grpc/grpc-framing.ts";
import { GrpcStatus } from "../../../../backend/server/grpc/grpc-status.ts";

/** Messages framed as a client sends them, one after another. */
function framed(messages: readonly Uint8Array[], compressed = false): Buffer {
  return Buffer.concat(
    messages.flatMap((message) => {
      const prefix = messagePrefix(message.byteLength);
      if (compressed) prefix[0] = 1;
      return [prefix, message];
    }),
  );
}

/** The failure a call throws, as its gRPC code and message. */
function failureOf(call: () => unknown): { code: number; details: string } | "no failure" {
  try {
    call();
    return "no failure";
  } catch (error) {
    const { code, details } = error as { code: number; details: string };
    return { code, details };
  }
}

/** The same of a failure that comes later (reading a message's bytes). */
async function laterFailureOf(
  call: () => Promise<unknown>,
): Promise<{ code: number; details: string } | "no failure"> {
  try {
    await call();
    return "no failure";
  } catch (error) {
    const { code, details } = error as { code: number; details: string };
    return { code, details };
  }
}

describe("reading a call's messages from its DATA chunks", () => {
  test("any split of the bytes into chunks gives the messages sent, in order (small and pooled sizes)", async () => {
    const message = fc.oneof(
      fc.uint8Array({ maxLength: 40 }),
      // Past 64 KiB a message is read into a pooled buffer.
      fc.integer({ min: 64 * 1024, max: 100 * 1024 }).map((length) => {
        const bytes = Buffer.alloc(length);
        bytes.writeUInt32BE(length, 0);
        bytes.writeUInt32BE(length * 7, length - 4);
        return new Uint8Array(bytes);
      }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(message, { maxLength: 4 }),
        fc.array(fc.integer({ min: 1, max: 70_000 }), { maxLength: 12 }),
        async (messages, cuts) => {
          const bytes = framed(messages);
          const reader = new MessageReader(1024 * 1024, "identity");
          const read: Buffer[] = [];
          let at = 0;
          for (const cut of [...cuts, bytes.length]) {
            const end = Math.min(bytes.length, at + cut);
            for (const received of reader.push(bytes.subarray(at, end))) {
              read.push(Buffer.from(await received.read()));
              received.release();
            }
            at = end;
            if (at === bytes.length) break;
          }
          expect(read.length).toBe(messages.length);
          for (const [index, message] of messages.entries()) expect(read[index]?.equals(message)).toBe(true);
          expect(reader.partial).toBe(false);
        },
      ),
      { numRuns: 60 },
    );
  });

  test("a message cut short is partial until the rest comes", async () => {
    const reader = new MessageReader(100, "identity");
    const bytes = framed([Uint8Array.from([1, 2, 3])]);
    expect(reader.push(bytes.subarray(0, 3))).toEqual([]);
    expect(reader.partial).toBe(true);
    expect(reader.push(bytes.subarray(3, 6))).toEqual([]);
    const [message] = reader.push(bytes.subarray(6));
    expect([...((await message?.read()) ?? [])]).toEqual([1, 2, 3]);
    expect(reader.partial).toBe(false);
  });

  test("gzip and deflate messages are read uncompressed, as grpc-encoding says", async () => {
    const text = Buffer.from("a tensor's bytes ".repeat(100));
    for (const [encoding, compress] of [
      ["gzip", gzipSync],
      ["deflate", deflateSync],
    ] as const) {
      const [message] = new MessageReader(10_000, encoding).push(framed([compress(text)], true));
      expect((await message?.read())?.equals(text)).toBe(true);
    }
  });

  test("a message over the limit is RESOURCE_EXHAUSTED before it is read, or once it inflates past it", async () => {
    expect(failureOf(() => new MessageReader(10, "identity").push(framed([new Uint8Array(11)])))).toEqual({
      code: GrpcStatus.RESOURCE_EXHAUSTED,
      details: "Received message larger than max (11 vs 10)",
    });
    // A small gzip that inflates past the limit.
    const bomb = gzipSync(Buffer.alloc(100_000));
    const [inflating] = new MessageReader(1000, "gzip").push(framed([bomb], true));
    expect(await laterFailureOf(async () => inflating?.read())).toEqual({
      code: GrpcStatus.RESOURCE_EXHAUSTED,
      details: "Received message larger than max (more than 1000 once decompressed)",
    });
  });

  test("a compressed flag on an identity call, or bytes that are no gzip, are INTERNAL", async () => {
    expect(
      failureOf(() => new MessageReader(100, "identity").push(framed([new Uint8Array(3)], true))),
    ).toMatchObject({ code: GrpcStatus.INTERNAL });
    const [garbled] = new MessageReader(100, "gzip").push(framed([Uint8Array.from([1, 2, 3])], true));
    expect(await laterFailureOf(async () => garbled?.read())).toEqual({
      code: GrpcStatus.INTERNAL,
      details: "a gzip message could not be decompressed",
    });
  });
});

describe("grpc-timeout and grpc-message", () => {
  test("each unit of grpc-timeout, in milliseconds; a malformed one is INTERNAL", () => {
    expect(parseGrpcTimeout(undefined)).toBeUndefined();
    expect(parseGrpcTimeout("2H")).toBe(7_200_000);
    expect(parseGrpcTimeout("3M")).toBe(180_000);
    expect(parseGrpcTimeout("4S")).toBe(4000);
    expect(parseGrpcTimeout("250m")).toBe(250);
    expect(parseGrpcTimeout("1500u")).toBeCloseTo(1.5);
    expect(parseGrpcTimeout("99999999n")).toBeCloseTo(99.999999);
    for (const bad of ["", "5", "123456789m", "1.5S", "-1S", "10x"]) {
      expect(failureOf(() => parseGrpcTimeout(bad))).toEqual({
        code: GrpcStatus.INTERNAL,
        details: `Invalid grpc-timeout: ${bad}`,
      });
    }
  });

  test("grpc-message keeps printable ASCII and percent-encodes the rest, '%' included, as UTF-8", () => {
    expect(encodeGrpcMessage("model 'm' not found")).toBe("model 'm' not found");
    expect(encodeGrpcMessage("100% sure\nnext")).toBe("100%25 sure%0Anext");
    expect(encodeGrpcMessage("mémoire")).toBe("m%C3%A9moire");
    fc.assert(
      fc.property(fc.string({ unit: "grapheme" }), (text) => {
        expect(decodeURIComponent(encodeGrpcMessage(text))).toBe(text);
      }),
    );
  });
});
