import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeInferAnswer } from "../../../../backend/server/infer-answer-writer.ts";
import { HttpLoad } from "../../../../bench/hot-path/http-load.ts";

// The benchmark's client reads a server's stages from its Server-Timing header and, where the agent sends
// `send` as a trailer (--send-stage asks with TE: trailers), from the trailer too.

let server: Server;
let url: string;
const sockets = new Set<unknown>();
let connections = 0;

beforeAll(async () => {
  server = createServer((request, response) => {
    connections = new Set([...sockets, request.socket]).size;
    sockets.add(request.socket);
    request.resume();
    request.once("end", () =>
      writeInferAnswer(request, response, {
        headers: { "Content-Length": "2", "Server-Timing": "infer;dur=1.50, total;dur=2.00" },
        parts: [new TextEncoder().encode("{}")],
        byteLength: 2,
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  url = `http://127.0.0.1:${address.port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe("the hot-path benchmark's client", () => {
  it("keeps the header's stages, and `send` from the trailer when it asked for one", async () => {
    const client = new HttpLoad(url, 1);
    try {
      // On one kept-alive connection: a chunked answer with its trailer, then a plain one, then chunked again.
      const traced = await client.send({ path: "/", body: new Uint8Array(1), headers: { TE: "trailers" } });
      expect(Object.keys(traced.timing)).toEqual(["infer", "total", "send"]);
      expect(traced.timing.send).toBeGreaterThanOrEqual(0);
      expect(traced.body.toString()).toBe("{}");
      const plain = await client.send({ path: "/", body: new Uint8Array(1), headers: {} });
      expect(plain.timing).toEqual({ infer: 1.5, total: 2 });
      const again = await client.send({ path: "/", body: new Uint8Array(1), headers: { TE: "trailers" } });
      expect(Object.keys(again.timing)).toEqual(["infer", "total", "send"]);
      expect(connections).toBe(1);
    } finally {
      client.close();
    }
  });
});
