import { createServer, request as httpRequest, type Server } from "node:http";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeInferAnswer } from "../../../backend/server/infer-answer-writer.ts";
import type { InferAnswer } from "../../../backend/server/standalone-infer.ts";

// The writer on a real node:http server, read by real clients: the send stage as a Server-Timing trailer
// for exactly the clients that accept trailers over HTTP/1.1, the same bytes for every client.

// A JSON header and two binary parts, the second large enough (4 MiB) that the socket takes it in several
// writes: the trailer must still come after the body's last byte.
const parts = [
  new TextEncoder().encode('{"outputs":[]}'),
  Uint8Array.from({ length: 1000 }, (_, index) => index % 256),
  Uint8Array.from({ length: 4 * 2 ** 20 }, (_, index) => (index * 7) % 256),
];
const byteLength = parts.reduce((sum, part) => sum + part.byteLength, 0);
const expected = Buffer.concat(parts);
// More than loopback's socket buffers hold (a few MiB each way): its end leaves only as the client reads.
const large = [new Uint8Array(48 * 2 ** 20)];

let server: Server;
let port: number;

beforeAll(async () => {
  server = createServer((request, response) => {
    request.resume();
    const body = request.url === "/large" ? large : parts;
    const length = body.reduce((sum, part) => sum + part.byteLength, 0);
    const answer: InferAnswer = {
      headers: { "Content-Type": "application/octet-stream", "Content-Length": String(length) },
      parts: body,
      byteLength: length,
    };
    request.once("end", () => writeInferAnswer(request, response, answer));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  port = address.port;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** A request through node:http with these headers: the answer's headers, body and trailers. */
function post(headers: Record<string, string>) {
  return new Promise<{ headers: Record<string, unknown>; body: Buffer; trailers: Record<string, unknown> }>(
    (resolve, reject) => {
      const call = httpRequest(
        { host: "127.0.0.1", port, method: "POST", path: "/", headers },
        (response) => {
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => chunks.push(chunk));
          response.on("end", () =>
            resolve({ headers: response.headers, body: Buffer.concat(chunks), trailers: response.trailers }),
          );
        },
      );
      call.on("error", reject);
      call.end();
    },
  );
}

describe("writing an inference's answer", () => {
  it.each([["trailers"], ["gzip, trailers"], ["deflate;q=0.5, Trailers;q=1"]])(
    "TE: %s gets the body chunked, then `send` as a Server-Timing trailer",
    async (te) => {
      const answer = await post({ TE: te });
      expect(answer.body.equals(expected)).toBe(true);
      expect(answer.headers).toMatchObject({ "transfer-encoding": "chunked", trailer: "Server-Timing" });
      expect(answer.headers["content-length"]).toBeUndefined();
      expect(answer.trailers["server-timing"]).toMatch(/^send;dur=\d+\.\d\d$/);
    },
  );

  it.each([[undefined], ["gzip"], ["trailer"]])(
    "TE: %s gets the answer with its Content-Length and no trailer",
    async (te) => {
      const answer = await post(te === undefined ? {} : { TE: te });
      expect(answer.body.equals(expected)).toBe(true);
      expect(answer.headers["content-length"]).toBe(String(byteLength));
      expect(answer.headers.trailer).toBeUndefined();
      expect(answer.trailers).toEqual({});
    },
  );

  it("`send` lasts until the kernel took the body: a client that reads late makes it long", async () => {
    // The 48 MiB body does not fit the sockets' buffers: its last bytes leave only once the client reads.
    const raw = await rawExchange(
      "POST /large HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
      600,
    );
    const trailer = /\r\n0\r\nServer-Timing: send;dur=([\d.]+)\r\n\r\n$/i.exec(raw.toString("latin1"));
    expect(Number(trailer?.[1])).toBeGreaterThan(300);
  });

  it("a pipelined answer's `send` starts when the answer before it has left, not while it waits", async () => {
    const raw = await rawExchange(
      "POST /large HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nContent-Length: 0\r\n\r\n" +
        "POST / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
      600,
    );
    const sends = [...raw.toString("latin1").matchAll(/\r\n0\r\nServer-Timing: send;dur=([\d.]+)\r\n/gi)];
    expect(sends.map((match) => Number(match[1]) > 300)).toEqual([true, false]);
  });

  it("an HTTP/1.0 client, which cannot take a chunked body, gets no trailer even if it asks", async () => {
    const raw = await rawExchange("POST / HTTP/1.0\r\nTE: trailers\r\nContent-Length: 0\r\n\r\n");
    const split = raw.indexOf("\r\n\r\n");
    const head = raw.subarray(0, split).toString("latin1");
    expect(head).toMatch(new RegExp(`\r\nContent-Length: ${byteLength}\r\n`, "i"));
    expect(head).not.toMatch(/transfer-encoding|trailer/i);
    expect(raw.subarray(split + 4).equals(expected)).toBe(true);
  });
});

/** Sends `request` as written on a socket of its own, reads nothing for `pauseMs`, then all until the end. */
function rawExchange(request: string, pauseMs = 0): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => {
      socket.write(request);
      socket.pause();
      setTimeout(() => socket.resume(), pauseMs);
    });
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("end", () => resolve(Buffer.concat(chunks)));
    socket.on("error", reject);
  });
}
