import type { IncomingMessage } from "node:http";
import WebSocket, { type RawData, WebSocketServer } from "ws";
import { encodeBinaryFrame, type InferHeader, PROTOCOL_VERSION } from "../../../shared/protocol/frames.ts";

/**
 * A stand-in gateway that a test drives frame by frame: it accepts agents on /agent/connect (control) and
 * /agent/data (data, shared/protocol/data-channel.ts), records everything they send on either with its
 * arrival time, and sends whatever the test scripts, malformed frames included (infer frames on the data
 * socket the agent's hello names). It checks what the real gateway leaves to the protocol, so an agent's side can be held to it
 * exactly (the real gateway is tested end to end elsewhere).
 */
export interface ReceivedFrame {
  at: number;
  text?: string;
  binary?: Uint8Array;
  /** The socket it came on. */
  on: "control" | "data";
}

export class AgentConnection {
  readonly socket: WebSocket;
  readonly request: IncomingMessage;
  readonly frames: ReceivedFrame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  /** Answer "ping" with "pong" (a test turns it off to play dead). */
  answerPings = true;
  readonly #watchers = new Set<() => void>();
  readonly #dataSocket: (channel: string) => WebSocket | undefined;

  constructor(
    socket: WebSocket,
    request: IncomingMessage,
    dataSocket: (channel: string) => WebSocket | undefined,
  ) {
    this.socket = socket;
    this.request = request;
    this.#dataSocket = dataSocket;
    this.closed = new Promise((resolve) =>
      socket.once("close", (code, reason) => resolve({ code, reason: reason.toString("utf8") })),
    );
    socket.on("message", (data, isBinary) => this.record(socket, "control", data, isBinary));
  }

  /** The channel the agent's hello named (once it said hello). */
  get channel(): string | undefined {
    const hello = this.json().find((frame) => frame.type === "hello");
    return typeof hello?.channel === "string" ? hello.channel : undefined;
  }

  /** The agent's data socket, once it said hello naming it. */
  get data(): WebSocket {
    const channel = this.channel;
    const data = channel === undefined ? undefined : this.#dataSocket(channel);
    if (data === undefined) throw new Error("the agent has no data socket (yet)");
    return data;
  }

  /** A frame from either of the agent's sockets. */
  record(from: WebSocket, on: "control" | "data", data: RawData, isBinary: boolean): void {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    const frame: ReceivedFrame = isBinary
      ? { at: performance.now(), binary: new Uint8Array(bytes), on }
      : { at: performance.now(), text: bytes.toString("utf8"), on };
    if (frame.text === "ping" && this.answerPings) from.send("pong");
    this.frames.push(frame);
    for (const watcher of this.#watchers) watcher();
  }

  /** JSON text frames (heartbeats left out), parsed. */
  json(): Array<Record<string, unknown> & { type: string; at: number; on: "control" | "data" }> {
    return this.frames
      .filter((frame) => frame.text !== undefined && frame.text !== "ping" && frame.text !== "pong")
      .map((frame) => ({
        ...(JSON.parse(frame.text ?? "") as { type: string }),
        at: frame.at,
        on: frame.on,
      }));
  }

  /** The first received frame (now or later) that `match` accepts. */
  waitFor<T>(what: string, match: (frame: ReceivedFrame) => T | undefined, timeoutMs = 15_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (const frame of this.frames) {
          const found = match(frame);
          if (found !== undefined) {
            finish();
            resolve(found);
            return;
          }
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.#watchers.delete(check);
      };
      this.#watchers.add(check);
      check();
    });
  }

  /** The first JSON frame of `type` that `match` accepts. */
  waitForJson(
    type: string,
    match: (frame: Record<string, unknown>) => boolean = () => true,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>> {
    return this.waitFor(
      `${type} frame`,
      (frame) => {
        if (frame.text === undefined || !frame.text.startsWith("{")) return undefined;
        const parsed = JSON.parse(frame.text) as Record<string, unknown>;
        return parsed.type === type && match(parsed) ? parsed : undefined;
      },
      timeoutMs,
    );
  }

  welcome(heartbeatMs: number): void {
    this.socket.send(
      JSON.stringify({ type: "welcome", protocol: PROTOCOL_VERSION, agentId: "scripted", heartbeatMs }),
    );
  }

  infer(header: Omit<InferHeader, "type">, body: Uint8Array | string): void {
    const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
    this.data.send(encodeBinaryFrame({ type: "infer", ...header }, bytes));
  }
}

export class ScriptedGateway {
  readonly server: WebSocketServer;
  readonly connections: AgentConnection[] = [];
  /** Data sockets by channel. */
  readonly #data = new Map<string, WebSocket>();
  readonly #watchers = new Set<() => boolean>();

  private constructor(server: WebSocketServer) {
    this.server = server;
    server.on("connection", (socket, request) => {
      const url = new URL(request.url ?? "/", "http://scripted");
      if (url.pathname === "/agent/data") {
        const channel = url.searchParams.get("channel") ?? "";
        this.#data.set(channel, socket);
        socket.on("message", (data, isBinary) =>
          this.connections
            .find((connection) => connection.channel === channel)
            ?.record(socket, "data", data, isBinary),
        );
        return;
      }
      if (url.pathname !== "/agent/connect") {
        socket.close(1008, "unknown path");
        return;
      }
      const connection = new AgentConnection(socket, request, (channel) => this.#data.get(channel));
      this.connections.push(connection);
      for (const watcher of this.#watchers) watcher();
    });
  }

  static start(): Promise<ScriptedGateway> {
    return new Promise((resolve) => {
      const server: WebSocketServer = new WebSocketServer({ host: "127.0.0.1", port: 0 }, () =>
        resolve(new ScriptedGateway(server)),
      );
    });
  }

  get url(): string {
    const address = this.server.address();
    return `ws://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`;
  }

  /** The agent's index-th connection (0: the first), once it has been made. */
  connection(index: number, timeoutMs = 30_000): Promise<AgentConnection> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const connection = this.connections[index];
        if (connection === undefined) return false;
        clearTimeout(timer);
        this.#watchers.delete(check);
        resolve(connection);
        return true;
      };
      const timer = setTimeout(() => {
        this.#watchers.delete(check);
        reject(new Error(`no connection #${index} within ${timeoutMs} ms`));
      }, timeoutMs);
      if (!check()) this.#watchers.add(check);
    });
  }

  async stop(): Promise<void> {
    for (const client of this.server.clients) client.terminate();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export { WebSocket };
