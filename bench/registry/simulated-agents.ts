/**
 * Simulated agents for the registry benchmark: N websocket sessions from this one process, each speaking the
 * real agent protocol (shared/protocol/frames.ts) as backend/gateway-link/ does: the same dial (agent token,
 * no compression), a hello that passes HelloSchema, "ping" every heartbeatMs from the welcome, a result
 * frame for every infer frame with the replica's state in it, and coalesced state frames at every change of
 * the replica (StateReporter, as the real agent sends them). Nothing runs a model: each infer is answered at
 * once with a prepared OIP response, so the gateway, not the agents, is what the benchmark loads.
 */

import type { RawData } from "ws";
import WebSocket from "ws";
import { agentConnectUrl, agentDataUrl } from "../../backend/gateway-link/gateway-urls.ts";
import { StateReporter } from "../../backend/gateway-link/state-reporter.ts";
import { ModelTimingsTable } from "../../backend/replica/model-timings.ts";
import { modelKey } from "../../shared/model-names.ts";
import type { EncodedBody } from "../../shared/oip/codec.ts";
import { newChannelId } from "../../shared/protocol/data-channel.ts";
import {
  decodeBinaryFrame,
  decodeTextFrame,
  encodeBinaryFrame,
  GatewayTextFrameSchema,
  type Hello,
  type InferHeader,
  InferHeaderSchema,
  PROTOCOL_VERSION,
  type ResultHeader,
  type StateFrame,
} from "../../shared/protocol/frames.ts";
import { HEARTBEAT_PING, HEARTBEAT_PONG } from "../../shared/protocol/heartbeat.ts";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";

export interface SimulatedModel {
  name: string;
  version: string;
  bytes: number;
}

export interface SimulatedAgentsOptions {
  /** ws://host:port of the gateway (GatewayProcess.wsUrl). */
  wsUrl: string;
  pool: string;
  token: string;
  count: number;
  model: SimulatedModel;
  signature: ModelSignature;
  /** Each agent's one replica takes this many requests at once. */
  maxConcurrency: number;
  /** The OIP response every result frame carries (encoded once: the body is what the registry relays). */
  response: EncodedBody;
  /** Send state frames at replica changes, as a real agent does (StateReporter); results carry state anyway. */
  stateFrames: boolean;
  /** How many sockets dial at once (a burst of 200 upgrades is not what is measured). */
  dialBatch?: number;
  welcomeTimeoutMs?: number;
}

/** What the agents saw and sent, summed over all of them. */
export interface AgentCounters {
  inferFrames: number;
  resultFrames: number;
  stateFrames: number;
  pings: number;
  cancels: number;
  queries: number;
  /** Frames the agents could not read, and sockets that closed before the benchmark closed them. */
  problems: string[];
}

const newCounters = (): AgentCounters => ({
  inferFrames: 0,
  resultFrames: 0,
  stateFrames: 0,
  pings: 0,
  cancels: 0,
  queries: 0,
  problems: [],
});

/**
 * One replica's state as the real one (backend/replica/replica.ts) reports it: the model loaded, the
 * requests in it, and running timings, so every result's state differs from the last one, as with a real
 * replica, and the registry does the same work for it (routing update, attachment write).
 */
class SimulatedReplica {
  readonly id = "0";
  readonly #model: SimulatedModel;
  readonly #maxConcurrency: number;
  readonly #timings = new ModelTimingsTable();
  #inFlight = 0;
  #lastUsedAt = performance.now();

  constructor(model: SimulatedModel, maxConcurrency: number) {
    this.#model = model;
    this.#maxConcurrency = maxConcurrency;
    // It was loaded before the agent joined: the router sees a warm copy.
    this.#timings.recordLoad(modelKey(model), 250);
  }

  started(): void {
    this.#inFlight += 1;
  }

  finished(runMs: number): void {
    this.#inFlight -= 1;
    this.#lastUsedAt = performance.now();
    this.#timings.recordRun(modelKey(this.#model), runMs);
  }

  #seq = 0;

  state(): ReplicaState {
    // Each snapshot later than the last, as a real replica numbers them.
    this.#seq += 1;
    return {
      id: this.id,
      seq: this.#seq,
      device: "cpu",
      maxConcurrency: this.#maxConcurrency,
      inFlight: this.#inFlight,
      queued: 0,
      maxModels: 4,
      memoryBudgetBytes: 8 * 2 ** 30,
      memoryUsedBytes: this.#model.bytes,
      loaded: [
        {
          name: this.#model.name,
          version: this.#model.version,
          bytes: this.#model.bytes,
          inFlight: this.#inFlight,
          idleMs: Math.max(0, performance.now() - this.#lastUsedAt),
          pinned: false,
        },
      ],
      loading: [],
      timings: this.#timings.all(),
      failed: [],
    };
  }
}

class SimulatedAgent {
  readonly name: string;
  /** Infer frames this agent was sent (how the router spread the load). */
  served = 0;
  readonly #socket: WebSocket;
  /** The data socket (shared/protocol/data-channel.ts): infer frames in, results out. */
  readonly #data: WebSocket;
  readonly #channel = newChannelId();
  readonly #options: SimulatedAgentsOptions;
  readonly #counters: AgentCounters;
  readonly #replica: SimulatedReplica;
  readonly #reporter: StateReporter;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #closing = false;
  readonly welcomed: Promise<void>;
  readonly closed: Promise<void>;

  constructor(name: string, options: SimulatedAgentsOptions, counters: AgentCounters) {
    this.name = name;
    this.#options = options;
    this.#counters = counters;
    this.#replica = new SimulatedReplica(options.model, options.maxConcurrency);
    // The real agent's dial (backend/gateway-link/gateway-link.ts): the token as a bearer, no compression.
    const dial = (url: string) =>
      new WebSocket(url, { headers: { Authorization: `Bearer ${options.token}` }, perMessageDeflate: false });
    this.#socket = dial(agentConnectUrl(options.wsUrl, options.pool, name));
    this.#data = dial(agentDataUrl(options.wsUrl, options.pool, this.#channel));
    this.#data.on("message", (data, isBinary) => {
      if (isBinary) this.#infer(toBytes(data));
      else this.#text(toBytes(data), this.#data);
    });
    this.#data.on("close", () => {
      if (!this.#closing) this.#problem(`${name}: data socket closed by the gateway`);
    });
    this.#reporter = new StateReporter(
      () => [this.#replica.state()],
      (replicas) => {
        const frame: StateFrame = { type: "state", replicas, signatures: [] };
        this.#counters.stateFrames += 1;
        this.#send(JSON.stringify(frame));
      },
    );
    this.closed = new Promise((resolve) => {
      this.#socket.on("close", (code, reason) => {
        this.#stop();
        if (!this.#closing)
          this.#problem(`${name}: socket closed by the gateway (${code} ${reason.toString()})`);
        resolve();
      });
    });
    this.welcomed = new Promise((resolve, reject) => {
      const timeoutMs = options.welcomeTimeoutMs ?? 30_000;
      const timer = setTimeout(
        () => reject(new Error(`${name}: no welcome within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.#socket.on("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      // The real agent's order: both sockets open, then the hello (naming the data channel).
      const opened = (socket: WebSocket) => new Promise((done) => socket.once("open", done));
      this.#data.on("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      void Promise.all([opened(this.#socket), opened(this.#data)]).then(() =>
        this.#send(JSON.stringify(this.#hello())),
      );
      this.#socket.on("message", (data, isBinary) => {
        if (isBinary) {
          this.#problem(`${name}: binary frame on the control socket`);
          return;
        }
        const welcomeMs = this.#text(toBytes(data), this.#socket);
        if (welcomeMs === undefined) return;
        clearTimeout(timer);
        this.#welcome(welcomeMs);
        resolve();
      });
    });
  }

  #hello(): Hello {
    const { model, signature } = this.#options;
    return {
      type: "hello",
      protocol: PROTOCOL_VERSION,
      agent: { name: this.name, version: "bench" },
      hints: [],
      replicas: [this.#replica.state()],
      signatures: [signature],
      // A repository of its own that holds the model: the gateway needs nothing from R2.
      repository: { kind: "own", models: [{ name: model.name, version: model.version, bytes: model.bytes }] },
      channel: this.#channel,
    };
  }

  /** Handles a text frame; returns heartbeatMs when it is the welcome. */
  #text(bytes: Uint8Array, from: WebSocket): number | undefined {
    const text = new TextDecoder().decode(bytes);
    if (text === HEARTBEAT_PONG) return undefined;
    if (text === HEARTBEAT_PING) {
      this.#sendOn(from, HEARTBEAT_PONG);
      return undefined;
    }
    try {
      const frame = decodeTextFrame(text, GatewayTextFrameSchema);
      if (frame.type === "welcome") return frame.heartbeatMs;
      if (frame.type === "cancel") this.#counters.cancels += 1;
      else this.#counters.queries += 1;
    } catch (error) {
      this.#problem(`${this.name}: unreadable text frame: ${(error as Error).message}`);
    }
    return undefined;
  }

  #welcome(heartbeatMs: number): void {
    this.#heartbeat = setInterval(() => {
      this.#counters.pings += 2;
      this.#send(HEARTBEAT_PING);
      this.#sendOn(this.#data, HEARTBEAT_PING);
    }, heartbeatMs);
    this.#reporter.start();
  }

  /** Answers an infer frame at once, as the real InferHandler would after a run that took no time. */
  #infer(frame: Uint8Array): void {
    const arrivedAt = performance.now();
    let header: InferHeader;
    try {
      header = decodeBinaryFrame(frame, InferHeaderSchema).header;
    } catch (error) {
      this.#problem(`${this.name}: unreadable infer frame: ${(error as Error).message}`);
      return;
    }
    this.#counters.inferFrames += 1;
    this.served += 1;
    this.#replica.started();
    this.#changed();
    const { response, model } = this.#options;
    const runMs = performance.now() - arrivedAt;
    this.#replica.finished(runMs);
    this.#changed();
    const result: ResultHeader = {
      type: "result",
      id: header.id,
      replica: this.#replica.id,
      model: { name: model.name, version: model.version },
      cache: "hit",
      timings: { queueMs: 0, loadMs: 0, inferMs: runMs, agentMs: performance.now() - arrivedAt },
      contentType: response.contentType,
      ...(response.headerLength === undefined ? {} : { headerLength: response.headerLength }),
      state: this.#replica.state(),
    };
    this.#counters.resultFrames += 1;
    this.#sendOn(this.#data, encodeBinaryFrame(result, response.body, "result"));
  }

  /** The replica changed: the real agent's slots and cache call this at every acquire and release. */
  #changed(): void {
    if (this.#options.stateFrames) this.#reporter.changed();
  }

  #send(frame: Uint8Array | string): void {
    this.#sendOn(this.#socket, frame);
  }

  #sendOn(socket: WebSocket, frame: Uint8Array | string): void {
    if (socket.readyState !== WebSocket.OPEN) return;
    socket.send(frame, (error) => {
      if (error) this.#problem(`${this.name}: send failed: ${error.message}`);
    });
  }

  #problem(text: string): void {
    if (this.#counters.problems.length < 50) this.#counters.problems.push(text);
  }

  #stop(): void {
    clearInterval(this.#heartbeat);
    this.#reporter.stop();
  }

  close(): Promise<void> {
    this.#closing = true;
    this.#stop();
    for (const socket of [this.#data, this.#socket]) {
      if (socket.readyState === WebSocket.OPEN) socket.close(1001, "benchmark done");
      else socket.terminate();
    }
    // A gateway that never completes the close handshake does not hold the benchmark up.
    const cut = setTimeout(() => {
      this.#socket.terminate();
      this.#data.terminate();
    }, 2_000);
    return this.closed.finally(() => clearTimeout(cut));
  }
}

/** N agents of one pool, all holding the same model. */
export class SimulatedAgents {
  readonly counters: AgentCounters;
  readonly #agents: SimulatedAgent[];

  private constructor(agents: SimulatedAgent[], counters: AgentCounters) {
    this.#agents = agents;
    this.counters = counters;
  }

  /** Dials every agent (dialBatch at a time) and resolves once the gateway has welcomed them all. */
  static async connect(options: SimulatedAgentsOptions): Promise<SimulatedAgents> {
    const counters = newCounters();
    const agents: SimulatedAgent[] = [];
    const batch = options.dialBatch ?? 20;
    try {
      for (let first = 0; first < options.count; first += batch) {
        const dialled: SimulatedAgent[] = [];
        for (let index = first; index < Math.min(options.count, first + batch); index += 1) {
          dialled.push(new SimulatedAgent(`bench-agent-${index}`, options, counters));
        }
        agents.push(...dialled);
        await Promise.all(dialled.map((agent) => agent.welcomed));
      }
    } catch (error) {
      await Promise.all(agents.map((agent) => agent.close()));
      throw error;
    }
    return new SimulatedAgents(agents, counters);
  }

  /** Infer frames per agent: how evenly the router spread the requests. */
  spread(): { agentsUsed: number; maxShare: number } {
    const served = this.#agents.map((agent) => agent.served);
    const total = served.reduce((sum, count) => sum + count, 0);
    return {
      agentsUsed: served.filter((count) => count > 0).length,
      maxShare: total === 0 ? 0 : Math.max(...served) / total,
    };
  }

  resetSpread(): void {
    for (const agent of this.#agents) agent.served = 0;
  }

  async close(): Promise<void> {
    await Promise.all(this.#agents.map((agent) => agent.close()));
  }
}

/** A message as a Uint8Array view (ws hands out Buffers, possibly views of a larger pooled buffer). */
function toBytes(data: RawData): Uint8Array {
  const buffer = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}
