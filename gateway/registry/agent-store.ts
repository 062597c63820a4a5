import { z } from "zod";
import { ChannelIdSchema } from "../../shared/protocol/data-channel.ts";
import { ReplicaStateSchema } from "../../shared/protocol/replica-state.ts";
import type { AgentRecord } from "./agent-link.ts";

/**
 * Where agent records survive hibernation and eviction. A hibernated Durable Object keeps its websockets
 * but loses its memory, so each socket carries its agent's record as its attachment; the registry reads
 * them back from `ctx.getWebSockets()` when it wakes. Attachments are limited to 16 KiB (serialized), and
 * an agent with many replicas, models or hints can exceed that: such a record goes to the object's
 * SQLite-backed key-value storage and the attachment only points to it.
 *
 * A change of membership (hello, drain, replicas added or gone) is written at once. A replica's fresh state,
 * which every result carries, is written at most once per PERSIST_DELAY_MS and agent (`saveSoon`): writing it
 * per request cost a structured clone, or a storage write for a spilled record, on every request. A pending
 * write keeps the object awake, so hibernation never loses one; an eviction without warning (a crash, a
 * deploy) loses at most that delay of replica states, which the agent's next result or state frame brings
 * back (the timings of models it no longer holds: its next state frame with all of them, within
 * WHOLE_TIMINGS_EVERY_MS, backend/gateway-link/state-reporter.ts). An unchanged record is not written again.
 */
export const PERSIST_DELAY_MS = 1_000;

/** Serialized attachments above 16 KiB throw; JSON length is a close estimate, so keep a margin. */
const MAX_INLINE_JSON_BYTES = 12 * 1024;

const AgentRecordSchema = z.object({
  id: z.string(),
  name: z.string(),
  version: z.string(),
  hints: z.array(z.string()),
  draining: z.boolean(),
  connectedAt: z.number(),
  replicas: z.array(ReplicaStateSchema),
  models: z.enum(["gateway", "own"]),
  channel: ChannelIdSchema,
});

const AttachmentSchema = z.discriminatedUnion("phase", [
  /** Accepted, hello not received yet. */
  z.object({
    v: z.literal(1),
    phase: z.literal("awaiting-hello"),
    connectedAt: z.number(),
    /** The name its URL gave (AGENT_NAME_PARAM), if it gave one: its hello must say the same. */
    name: z.string().optional(),
  }),
  z.object({ v: z.literal(1), phase: z.literal("agent"), record: AgentRecordSchema }),
  /** The record lives in storage under storageKey(id). */
  z.object({ v: z.literal(1), phase: z.literal("spilled"), id: z.string(), connectedAt: z.number() }),
]);
type Attachment = z.infer<typeof AttachmentSchema>;

export type RestoredSocket =
  | { phase: "awaiting-hello"; connectedAt: number; name?: string | undefined }
  | { phase: "agent"; record: AgentRecord }
  | { phase: "lost"; reason: string };

const storageKey = (agentId: string) => `agent:${agentId}`;

export interface AgentStoreEvents {
  /** An attachment was written (each costs a structured clone: storage-meter.ts counts them). */
  attachmentWritten?: () => void;
  /** A record given to saveSoon() could not be written (the save of a record that is too big, say). */
  saveFailed?: (socket: WebSocket, error: unknown) => void;
}

export class AgentStore {
  readonly #kv: SyncKvStorage;
  /** Last JSON written per socket, to skip writes of an unchanged record. */
  readonly #written = new WeakMap<WebSocket, string>();
  /** Records given to saveSoon() and not written yet. */
  readonly #unsaved = new Map<WebSocket, AgentRecord>();
  #persistTimer: ReturnType<typeof setTimeout> | undefined;

  readonly #events: AgentStoreEvents;

  constructor(kv: SyncKvStorage, events: AgentStoreEvents = {}) {
    this.#kv = kv;
    this.#events = events;
  }

  markAwaitingHello(socket: WebSocket, connectedAt: number, name: string | undefined): void {
    socket.serializeAttachment({
      v: 1,
      phase: "awaiting-hello",
      connectedAt,
      ...(name === undefined ? {} : { name }),
    } satisfies Attachment);
    this.#events.attachmentWritten?.();
  }

  /** Writes the record a moment later, with whatever else changed meanwhile (see above). */
  saveSoon(socket: WebSocket, record: AgentRecord): void {
    this.#unsaved.set(socket, record);
    this.#persistTimer ??= setTimeout(() => this.flush(), PERSIST_DELAY_MS);
  }

  /** Writes every record saveSoon() was given (also what its timer does). */
  flush(): void {
    if (this.#persistTimer !== undefined) clearTimeout(this.#persistTimer);
    this.#persistTimer = undefined;
    for (const [socket, record] of [...this.#unsaved]) {
      try {
        this.save(socket, record);
      } catch (error) {
        this.#unsaved.delete(socket);
        // A socket that closed meanwhile takes its record with it; anything else is the registry's to handle.
        if (socket.readyState === WebSocket.OPEN) this.#events.saveFailed?.(socket, error);
      }
    }
  }

  /** Writes the record now. */
  save(socket: WebSocket, record: AgentRecord): void {
    this.#unsaved.delete(socket);
    const json = JSON.stringify(record);
    if (this.#written.get(socket) === json) return;
    const wasSpilled = (this.#written.get(socket)?.length ?? 0) > MAX_INLINE_JSON_BYTES;
    if (json.length > MAX_INLINE_JSON_BYTES) {
      this.#kv.put(storageKey(record.id), record);
      socket.serializeAttachment({
        v: 1,
        phase: "spilled",
        id: record.id,
        connectedAt: record.connectedAt,
      } satisfies Attachment);
    } else {
      socket.serializeAttachment({ v: 1, phase: "agent", record } satisfies Attachment);
      if (wasSpilled) this.#kv.delete(storageKey(record.id));
    }
    this.#written.set(socket, json);
    this.#events.attachmentWritten?.();
  }

  /** The agent left: its spilled record, if any, goes too. */
  forget(socket: WebSocket, agentId: string | undefined): void {
    this.#unsaved.delete(socket);
    if (agentId !== undefined) this.#kv.delete(storageKey(agentId));
    this.#written.delete(socket);
  }

  restore(socket: WebSocket): RestoredSocket {
    const parsed = AttachmentSchema.safeParse(socket.deserializeAttachment());
    if (!parsed.success) return { phase: "lost", reason: "its registration was not kept" };
    const attachment = parsed.data;
    if (attachment.phase === "awaiting-hello") return attachment;
    if (attachment.phase === "agent") {
      this.#written.set(socket, JSON.stringify(attachment.record));
      return attachment;
    }
    const stored = AgentRecordSchema.safeParse(this.#kv.get(storageKey(attachment.id)));
    if (!stored.success) return { phase: "lost", reason: "its registration was not found in storage" };
    this.#written.set(socket, JSON.stringify(stored.data));
    return { phase: "agent", record: stored.data };
  }
}
