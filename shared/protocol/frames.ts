import { z } from "zod";
import { SwitchyardError } from "../errors.ts";
import { alignmentPad } from "../oip/codec.ts";
import { MAX_REQUEST_ID_LENGTH } from "../oip/schemas.ts";
import { modelStatisticsSchema } from "../oip/statistics.ts";
import { ChannelIdSchema } from "./data-channel.ts";
import { ModelSignatureSchema } from "./model-signatures.ts";
import { ReplicaStateSchema } from "./replica-state.ts";

/**
 * The agent <-> gateway wire protocol, version 3. Control messages are JSON text frames. Requests and
 * results carry tensors, so they travel as binary frames: a 4-byte little-endian header length, a JSON
 * header, then the raw OIP body bytes (never base64). An agent holds two sockets (data-channel.ts):
 *
 *   control socket, to the pool's registry:
 *     agent -> gateway   hello, state, drain, answer
 *     gateway -> agent   welcome, query
 *   data socket, to the agent's own relay:
 *     agent -> gateway   result (binary), error
 *     gateway -> agent   infer (binary), cancel
 *   both, both ways      the text frames "ping" / "pong" are heartbeats (heartbeat.ts)
 *
 * Every field a real agent must send is required: a schema default would hide an agent that never sends it
 * (version 1 defaulted `signatures` to [], and no real agent ever sent one). The contract tests in
 * test/integration/gateway-protocol.test.ts run the frames a real agent process writes through these schemas. Optional fields are the
 * ones that are legitimately absent (a version not asked for, a state only some frames carry).
 *
 * Version 2 over 1: hello and state frames carry the model signatures (required), hello says where the
 * agent's models come from, replicas report pinned models, and the gateway can query agents (describe a
 * model, statistics, model control's load and unload). Version 3 over 2: requests travel on a data socket
 * of their own, named by the hello's `channel`, and replica states are numbered (`seq`) so that the gateway
 * can tell an older one that arrived late by the other socket.
 */
export const PROTOCOL_VERSION = 3;

/** Both sides check the other's protocol in its first frame, and say how to fix a mismatch. */
const ProtocolVersion = z.literal(PROTOCOL_VERSION, {
  error: (issue) =>
    `protocol ${JSON.stringify(issue.input)}, not ${PROTOCOL_VERSION}: upgrade the older of agent and gateway`,
});

/** Cloudflare delivers websocket messages up to 32 MiB; bigger bodies are refused before sending. */
export const MAX_FRAME_BYTES = 32 * 2 ** 20;

const RequestId = z.string().min(1).max(128);
const ReplicaId = z.string().min(1).max(64);

export const TimingsSchema = z.object({
  queueMs: z.number().nonnegative(),
  loadMs: z.number().nonnegative(),
  inferMs: z.number().nonnegative(),
  /**
   * The agent's whole share, from the infer frame's arrival to its result's departure: what the relay's
   * round trip minus this took is the websocket both ways. Agents before it left it out (no default: the
   * gateway then shows no `agent` timing).
   */
  agentMs: z.number().nonnegative().optional(),
});

// ---- agent -> gateway ----

/**
 * Inputs and outputs of the models the agent can describe: those of its own repository (read from their
 * ONNX graphs at start) and those it has loaded, so the gateway answers OIP model metadata without loading
 * anything. A version's signature never changes: hello carries every one the agent knows, and each state
 * frame those it learned since the previous frame (often none).
 */
/**
 * Control frames are JSON text, bounded so that one never costs the registry more than a few megabytes of
 * parsing: a frame over MAX_TEXT_FRAME_BYTES is a broken or hostile agent. What could grow past it is sent in
 * portions: signatures at most MAX_SIGNATURES_PER_FRAME a frame (the rest in the state frames that follow),
 * statistics at most MAX_STATISTICS_RECORDS per answer (the most recently used model versions).
 */
export const MAX_TEXT_FRAME_BYTES = 8 * 2 ** 20;
export const MAX_SIGNATURES_PER_FRAME = 512;
export const MAX_STATISTICS_RECORDS = 4096;

const Signatures = z.array(ModelSignatureSchema).max(MAX_SIGNATURES_PER_FRAME);

/** The most models an agent's own repository lists in its hello; the rest the gateway learns of on use. */
export const MAX_OFFERED_MODELS = 4096;

/**
 * Where the agent's models come from: the gateway's own repository (R2; the gateway knows what is there), or
 * a repository of the agent's own (--models), whose versions and sizes it lists, so the gateway knows that
 * this agent can serve them.
 */
export const AgentRepositorySchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("gateway") }),
  z.object({
    kind: z.literal("own"),
    models: z
      .array(
        z.object({
          name: z.string().min(1).max(128),
          version: z.string().min(1).max(32),
          bytes: z.number().nonnegative(),
        }),
      )
      .max(MAX_OFFERED_MODELS),
  }),
]);
export type AgentRepository = z.infer<typeof AgentRepositorySchema>;

/** Routing keys an agent may answer to (--hints), and how long each may be. */
export const MAX_HINTS = 1024;
export const MAX_HINT_LENGTH = 256;

/** An agent's --name, in its hello and in its control socket's URL. */
export const AgentNameSchema = z.string().min(1).max(128);

/**
 * The query parameter of `/agent/connect` that carries the agent's name, so that the gateway can place it
 * before its hello: agents of one name join the same registry shard (gateway/pool-shards.ts), which then
 * tells them apart. Its hello must name the same agent.
 */
export const AGENT_NAME_PARAM = "agent";

export const HelloSchema = z.object({
  type: z.literal("hello"),
  protocol: ProtocolVersion,
  agent: z.object({ name: AgentNameSchema, version: z.string().max(64) }),
  /** Routing keys this agent answers to beyond its model names (--hints). */
  hints: z.array(z.string().max(MAX_HINT_LENGTH)).max(MAX_HINTS),
  replicas: z.array(ReplicaStateSchema).min(1).max(64),
  signatures: Signatures,
  repository: AgentRepositorySchema,
  /** The data socket this agent opened before its hello (data-channel.ts): where its requests go. */
  channel: ChannelIdSchema,
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

const QueryId = z.string().min(1).max(64);

/** The agent's answer to a query: the value its kind defines (QUERY_ANSWERS), or why it failed. */
export const AnswerSchema = z.object({
  type: z.literal("answer"),
  id: QueryId,
  result: z.discriminatedUnion("ok", [
    z.object({ ok: z.literal(true), value: z.unknown() }),
    z.object({
      ok: z.literal(false),
      status: z.number().int().min(400).max(599),
      message: z.string().max(4096),
    }),
  ]),
});

export const AgentTextFrameSchema = z.discriminatedUnion("type", [
  HelloSchema,
  StateSchema,
  ErrorFrameSchema,
  DrainSchema,
  AnswerSchema,
]);
export type AgentTextFrame = z.infer<typeof AgentTextFrameSchema>;
export type Hello = z.infer<typeof HelloSchema>;
export type StateFrame = z.infer<typeof StateSchema>;
export type AnswerFrame = z.infer<typeof AnswerSchema>;
export type ResultHeader = z.infer<typeof ResultHeaderSchema>;
export type ErrorFrame = z.infer<typeof ErrorFrameSchema>;

// ---- gateway -> agent ----

export const WelcomeSchema = z.object({
  type: z.literal("welcome"),
  protocol: ProtocolVersion,
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
  requestId: z.string().max(MAX_REQUEST_ID_LENGTH).optional(),
});

export const CancelSchema = z.object({ type: z.literal("cancel"), id: RequestId });

const ModelName = z.string().min(1).max(128);
const ModelVersion = z.string().min(1).max(32);

/**
 * What the gateway may ask an agent, outside of inference:
 *   describe  a model's signature (read from its ONNX graph; nothing is loaded)
 *   stats     its inference statistics (all models, one model, or one version)
 *   load      load a model on one replica now; `pin` keeps it loaded until an unload (model control);
 *             the answer carries that replica's state, so the registry counts the copy at once
 *   unload    unpin a model (on one replica, or every one), and with `evict` unload it there too
 *   keep-alive  how long idle copies of a model stay loaded on every replica, overriding its config.json's
 *             keep_alive_s and the agent's --keep-alive (a serving policy); null: back to those
 */
export const QuerySchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("describe"), model: ModelName, version: ModelVersion.optional() }),
  z.object({ kind: z.literal("stats"), model: ModelName.optional(), version: ModelVersion.optional() }),
  z.object({
    kind: z.literal("load"),
    replica: ReplicaId,
    model: ModelName,
    version: ModelVersion.optional(),
    pin: z.boolean(),
  }),
  z.object({
    kind: z.literal("unload"),
    model: ModelName,
    version: ModelVersion.optional(),
    evict: z.boolean(),
    /** Only this replica; every replica when absent. */
    replica: ReplicaId.optional(),
  }),
  z.object({
    kind: z.literal("keep-alive"),
    model: ModelName,
    keepAliveMs: z.int().nonnegative().nullable(),
  }),
]);
export type Query = z.infer<typeof QuerySchema>;

export const QueryFrameSchema = z.object({ type: z.literal("query"), id: QueryId, query: QuerySchema });
export type QueryFrame = z.infer<typeof QueryFrameSchema>;

/** The value an answer carries for each kind of query. */
export const QUERY_ANSWERS = {
  describe: ModelSignatureSchema,
  stats: z.array(modelStatisticsSchema).max(MAX_STATISTICS_RECORDS),
  load: z.object({ signature: ModelSignatureSchema, state: ReplicaStateSchema }),
  unload: z.object({ unloaded: z.boolean() }),
  /** The replicas it now applies on. */
  "keep-alive": z.object({ replicas: z.int().nonnegative() }),
} as const satisfies Record<Query["kind"], z.ZodType>;
export type QueryAnswer<K extends Query["kind"]> = z.infer<(typeof QUERY_ANSWERS)[K]>;

export const GatewayTextFrameSchema = z.discriminatedUnion("type", [
  WelcomeSchema,
  CancelSchema,
  QueryFrameSchema,
]);
export type GatewayTextFrame = z.infer<typeof GatewayTextFrameSchema>;
export type Welcome = z.infer<typeof WelcomeSchema>;
export type InferHeader = z.infer<typeof InferHeaderSchema>;
export type CancelFrame = z.infer<typeof CancelSchema>;

// ---- binary frames ----

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const SPACE = 0x20;

export interface BinaryFrameOptions {
  /**
   * An offset into the body that should fall at a multiple of TENSOR_ALIGNMENT from the frame's start: the
   * JSON header is padded with spaces (which JSON ignores) to put it there. The relay passes the request's
   * Inference-Header-Content-Length, so that an agent that receives the frame in a buffer of its own can
   * view the binary tensors in place instead of copying them.
   */
  alignBodyAt?: number;
}

/**
 * [u32 LE header length][JSON header][body], the body given whole or as the parts it is made of (written
 * one after the other, with no joined copy first). Refuses (413) a frame over MAX_FRAME_BYTES before it
 * exists.
 */
export function encodeBinaryFrame(
  header: object,
  body: Uint8Array | readonly Uint8Array[],
  what: "request" | "result" = "request",
  options: BinaryFrameOptions = {},
): Uint8Array {
  const parts = body instanceof Uint8Array ? [body] : body;
  const headerBytes = encoder.encode(JSON.stringify(header));
  const { alignBodyAt } = options;
  const padding = alignBodyAt === undefined ? 0 : alignmentPad(4 + headerBytes.length + alignBodyAt);
  const headerLength = headerBytes.length + padding;
  const total = 4 + headerLength + parts.reduce((sum, part) => sum + part.byteLength, 0);
  if (total > MAX_FRAME_BYTES) {
    throw new SwitchyardError(
      "too_large",
      `${what} of ${total} bytes is over the ${MAX_FRAME_BYTES}-byte limit of a relayed message`,
    );
  }
  const frame = new Uint8Array(total);
  new DataView(frame.buffer).setUint32(0, headerLength, true);
  frame.set(headerBytes, 4);
  frame.fill(SPACE, 4 + headerBytes.length, 4 + headerLength);
  let offset = 4 + headerLength;
  for (const part of parts) {
    frame.set(part, offset);
    offset += part.byteLength;
  }
  return frame;
}

/** Splits a binary frame; the header is parsed with `schema`. Throws bad_input on anything malformed. */
export function decodeBinaryFrame<T>(
  frame: Uint8Array,
  schema: z.ZodType<T>,
): { header: T; body: Uint8Array } {
  const { json, body } = splitBinaryFrame(frame);
  const parsed = schema.safeParse(json);
  if (!parsed.success)
    throw new SwitchyardError("bad_input", `bad frame header: ${z.prettifyError(parsed.error)}`);
  return { header: parsed.data, body };
}

/**
 * The JSON header of a binary frame, whatever it holds (undefined when the frame is not even that): what
 * an agent reads of a frame that failed validation, to answer the request it names.
 */
export function peekBinaryFrameHeader(frame: Uint8Array): unknown {
  try {
    return splitBinaryFrame(frame).json;
  } catch {
    return undefined;
  }
}

function splitBinaryFrame(frame: Uint8Array): { json: unknown; body: Uint8Array } {
  if (frame.length < 4) throw new SwitchyardError("bad_input", "binary frame shorter than its length prefix");
  const headerLength = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(0, true);
  if (4 + headerLength > frame.length)
    throw new SwitchyardError("bad_input", "binary frame header overruns the frame");
  try {
    return {
      json: JSON.parse(decoder.decode(frame.subarray(4, 4 + headerLength))),
      body: frame.subarray(4 + headerLength),
    };
  } catch {
    throw new SwitchyardError("bad_input", "binary frame header is not JSON");
  }
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
