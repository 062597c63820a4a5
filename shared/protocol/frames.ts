import { z } from "zod";
import { SwitchyardError } from "../errors.ts";
import { ModelSignatureSchema } from "./model-signatures.ts";
import { ReplicaStateSchema } from "./replica-state.ts";

/**
 * The agent <-> gateway wire protocol, version 1. Control messages are JSON text frames. Requests and
 * results carry tensors, so they travel as binary frames: a 4-byte little-endian header length, a JSON
 * header, then the raw OIP body bytes (never base64).
 *
 *   agent -> gateway   hello, state, result (binary), error, drain
 *   gateway -> agent   welcome, infer (binary), cancel
 *   both ways          the text frames "ping" / "pong" are heartbeats (answered without waking the
 *                      registry when it hibernates)
 *
 * Additions within version 1 are optional fields that an older peer ignores and a newer one reads with a
 * default: `ReplicaState.loaded[].idempotent` (replica-state.ts; absent means true) tells the registry which
 * models must never run twice, so a request whose agent died while it may have been running is run once more
 * elsewhere only when its model allows it.
 */
export const PROTOCOL_VERSION = 1;

/** Cloudflare delivers websocket messages up to 32 MiB; bigger bodies are refused before sending. */
export const MAX_FRAME_BYTES = 32 * 2 ** 20;

export const HEARTBEAT_PING = "ping";
export const HEARTBEAT_PONG = "pong";

const RequestId = z.string().min(1).max(128);
const ReplicaId = z.string().min(1).max(64);

export const TimingsSchema = z.object({
  queueMs: z.number().nonnegative(),
  loadMs: z.number().nonnegative(),
  inferMs: z.number().nonnegative(),
});

// ---- agent -> gateway ----

/**
 * Inputs and outputs of models the agent has loaded, so the gateway answers OIP model metadata without
 * loading anything. A version's signature never changes: sending it once per connection is enough.
 */
const Signatures = z.array(ModelSignatureSchema).max(1024).default([]);

export const HelloSchema = z.object({
  type: z.literal("hello"),
  protocol: z.literal(PROTOCOL_VERSION),
  agent: z.object({ name: z.string().min(1).max(128), version: z.string().max(64) }),
  /** Routing keys this agent answers to beyond its model names (--hints). */
  hints: z.array(z.string().max(256)).max(1024).default([]),
  replicas: z.array(ReplicaStateSchema).min(1).max(64),
  signatures: Signatures,
});

export const StateSchema = z.object({
  type: z.literal("state"),
  replicas: z.array(ReplicaStateSchema).min(1).max(64),
  signatures: Signatures,
});

/** Header of a binary result frame; the body is the OIP response exactly as the client receives it. */
export const ResultHeaderSchema = z.object({
  type: z.literal("result"),
  id: RequestId,
  replica: ReplicaId,
  model: z.object({ name: z.string(), version: z.string() }),
  cache: z.enum(["hit", "miss"]),
  timings: TimingsSchema,
  contentType: z.string().max(128),
  /** Inference-Header-Content-Length of the body, when it carries binary outputs. */
  headerLength: z.number().int().nonnegative().optional(),
  /** The replica's state right after the request, so the router never works on stale facts. */
  state: ReplicaStateSchema.optional(),
});

export const ErrorFrameSchema = z.object({
  type: z.literal("error"),
  id: RequestId,
  replica: ReplicaId,
  /** HTTP status the client gets (an OIP error). */
  status: z.number().int().min(400).max(599),
  message: z.string().max(4096),
  /** False when the replica never started on it: the gateway may send it elsewhere. */
  started: z.boolean(),
  state: ReplicaStateSchema.optional(),
});

export const DrainSchema = z.object({ type: z.literal("drain") });

export const AgentTextFrameSchema = z.discriminatedUnion("type", [
  HelloSchema,
  StateSchema,
  ErrorFrameSchema,
  DrainSchema,
]);
export type AgentTextFrame = z.infer<typeof AgentTextFrameSchema>;
export type Hello = z.infer<typeof HelloSchema>;
/** A hello as an agent writes it (fields with defaults may be left out). */
export type HelloMessage = z.input<typeof HelloSchema>;
export type StateMessage = z.input<typeof StateSchema>;
export type ResultHeader = z.infer<typeof ResultHeaderSchema>;
export type ErrorFrame = z.infer<typeof ErrorFrameSchema>;

// ---- gateway -> agent ----

export const WelcomeSchema = z.object({
  type: z.literal("welcome"),
  protocol: z.literal(PROTOCOL_VERSION),
  agentId: z.string(),
  /** How often the agent sends "ping"; missing several means the agent is taken for dead. */
  heartbeatMs: z.number().int().positive(),
});

/** Header of a binary infer frame; the body is the client's OIP request body as received. */
export const InferHeaderSchema = z.object({
  type: z.literal("infer"),
  id: RequestId,
  replica: ReplicaId,
  model: z.string(),
  version: z.string().optional(),
  hint: z.string().optional(),
  /** Milliseconds the agent has left for it. */
  timeoutMs: z.number().positive(),
  /** Inference-Header-Content-Length of the body, when it carries binary inputs. */
  headerLength: z.number().int().nonnegative().optional(),
  /** The client's request id (its X-Request-Id), so the agent's log lines about it carry it too. */
  requestId: z.string().max(128).optional(),
});

export const CancelSchema = z.object({ type: z.literal("cancel"), id: RequestId });

export const GatewayTextFrameSchema = z.discriminatedUnion("type", [WelcomeSchema, CancelSchema]);
export type GatewayTextFrame = z.infer<typeof GatewayTextFrameSchema>;
export type Welcome = z.infer<typeof WelcomeSchema>;
export type InferHeader = z.infer<typeof InferHeaderSchema>;

// ---- binary frames ----

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** [u32 LE header length][JSON header][body]. Refuses (413) a frame over MAX_FRAME_BYTES before it exists. */
export function encodeBinaryFrame(header: object, body: Uint8Array): Uint8Array {
  const headerBytes = encoder.encode(JSON.stringify(header));
  const total = 4 + headerBytes.length + body.length;
  if (total > MAX_FRAME_BYTES) {
    throw new SwitchyardError(
      "too_large",
      `request of ${total} bytes is over the ${MAX_FRAME_BYTES}-byte limit of a relayed message`,
    );
  }
  const frame = new Uint8Array(total);
  new DataView(frame.buffer).setUint32(0, headerBytes.length, true);
  frame.set(headerBytes, 4);
  frame.set(body, 4 + headerBytes.length);
  return frame;
}

/** Splits a binary frame; the header is parsed with `schema`. Throws bad_input on anything malformed. */
export function decodeBinaryFrame<T>(
  frame: Uint8Array,
  schema: z.ZodType<T>,
): { header: T; body: Uint8Array } {
  if (frame.length < 4) throw new SwitchyardError("bad_input", "binary frame shorter than its length prefix");
  const headerLength = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(0, true);
  if (4 + headerLength > frame.length)
    throw new SwitchyardError("bad_input", "binary frame header overruns the frame");
  let json: unknown;
  try {
    json = JSON.parse(decoder.decode(frame.subarray(4, 4 + headerLength)));
  } catch {
    throw new SwitchyardError("bad_input", "binary frame header is not JSON");
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success)
    throw new SwitchyardError("bad_input", `bad frame header: ${z.prettifyError(parsed.error)}`);
  return { header: parsed.data, body: frame.subarray(4 + headerLength) };
}

/** Parses a JSON text frame with `schema`; throws bad_input on anything malformed. */
export function decodeTextFrame<T>(text: string, schema: z.ZodType<T>): T {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new SwitchyardError("bad_input", "text frame is not JSON");
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new SwitchyardError("bad_input", `bad frame: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}
