import { newChannelId } from "../../../shared/protocol/data-channel.ts";
import {
  AGENT_NAME_PARAM,
  type AgentRepository,
  decodeBinaryFrame,
  encodeBinaryFrame,
  type Hello,
  type InferHeader,
  InferHeaderSchema,
  PROTOCOL_VERSION,
  type ResultHeader,
  type Welcome,
} from "../../../shared/protocol/frames.ts";
import type { ModelSignature } from "../../../shared/protocol/model-signatures.ts";
import type { ReplicaState } from "../../../shared/protocol/replica-state.ts";
import { AGENT_TOKEN, gatewayFetch } from "./gateway.ts";

export interface ReceivedInfer {
  header: InferHeader;
  body: Uint8Array;
}

export interface FakeAgentOptions {
  name?: string;
  replicas: ReplicaState[];
  hints?: string[];
  signatures?: ModelSignature[];
  /** Where its models come from; the gateway's repository unless told. */
  repository?: AgentRepository;
}

/**
 * A test peer that speaks the agent side of the wire protocol over real websockets to the Worker: its
 * control socket (hello, state, drain; `socket`) and its data socket (infer frames received in order, result
 * and error frames sent back on command; `data`). As a real agent does, it closes the one when the other
 * closes.
 */
export class FakeAgent {
  /** The control socket, to the registry. */
  readonly socket: WebSocket;
  /** The data socket, to the agent's relay. */
  readonly data: WebSocket;
  readonly channel: string;
  readonly closed: Promise<{ code: number; reason: string }>;
  /** How the data socket ended. */
  readonly dataClosed: Promise<{ code: number; reason: string }>;
  readonly #infers: ReceivedInfer[] = [];
  readonly #texts: unknown[] = [];
  readonly #dataTexts: unknown[] = [];
  readonly #waiters: (() => void)[] = [];
  replicas: ReplicaState[];

  private constructor(socket: WebSocket, data: WebSocket, channel: string, replicas: ReplicaState[]) {
    this.socket = socket;
    this.data = data;
    this.channel = channel;
    this.replicas = replicas;
    const ended = (target: WebSocket, other: WebSocket) =>
      new Promise<{ code: number; reason: string }>((resolve) => {
        target.addEventListener("close", (event) => {
          resolve({ code: event.code, reason: event.reason });
          try {
            other.close(1000, "the other socket closed");
          } catch {
            // Closed already.
          }
          this.#wake();
        });
      });
    this.closed = ended(socket, data);
    this.dataClosed = ended(data, socket);
    socket.addEventListener("message", (event) => {
      if (typeof event.data === "string")
        this.#texts.push(event.data === "pong" ? "pong" : JSON.parse(event.data));
      this.#wake();
    });
    data.addEventListener("message", (event) => {
      if (typeof event.data === "string") {
        if (event.data !== "pong") this.#dataTexts.push(JSON.parse(event.data));
      } else {
        this.#infers.push(decodeBinaryFrame(new Uint8Array(event.data as ArrayBuffer), InferHeaderSchema));
      }
      this.#wake();
    });
  }

  /** Opens both websockets (no hello yet). */
  static async open(
    pool: string,
    replicas: ReplicaState[],
    token = AGENT_TOKEN,
    name = "agent",
  ): Promise<FakeAgent> {
    const channel = newChannelId();
    const data = await upgrade(`/agent/data?pool=${pool}&channel=${channel}`, token);
    const socket = await upgrade(
      `/agent/connect?pool=${pool}&${AGENT_NAME_PARAM}=${encodeURIComponent(name)}`,
      token,
    );
    return new FakeAgent(socket, data, channel, replicas);
  }

  /** Opens the websocket, says hello and waits for the welcome. */
  static async connect(pool: string, options: FakeAgentOptions): Promise<FakeAgent & { welcome: Welcome }> {
    const name = options.name ?? "agent";
    const agent = await FakeAgent.open(pool, options.replicas, AGENT_TOKEN, name);
    agent.sendHello({ ...options, name });
    const welcome = (await agent.nextText()) as Welcome;
    if (welcome.type !== "welcome") throw new Error(`expected welcome, got ${JSON.stringify(welcome)}`);
    return Object.assign(agent, { welcome });
  }

  /** Says hello as a real agent would: its replicas, on its own channel, unless told otherwise. */
  sendHello(options: Partial<FakeAgentOptions> & { name: string; channel?: string }): void {
    const hello: Hello = {
      type: "hello",
      protocol: PROTOCOL_VERSION,
      agent: { name: options.name, version: "test" },
      hints: options.hints ?? [],
      replicas: options.replicas ?? this.replicas,
      signatures: options.signatures ?? [],
      repository: options.repository ?? { kind: "gateway" },
      channel: options.channel ?? this.channel,
    };
    this.sendJson(hello);
  }

  /** The first of `agents` to receive an infer frame, and that frame (for tests that do not care which). */
  static async firstInfer(
    agents: readonly FakeAgent[],
    timeoutMs = 5000,
  ): Promise<[FakeAgent, ReceivedInfer]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const agent = agents.find((candidate) => candidate.pendingInfers > 0);
      if (agent !== undefined) return [agent, await agent.nextInfer()];
      if (Date.now() > deadline) throw new Error("timed out waiting for an infer frame at any agent");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** A JSON frame on the control socket. */
  sendJson(frame: object): void {
    this.socket.send(JSON.stringify(frame));
  }

  /** A JSON frame on the data socket. */
  sendDataJson(frame: object): void {
    this.data.send(JSON.stringify(frame));
  }

  /** Text frames received on the data socket (cancels), not yet taken. */
  async nextDataText(timeoutMs = 5000): Promise<unknown> {
    await this.#until(() => this.#dataTexts.length > 0, timeoutMs, "a text frame on the data socket");
    return this.#dataTexts.shift();
  }

  async nextInfer(timeoutMs = 5000): Promise<ReceivedInfer> {
    await this.#until(() => this.#infers.length > 0, timeoutMs, "an infer frame");
    return this.#infers.shift() as ReceivedInfer;
  }

  async nextText(timeoutMs = 5000): Promise<unknown> {
    await this.#until(() => this.#texts.length > 0, timeoutMs, "a text frame");
    return this.#texts.shift();
  }

  /** Infer frames received and not yet taken. */
  get pendingInfers(): number {
    return this.#infers.length;
  }

  /** Answers with a result frame (the body is the OIP response as the client gets it). */
  answer(
    infer: ReceivedInfer,
    options: { cache?: "hit" | "miss"; state?: ReplicaState; body?: string } = {},
  ): void {
    const header: ResultHeader = {
      type: "result",
      id: infer.header.id,
      replica: infer.header.replica,
      model: { name: infer.header.model, version: infer.header.version ?? "1" },
      cache: options.cache ?? "hit",
      timings: { queueMs: 1, loadMs: options.cache === "miss" ? 5 : 0, inferMs: 2 },
      contentType: "application/json",
      ...(options.state === undefined ? {} : { state: options.state }),
    };
    const body =
      options.body ??
      JSON.stringify({
        model_name: infer.header.model,
        model_version: "1",
        outputs: [],
        id: infer.header.id,
      });
    this.data.send(encodeBinaryFrame(header, new TextEncoder().encode(body)));
  }

  fail(
    infer: ReceivedInfer,
    options: { status: number; message: string; started: boolean; state?: ReplicaState },
  ): void {
    this.sendDataJson({
      type: "error",
      id: infer.header.id,
      replica: infer.header.replica,
      status: options.status,
      message: options.message,
      started: options.started,
      ...(options.state === undefined ? {} : { state: options.state }),
    });
  }

  close(code = 1000, reason = "bye"): void {
    this.socket.close(code, reason);
  }

  #wake(): void {
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  async #until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (this.socket.readyState === WebSocket.CLOSED)
        throw new Error(`socket closed while waiting for ${what}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(remaining, 50));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

async function upgrade(path: string, token: string): Promise<WebSocket> {
  const response = await gatewayFetch(path, {
    headers: { Upgrade: "websocket", Authorization: `Bearer ${token}` },
  });
  const socket = response.webSocket;
  if (socket === null) throw new Error(`no websocket: ${response.status} ${await response.text()}`);
  // Recent compatibility dates deliver binary messages as Blobs by default.
  socket.binaryType = "arraybuffer";
  socket.accept();
  return socket;
}
