import { DurableObject } from "cloudflare:workers";
import { SwitchyardError } from "../../shared/errors.ts";
import { errorResponse } from "../../shared/http/error-response.ts";
import { isFinished, type QueueStatus, type QueueTimings } from "../../shared/queue/queue-status.ts";
import { gatewayConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { log } from "../log.ts";
import type { QueueCalls } from "../object-bindings.ts";
import { inferThroughPool } from "../pool-call.ts";
import { responseOf } from "../pool-infer.ts";
import { everyShard } from "../pool-shards.ts";
import {
  type CancelLookup,
  type Lookup,
  QUEUE_EVENTS,
  type QueueEvent,
  type QueueReport,
  type QueueSubmit,
  type ResultLookup,
  type SubmitAnswer,
} from "./queue-calls.ts";
import { INLINE_BYTES, type QueuedRecord, QueueStore } from "./queue-store.ts";
import { deliverWebhook, WEBHOOK_RETRY_DELAYS_MS, webhookBody } from "./webhooks.ts";

/** Tombstones of expired requests are kept this long after they expired (410 rather than 404 meanwhile). */
const TOMBSTONE_MS = 7 * 24 * 60 * 60 * 1000;
/**
 * After the pool refused a model's request for now (429, 503 before it started, or 504 when its wait in
 * the pool ran out before a replica took it), none of that model's requests is handed to it for this long,
 * doubling with each refusal in a row, at most MAX.
 */
const PAUSE_MS = 500;
const MAX_PAUSE_MS = 15_000;
/** Statuses with which a pool refuses, for now, a request it never started: it goes back to the queue. */
const NOT_NOW = new Set([429, 503, 504]);
/** How long one alarm event stays with runs in flight before handing over to the next alarm. */
const ALARM_WATCH_MS = 20_000;
/** Webhooks sent at once per pass. */
const WEBHOOK_BATCH = 16;
/** Expired results dropped per pass (each may be an R2 delete). */
const PURGE_BATCH = 200;

const resultKey = (pool: string, id: string) => `queue/${pool}/${id}/result`;

/**
 * A pool's managed queue (issue 15): requests submitted now and answered later, kept in this object's
 * SQLite storage (queue-store.ts) and R2 from the 202 on, so they survive a restart, a deploy and agents
 * leaving. The object hands up to QUEUE_IN_FLIGHT of them at a time to the pool, oldest first, through the
 * same path a synchronous request takes (pool-call.ts: the registry routes them like any other, cache
 * affinity and coalesced loads included), and keeps each answer as the synchronous call would have given it.
 *
 * Runs belong to the object instance that started them. An instance that finds requests IN_PROGRESS when it
 * starts lost them with its predecessor (a restart, a deploy): they go back to the queue and run again if
 * their model is idempotent (the registry's idempotence.ts; once at most), else they fail and say why.
 * While runs are in flight an alarm event stays open over them, so the object is not evicted under them.
 */
export class RequestQueue
  extends DurableObject<Env>
  implements Omit<QueueCalls, typeof Rpc.__DURABLE_OBJECT_BRAND>
{
  readonly #store: QueueStore;
  readonly #running = new Map<string, Promise<void>>();
  /** Webhooks being sent now, by request. */
  readonly #delivering = new Map<string, Promise<void>>();
  /** The pool this queue serves (it learns its name from the first submit; an object does not know it). */
  #pool: string | undefined;
  /** When the alarm is set for, as this instance last set it; undefined: not known (then it is set). */
  #alarmAt: number | undefined;
  /** Mean run time of recent requests (ms), for start estimates; undefined before the first. */
  #runMs: number | undefined;
  /**
   * Models the pool refused lately (no agent for them, its queue full), and until when their requests stay
   * here. Per model, not per request: a backlog of thousands for a pool with no agent costs the registry at
   * most QUEUE_IN_FLIGHT asks per model and pause, not one per request (each of which would be refused alike).
   */
  readonly #paused = new Map<string, { until: number; refusals: number }>();
  /** Until then the last look for requests to start found none but those of paused models (0: unknown). */
  #nothingUntil = 0;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#store = new QueueStore(ctx.storage.sql);
    const interrupted = this.#store.inProgress();
    for (const record of interrupted) {
      this.#store.update(record.id, {
        state: "IN_QUEUE",
        interrupted: 1,
        startedAt: null,
        replica: null,
        dispatchedAt: null,
      });
    }
    if (interrupted.length > 0) log("queue-requests-interrupted", { requests: interrupted.length });
    // A fresh instance starts what waits (its predecessor's alarm may be far off, or gone with a deploy).
    if (this.#store.queuedCount() > 0) void ctx.storage.setAlarm(Date.now());
  }

  // ---- RPC from the Worker ----

  submit(submit: QueueSubmit): SubmitAnswer {
    const config = gatewayConfig(this.env);
    if (this.#pool !== submit.pool) {
      this.#pool = submit.pool;
      this.ctx.storage.kv.put("pool", submit.pool);
    }
    if (this.#store.queuedCount() >= config.QUEUE_ASYNC_LIMIT) {
      return {
        ok: false,
        status: 429,
        message: `this pool's managed queue holds ${config.QUEUE_ASYNC_LIMIT} requests waiting to start (QUEUE_ASYNC_LIMIT); submit again later`,
      };
    }
    const now = Date.now();
    const record = this.#store.add({
      id: submit.id,
      owner: submit.owner,
      model: submit.model,
      version: submit.version ?? null,
      hint: submit.hint ?? null,
      headerLength: submit.headerLength ?? null,
      body: submit.body === undefined ? null : bufferOf(submit.body),
      bodyKey: submit.bodyKey ?? null,
      bodyBytes: submit.bodyBytes,
      webhook: submit.webhook ?? null,
      responseUrl: submit.responseUrl,
      submittedAt: now,
      startBy: now + (submit.startWithinMs ?? config.QUEUE_START_TIMEOUT_SECONDS * 1000),
    });
    this.#count("submitted");
    this.#pump(submit.model);
    return { ok: true, status: this.#statusOf(this.#store.get(record.id) ?? record, Date.now()) };
  }

  status(id: string, owner: string): Lookup<{ queue: QueueStatus }> {
    const record = this.#visible(id, owner);
    if (record.kind !== "found") return record;
    return { kind: "found", queue: this.#statusOf(record.record, Date.now()) };
  }

  result(id: string, owner: string): ResultLookup {
    const found = this.#visible(id, owner);
    if (found.kind !== "found") return found;
    const { record } = found;
    const queue = this.#statusOf(record, Date.now());
    if (record.resultStatus === null) return { kind: "found", queue };
    return {
      kind: "found",
      queue,
      result: {
        status: record.resultStatus,
        headers: JSON.parse(record.resultHeaders ?? "[]") as [string, string][],
        ...(record.result === null ? {} : { body: new Uint8Array(record.result) }),
        ...(record.resultKey === null ? {} : { bodyKey: record.resultKey }),
      },
    };
  }

  /** Idempotent: a queued request leaves the queue, a running one is abandoned (its answer dropped). */
  async cancel(id: string, owner: string): Promise<CancelLookup> {
    const found = this.#visible(id, owner);
    if (found.kind !== "found") return found;
    const { record } = found;
    const now = Date.now();
    if (record.state === "CANCELLED" || !isFinished(record.state)) {
      if (record.state !== "CANCELLED") {
        this.#finish(record, {
          state: "CANCELLED",
          error:
            record.state === "IN_PROGRESS"
              ? "cancelled by its client while it ran; its answer, if any, was dropped"
              : "cancelled by its client before it started",
        });
        await this.#dropBody(record);
      }
      const queue = this.#statusOf(this.#store.get(id) ?? record, now);
      return { kind: "found", answer: "CANCELLATION_REQUESTED", queue };
    }
    return { kind: "found", answer: "ALREADY_COMPLETED", queue: this.#statusOf(record, now) };
  }

  /** What the dashboard and /metrics show: requests waiting per model, running, and what happened so far. */
  report(): QueueReport {
    const waiting = this.#store.queuedByModel();
    const events: Partial<Record<QueueEvent, number>> = {};
    for (const event of QUEUE_EVENTS) events[event] = this.ctx.storage.kv.get<number>(`count:${event}`) ?? 0;
    return { waiting, running: this.#running.size, events: events as Record<QueueEvent, number> };
  }

  #count(event: QueueEvent): void {
    const key = `count:${event}`;
    this.ctx.storage.kv.put(key, (this.ctx.storage.kv.get<number>(key) ?? 0) + 1);
  }

  // ---- The pump ----

  override async alarm(): Promise<void> {
    this.#alarmAt = undefined;
    this.#pump();
    await this.#purgeExpired(Date.now());
    if (this.#running.size > 0 || this.#delivering.size > 0) {
      // Stay in this event while runs and deliveries are in flight; the next alarm takes over after
      // ALARM_WATCH_MS.
      await Promise.race([
        Promise.allSettled([...this.#running.values(), ...this.#delivering.values()]),
        new Promise((resolve) => setTimeout(resolve, ALARM_WATCH_MS)),
      ]);
      this.#pump();
    }
  }

  /**
   * Starts what may start now, times out what waited too long, and sets the alarm for what comes next.
   * `submitted`: the model of the request whose submit called it.
   */
  #pump(submitted?: string): void {
    const now = Date.now();
    for (const record of this.#store.overdue(now)) {
      this.#finish(record, {
        state: "TIMED_OUT",
        error: `it did not start within its deadline (${Math.round((record.startBy - record.submittedAt) / 1000)} s)`,
      });
      void this.#dropBody(record);
    }
    this.#deliverDue(now);
    const free = gatewayConfig(this.env).QUEUE_IN_FLIGHT - this.#running.size;
    const pauses = this.#pausesAt(now);
    // A new request of a paused model, when the last look found nothing else to start and no pause has
    // ended since: nothing can start, and the look would walk the whole backlog of paused models again.
    const nothingNew = submitted !== undefined && pauses.has(submitted) && now < this.#nothingUntil;
    if (free > 0 && !nothingNew) {
      const startable = this.#store.startable(free, [...pauses.keys()]);
      this.#nothingUntil = startable.length < free && pauses.size > 0 ? Math.min(...pauses.values()) : 0;
      for (const record of startable) this.#start(record);
    }
    void this.#armAlarm(now);
  }

  async #armAlarm(now: number): Promise<void> {
    let at: number | undefined;
    if (this.#running.size > 0 || this.#delivering.size > 0) at = now + ALARM_WATCH_MS;
    for (const next of [...this.#pausesAt(now).values(), this.#store.nextWebhook()]) {
      if (next !== undefined) at = Math.min(at ?? next, Math.max(next, now));
    }
    // Results expire, and deadlines pass, even when nothing runs: look again within the hour at most.
    at ??= now + 60 * 60 * 1000;
    // Set only when it would come later than needed (or has passed): most pumps change nothing.
    if (this.#alarmAt !== undefined && this.#alarmAt <= at && this.#alarmAt > now) return;
    this.#alarmAt = at;
    await this.ctx.storage.setAlarm(at);
  }

  #poolName(): string {
    this.#pool ??= this.ctx.storage.kv.get<string>("pool") ?? "default";
    return this.#pool;
  }

  #start(record: QueuedRecord): void {
    const startedAt = Date.now();
    this.#store.update(record.id, { state: "IN_PROGRESS", startedAt });
    this.#count(record.interrupted === 1 ? "rerun" : "started");
    const run = this.#run({ ...record, state: "IN_PROGRESS", startedAt })
      .catch((error: unknown) => {
        log("queue-run-failed", { id: record.id, error: String(error) });
        const current = this.#store.get(record.id);
        if (current?.state === "IN_PROGRESS")
          this.#finish(current, { state: "FAILED", error: "internal error" });
      })
      .finally(() => {
        this.#running.delete(record.id);
        this.#pump();
      });
    this.#running.set(record.id, run);
  }

  async #run(record: QueuedRecord): Promise<void> {
    const pool = this.#poolName();
    const config = gatewayConfig(this.env);
    const reruns = record.reruns + record.interrupted;
    if (record.interrupted === 1) {
      const refusal = await this.#rerunRefusal(pool, record);
      if (refusal !== undefined) {
        const error = `a gateway restart interrupted it while it ran, and it was not run again: ${refusal}`;
        const stored = await this.#keep(pool, record.id, errorResponseOf(503, error, record.id));
        this.#finish(record, { state: "FAILED", error, interrupted: 0, ...stored });
        await this.#dropBody(record);
        return;
      }
    }
    const body = await this.#bodyOf(record);
    const timeoutMs = config.DEFAULT_TIMEOUT_SECONDS * 1000;
    const outcome = await inferThroughPool(
      this.env,
      pool,
      {
        model: record.model,
        ...(record.version === null ? {} : { version: record.version }),
        ...(record.hint === null ? {} : { hint: record.hint }),
        body,
        ...(record.headerLength === null ? {} : { headerLength: record.headerLength }),
        timeoutMs,
        budgetMs: timeoutMs,
        requestId: record.id,
      },
      {
        priorReruns: reruns,
        background: config.QUEUE_ASYNC_PRIORITY === "below",
        // Where it runs, for its status; not over a cancel or a newer start of it.
        onDispatch: (replica) => {
          const current = this.#store.get(record.id);
          if (current?.state === "IN_PROGRESS" && current.startedAt === record.startedAt)
            this.#store.update(record.id, { replica, dispatchedAt: Date.now() });
        },
      },
    );
    const current = this.#store.get(record.id);
    // Cancelled while it ran: the answer is dropped.
    if (current?.state !== "IN_PROGRESS" || current.startedAt !== record.startedAt) return;
    if (!outcome.ok && outcome.started !== true && NOT_NOW.has(outcome.status)) {
      // The pool could not take it now (its queue is full, its agents are gone, it waited its run's deadline
      // there, say behind synchronous requests): it never started, so it waits in this queue again, in its
      // place, until its own deadline to start, rather than failing; its model's requests pause.
      this.#pause(record.model, Date.now());
      this.#store.update(record.id, {
        state: "IN_QUEUE",
        reruns,
        interrupted: 0,
        startedAt: null,
        replica: null,
        dispatchedAt: null,
      });
      this.#count("deferred");
      return;
    }
    this.#paused.delete(record.model);
    const response = responseOf(outcome, record.id, record.startedAt ?? Date.now());
    const stored = await this.#keep(pool, record.id, response);
    const ranMs = Date.now() - (record.startedAt ?? Date.now());
    this.#runMs = this.#runMs === undefined ? ranMs : this.#runMs * 0.8 + ranMs * 0.2;
    this.#finish(current, {
      state: outcome.ok ? "COMPLETED" : "FAILED",
      error: outcome.ok ? null : outcome.message,
      reruns,
      interrupted: 0,
      replica: outcome.replica ?? current.replica,
      ...stored,
    });
    await this.#dropBody(record);
  }

  /** The models whose requests wait out a pause at `now`, each with when its pause ends. */
  #pausesAt(now: number): Map<string, number> {
    const pauses = new Map<string, number>();
    for (const [model, { until }] of this.#paused) if (until > now) pauses.set(model, until);
    return pauses;
  }

  /** The pool refused a request of `model`: its requests pause, longer when the last pause had ended too. */
  #pause(model: string, now: number): void {
    const last = this.#paused.get(model);
    // Requests of a model handed over together are refused together: one pause for all of them.
    if (last !== undefined && last.until > now) return;
    const refusals = (last?.refusals ?? 0) + 1;
    this.#paused.set(model, {
      until: now + Math.min(MAX_PAUSE_MS, PAUSE_MS * 2 ** (refusals - 1)),
      refusals,
    });
  }

  /** Why an interrupted request must not run again; undefined when it may (its model is idempotent). */
  async #rerunRefusal(pool: string, record: QueuedRecord): Promise<string | undefined> {
    if (record.reruns >= 1) return "it had been run again once already";
    const version = record.version ?? undefined;
    const answers = await Promise.all(
      everyShard(this.env, pool).map((registry) => registry.allowsRerun(record.model, version)),
    );
    return answers.every(Boolean)
      ? undefined
      : `'${record.model}' is not idempotent (its config.json says so)`;
  }

  async #bodyOf(record: QueuedRecord): Promise<Uint8Array> {
    if (record.body !== null) return new Uint8Array(record.body);
    if (record.bodyKey === null) throw new Error(`queued request ${record.id} has no body`);
    const object = await this.env.QUEUE_STORE.get(record.bodyKey);
    if (object === null) throw new Error(`queued request ${record.id}'s body is missing from R2`);
    return new Uint8Array(await object.arrayBuffer());
  }

  /** The response's status, headers and body, the body in R2 when it is large. */
  async #keep(
    pool: string,
    id: string,
    response: Response,
  ): Promise<Pick<QueuedRecord, "resultStatus" | "resultHeaders" | "result" | "resultKey">> {
    const body = new Uint8Array(await response.arrayBuffer());
    const stored = this.#answer(response);
    if (body.byteLength <= INLINE_BYTES) return { ...stored, result: bufferOf(body), resultKey: null };
    const key = resultKey(pool, id);
    await this.env.QUEUE_STORE.put(key, body);
    return { ...stored, result: null, resultKey: key };
  }

  #answer(response: Response): Pick<QueuedRecord, "resultStatus" | "resultHeaders"> {
    return { resultStatus: response.status, resultHeaders: JSON.stringify([...response.headers]) };
  }

  #finish(record: QueuedRecord, fields: Partial<QueuedRecord> & { state: QueuedRecord["state"] }): void {
    const now = Date.now();
    const ended: Partial<Record<QueuedRecord["state"], QueueEvent>> = {
      COMPLETED: "completed",
      FAILED: "failed",
      CANCELLED: "cancelled",
      TIMED_OUT: "timed_out",
    };
    const event = ended[fields.state];
    if (event !== undefined) this.#count(event);
    // Every end but the client's own cancel is announced to its webhook, from the next pump on.
    const announce = record.webhook !== null && fields.state !== "CANCELLED";
    const ttlMs = gatewayConfig(this.env).QUEUE_RESULT_TTL_SECONDS * 1000;
    this.#store.update(record.id, {
      ...fields,
      finishedAt: now,
      expiresAt: now + ttlMs,
      body: null,
      ...(announce ? { webhookState: "pending" as const, webhookNextAt: now } : {}),
    });
    if (announce) void this.#armAlarm(now);
  }

  /** Sends the webhooks that are due, each once at a time; their outcome decides the next try. */
  #deliverDue(now: number): void {
    const secret = this.env.WEBHOOK_SECRET;
    for (const record of this.#store.dueWebhooks(now, WEBHOOK_BATCH)) {
      if (this.#delivering.has(record.id) || record.webhook === null) continue;
      const delivery = this.#deliver(record, record.webhook, secret)
        .catch((error: unknown) => log("queue-webhook-failed", { id: record.id, error: String(error) }))
        .finally(() => {
          this.#delivering.delete(record.id);
          void this.#armAlarm(Date.now());
        });
      this.#delivering.set(record.id, delivery);
    }
  }

  async #deliver(record: QueuedRecord, url: string, secret: string | undefined): Promise<void> {
    const now = Date.now();
    const attempts = record.webhookAttempts + 1;
    let outcome: { ok: true } | { ok: false; why: string };
    if (secret === undefined || secret === "") {
      outcome = { ok: false, why: "the gateway has no WEBHOOK_SECRET to sign it with" };
    } else {
      const result = record.result !== null ? new Uint8Array(record.result) : undefined;
      const headers = new Headers(JSON.parse(record.resultHeaders ?? "[]") as [string, string][]);
      const body = webhookBody(
        this.#statusOf(record, now),
        record.responseUrl ?? "",
        result,
        headers.get("content-type"),
      );
      outcome = await deliverWebhook(url, body, secret, now);
    }
    if (outcome.ok) {
      this.#store.update(record.id, {
        webhookState: "delivered",
        webhookAttempts: attempts,
        webhookError: null,
      });
      this.#count("webhook_delivered");
      return;
    }
    const delay = WEBHOOK_RETRY_DELAYS_MS[attempts - 1];
    if (delay === undefined) {
      this.#store.update(record.id, {
        webhookState: "failed",
        webhookAttempts: attempts,
        webhookError: outcome.why,
      });
      this.#count("webhook_failed");
      log("queue-webhook-given-up", { id: record.id, attempts, why: outcome.why });
      return;
    }
    this.#store.update(record.id, {
      webhookAttempts: attempts,
      webhookNextAt: Date.now() + delay,
      webhookError: outcome.why,
    });
    this.#count("webhook_retried");
  }

  async #dropBody(record: QueuedRecord): Promise<void> {
    if (record.bodyKey === null) return;
    await this.env.QUEUE_STORE.delete(record.bodyKey).catch((error: unknown) => {
      log("queue-body-delete-failed", { id: record.id, error: String(error) });
    });
    this.#store.update(record.id, { bodyKey: null });
  }

  async #purgeExpired(now: number): Promise<void> {
    for (const record of this.#store.expired(now, PURGE_BATCH)) {
      if (record.resultKey !== null)
        await this.env.QUEUE_STORE.delete(record.resultKey).catch(() => undefined);
      await this.#dropBody(record);
      this.#store.update(record.id, { purged: 1, result: null, resultKey: null, resultHeaders: null });
    }
    this.#store.forgetPurged(now - TOMBSTONE_MS);
  }

  /** The record when `owner` submitted it; another key's request is as missing as one that never was. */
  #visible(id: string, owner: string): Lookup<{ record: QueuedRecord }> {
    const record = this.#store.get(id);
    if (record === undefined || record.owner !== owner) return { kind: "missing" };
    if (record.purged === 1 || (record.expiresAt !== null && record.expiresAt <= Date.now()))
      return { kind: "expired", expiredAt: record.expiresAt ?? Date.now() };
    return { kind: "found", record };
  }

  #statusOf(record: QueuedRecord, now: number): QueueStatus {
    const iso = (at: number | null) => (at === null ? undefined : new Date(at).toISOString());
    const status: QueueStatus = {
      request_id: record.id,
      status: record.state,
      model: record.model,
      ...(record.version === null ? {} : { version: record.version }),
      submitted_at: iso(record.submittedAt) as string,
      reruns: record.reruns,
    };
    if (record.state === "IN_QUEUE") {
      const position = this.#store.positionOf(record.seq);
      status.queue_position = position;
      if (this.#runMs !== undefined) {
        // Slots free up at about one per run time divided by how many run at once.
        const slots = gatewayConfig(this.env).QUEUE_IN_FLIGHT;
        const waitMs = Math.floor(position / slots + (this.#running.size >= slots ? 1 : 0)) * this.#runMs;
        const pausedUntil = this.#paused.get(record.model)?.until ?? 0;
        status.estimated_start_at = new Date(Math.max(now + waitMs, pausedUntil)).toISOString();
      }
    }
    const started = iso(record.startedAt);
    if (started !== undefined && record.state !== "IN_QUEUE") status.started_at = started;
    const finished = iso(record.finishedAt);
    if (finished !== undefined) status.finished_at = finished;
    const expires = iso(record.expiresAt);
    if (expires !== undefined) status.expires_at = expires;
    if (record.replica !== null) status.replica = record.replica;
    const timings = timingsOf(record, now);
    if (timings !== undefined) status.timings = timings;
    if (record.resultStatus !== null) status.response_status = record.resultStatus;
    if (record.error !== null) status.error = record.error;
    return status;
  }
}

/** Where a started request's time went so far (QueueTimings). */
function timingsOf(record: QueuedRecord, now: number): QueueTimings | undefined {
  if (record.startedAt === null || record.state === "IN_QUEUE") return undefined;
  const timings: QueueTimings = { queued_ms: record.startedAt - record.submittedAt };
  if (record.dispatchedAt !== null) {
    timings.pool_ms = record.dispatchedAt - record.startedAt;
    timings.run_ms = (record.finishedAt ?? now) - record.dispatchedAt;
  }
  return timings;
}

function bufferOf(bytes: Uint8Array): ArrayBuffer {
  return bytes.byteOffset === 0 &&
    bytes.byteLength === bytes.buffer.byteLength &&
    bytes.buffer instanceof ArrayBuffer
    ? bytes.buffer
    : (bytes.slice().buffer as ArrayBuffer);
}

function errorResponseOf(status: number, message: string, requestId: string): Response {
  return errorResponse(SwitchyardError.fromStatus(status, message), { "X-Request-Id": requestId });
}
