import WebSocket from "ws";
import { newChannelId } from "../../shared/protocol/data-channel.ts";
import { MAX_FRAME_BYTES } from "../../shared/protocol/frames.ts";
import type { Log } from "../log.ts";
import type { ModelService } from "../models/model-service.ts";
import { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from "./backoff.ts";
import { maskingFor } from "./frame-masking.ts";
import { GatewaySession } from "./gateway-session.ts";
import { agentConnectUrl, agentDataUrl } from "./gateway-urls.ts";
import type { LinkedReplica } from "./linked-replica.ts";

export interface GatewayLinkOptions {
  /** `--gateway`: ws(s)://host[/prefix] */
  gateway: string;
  token: string;
  /** The registry shard to join; the gateway's default pool when omitted. */
  pool?: string;
  hints: readonly string[];
  agent: { name: string; version: string };
  replicas: readonly LinkedReplica[];
  models: ModelService;
  /** The agent takes its models from the gateway's own repository. */
  modelsFromGateway: boolean;
  log: Log;
  backoff?: BackoffOptions;
}

export interface GatewayLink {
  /** Drains (see GatewaySession.drain) and stops reconnecting. */
  stop(graceMs: number): Promise<void>;
}

// The gateway refuses frames over MAX_FRAME_BYTES before sending; a little slack for the frame header.
const MAX_PAYLOAD_BYTES = MAX_FRAME_BYTES + 64 * 1024;
const HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * The agent's outbound link to the gateway: dials `<gateway>/agent/connect` and `<gateway>/agent/data` (a
 * fresh channel each time; shared/protocol/data-channel.ts) with the agent token, and
 * whenever the connection ends (the gateway restarted, the network dropped, heartbeats went unanswered)
 * dials again after a jittered exponential backoff. Each connection is a GatewaySession that starts with a
 * hello carrying the full state, so the registry never needs anything from a previous connection.
 */
export function startGatewayLink(options: GatewayLinkOptions): GatewayLink {
  const url = agentConnectUrl(options.gateway, options.pool, options.agent.name);
  const backoff = new Backoff(options.backoff ?? DEFAULT_BACKOFF);
  let session: GatewaySession | undefined;
  let reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  let stopping = false;
  let failuresInARow = 0;

  const unsubscribe = options.replicas.map((replica) =>
    replica.onChange((state) => session?.replicaChanged(state)),
  );

  function dial(): void {
    reconnectTimer = undefined;
    const open = (target: string) =>
      new WebSocket(target, {
        headers: { Authorization: `Bearer ${options.token}` },
        maxPayload: MAX_PAYLOAD_BYTES,
        handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
        perMessageDeflate: false,
        ...maskingFor(target),
      });
    const channel = newChannelId();
    const current = new GatewaySession({
      socket: open(url),
      dataSocket: open(agentDataUrl(options.gateway, options.pool, channel)),
      channel,
      replicas: options.replicas,
      hints: options.hints,
      agent: options.agent,
      models: options.models,
      modelsFromGateway: options.modelsFromGateway,
      log: options.log,
    });
    session = current;
    void current.ended.then((end) => {
      if (session === current) session = undefined;
      if (stopping) return;
      const wasWelcomed = end.welcomedMs !== undefined;
      backoff.connectionEnded(end.welcomedMs ?? 0);
      const delayMs = backoff.next();
      failuresInARow = wasWelcomed ? 0 : failuresInARow + 1;
      options.log(wasWelcomed ? "disconnected from the gateway" : "could not connect to the gateway", {
        url,
        code: end.code,
        ...(end.reason === "" ? {} : { reason: end.reason }),
        ...(end.failure === undefined ? {} : { error: end.failure }),
        attempt: failuresInARow,
        retryInMs: delayMs,
      });
      reconnectTimer = setTimeout(dial, delayMs);
    });
  }

  options.log("connecting to the gateway", {
    url,
    ...(options.pool === undefined ? {} : { pool: options.pool }),
  });
  dial();

  return {
    async stop(graceMs) {
      stopping = true;
      clearTimeout(reconnectTimer);
      for (const stopListening of unsubscribe) stopListening();
      await session?.drain(graceMs);
    },
  };
}
