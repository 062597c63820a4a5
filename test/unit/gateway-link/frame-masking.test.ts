import { once } from "node:events";
import { type AddressInfo, connect, createServer } from "node:net";
import { describe, expect, test } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { maskingFor } from "../../../backend/gateway-link/frame-masking.ts";

describe("masking the agent's frames", () => {
  test.each([
    ["wss://gateway.example.com/agent/connect", false],
    ["ws://127.0.0.1:8787/agent/connect", false],
    ["ws://localhost:8787/agent/connect", false],
    ["ws://[::1]:8787/agent/connect", false],
    ["ws://gateway.internal:8787/agent/connect", true],
    ["ws://10.0.0.7:8787/agent/connect", true],
  ])("%s: masked %s", (url, masked) => {
    expect(maskingFor(url).generateMask === undefined).toBe(masked);
  });

  test("on loopback a frame goes out in clear and a real websocket server reads it whole", async () => {
    const server = new WebSocketServer({ port: 0, host: "127.0.0.1" });
    await once(server, "listening");
    const received = new Promise<Buffer>((resolve) =>
      server.once("connection", (socket) => socket.once("message", (data) => resolve(data as Buffer))),
    );
    // A TCP relay in between keeps every byte the client wrote.
    const written: Buffer[] = [];
    const relay = createServer((incoming) => {
      const outgoing = connect((server.address() as AddressInfo).port, "127.0.0.1");
      incoming.on("data", (chunk: Buffer) => {
        written.push(chunk);
        outgoing.write(chunk);
      });
      outgoing.pipe(incoming);
    });
    relay.listen(0, "127.0.0.1");
    await once(relay, "listening");
    const url = `ws://127.0.0.1:${(relay.address() as AddressInfo).port}/`;
    const client = new WebSocket(url, { perMessageDeflate: false, ...maskingFor(url) });
    await once(client, "open");
    const payload = Buffer.from("a result frame's bytes, as they are ".repeat(100));
    client.send(payload);
    expect((await received).equals(payload)).toBe(true);
    expect(Buffer.concat(written).includes(payload)).toBe(true);
    client.close();
    relay.close();
    server.close();
  });
});
