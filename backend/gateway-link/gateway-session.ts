import type WebSocket from "ws";
import type { RawData } from "ws";
import { modelKey } from "../../shared/model-names.ts";
import {
  decodeTextFrame,
  type GatewayTextFrame,
  GatewayTextFrameSchema,
  type Hello,
  MAX_SIGNATURES_PER_FRAME,
  PROTOCOL_VERSION,
  type StateFrame,
  type Welcome,
} from "../../shared/protocol/frames.ts";
import { HEARTBEAT_PING, HEARTBEAT_PONG } from "../../shared/protocol/heartbeat.ts";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";

import type { Log } from "../log.ts";
import type { ModelService } from "../models/model-service.ts";
import { Heartbeat } from "./heartbeat.ts";
import { InferHandler } from "./infer-handler.ts";
import type { LinkedReplica } from "./linked-replica.ts";
import { answerQuery } from "./query-handler.ts";
import { StateReporter } from "./state-reporter.ts";

/** A gateway that accepted the socket but never welcomes the agent is as good as down. */
const WELCOME_TIMEOUT_MS = 15_000;
/** How long a draining agent waits, with nothing in flight, for infer frames that crossed its drain frame. */
const DRAIN_LINGER_MS = 250;
/** After the close handshake starts, how long the gateway gets to answer it before the socket is cut. */
const CLOSE_HANDSHAKE_MS = 2_000;

export interface SessionOptions {
  /** The control socket, to the pool's registry. */
  socket: WebSocket;
  /** The data socket, to the agent's relay (shared/protocol/data-channel.ts), opened with `channel`. */
  dataSocket: WebSocket;
  channel: string;
  replicas: readonly LinkedReplica[];
  hints: readonly string[];
  agent: Hello["agent"];
  /** Descriptions, statistics and model control, for the hello and the gateway's queries. */
  models: ModelService;
  /** The agent takes its models from the gateway's own repository. */
  modelsFromGateway: boolean;
  log: Log;
}

export interface SessionEnd {
  code: number;
  reason: string;
  /** How long the gateway had welcomed the agent; absent when it never did. */
  welcomedMs?: number;
  /** Why the socket failed, when it did (refused, unreachable, ...). */
  failure?: string;
}

/**
 * One connection to the gateway, from open to close: its control socket (hello, state reports, queries,
 * drain) and its data socket (infer frames handed to the InferHandler, their results and errors, cancels).
 * The hello goes once both are open, so that the gateway can reach the agent's data socket by the time it
 * routes to it; heartbeats run on both once the gateway welcomes the agent. Either socket ending ends the
 * session, and a new connection is a new session (both sockets, a new channel), so nothing from a dead
 * socket leaks into the next one.
 */
export class GatewaySession {
  readonly ended: Promise<SessionEnd>;
  readonly #options: SessionOptions;
  readonly #socket: WebSocket;
  readonly #data: WebSocket;
  readonly #handler: InferHandler;
  readonly #reporter: StateReporter;
  #heartbeat: Heartbeat | undefined;
  #dataHeartbeat: Heartbeat | undefined;
  #welcomeTimer: ReturnType<typeof setTimeout> | undefined;
  #welcomedAt: number | undefined;
  #failure: string | undefined;
  /** How many of the signatures known (in the order learned) this connection has carried: each goes once. */
  #signaturesSent = 0;

  constructor(options: SessionOptions) {
    this.#options = options;
    this.#socket = options.socket;
    this.#data = options.dataSocket;
    this.#handler = new InferHandler({
      replicas: new Map(options.replicas.map((replica) => [replica.id, replica])),
      send: (frame) => this.#sendData(frame),
      log: options.log,
    });
    this.#reporter = new StateReporter(
      (whole) => options.replicas.map((replica) => replica.frameState(whole)),
      (replicas) => {
        const state: StateFrame = { type: "state", replicas, signatures: this.#unsentSignatures() };
        this.#send(JSON.stringify(state));
      },
    );
    this.ended = new Promise((resolve) => {
      this.#socket.on("close", (code, reason) => {
        this.#teardown();
        terminate(this.#data);
        resolve({
          code,
          reason: reason.toString("utf8"),
          ...(this.#welcomedAt === undefined ? {} : { welcomedMs: Date.now() - this.#welcomedAt }),
          ...(this.#failure === undefined ? {} : { failure: this.#failure }),
        });
      });
    });
    const opened = (socket: WebSocket) =>
      new Promise<void>((resolve) => {
        if (socket.readyState === socket.OPEN) resolve();
        else socket.once("open", () => resolve());
      });
    void Promise.all([opened(this.#socket), opened(this.#data)]).then(() => this.#opened());
    this.#socket.on("message", (data, isBinary) => this.#received(data, isBinary));
    this.#data.on("message", (data, isBinary) => this.#receivedData(data, isBinary));
    // The close event follows every error; the link logs the outcome then.
    this.#socket.on("error", (error) => {
      this.#failure = describeSocketError(error);
    });
    this.#data.on("error", (error) => {
      this.#failure ??= `data socket: ${describeSocketError(error)}`;
    });
    // The data socket's end is the session's: the control socket closes too, and the link dials again.
    this.#data.on("close", (code, reason) => {
      if (this.#socket.readyState === this.#socket.CLOSED) return;
      this.#failure ??= `the data socket closed (${code}${reason.length > 0 ? `: ${reason.toString("utf8")}` : ""})`;
      this.close(1001, "the data socket closed");
    });
  }

  /** A replica changed: the gateway hears about it (coalesced), and of the signature of a model it loaded. */
  replicaChanged(state: ReplicaState): void {
    this.#reporter.changed();
    this.#describeLoaded(state);
  }

  /**
   * Models loaded on the replica that the gateway has no signature of yet are described, then reported. What
   * it costs per change is the replica's loaded models, not every model the agent knows.
   */
  #describeLoaded(state: ReplicaState): void {
    for (const model of state.loaded) {
      if (this.#options.models.isDescribed(model.name, model.version)) continue;
      this.#options.models.describe(model.name, model.version).then(
        () => this.#reporter.changed(),
        (error: unknown) =>
          this.#options.log("model cannot be described", { model: modelKey(model), error: String(error) }),
      );
    }
  }

  /** Signatures this connection has not carried yet, a frame's worth; more to come sets off another frame. */
  #unsentSignatures(): ModelSignature[] {
    const unsent = this.#options.models.signaturesFrom(this.#signaturesSent);
    const portion = unsent.slice(0, MAX_SIGNATURES_PER_FRAME);
    this.#signaturesSent += portion.length;
    if (unsent.length > portion.length) queueMicrotask(() => this.#reporter.changed());
    return portion;
  }

  /**
   * Tells the gateway to send nothing more, lets the requests in flight finish (up to graceMs), then closes
   * with 1001 (going away). Requests still running after the grace are abandoned.
   */
  async drain(graceMs: number): Promise<void> {
    this.#handler.refuseNew("the agent is draining");
    if (this.#socket.readyState === this.#socket.OPEN) {
      this.#send(JSON.stringify({ type: "drain" }));
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<"grace">((resolve) => {
        graceTimer = setTimeout(() => resolve("grace"), graceMs);
      });
      await Promise.race([this.#settled(), grace, this.ended]);
      clearTimeout(graceTimer);
      if (this.#handler.inFlight > 0) {
        this.#options.log("gateway link: grace over, abandoning requests", {
          inFlight: this.#handler.inFlight,
        });
      }
    }
    this.close(1001, "agent draining");
    await this.ended;
  }

  /**
   * Resolves once nothing is in flight and nothing new came in for DRAIN_LINGER_MS: infer frames the gateway
   * sent before it read the drain frame are still on their way, and an answer (503, not started) lets the
   * gateway send them elsewhere, where a closed socket would leave them failed.
   */
  async #settled(): Promise<void> {
    for (;;) {
      await this.#handler.idle();
      await new Promise((resolve) => setTimeout(resolve, DRAIN_LINGER_MS));
      if (this.#handler.inFlight === 0) return;
    }
  }

  /** Closes both sockets (with a close handshake when open); `ended` resolves once the control one is closed. */
  close(code: number, reason: string): void {
    closeWithHandshake(this.#data, code, reason);
    closeWithHandshake(this.#socket, code, reason);
  }

  #opened(): void {
    void this.#sayHello().catch((error: unknown) => {
      this.#options.log("gateway link: the hello could not be built", { error: String(error) });
      this.#socket.terminate();
    });
    this.#welcomeTimer = setTimeout(() => {
      this.#options.log("gateway link: no welcome from the gateway", { waitedMs: WELCOME_TIMEOUT_MS });
      this.#socket.terminate();
    }, WELCOME_TIMEOUT_MS);
    this.#welcomeTimer.unref();
  }

  async #sayHello(): Promise<void> {
    const repository = await this.#options.models.repositoryOffer(this.#options.modelsFromGateway);
    const hello: Hello = {
      type: "hello",
      protocol: PROTOCOL_VERSION,
      agent: this.#options.agent,
      hints: [...this.#options.hints],
      replicas: this.#options.replicas.map((replica) => replica.state()),
      signatures: this.#unsentSignatures(),
      repository,
      channel: this.#options.channel,
    };
    this.#send(JSON.stringify(hello));
  }

  /** The data socket: infer frames, cancels, heartbeats. */
  #receivedData(data: RawData, isBinary: boolean): void {
    this.#dataHeartbeat?.heard();
    if (isBinary) {
      this.#handler.handle(toBytes(data));
      return;
    }
    const text = new TextDecoder().decode(toBytes(data));
    if (this.#answeredHeartbeat(text, this.#data)) return;
    const frame = this.#parse(text);
    if (frame?.type === "cancel") this.#handler.cancel(frame.id);
    else if (frame !== undefined) this.#ignored(`${frame.type} frame on the data socket`, text);
  }

  /** The control socket: welcome, queries, heartbeats. */
  #received(data: RawData, isBinary: boolean): void {
    this.#heartbeat?.heard();
    if (isBinary) {
      this.#ignored("binary frame on the control socket", "");
      return;
    }
    const text = new TextDecoder().decode(toBytes(data));
    if (this.#answeredHeartbeat(text, this.#socket)) return;
    const frame = this.#parse(text);
    if (frame === undefined) return;
    if (frame.type === "query") {
      void answerQuery(frame, this.#options.models).then((answer) => this.#send(JSON.stringify(answer)));
    } else if (frame.type === "welcome") this.#welcome(frame);
    else this.#ignored(`${frame.type} frame on the control socket`, text);
  }

  /** A heartbeat on either socket: a "ping" is answered on it. True when `text` was one. */
  #answeredHeartbeat(text: string, socket: WebSocket): boolean {
    if (text === HEARTBEAT_PING) this.#sendOn(socket, HEARTBEAT_PONG);
    return text === HEARTBEAT_PING || text === HEARTBEAT_PONG;
  }

  #parse(text: string): GatewayTextFrame | undefined {
    try {
      return decodeTextFrame(text, GatewayTextFrameSchema);
    } catch (error) {
      // A gateway newer than this agent may say things it does not know: log, and carry on.
      this.#ignored((error as Error).message, text);
      return undefined;
    }
  }

  #ignored(why: string, frame: string): void {
    this.#options.log("gateway link: ignored a frame", { error: why, frame: frame.slice(0, 200) });
  }

  #welcome(welcome: Welcome): void {
    if (this.#welcomedAt !== undefined) return;
    clearTimeout(this.#welcomeTimer);
    this.#welcomedAt = Date.now();
    this.#options.log("connected to the gateway", {
      agentId: welcome.agentId,
      heartbeatMs: welcome.heartbeatMs,
    });
    // Each socket is watched on its own; either going silent ends the connection (both sockets).
    const watch = (socket: WebSocket, who: string) =>
      new Heartbeat({
        intervalMs: welcome.heartbeatMs,
        send: (text) => this.#sendOn(socket, text),
        onDead: (silentBeats) => {
          this.#options.log(`gateway link: ${who} went silent, reconnecting`, {
            silentMs: silentBeats * welcome.heartbeatMs,
          });
          this.#socket.terminate();
        },
      });
    this.#heartbeat = watch(this.#socket, "the gateway");
    this.#dataHeartbeat = watch(this.#data, "the data socket");
    this.#reporter.start();
    // Whatever changed between the hello and now.
    this.#reporter.changed();
  }

  #send(frame: Uint8Array | string): void {
    this.#sendOn(this.#socket, frame);
  }

  #sendData(frame: Uint8Array | string): void {
    this.#sendOn(this.#data, frame);
  }

  #sendOn(socket: WebSocket, frame: Uint8Array | string): void {
    if (socket.readyState !== socket.OPEN) return;
    socket.send(frame, (error) => {
      if (error) this.#options.log("gateway link: send failed", { error: error.message });
    });
  }

  #teardown(): void {
    clearTimeout(this.#welcomeTimer);
    this.#heartbeat?.stop();
    this.#dataHeartbeat?.stop();
    this.#reporter.stop();
    this.#handler.abandonAll();
  }
}

function terminate(socket: WebSocket): void {
  if (socket.readyState !== socket.CLOSED) socket.terminate();
}

/** Starts a close handshake on an open socket (cut after CLOSE_HANDSHAKE_MS); any other is terminated. */
function closeWithHandshake(socket: WebSocket, code: number, reason: string): void {
  if (socket.readyState === socket.CLOSED) return;
  if (socket.readyState !== socket.OPEN) {
    socket.terminate();
    return;
  }
  socket.close(code, reason);
  const cut = setTimeout(() => socket.terminate(), CLOSE_HANDSHAKE_MS);
  cut.unref();
  socket.once("close", () => clearTimeout(cut));
}

/** ws reports a refused upgrade as "Unexpected server response: 401"; say what the operator should check. */
function describeSocketError(error: Error): string {
  const status = /Unexpected server response: (\d+)/.exec(error.message)?.[1];
  if (status === "401" || status === "403")
    return `the gateway refused the agent token (${status}): check --token`;
  if (status === "404") return "the gateway has no /agent/connect (404): check --gateway";
  return error.message;
}

/**
 * A message as a plain Uint8Array view (no copy). ws hands out Buffers, often views into a larger pooled
 * ArrayBuffer, whose slice() differs from Uint8Array's; the shared code expects Uint8Array semantics.
 */
function toBytes(data: RawData): Uint8Array {
  const buffer = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}
