import type { QueueState } from "../../shared/queue/queue-status.ts";

/**
 * The managed queue's records, in its Durable Object's SQLite storage: one row per request, from submit
 * until a while after its result expired (a tombstone, so that a late lookup answers 410, not 404). Bodies
 * and results up to INLINE_BYTES live in the row; larger ones in R2 under `bodyKey`/`resultKey`
 * (request-queue.ts writes and reads them). Queued bodies stay in storage until their request starts, so
 * the backlog is bounded by storage, not by the object's memory.
 */
export const INLINE_BYTES = 128 * 1024;

export interface QueuedRecord {
  id: string;
  /** Submission order: the queue starts requests oldest first. */
  seq: number;
  /** SHA-256 of the API key that submitted it (key-digest.ts): only that key sees it. */
  owner: string;
  model: string;
  version: string | null;
  hint: string | null;
  headerLength: number | null;
  body: ArrayBuffer | null;
  bodyKey: string | null;
  bodyBytes: number;
  state: QueueState;
  submittedAt: number;
  /** It must start by then, or it times out (X-Request-Timeout at submit; QUEUE_START_TIMEOUT_SECONDS). */
  startBy: number;
  startedAt: number | null;
  finishedAt: number | null;
  expiresAt: number | null;
  reruns: number;
  /** Set when a restart found it IN_PROGRESS: it runs again only if its model allows (idempotence). */
  interrupted: number;
  /** Where its current (or last) try runs, and when it went there. */
  replica: string | null;
  dispatchedAt: number | null;
  resultStatus: number | null;
  resultHeaders: string | null;
  result: ArrayBuffer | null;
  resultKey: string | null;
  error: string | null;
  /** 1 once its result and body were dropped (expired): lookups answer 410 until the tombstone goes. */
  purged: number;
  /** Where its webhook goes (queue/webhooks.ts); null: none. */
  webhook: string | null;
  /** Its result's URL, as its submit answered it (the webhook names it). */
  responseUrl: string | null;
  /** pending (to send at webhookNextAt), delivered, or failed (given up); null before it finished. */
  webhookState: "pending" | "delivered" | "failed" | null;
  webhookAttempts: number;
  webhookNextAt: number | null;
  webhookError: string | null;
}

const COLUMNS: Record<keyof QueuedRecord, string> = {
  id: "id TEXT PRIMARY KEY",
  seq: "seq INTEGER NOT NULL",
  owner: "owner TEXT NOT NULL",
  model: "model TEXT NOT NULL",
  version: "version TEXT",
  hint: "hint TEXT",
  headerLength: "header_length INTEGER",
  body: "body BLOB",
  bodyKey: "body_key TEXT",
  bodyBytes: "body_bytes INTEGER NOT NULL",
  state: "state TEXT NOT NULL",
  submittedAt: "submitted_at INTEGER NOT NULL",
  startBy: "start_by INTEGER NOT NULL",
  startedAt: "started_at INTEGER",
  finishedAt: "finished_at INTEGER",
  expiresAt: "expires_at INTEGER",
  reruns: "reruns INTEGER NOT NULL DEFAULT 0",
  interrupted: "interrupted INTEGER NOT NULL DEFAULT 0",
  replica: "replica TEXT",
  dispatchedAt: "dispatched_at INTEGER",
  resultStatus: "result_status INTEGER",
  resultHeaders: "result_headers TEXT",
  result: "result BLOB",
  resultKey: "result_key TEXT",
  error: "error TEXT",
  purged: "purged INTEGER NOT NULL DEFAULT 0",
  webhook: "webhook TEXT",
  responseUrl: "response_url TEXT",
  webhookState: "webhook_state TEXT",
  webhookAttempts: "webhook_attempts INTEGER NOT NULL DEFAULT 0",
  webhookNextAt: "webhook_next_at INTEGER",
  webhookError: "webhook_error TEXT",
};

const columnOf = (field: keyof QueuedRecord) => COLUMNS[field].split(" ")[0] as string;
const SELECT = (Object.keys(COLUMNS) as (keyof QueuedRecord)[])
  .map((field) => `${columnOf(field)} AS ${field}`)
  .join(", ");

export type NewRecord = Pick<
  QueuedRecord,
  | "id"
  | "owner"
  | "model"
  | "version"
  | "hint"
  | "headerLength"
  | "body"
  | "bodyKey"
  | "bodyBytes"
  | "webhook"
  | "responseUrl"
> & { submittedAt: number; startBy: number };

export class QueueStore {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS requests (${Object.values(COLUMNS).join(", ")})`);
    // A table an earlier version created lacks the columns added since: they are added, empty.
    const existing = new Set(
      sql
        .exec<{ name: string }>("PRAGMA table_info(requests)")
        .toArray()
        .map((column) => column.name),
    );
    for (const definition of Object.values(COLUMNS)) {
      if (!existing.has(definition.split(" ")[0] as string))
        sql.exec(`ALTER TABLE requests ADD COLUMN ${definition}`);
    }
    sql.exec("CREATE INDEX IF NOT EXISTS queued ON requests (state, seq)");
    sql.exec("CREATE INDEX IF NOT EXISTS submitted ON requests (seq)");
    // The pump asks these on every submit and every answer: none may scan the backlog.
    // An index of an earlier version (per-request deferral), kept up to date for nothing.
    sql.exec("DROP INDEX IF EXISTS deferred");
    sql.exec("CREATE INDEX IF NOT EXISTS overdue ON requests (state, start_by)");
    sql.exec("CREATE INDEX IF NOT EXISTS webhooks ON requests (webhook_state, webhook_next_at)");
    sql.exec("CREATE INDEX IF NOT EXISTS expiring ON requests (expires_at)");
  }

  add(record: NewRecord): QueuedRecord {
    const seq = (this.#one<{ next: number }>("SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM requests")
      ?.next ?? 1) as number;
    this.#sql.exec(
      `INSERT INTO requests (id, seq, owner, model, version, hint, header_length, body, body_key, body_bytes,
         state, submitted_at, start_by, webhook, response_url)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'IN_QUEUE', ?, ?, ?, ?)`,
      record.id,
      seq,
      record.owner,
      record.model,
      record.version,
      record.hint,
      record.headerLength,
      record.body,
      record.bodyKey,
      record.bodyBytes,
      record.submittedAt,
      record.startBy,
      record.webhook,
      record.responseUrl,
    );
    return this.get(record.id) as QueuedRecord;
  }

  get(id: string): QueuedRecord | undefined {
    return this.#one<QueuedRecord>(`SELECT ${SELECT} FROM requests WHERE id = ?`, id);
  }

  /** How many requests wait to start. */
  queuedCount(): number {
    return this.#one<{ n: number }>("SELECT COUNT(*) AS n FROM requests WHERE state = 'IN_QUEUE'")?.n ?? 0;
  }

  /** Queued requests per model. */
  queuedByModel(): Record<string, number> {
    const counts: Record<string, number> = {};
    const rows = this.#sql
      .exec<{ model: string; n: number }>(
        "SELECT model, COUNT(*) AS n FROM requests WHERE state = 'IN_QUEUE' GROUP BY model",
      )
      .toArray();
    for (const row of rows) counts[row.model] = row.n;
    return counts;
  }

  /** How many queued requests go before the one submitted as `seq`. */
  positionOf(seq: number): number {
    return (
      this.#one<{ n: number }>("SELECT COUNT(*) AS n FROM requests WHERE state = 'IN_QUEUE' AND seq < ?", seq)
        ?.n ?? 0
    );
  }

  /** Up to `limit` queued requests, oldest first, of any model but those in `paused`. */
  startable(limit: number, paused: readonly string[]): QueuedRecord[] {
    // One parameter whatever the number of models (Durable Object SQLite takes at most 100 per query).
    return this.#many(
      `SELECT ${SELECT} FROM requests WHERE state = 'IN_QUEUE'
         AND model NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?`,
      JSON.stringify(paused),
      limit,
    );
  }

  /** Requests a previous instance of the object was running when it went away. */
  inProgress(): QueuedRecord[] {
    return this.#many(`SELECT ${SELECT} FROM requests WHERE state = 'IN_PROGRESS'`);
  }

  /** Queued requests whose start deadline passed. */
  overdue(now: number): QueuedRecord[] {
    return this.#many(`SELECT ${SELECT} FROM requests WHERE state = 'IN_QUEUE' AND start_by <= ?`, now);
  }

  /** Finished requests whose retention ended, still holding their result. */
  expired(now: number, limit: number): QueuedRecord[] {
    return this.#many(
      `SELECT ${SELECT} FROM requests WHERE purged = 0 AND expires_at IS NOT NULL AND expires_at <= ? LIMIT ?`,
      now,
      limit,
    );
  }

  update(id: string, fields: Partial<Omit<QueuedRecord, "id" | "seq">>): void {
    const names = Object.keys(fields) as (keyof typeof fields)[];
    if (names.length === 0) return;
    const assignments = names.map((name) => `${columnOf(name)} = ?`).join(", ");
    this.#sql.exec(
      `UPDATE requests SET ${assignments} WHERE id = ?`,
      ...names.map((name) => (fields[name] ?? null) as SqlStorageValue),
      id,
    );
  }

  /** Webhooks due at `now`, oldest first. */
  dueWebhooks(now: number, limit: number): QueuedRecord[] {
    return this.#many(
      `SELECT ${SELECT} FROM requests WHERE webhook_state = 'pending' AND webhook_next_at <= ? ORDER BY webhook_next_at LIMIT ?`,
      now,
      limit,
    );
  }

  /** When the next pending webhook is due; undefined when none is pending. */
  nextWebhook(): number | undefined {
    return (
      this.#one<{ at: number | null }>(
        "SELECT MIN(webhook_next_at) AS at FROM requests WHERE webhook_state = 'pending'",
      )?.at ?? undefined
    );
  }

  /** Drops tombstones that expired before `before`. */
  forgetPurged(before: number): void {
    this.#sql.exec("DELETE FROM requests WHERE purged = 1 AND expires_at <= ?", before);
  }

  #many(query: string, ...bindings: SqlStorageValue[]): QueuedRecord[] {
    return this.#sql
      .exec<Record<string, SqlStorageValue>>(query, ...bindings)
      .toArray() as unknown as QueuedRecord[];
  }

  #one<T>(query: string, ...bindings: SqlStorageValue[]): T | undefined {
    const rows = this.#sql.exec<Record<string, SqlStorageValue>>(query, ...bindings).toArray();
    return rows[0] as T | undefined;
  }
}
