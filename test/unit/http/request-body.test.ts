import { randomBytes } from "node:crypto";
import { deflateSync, gzipSync } from "node:zlib";
import { describe, expect, test } from "vitest";
import { SwitchyardError } from "../../../shared/errors.ts";
import { readRequestBody } from "../../../shared/http/request-body.ts";

const request = (body: RequestInit["body"], headers: Record<string, string> = {}) =>
  new Request("http://x/", { method: "POST", headers, body, duplex: "half" } as RequestInit);

async function failure(promise: Promise<unknown>): Promise<SwitchyardError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!(error instanceof SwitchyardError))
    throw new Error(`expected a SwitchyardError, got ${String(error)}`);
  return error;
}

describe("readRequestBody", () => {
  const text = '{"inputs": []}';

  test("plain, gzip, deflate and stacked encodings all give the same bytes", async () => {
    const decode = async (body: Uint8Array | string, encoding?: string) =>
      new TextDecoder().decode(
        await readRequestBody(
          request(body, encoding === undefined ? {} : { "Content-Encoding": encoding }),
          1024,
        ),
      );
    expect(await decode(text)).toBe(text);
    expect(await decode(text, "identity")).toBe(text);
    expect(await decode(gzipSync(text), "gzip")).toBe(text);
    expect(await decode(gzipSync(text), "x-gzip")).toBe(text);
    expect(await decode(deflateSync(text), "deflate")).toBe(text);
    // Listed in the order they were applied: deflate first, then gzip.
    expect(await decode(gzipSync(deflateSync(text)), "deflate, gzip")).toBe(text);
  });

  test("the limit applies to the inflated bytes: a small bomb is refused without inflating it all", async () => {
    const bomb = gzipSync(Buffer.alloc(64 * 2 ** 20));
    expect(bomb.byteLength).toBeLessThan(2 ** 20);
    const refused = await failure(readRequestBody(request(bomb, { "Content-Encoding": "gzip" }), 2 ** 20));
    expect(refused.status).toBe(413);
    expect(refused.message).toBe("request body is larger than the limit of 1048576 bytes once decompressed");
    // An honest Content-Length over the limit is refused before anything is read.
    const declared = await failure(readRequestBody(request("x".repeat(20), { "Content-Length": "20" }), 10));
    expect(declared.status).toBe(413);
  });

  test("an unknown encoding is 415; corrupt data and a body that breaks off are 400", async () => {
    expect((await failure(readRequestBody(request(text, { "Content-Encoding": "br" }), 1024))).status).toBe(
      415,
    );
    // Every layer is a decompressor: three are refused before any is stacked.
    const layered = await failure(
      readRequestBody(
        request(gzipSync(gzipSync(gzipSync(text))), { "Content-Encoding": "gzip, gzip, gzip" }),
        1024,
      ),
    );
    expect(layered.status).toBe(415);
    expect(layered.message).toMatch(/3 Content-Encoding layers/);
    const corrupt = await failure(readRequestBody(request("plain", { "Content-Encoding": "gzip" }), 1024));
    expect(corrupt.status).toBe(400);
    expect(corrupt.message).toBe("request body is not valid gzip data, or it broke off");
    const truncated = gzipSync(text).subarray(0, 10);
    expect(
      (await failure(readRequestBody(request(truncated, { "Content-Encoding": "gzip" }), 1024))).status,
    ).toBe(400);
    const breaking = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.error(new Error("socket hang up"));
      },
    });
    const broke = await failure(readRequestBody(request(breaking), 1024));
    expect(broke.status).toBe(400);
    expect(broke.message).toMatch(/could not be read/);
  });

  test("a plain body of a declared length is read whole, and the limit and a break still hold", async () => {
    const declared = (body: RequestInit["body"], length: string) =>
      request(body, { "Content-Length": length });
    const bytes = new TextEncoder().encode(text);
    expect(await readRequestBody(declared(bytes, String(bytes.byteLength)), 1024)).toEqual(bytes);
    // A Request built in code is not held to its Content-Length as HTTP framing holds one: the limit is
    // checked on what was read, and a length that is not a number takes the streaming path.
    const lying = await failure(readRequestBody(declared("x".repeat(100), "5"), 10));
    expect(lying.status).toBe(413);
    expect(lying.message).toBe("request body is larger than the limit of 10 bytes");
    expect((await failure(readRequestBody(declared("x".repeat(100), "abc"), 10))).status).toBe(413);
    const breaking = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.error(new Error("socket hang up"));
      },
    });
    const broke = await failure(readRequestBody(declared(breaking, "100"), 1024));
    expect(broke.status).toBe(400);
    expect(broke.message).toMatch(/could not be read/);
  });

  test("a compressed body is read to its end before it is decompressed: a refusal never cuts off its sender", async () => {
    // What local workerd answers a cancel of a body still arriving with: a dropped connection, not our answer.
    const sent = (chunks: Uint8Array[]) => {
      const state = { pulled: 0, cancelled: false };
      const stream = new ReadableStream<Uint8Array>({
        // A chunk a turn, as from a socket: the decompression sees the first long before the last comes.
        async pull(controller) {
          await new Promise((resolve) => setImmediate(resolve));
          const chunk = chunks[state.pulled];
          state.pulled += 1;
          if (chunk === undefined) controller.close();
          else controller.enqueue(chunk);
        },
        cancel() {
          state.cancelled = true;
        },
      });
      return { state, request: request(stream, { "Content-Encoding": "gzip" }) };
    };
    const notGzip = sent(Array.from({ length: 64 }, () => new Uint8Array(1024).fill(7)));
    expect((await failure(readRequestBody(notGzip.request, 2 ** 20))).status).toBe(400);
    expect(notGzip.state).toEqual({ pulled: 65, cancelled: false });
    const bomb = gzipSync(Buffer.alloc(8 * 2 ** 20));
    const chunks = Array.from({ length: 16 }, (_, index) =>
      bomb.subarray(Math.floor((index * bomb.length) / 16), Math.floor(((index + 1) * bomb.length) / 16)),
    );
    const inflating = sent(chunks);
    expect((await failure(readRequestBody(inflating.request, 2 ** 20))).status).toBe(413);
    expect(inflating.state).toEqual({ pulled: 17, cancelled: false });
  });

  test("data that does not compress, at the limit, is read although gzip made it a little larger", async () => {
    const random = randomBytes(4096);
    const compressed = gzipSync(random);
    expect(compressed.byteLength).toBeGreaterThan(4096);
    const read = await readRequestBody(
      request(compressed, { "Content-Encoding": "gzip", "Content-Length": String(compressed.byteLength) }),
      4096,
    );
    expect(Buffer.from(read).equals(Buffer.from(random))).toBe(true);
  });

  test("no body is an empty body", async () => {
    expect(await readRequestBody(new Request("http://x/"), 10)).toEqual(new Uint8Array(0));
  });
});
