/**
 * The dynamic batcher of one model on one replica (Triton's dynamic batcher, Ray Serve's @serve.batch):
 * requests wait in line by stacking group. A batch is dispatched as soon as fewer than two are out and the
 * oldest group is ready: full (max batch size reached), at a preferred size, or its oldest request has waited
 * the max queue delay. With no delay (the default) a request that finds the model idle runs at once, alone,
 * and those that arrive while batches are out form the next one: no latency is added at low load, and
 * batches grow with the load.
 *
 * A session's runs take turns on its worker thread (worker-session.ts), so two runs never overlap anyway.
 * Two batches may be out at once: one running, and the next, with whatever waited when it was sent, stacked
 * behind it on the session's thread, so the device goes from one run to the next without waiting for the
 * answer to reach the main thread and the next batch to come back (a round trip as long as a small model's
 * whole run). What arrives while two are out gathers into the one after. (Sending only full batches behind
 * the running one, as before, left the GPU idle for that round trip after every batch: on the H200 a small
 * MLP batched served 6,400-6,900 req/s at 8 clients, less than unbatched, and 8,600-8,700 once the next batch
 * went at once; PP-OCRv4 detection at 8 clients 190-260 against 315-357.
 * bench/results/hot-path-cuda-batch-pipelining.md.)
 */

/**
 * Batches out at once by default: one running, and the next waiting behind it on the session's thread. A
 * caller whose runs do not cross to another thread (a session's lanes without batch buckets, on the
 * session's own thread; bench/hot-path/anchor-server.ts, in process) has no round trip to hide and gains
 * nothing from a second, smaller batch: it passes 1.
 */
const BATCHES_OUT = 2;

import type { Tensor } from "../../shared/oip/tensor.ts";
import type { BatchSettings } from "./batch-settings.ts";

export interface BatchItem {
  /** Rows along the first dimension. */
  size: number;
  /** Client requests it carries (a group an intake thread stacked, lane-protocol.ts); 1 when omitted. */
  requests?: number;
}

/** What a request learns about the run that served it. */
export interface BatchOutcome<R> {
  result: R;
  /** From submit to the start of the run that served it. */
  queuedMs: number;
  /** The run's time: the whole batch's. */
  runMs: number;
  /** Client requests, and rows, in that run. */
  requests: number;
  rows: number;
}

/**
 * Runs one batch: one result per item, in order, or a rejection for the whole batch. The batcher then runs
 * each of a failed batch's requests alone, so one request the model cannot take fails by itself.
 */
export type RunBatch<T, R> = (items: T[]) => Promise<R[]>;

/** What a request's run gave it: its outputs, and the run's timings and size (a batch's, with batching). */
export interface Executed {
  outputs: Tensor[];
  /** From submit to the start of its run. */
  queuedMs: number;
  runMs: number;
  /** Of runMs, onnxruntime's own part on the session's thread. */
  sessionMs: number;
  requests: number;
  rows: number;
}

/**
 * Runs one request through `batcher` when there is one and the request fits in a batch (its rows between 1
 * and the max batch size), else in a run of its own: what the replica (main thread) and a session's lanes
 * (its own thread) both do with a request that passed its checks.
 */
export async function executeOne<T extends BatchItem>(
  batcher: ModelBatcher<T, { outputs: Tensor[]; sessionMs: number }> | undefined,
  item: T,
  group: string,
  signal: AbortSignal | undefined,
  runAlone: (items: T[]) => Promise<{ outputs: Tensor[]; sessionMs: number }[]>,
): Promise<Executed> {
  if (batcher !== undefined && item.size >= 1 && item.size <= batcher.settings.maxBatchSize) {
    const outcome = await batcher.submit(item, group, signal);
    return { ...outcome, outputs: outcome.result.outputs, sessionMs: outcome.result.sessionMs };
  }
  const started = performance.now();
  const [answer] = await runAlone([item]);
  return {
    outputs: answer?.outputs ?? [],
    queuedMs: 0,
    runMs: performance.now() - started,
    sessionMs: answer?.sessionMs ?? 0,
    requests: item.requests ?? 1,
    rows: item.size,
  };
}

interface Waiting<T, R> {
  item: T;
  group: string;
  enqueuedAt: number;
  resolve(outcome: BatchOutcome<R>): void;
  reject(error: unknown): void;
  detach(): void;
}

export class ModelBatcher<T extends BatchItem, R> {
  readonly settings: BatchSettings;
  readonly #runBatch: RunBatch<T, R>;
  readonly #now: () => number;
  readonly #batchesOut: number;
  /** Every waiting request, oldest first; groups are read from it in order. */
  #line: Waiting<T, R>[] = [];
  #inFlight = 0;
  #flushPending = false;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    settings: BatchSettings,
    runBatch: RunBatch<T, R>,
    options: { batchesOut?: number | undefined; now?: () => number } = {},
  ) {
    this.settings = settings;
    this.#runBatch = runBatch;
    this.#batchesOut = Math.max(1, options.batchesOut ?? BATCHES_OUT);
    this.#now = options.now ?? (() => performance.now());
  }

  /** Requests waiting for a batch. */
  get waiting(): number {
    return this.#line.length;
  }

  /**
   * Queues a request in its stacking group and resolves once the batch holding it ran. `item.size` must be
   * between 1 and the max batch size. A request whose signal aborts while it waits leaves the line.
   */
  submit(item: T, group: string, signal?: AbortSignal): Promise<BatchOutcome<R>> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<BatchOutcome<R>>((resolve, reject) => {
      const abandon = () => {
        const index = this.#line.indexOf(waiting);
        if (index < 0) return;
        this.#line.splice(index, 1);
        reject(signal?.reason);
      };
      const waiting: Waiting<T, R> = {
        item,
        group,
        enqueuedAt: this.#now(),
        resolve,
        reject,
        detach: () => signal?.removeEventListener("abort", abandon),
      };
      signal?.addEventListener("abort", abandon, { once: true });
      this.#line.push(waiting);
      this.#schedule();
    });
  }

  /** Decides when the next batch goes: now (on the next turn of the event loop), later, or after the run. */
  #schedule(): void {
    if (this.#flushPending || this.#inFlight >= this.#batchesOut) return;
    const due = this.#nextDue();
    if (due === undefined) return;
    const delay = due - this.#now();
    if (delay > 0) {
      this.#armTimer(delay);
      return;
    }
    this.#flushSoon();
  }

  #flushSoon(): void {
    this.#clearTimer();
    this.#flushPending = true;
    // The batch is picked on the next turn, so requests submitted in this one (a burst) join it.
    setImmediate(() => {
      this.#flushPending = false;
      void this.#flush();
    });
  }

  /** When the oldest group becomes ready: now when it already is, else when its delay runs out. */
  #nextDue(): number | undefined {
    let earliest: number | undefined;
    for (const group of this.#groupsOldestFirst()) {
      if (this.#isReady(group)) return this.#now();
      const due = (group[0]?.enqueuedAt ?? 0) + this.settings.maxQueueDelayMs;
      if (earliest === undefined || due < earliest) earliest = due;
    }
    return earliest;
  }

  #isReady(group: readonly Waiting<T, R>[]): boolean {
    const oldest = group[0];
    if (oldest === undefined) return false;
    if (this.#now() - oldest.enqueuedAt >= this.settings.maxQueueDelayMs) return true;
    const rows = group.reduce((sum, waiting) => sum + waiting.item.size, 0);
    return rows >= this.settings.maxBatchSize || this.#preferredPrefix(group) > 0;
  }

  /** How many of the group's first requests add up exactly to the largest preferred size within reach. */
  #preferredPrefix(group: readonly Waiting<T, R>[]): number {
    const preferred = this.settings.preferredBatchSizes;
    if (preferred.length === 0) return 0;
    let rows = 0;
    let best = 0;
    for (let index = 0; index < group.length; index += 1) {
      rows += group[index]?.item.size ?? 0;
      if (rows > this.settings.maxBatchSize) break;
      if (preferred.includes(rows)) best = index + 1;
    }
    return best;
  }

  /** The first requests of the group, in order, up to the max batch size (or a preferred size, early). */
  #take(group: readonly Waiting<T, R>[]): Waiting<T, R>[] {
    const oldest = group[0];
    const expired = oldest !== undefined && this.#now() - oldest.enqueuedAt >= this.settings.maxQueueDelayMs;
    let rows = 0;
    let count = 0;
    for (const waiting of group) {
      if (rows + waiting.item.size > this.settings.maxBatchSize) break;
      rows += waiting.item.size;
      count += 1;
    }
    if (!expired && rows < this.settings.maxBatchSize) {
      const preferred = this.#preferredPrefix(group);
      if (preferred > 0) count = preferred;
    }
    return group.slice(0, Math.max(1, count));
  }

  #groupsOldestFirst(): Waiting<T, R>[][] {
    const groups = new Map<string, Waiting<T, R>[]>();
    for (const waiting of this.#line) {
      const group = groups.get(waiting.group);
      if (group === undefined) groups.set(waiting.group, [waiting]);
      else group.push(waiting);
    }
    return [...groups.values()];
  }

  async #flush(): Promise<void> {
    if (this.#inFlight >= this.#batchesOut) return;
    const startable = (group: readonly Waiting<T, R>[]) => this.#isReady(group);
    const group = this.#groupsOldestFirst().find(startable);
    if (group === undefined) {
      this.#schedule();
      return;
    }
    const batch = this.#take(group);
    const taken = new Set(batch);
    this.#line = this.#line.filter((waiting) => !taken.has(waiting));
    for (const waiting of batch) waiting.detach();
    this.#inFlight += 1;
    // The next batch may follow right behind this one.
    this.#schedule();
    try {
      await this.#run(batch);
    } finally {
      this.#inFlight -= 1;
      this.#schedule();
    }
  }

  async #run(batch: Waiting<T, R>[]): Promise<void> {
    const started = this.#now();
    const rows = batch.reduce((sum, waiting) => sum + waiting.item.size, 0);
    const requests = batch.reduce((sum, waiting) => sum + (waiting.item.requests ?? 1), 0);
    try {
      const results = await this.#runBatch(batch.map((waiting) => waiting.item));
      const runMs = this.#now() - started;
      batch.forEach((waiting, index) => {
        waiting.resolve({
          result: results[index] as R,
          queuedMs: started - waiting.enqueuedAt,
          runMs,
          requests,
          rows,
        });
      });
    } catch (error) {
      if (batch.length === 1) {
        batch[0]?.reject(error);
        return;
      }
      // Inputs were checked before they queued, but the model may still refuse one at run time (a value
      // out of range, say): run each alone so that only that one fails.
      for (const waiting of batch) await this.#run([waiting]);
    }
  }

  #armTimer(delayMs: number): void {
    this.#clearTimer();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#schedule();
    }, delayMs);
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
