/**
 * One replica's cache of loaded models (one GPU, or the CPU): an LRU of sessions bounded by count and
 * bytes. Which models to evict is decided by shared/cache/admission.ts, the same code the gateway's router
 * and the simulator use; this class only carries the decisions out: it shares loads, pins models while
 * requests run on them, queues admissions that must wait for room, and releases what it evicts.
 */
import {
  type CacheEntryView,
  type CacheLimits,
  expiredEntries,
  expiryOf,
  isEvictable,
  leastRecentlyUsedFirst,
  overflowVictims,
  type VictimOrder,
} from "../../shared/cache/admission.ts";
import { admitInOrder } from "../../shared/cache/admit-in-order.ts";
import { SwitchyardError } from "../../shared/errors.ts";

export interface ModelLoader<S> {
  /** Size before loading (the file's size, say), to plan room for the model. */
  estimateBytes(key: string): Promise<number>;
  /**
   * Loads the model; `bytes` is what it really takes once loaded, `keepAliveMs` its own keep-alive when it has
   * one (its config.json's), which wins over the cache's.
   */
  load(key: string): Promise<{ session: S; bytes: number; keepAliveMs?: number }>;
  release(session: S): Promise<void>;
}

export interface CacheLease<S> {
  session: S;
  /** The model was loaded when asked for. */
  hit: boolean;
  /** Time spent waiting for room and for the load. */
  waitedMs: number;
  /** Unpins the model and marks it used now (keep-alive counts from here); calling it again does nothing. */
  release(): void;
}

export interface CacheSnapshot {
  /** Least recently used first. */
  loaded: Array<{ key: string; bytes: number; inFlight: number; lastUsedAt: number; pinned: boolean }>;
  /** Given room and loading now. */
  loading: string[];
  /** Asked for, waiting to learn their size or for room. */
  waiting: string[];
  /** Unloaded while requests still ran on them: released once those end, and counted until then. */
  unloading: string[];
  /** What the cache counts against maxBytes: loaded models, estimates of those loading, and unloading ones. */
  bytes: number;
  limits: CacheLimits;
}

export interface ModelCacheOptions<S> {
  limits: CacheLimits;
  /** Idle models unused this long are unloaded; 0 keeps them until evicted. */
  keepAliveMs: number;
  loader: ModelLoader<S>;
  now?: () => number;
  victimOrder?: VictimOrder;
  /** Where failures that must not stop the cache go (a session that would not release, a listener that threw). */
  logError?: (message: string, error: unknown) => void;
}

type Phase = "sizing" | "waiting" | "loading" | "loaded" | "unloading" | "gone";

/** One model the cache holds or is bringing in. Leases point at the entry, not the key, so they stay right. */
interface Entry<S> {
  readonly key: string;
  phase: Phase;
  /** 0 while sizing; the estimate while waiting or loading; the real size once loaded. */
  bytes: number;
  lastUsedAt: number;
  /** Leases out, plus acquirers waiting for the load (they pin it the moment it lands). */
  inFlight: number;
  /** The model's own keep-alive, once loaded (else the cache's applies). */
  keepAliveMs?: number;
  session: { value: S } | undefined;
  /** Settles when the load ends: with the session, or with why the model cannot be had. */
  ready: Promise<S>;
  /** Set while unloading: resolves `unload()` once the session is released. */
  unloaded?: () => void;
}

interface RoomRequest<S> {
  entry: Entry<S>;
  admit(releasesBefore: Promise<unknown>): void;
  reject(error: SwitchyardError): void;
}

/** setTimeout takes at most a signed 32-bit delay; longer ones would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class ModelCache<S> {
  readonly #limits: CacheLimits;
  readonly #keepAliveMs: number;
  readonly #loader: ModelLoader<S>;
  readonly #now: () => number;
  readonly #victimOrder: VictimOrder;
  readonly #logError: (message: string, error: unknown) => void;

  /** Every model asked for and not yet evicted, by key, whatever its phase except unloading. */
  readonly #entries = new Map<string, Entry<S>>();
  /** Unloaded models still serving requests: out of #entries so the key can be loaded afresh. */
  readonly #unloading = new Set<Entry<S>>();
  /** Admissions waiting for room, served first come first served. */
  readonly #roomQueue: RoomRequest<S>[] = [];
  /** Sessions being released: their bytes are no longer counted, so loads wait for them to finish. */
  readonly #releasing = new Set<Promise<void>>();
  /** Sizes seen once loaded, which plan later loads of the same model better than an estimate. */
  readonly #loadedBytes = new Map<string, number>();
  readonly #listeners = new Set<() => void>();
  /** Keys kept loaded until unpinned (model control's `load`): never victims, never expired. */
  readonly #pinned = new Set<string>();
  /**
   * Keep-alives the gateway set at run time (a model's serving policy), by a predicate on keys: they win over
   * the model's own (its config.json's) and the cache's.
   */
  readonly #keepAliveOverrides = new Map<
    string,
    { matches: (key: string) => boolean; keepAliveMs: number }
  >();
  #expiryTimer: ReturnType<typeof setTimeout> | undefined;
  #expiryDue: number | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: ModelCacheOptions<S>) {
    this.#limits = { ...options.limits };
    this.#keepAliveMs = options.keepAliveMs;
    this.#loader = options.loader;
    this.#now = options.now ?? Date.now;
    this.#victimOrder = options.victimOrder ?? leastRecentlyUsedFirst;
    this.#logError = options.logError ?? ((message, error) => console.error(message, error));
  }

  /** The model's session, pinned (never evicted) until `lease.release()`. Loads it if it must. */
  async acquire(key: string): Promise<CacheLease<S>> {
    this.#assertOpen();
    const askedAt = this.#now();
    const known = this.#entries.get(key);
    if (known?.session !== undefined) {
      known.inFlight += 1;
      known.lastUsedAt = askedAt;
      this.#changed();
      return this.#lease(known, known.session.value, true, 0);
    }
    const entry = known ?? this.#bringIn(key);
    entry.inFlight += 1;
    entry.lastUsedAt = askedAt;
    const session = await entry.ready;
    // The load can land just before close() and this continuation run just after it.
    this.#assertOpen();
    return this.#lease(entry, session, false, this.#now() - askedAt);
  }

  /** Loads the model without using it (or marks it used, if loaded). */
  async preload(key: string): Promise<void> {
    (await this.acquire(key)).release();
  }

  /**
   * Loads the model if it must and keeps it loaded until `unpin` or `unload`: it is never an LRU victim and
   * never expires. A model that cannot fit beside the models already pinned is refused (too_large).
   */
  async pin(key: string): Promise<void> {
    const wasPinned = this.#pinned.has(key);
    this.#pinned.add(key);
    try {
      await this.preload(key);
    } catch (error) {
      if (!wasPinned) this.#pinned.delete(key);
      throw error;
    }
    this.#changed();
  }

  /** Keys pinned now, loaded or still on their way in. */
  pinnedKeys(): string[] {
    return [...this.#pinned];
  }

  /** Lets the model be evicted and expire again; false when it was not pinned. */
  unpin(key: string): boolean {
    if (!this.#pinned.delete(key)) return false;
    this.#changed();
    this.#settle();
    return true;
  }

  /**
   * Unloads a loaded model and resolves true once its session is released; false if the model is not
   * loaded (absent, or still on its way in). A model with requests in flight leaves the cache at once —
   * the next acquire loads it afresh — but its session is released only when those requests end, so they
   * are never cut off; until then its bytes stay counted.
   */
  async unload(key: string): Promise<boolean> {
    this.#pinned.delete(key);
    const entry = this.#entries.get(key);
    if (entry?.session === undefined) return false;
    if (entry.inFlight === 0) {
      const released = this.#evict(entry);
      this.#settle();
      await released;
      return true;
    }
    const released = new Promise<void>((resolve) => {
      entry.unloaded = resolve;
    });
    this.#entries.delete(key);
    entry.phase = "unloading";
    this.#unloading.add(entry);
    this.#changed();
    await released;
    return true;
  }

  snapshot(): CacheSnapshot {
    const all = [...this.#entries.values()];
    const loaded = all
      .filter((entry) => entry.phase === "loaded")
      .sort((a, b) => a.lastUsedAt - b.lastUsedAt);
    const keysIn = (phases: Phase[]) => all.filter((entry) => phases.includes(entry.phase)).map((e) => e.key);
    return {
      loaded: loaded.map(({ key, bytes, inFlight, lastUsedAt }) => ({
        key,
        bytes,
        inFlight,
        lastUsedAt,
        pinned: this.#pinned.has(key),
      })),
      loading: keysIn(["loading"]),
      waiting: keysIn(["sizing", "waiting"]),
      unloading: [...this.#unloading].map((entry) => entry.key),
      bytes: this.#views().reduce((sum, view) => sum + view.bytes, 0),
      limits: { ...this.#limits },
    };
  }

  /**
   * Calls `listener` after every change (it reads `snapshot()` when it wants one: the replica reports once per
   * turn, not per change); returns the unsubscribe.
   */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /**
   * Shuts the cache: waiting acquires fail `unavailable`, and every session is released, those with
   * requests in flight too (drain requests first), and those still loading once their load lands.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutDown();
    return this.#closing;
  }

  async #shutDown(): Promise<void> {
    this.#closed = true;
    this.#stopExpiryTimer();
    for (const request of this.#roomQueue.splice(0)) request.reject(closedError());
    const loads: Promise<unknown>[] = [];
    for (const entry of [...this.#entries.values(), ...this.#unloading]) {
      if (entry.session === undefined) loads.push(entry.ready.catch(() => undefined));
      else loads.push(this.#evict(entry));
    }
    await Promise.all(loads);
    await Promise.all(this.#releasing);
    this.#listeners.clear();
  }

  /** Starts bringing a model in: size it, wait for room, load it. Every acquirer shares this one entry. */
  #bringIn(key: string): Entry<S> {
    const entry: Entry<S> = {
      key,
      phase: "sizing",
      bytes: 0,
      lastUsedAt: this.#now(),
      inFlight: 0,
      session: undefined,
      // Starts a microtask later, once the entry is in the map for everything the load does to see.
      ready: Promise.resolve().then(() => this.#admitAndLoad(entry)),
    };
    // Acquirers await `ready`; this keeps a failure nobody waits for any more from going unhandled.
    entry.ready.catch(() => undefined);
    this.#entries.set(key, entry);
    this.#changed();
    return entry;
  }

  async #admitAndLoad(entry: Entry<S>): Promise<S> {
    try {
      entry.bytes =
        this.#loadedBytes.get(entry.key) ??
        (await this.#fromLoader(entry.key, "size", (key) => this.#loader.estimateBytes(key)));
      this.#assertOpen();
      entry.phase = "waiting";
      const { releasesBefore } = await this.#room(entry);
      // Evicted sessions no longer count, but their memory is only free once they are released.
      await releasesBefore;
      const loaded = await this.#fromLoader(entry.key, "load", (key) => this.#loader.load(key));
      if (this.#closed) {
        await this.#releaseSession(entry.key, loaded.session);
        throw closedError();
      }
      entry.phase = "loaded";
      entry.session = { value: loaded.session };
      entry.bytes = loaded.bytes;
      if (loaded.keepAliveMs !== undefined) entry.keepAliveMs = loaded.keepAliveMs;
      entry.lastUsedAt = this.#now();
      this.#loadedBytes.set(entry.key, loaded.bytes);
      this.#changed();
      this.#settle();
      return loaded.session;
    } catch (error) {
      if (this.#entries.get(entry.key) === entry) this.#entries.delete(entry.key);
      entry.phase = "gone";
      this.#changed();
      this.#settle();
      throw error;
    }
  }

  async #fromLoader<T>(key: string, step: "size" | "load", call: (key: string) => Promise<T>): Promise<T> {
    try {
      return await call(key);
    } catch (error) {
      const cause = error instanceof Error ? error.message : String(error);
      const what = step === "size" ? "could not be sized" : "failed to load";
      throw new SwitchyardError("model_load_failed", `model "${key}" ${what}: ${cause}`, { cause: error });
    }
  }

  /** Waits for this entry's turn and for room; on admission the entry is loading and counts. */
  #room(entry: Entry<S>): Promise<{ releasesBefore: Promise<unknown> }> {
    return new Promise((resolve, reject) => {
      this.#roomQueue.push({
        entry,
        admit: (releasesBefore) => resolve({ releasesBefore }),
        reject,
      });
      this.#pump();
    });
  }

  /**
   * Admits waiting entries while there is room, in the order shared/cache/admit-in-order.ts decides (the
   * simulator's replicas follow the same decisions): evicts each admission's victims, then lets it load.
   */
  #pump(): void {
    if (this.#closed || this.#roomQueue.length === 0) return;
    const outcomes = admitInOrder(
      this.#views(),
      this.#roomQueue.map(({ entry }) => ({ key: entry.key, bytes: entry.bytes })),
      this.#limits,
      this.#victimOrder,
    );
    for (const outcome of outcomes) {
      const request = this.#roomQueue.shift();
      if (request === undefined) return;
      if (outcome.kind === "reject") {
        // Too big is for good; room taken by pins comes back with an unload, and another replica may have it.
        request.reject(
          outcome.cause === "size"
            ? new SwitchyardError("too_large", outcome.reason, { beforeWork: true })
            : new SwitchyardError("unavailable", outcome.reason, { retryAfterSeconds: 5, beforeWork: true }),
        );
        continue;
      }
      for (const key of outcome.evict) this.#evictKey(key);
      request.entry.phase = "loading";
      request.admit(Promise.all(this.#releasing));
      this.#changed();
    }
  }

  /** After anything that frees room or changes sizes: get back within the limits, then admit who can. */
  #settle(): void {
    if (this.#closed) return;
    for (const key of overflowVictims(this.#views(), this.#limits, this.#victimOrder)) this.#evictKey(key);
    this.#pump();
  }

  #lease(entry: Entry<S>, session: S, hit: boolean, waitedMs: number): CacheLease<S> {
    let released = false;
    return {
      session,
      hit,
      waitedMs,
      release: () => {
        if (released || this.#closed) return;
        released = true;
        entry.inFlight -= 1;
        entry.lastUsedAt = this.#now();
        if (entry.phase === "unloading" && entry.inFlight === 0) {
          void this.#evict(entry);
        } else {
          this.#changed();
        }
        this.#settle();
      },
    };
  }

  /** What the admission logic sees: everything that holds or will hold memory. */
  #views(): CacheEntryView[] {
    const views: CacheEntryView[] = [];
    for (const entry of this.#entries.values()) {
      if (entry.phase === "loaded" || entry.phase === "loading") {
        const { key, bytes, lastUsedAt, inFlight } = entry;
        const keepAliveMs = this.#keepAliveOf(entry);
        views.push({
          key,
          bytes,
          lastUsedAt,
          inFlight,
          state: entry.phase,
          pinned: this.#pinned.has(key),
          ...(keepAliveMs === undefined ? {} : { keepAliveMs }),
        });
      }
    }
    for (const { key, bytes, lastUsedAt, inFlight } of this.#unloading) {
      views.push({ key, bytes, lastUsedAt, inFlight, state: "loaded" });
    }
    return views;
  }

  #evictKey(key: string): void {
    const entry = this.#entries.get(key);
    if (entry !== undefined) void this.#evict(entry);
  }

  /**
   * Drops the entry at once (its bytes stop counting) and releases its session; resolves once released.
   * It does not admit anyone itself, since #pump evicts too: callers outside it #settle afterwards.
   */
  #evict(entry: Entry<S>): Promise<void> {
    const session = entry.session;
    if (this.#entries.get(entry.key) === entry) this.#entries.delete(entry.key);
    this.#unloading.delete(entry);
    entry.phase = "gone";
    entry.session = undefined;
    this.#changed();
    if (session === undefined) return Promise.resolve();
    const released = this.#releaseSession(entry.key, session.value);
    this.#releasing.add(released);
    return released.finally(() => {
      this.#releasing.delete(released);
      entry.unloaded?.();
    });
  }

  async #releaseSession(key: string, session: S): Promise<void> {
    try {
      await this.#loader.release(session);
    } catch (error) {
      this.#logError(`model cache: releasing the session of model "${key}" failed`, error);
    }
  }

  #changed(): void {
    this.#scheduleExpiry();
    if (this.#listeners.size === 0) return;
    for (const listener of this.#listeners) {
      try {
        listener();
      } catch (error) {
        this.#logError("model cache: a change listener threw", error);
      }
    }
  }

  /**
   * Sets (or, undefined, drops) the keep-alive of the models whose keys `matches` accepts, under `id` (a later
   * call with the same id replaces it); idle copies expire under it from now on.
   */
  setKeepAlive(id: string, matches: (key: string) => boolean, keepAliveMs: number | undefined): void {
    if (keepAliveMs === undefined) this.#keepAliveOverrides.delete(id);
    else this.#keepAliveOverrides.set(id, { matches, keepAliveMs });
    this.#scheduleExpiry();
    this.#settle();
  }

  #keepAliveOf(entry: Entry<S>): number | undefined {
    for (const override of this.#keepAliveOverrides.values())
      if (override.matches(entry.key)) return override.keepAliveMs;
    return entry.keepAliveMs;
  }

  /** One timer, set for the next idle model to expire (under its own keep-alive, or the cache's). */
  #scheduleExpiry(): void {
    if (this.#closed) return;
    let due: number | undefined;
    for (const view of this.#views()) {
      if (!isEvictable(view)) continue;
      const expiresAt = expiryOf(view, this.#keepAliveMs);
      if (expiresAt !== undefined && (due === undefined || expiresAt < due)) due = expiresAt;
    }
    if (due === this.#expiryDue) return;
    this.#stopExpiryTimer();
    if (due === undefined) return;
    this.#expiryDue = due;
    const delay = Math.min(Math.max(due - this.#now(), 0), MAX_TIMER_MS);
    this.#expiryTimer = setTimeout(() => this.#expire(), delay);
    // Models waiting to expire are no reason to keep the process alive.
    this.#expiryTimer.unref();
  }

  #expire(): void {
    this.#expiryTimer = undefined;
    this.#expiryDue = undefined;
    for (const key of expiredEntries(this.#views(), this.#now(), this.#keepAliveMs)) this.#evictKey(key);
    this.#scheduleExpiry();
    this.#settle();
  }

  #stopExpiryTimer(): void {
    if (this.#expiryTimer !== undefined) clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    this.#expiryDue = undefined;
  }

  #assertOpen(): void {
    if (this.#closed) throw closedError();
  }
}

function closedError(): SwitchyardError {
  return new SwitchyardError("unavailable", "the model cache is closed");
}
