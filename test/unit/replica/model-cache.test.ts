import { afterEach, describe, expect, test, vi } from "vitest";
import {
  type CacheLease,
  type CacheSnapshot,
  ModelCache,
  type ModelLoader,
} from "../../../backend/replica/model-cache.ts";
import type { CacheLimits } from "../../../shared/cache/admission.ts";
import { SwitchyardError } from "../../../shared/errors.ts";

// The loader is fake on purpose: every load waits until the test finishes or fails it by hand, which is
// what makes concurrency deterministic here. Real onnxruntime sessions are tested at the replica level.

interface FakeSession {
  key: string;
  /** Which load made it: tells a reload from the session loaded before. */
  id: number;
}

const label = (session: FakeSession) => `${session.key}#${session.id}`;

interface PendingLoad {
  key: string;
  resolve(loaded: { session: FakeSession; bytes: number }): void;
  reject(error: unknown): void;
}

class ManualLoader implements ModelLoader<FakeSession> {
  readonly loadCalls: string[] = [];
  /** Sessions whose release was called, in order. */
  readonly released: string[] = [];
  /** What release does once called; replace it to hold or fail releases. */
  releaseHook: (session: FakeSession) => Promise<void> = async () => undefined;
  readonly #sizes: Record<string, number>;
  /** Models with a keep-alive of their own (as a config.json's `keep_alive_s` gives the real loader). */
  readonly #keepAlive: Record<string, number>;
  readonly #pending: PendingLoad[] = [];
  #nextId = 1;

  constructor(sizes: Record<string, number>, keepAlive: Record<string, number> = {}) {
    this.#sizes = sizes;
    this.#keepAlive = keepAlive;
  }

  /** Keys starting with "missing" have no file to size; every other key is 10 bytes unless told. */
  async estimateBytes(key: string): Promise<number> {
    if (key.startsWith("missing")) throw new Error(`ENOENT: no such file, stat '${key}.onnx'`);
    return this.#sizes[key] ?? 10;
  }

  load(key: string): Promise<{ session: FakeSession; bytes: number; keepAliveMs?: number }> {
    this.loadCalls.push(key);
    return new Promise((resolve, reject) => this.#pending.push({ key, resolve, reject }));
  }

  async release(session: FakeSession): Promise<void> {
    this.released.push(label(session));
    await this.releaseHook(session);
  }

  /** Ends the oldest pending load of `key`; `bytes` is the real size (the estimate unless told). */
  finish(key: string, bytes?: number): FakeSession {
    const session = { key, id: this.#nextId++ };
    const keepAliveMs = this.#keepAlive[key];
    this.#take(key).resolve({
      session,
      bytes: bytes ?? this.#sizes[key] ?? 10,
      ...(keepAliveMs === undefined ? {} : { keepAliveMs }),
    });
    return session;
  }

  fail(key: string, error: Error): void {
    this.#take(key).reject(error);
  }

  pendingKeys(): string[] {
    return this.#pending.map((load) => load.key);
  }

  #take(key: string): PendingLoad {
    const index = this.#pending.findIndex((load) => load.key === key);
    const load = this.#pending[index];
    if (load === undefined) throw new Error(`no load of ${key} is pending`);
    this.#pending.splice(index, 1);
    return load;
  }
}

/** Lets every pending promise chain run (setImmediate fires only once the microtask queue is empty). */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Whether a promise has settled yet, without leaving a rejection unhandled. */
function track(promise: Promise<unknown>): { settled: boolean } {
  const state = { settled: false };
  void promise.then(
    () => {
      state.settled = true;
    },
    () => {
      state.settled = true;
    },
  );
  return state;
}

/** The SwitchyardError a promise rejects with. Call it before the rejection can happen. */
async function rejection(promise: Promise<unknown>): Promise<SwitchyardError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SwitchyardError) return error;
    throw new Error(`expected a SwitchyardError, got ${String(error)}`);
  }
  throw new Error("expected the promise to reject");
}

const open: Array<{ cache: ModelCache<FakeSession>; loader: ManualLoader }> = [];

afterEach(async () => {
  vi.useRealTimers();
  for (const { cache, loader } of open.splice(0)) {
    // close() waits for loads in progress; end the ones a test left hanging.
    for (const key of loader.pendingKeys()) loader.fail(key, new Error("test over"));
    await cache.close();
  }
});

function setup(
  options: {
    limits?: Partial<CacheLimits>;
    keepAliveMs?: number;
    sizes?: Record<string, number>;
    /** Keep-alives of models' own (their config.json's). */
    modelKeepAlive?: Record<string, number>;
  } = {},
) {
  const loader = new ManualLoader(options.sizes ?? {}, options.modelKeepAlive);
  const clock = { now: 0 };
  const errors: Array<{ message: string; error: unknown }> = [];
  const cache = new ModelCache<FakeSession>({
    limits: { maxModels: Number.POSITIVE_INFINITY, maxBytes: Number.POSITIVE_INFINITY, ...options.limits },
    keepAliveMs: options.keepAliveMs ?? 0,
    loader,
    now: () => clock.now,
    logError: (message, error) => errors.push({ message, error }),
  });
  open.push({ cache, loader });

  /** Acquires `key`, finishing its load if it needs one. */
  async function acquireLoaded(key: string, bytes?: number): Promise<CacheLease<FakeSession>> {
    const lease = cache.acquire(key);
    await flush();
    if (loader.pendingKeys().includes(key)) loader.finish(key, bytes);
    return lease;
  }
  /** Loads `key` and leaves it idle. */
  async function preloaded(key: string, bytes?: number): Promise<void> {
    (await acquireLoaded(key, bytes)).release();
  }
  const loadedKeys = () => cache.snapshot().loaded.map((entry) => entry.key);
  return { cache, loader, clock, errors, acquireLoaded, preloaded, loadedKeys };
}

describe("sharing loads", () => {
  test("a miss loads the model once; later acquires are hits on the same session", async () => {
    const { cache, loader, acquireLoaded } = setup();
    const first = await acquireLoaded("A");
    expect(first.hit).toBe(false);
    first.release();

    const second = await cache.acquire("A");
    expect(second).toMatchObject({ hit: true, waitedMs: 0, session: first.session });
    expect(loader.loadCalls).toEqual(["A"]);
  });

  test("concurrent acquires of one model share a single load and say how long each waited", async () => {
    const { cache, loader, clock } = setup();
    const early = cache.acquire("A");
    clock.now = 5;
    const late = cache.acquire("A");
    await flush();
    clock.now = 20;
    const session = loader.finish("A");

    expect(await early).toMatchObject({ session, hit: false, waitedMs: 20 });
    expect(await late).toMatchObject({ session, hit: false, waitedMs: 15 });
    expect(loader.loadCalls).toEqual(["A"]);
    expect(cache.snapshot().loaded).toEqual([
      { key: "A", bytes: 10, inFlight: 2, lastUsedAt: 20, pinned: false },
    ]);
  });

  test("a slow load delays neither a hit on another model nor the load of a third", async () => {
    const { cache, loader, preloaded } = setup();
    await preloaded("B");
    const slowA = track(cache.acquire("A"));

    expect((await cache.acquire("B")).hit).toBe(true);
    const c = cache.acquire("C");
    await flush();
    expect(loader.loadCalls).toEqual(["B", "A", "C"]);
    loader.finish("C");
    expect((await c).session.key).toBe("C");

    expect(slowA.settled).toBe(false);
    expect(cache.snapshot().loading).toEqual(["A"]);
  });
});

describe("room", () => {
  test("a model in use is never evicted: the admission waits for its lease, then evicts it", async () => {
    const { cache, loader, acquireLoaded, loadedKeys } = setup({ limits: { maxModels: 1 } });
    const a = await acquireLoaded("A");
    const b = cache.acquire("B");
    await flush();
    expect(loader.loadCalls).toEqual(["A"]);
    expect(cache.snapshot().waiting).toEqual(["B"]);

    a.release();
    await flush();
    expect(loader.released).toEqual(["A#1"]);
    expect(loader.loadCalls).toEqual(["A", "B"]);
    loader.finish("B");
    expect((await b).session.key).toBe("B");
    expect(loadedKeys()).toEqual(["B"]);
  });

  test("a loading model is never evicted: the admission behind it waits for the load and its lease", async () => {
    const { cache, loader } = setup({ limits: { maxModels: 1 } });
    const a = cache.acquire("A");
    const b = track(cache.acquire("B"));
    await flush();
    expect(loader.loadCalls).toEqual(["A"]);

    loader.finish("A");
    const leaseA = await a;
    await flush();
    expect(loader.loadCalls).toEqual(["A"]);

    leaseA.release();
    await flush();
    expect(loader.loadCalls).toEqual(["A", "B"]);
    expect(b.settled).toBe(false);
  });

  test("admissions waiting for room go first come first served, even past one that would fit", async () => {
    const { cache, loader, acquireLoaded } = setup({
      limits: { maxBytes: 100 },
      sizes: { A: 60, B: 50, C: 30 },
    });
    const a = await acquireLoaded("A");
    const b = cache.acquire("B"); // needs A gone
    await flush();
    const c = cache.acquire("C"); // 60 + 30 fits now, but B asked first
    await flush();
    expect(loader.loadCalls).toEqual(["A"]);
    expect(cache.snapshot().waiting).toEqual(["B", "C"]);

    a.release();
    await flush();
    // A's eviction made room for B, and B's 50 leave room for C's 30.
    expect(loader.loadCalls).toEqual(["A", "B", "C"]);
    loader.finish("C");
    loader.finish("B");
    await Promise.all([b, c]);
  });

  test("admissions wait in order when room frees one at a time", async () => {
    const { cache, loader, acquireLoaded } = setup({ limits: { maxModels: 1 } });
    const a = await acquireLoaded("A");
    const b = cache.acquire("B");
    await flush();
    const c = cache.acquire("C");
    await flush();

    a.release();
    await flush();
    expect(loader.loadCalls).toEqual(["A", "B"]);
    loader.finish("B");
    (await b).release();
    await flush();
    expect(loader.loadCalls).toEqual(["A", "B", "C"]);
    loader.finish("C");
    await c;
  });

  test("releasing a lease twice unpins it once: the other request keeps the model from eviction", async () => {
    const { cache, loader, acquireLoaded } = setup({ limits: { maxModels: 1 } });
    const first = await acquireLoaded("A");
    const second = await cache.acquire("A");
    first.release();
    first.release();
    expect(cache.snapshot().loaded).toMatchObject([{ key: "A", inFlight: 1 }]);

    const b = track(cache.acquire("B"));
    await flush();
    expect(loader.released).toEqual([]);
    second.release();
    await flush();
    expect(loader.released).toEqual(["A#1"]);
    expect(b.settled).toBe(false); // B's load is under way
  });

  test("a model bigger than the budget is rejected with too_large, naming its size and the budget", async () => {
    const { cache, loader } = setup({ limits: { maxBytes: 100 }, sizes: { huge: 150 } });
    const error = await rejection(cache.acquire("huge"));
    expect(error.code).toBe("too_large");
    expect(error.message).toMatch(/"huge".*150 bytes.*100 bytes/);
    expect(loader.loadCalls).toEqual([]);
    expect(cache.snapshot()).toMatchObject({ loaded: [], loading: [], waiting: [], bytes: 0 });
  });

  test("a cache that may hold no models rejects every model with too_large", async () => {
    const { cache } = setup({ limits: { maxModels: 0 } });
    expect((await rejection(cache.acquire("A"))).code).toBe("too_large");
  });
});

describe("eviction", () => {
  test("the next load starts only once the evicted session is released; a failed release is logged", async () => {
    const { cache, loader, errors, preloaded } = setup({ limits: { maxModels: 1 } });
    await preloaded("A");
    let failRelease: (error: Error) => void = () => undefined;
    loader.releaseHook = () =>
      new Promise((_, reject) => {
        failRelease = reject;
      });

    const b = cache.acquire("B");
    await flush();
    expect(loader.released).toEqual(["A#1"]);
    expect(cache.snapshot()).toMatchObject({ loaded: [], loading: ["B"] });
    expect(loader.loadCalls).toEqual(["A"]);

    loader.releaseHook = async () => undefined;
    failRelease(new Error("CUDA error: device busy"));
    await flush();
    expect(loader.loadCalls).toEqual(["A", "B"]);
    expect(errors).toHaveLength(1);
    expect(errors[0]?.message).toMatch(/"A"/);
    expect(errors[0]?.error).toMatchObject({ message: "CUDA error: device busy" });
    loader.finish("B");
    expect((await b).session.key).toBe("B");
  });

  test("the real size replaces the estimate, and an overflow evicts idle models least recently used first", async () => {
    const { cache, loader, clock, preloaded, acquireLoaded } = setup({
      limits: { maxBytes: 100 },
      sizes: { A: 30, B: 30, C: 20 },
    });
    clock.now = 1;
    await preloaded("A");
    clock.now = 2;
    await preloaded("B");
    clock.now = 3;
    const c = await acquireLoaded("C", 60); // planned at 20, takes 60: 120 of 100
    await flush();

    expect(loader.released).toEqual(["A#1"]);
    expect(cache.snapshot()).toMatchObject({
      bytes: 90,
      loaded: [
        { key: "B", bytes: 30 },
        { key: "C", bytes: 60, inFlight: 1 },
      ],
    });
    c.release();
  });

  test("a model that turns out bigger than the budget serves its request, then goes, and is refused next time", async () => {
    const { cache, loader, acquireLoaded } = setup({ limits: { maxBytes: 100 }, sizes: { X: 50 } });
    const lease = await acquireLoaded("X", 150);
    expect(lease.session.key).toBe("X");
    expect(cache.snapshot().bytes).toBe(150);

    lease.release();
    await flush();
    expect(loader.released).toEqual(["X#1"]);
    expect(cache.snapshot().bytes).toBe(0);
    const error = await rejection(cache.acquire("X"));
    expect(error.code).toBe("too_large");
    expect(error.message).toMatch(/150 bytes/);
    expect(loader.loadCalls).toEqual(["X"]);
  });

  test("every acquire, hit or miss, makes the model the most recently used", async () => {
    const { cache, loader, clock, preloaded, loadedKeys } = setup({ limits: { maxModels: 2 } });
    clock.now = 1;
    await preloaded("A");
    clock.now = 2;
    await preloaded("B");
    clock.now = 3;
    const hit = await cache.acquire("A");
    expect(loadedKeys()).toEqual(["B", "A"]);
    hit.release();

    clock.now = 4;
    await preloaded("C"); // a miss: evicts B, the least recently used
    expect(loader.released).toEqual(["B#2"]);
    expect(loadedKeys()).toEqual(["A", "C"]);
  });
});

describe("failed loads", () => {
  test("every waiter gets model_load_failed with the key and the cause; the next acquire tries again", async () => {
    const { cache, loader, preloaded } = setup();
    await preloaded("B");
    const first = rejection(cache.acquire("A"));
    const second = rejection(cache.acquire("A"));
    await flush();
    loader.fail("A", new Error("protobuf parsing failed"));

    for (const error of await Promise.all([first, second])) {
      expect(error.code).toBe("model_load_failed");
      expect(error.message).toMatch(/"A".*protobuf parsing failed/);
    }
    expect(cache.snapshot()).toMatchObject({ loading: [], waiting: [], loaded: [{ key: "B" }], bytes: 10 });
    expect((await cache.acquire("B")).hit).toBe(true);

    const retry = cache.acquire("A");
    await flush();
    loader.finish("A");
    expect((await retry).session.key).toBe("A");
    expect(loader.loadCalls).toEqual(["B", "A", "A"]);
  });

  test("a model that cannot be sized fails with model_load_failed and is never loaded", async () => {
    const { cache, loader } = setup();
    const error = await rejection(cache.acquire("missing-model"));
    expect(error.code).toBe("model_load_failed");
    expect(error.message).toMatch(/"missing-model".*ENOENT/);
    expect(loader.loadCalls).toEqual([]);
  });

  test("a failed load frees its room for the admission waiting behind it", async () => {
    const { cache, loader } = setup({ limits: { maxModels: 1 } });
    const a = rejection(cache.acquire("A"));
    const b = cache.acquire("B");
    await flush();
    loader.fail("A", new Error("out of memory"));
    await a;
    await flush();
    expect(loader.loadCalls).toEqual(["A", "B"]);
    loader.finish("B");
    await b;
  });
});

describe("keep-alive", () => {
  test("idle models unused for keepAliveMs are unloaded; models in use wait for their last release", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const { cache, loader, clock, preloaded, acquireLoaded, loadedKeys } = setup({ keepAliveMs: 1000 });
    const advance = async (ms: number) => {
      clock.now += ms;
      await vi.advanceTimersByTimeAsync(ms);
    };
    await preloaded("A");
    const b = await acquireLoaded("B");

    await advance(999);
    expect(loadedKeys()).toEqual(["A", "B"]);
    await advance(1);
    expect(loader.released).toEqual(["A#1"]);
    expect(loadedKeys()).toEqual(["B"]);

    await advance(5000);
    b.release(); // B's idle time starts now, not when it was acquired
    await advance(999);
    expect(loadedKeys()).toEqual(["B"]);
    await advance(1);
    expect(loadedKeys()).toEqual([]);
    expect(cache.snapshot().bytes).toBe(0);
  });

  test("keepAliveMs 0 keeps models until evicted, with no timer", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const { clock, preloaded, loadedKeys } = setup({ keepAliveMs: 0 });
    await preloaded("A");
    expect(vi.getTimerCount()).toBe(0);
    clock.now += 1e9;
    await vi.advanceTimersByTimeAsync(1e9);
    expect(loadedKeys()).toEqual(["A"]);
  });

  test("a model's own keep-alive wins over the cache's, both ways (0: never)", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const { clock, preloaded, loadedKeys } = setup({
      keepAliveMs: 1000,
      modelKeepAlive: { brief: 200, kept: 0, long: 5000 },
    });
    const advance = async (ms: number) => {
      clock.now += ms;
      await vi.advanceTimersByTimeAsync(ms);
    };
    await preloaded("brief");
    await preloaded("kept");
    await preloaded("long");
    await preloaded("plain");
    await advance(200);
    expect(loadedKeys().sort()).toEqual(["kept", "long", "plain"]);
    await advance(800);
    expect(loadedKeys().sort()).toEqual(["kept", "long"]);
    await advance(4000);
    expect(loadedKeys()).toEqual(["kept"]);
    await advance(1e9);
    expect(loadedKeys()).toEqual(["kept"]);
  });

  test("a keep-alive set at run time (the gateway's serving policy) wins over the model's own, until it is dropped", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const { cache, clock, preloaded, loadedKeys } = setup({ keepAliveMs: 0, modelKeepAlive: { kept: 0 } });
    const advance = async (ms: number) => {
      clock.now += ms;
      await vi.advanceTimersByTimeAsync(ms);
    };
    await preloaded("kept");
    await preloaded("other");
    cache.setKeepAlive("kept-policy", (key) => key === "kept", 300);
    await advance(299);
    expect(loadedKeys().sort()).toEqual(["kept", "other"]);
    await advance(1);
    expect(loadedKeys()).toEqual(["other"]);
    // Dropped: the model's own keep-alive (never) applies to its next copy again.
    cache.setKeepAlive("kept-policy", () => true, undefined);
    await preloaded("kept");
    await advance(1e9);
    expect(loadedKeys().sort()).toEqual(["kept", "other"]);
  });

  test("the keep-alive timer never keeps the process alive", async () => {
    const { preloaded } = setup({ keepAliveMs: 60_000 });
    const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
    const before = timers();
    await preloaded("A");
    expect(timers()).toBe(before);
  });
});

describe("onChange", () => {
  const describeSnapshot = (snapshot: CacheSnapshot) =>
    [
      ...snapshot.loaded.map((entry) => `${entry.key}(${entry.inFlight})`),
      ...snapshot.loading.map((key) => `${key}:loading`),
      ...snapshot.waiting.map((key) => `${key}:waiting`),
      ...snapshot.unloading.map((key) => `${key}:unloading`),
    ].join(" ");

  test("tells of every change, the snapshot then fresh, until unsubscribed", async () => {
    const { cache, loader } = setup({ limits: { maxModels: 1 } });
    const seen: string[] = [];
    const unsubscribe = cache.onChange(() => seen.push(describeSnapshot(cache.snapshot())));

    const a = cache.acquire("A");
    await flush();
    loader.finish("A");
    const leaseA = await a;
    const failing = rejection(cache.acquire("B"));
    await flush();
    leaseA.release();
    await flush();
    loader.fail("B", new Error("bad model"));
    await failing;

    expect(seen).toEqual([
      "A:waiting", // asked for
      "A:loading", // room given
      "A(1)", // loaded, pinned by its acquirer
      "A(1) B:waiting", // asked for, no room
      "A(0) B:waiting", // A's lease released
      "B:waiting", // A evicted
      "B:loading",
      "", // B's load failed
    ]);

    unsubscribe();
    track(cache.acquire("C"));
    await flush();
    expect(cache.snapshot().loading).toEqual(["C"]);
    expect(seen).toHaveLength(8);
  });
});

describe("unload", () => {
  test("an idle model is released and unload resolves true; a model not loaded gives false", async () => {
    const { cache, loader, preloaded } = setup();
    await preloaded("A");
    expect(await cache.unload("A")).toBe(true);
    expect(loader.released).toEqual(["A#1"]);
    expect(cache.snapshot()).toMatchObject({ loaded: [], bytes: 0 });

    expect(await cache.unload("A")).toBe(false);
    expect(await cache.unload("never-asked")).toBe(false);
    const loading = cache.acquire("L");
    await flush();
    expect(await cache.unload("L")).toBe(false);
    loader.finish("L");
    await loading;
  });

  test("a model in use leaves at once but is released only when its requests end", async () => {
    const { cache, loader, acquireLoaded } = setup();
    const old = await acquireLoaded("A");
    const unloaded = cache.unload("A");
    const unloadDone = track(unloaded);
    await flush();
    expect(unloadDone.settled).toBe(false);
    expect(loader.released).toEqual([]);
    expect(cache.snapshot()).toMatchObject({ loaded: [], unloading: ["A"], bytes: 10 });

    // A new acquire loads the model afresh rather than reusing the session on its way out.
    const fresh = await acquireLoaded("A");
    expect(fresh.session).not.toEqual(old.session);
    expect(fresh.hit).toBe(false);

    old.release();
    expect(await unloaded).toBe(true);
    expect(loader.released).toEqual(["A#1"]);
    expect(cache.snapshot()).toMatchObject({ loaded: [{ key: "A", inFlight: 1 }], unloading: [], bytes: 10 });
  });

  test("an admission waiting for room goes once an unloaded model's last request ends", async () => {
    const { cache, loader, acquireLoaded } = setup({ limits: { maxModels: 1 } });
    const a = await acquireLoaded("A");
    const unloaded = cache.unload("A");
    const b = cache.acquire("B");
    await flush();
    expect(loader.loadCalls).toEqual(["A"]); // A still holds the only slot

    a.release();
    expect(await unloaded).toBe(true);
    await flush();
    expect(loader.loadCalls).toEqual(["A", "B"]);
    loader.finish("B");
    await b;
  });
});

describe("close", () => {
  test("releases every session, fails waiting acquires and refuses new ones", async () => {
    const { cache, loader, acquireLoaded } = setup({ limits: { maxModels: 2 } });
    const a = await acquireLoaded("A");
    const loadingB = rejection(cache.acquire("B"));
    const waitingC = rejection(cache.acquire("C"));
    await flush();

    const closed = track(cache.close());
    expect((await waitingC).code).toBe("unavailable");
    await flush();
    expect(closed.settled).toBe(false); // B's load is still running
    loader.finish("B");
    expect((await loadingB).code).toBe("unavailable");
    await cache.close();

    expect(loader.released.sort()).toEqual(["A#1", "B#2"]);
    expect((await rejection(cache.acquire("A"))).code).toBe("unavailable");
    a.release(); // a request that ends after close is harmless
  });

  test("stops the keep-alive timer", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const { cache, loader, preloaded } = setup({ keepAliveMs: 1000 });
    await preloaded("A");
    expect(vi.getTimerCount()).toBe(1);
    await cache.close();
    expect(vi.getTimerCount()).toBe(0);
    expect(loader.released).toEqual(["A#1"]);
  });
});

describe("pins (model control's load)", () => {
  test("a pinned model is never the LRU victim, nor expires; unpinned, it is an ordinary entry again", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const { cache, loader, clock, preloaded, loadedKeys } = setup({
      limits: { maxModels: 2 },
      keepAliveMs: 1000,
    });
    const pinned = cache.pin("A");
    await flush();
    loader.finish("A");
    await pinned;
    expect(cache.snapshot().loaded).toEqual([expect.objectContaining({ key: "A", pinned: true })]);
    // A is the least recently used through all of this, and stays.
    await preloaded("B");
    await preloaded("C");
    expect(loadedKeys()).toEqual(["A", "C"]);
    clock.now += 5000;
    await vi.advanceTimersByTimeAsync(5000);
    expect(loadedKeys()).toEqual(["A"]);

    expect(cache.unpin("A")).toBe(true);
    expect(cache.unpin("A")).toBe(false);
    await preloaded("D");
    await preloaded("E");
    expect(loadedKeys()).toEqual(["D", "E"]);
  });

  test("a model that cannot fit beside the pinned ones is refused at once with a retryable 503, not left waiting", async () => {
    const { cache, loader } = setup({ limits: { maxBytes: 100 }, sizes: { A: 60, B: 60 } });
    const pinned = cache.pin("A");
    await flush();
    loader.finish("A");
    await pinned;
    const refused = await rejection(cache.acquire("B"));
    // Not 413: the model is not too big, the pins are in the way until an unload, and another replica may
    // have room (the error says no work began, so the gateway may send it there).
    expect(refused).toMatchObject({
      code: "unavailable",
      status: 503,
      retryAfterSeconds: 5,
      beforeWork: true,
    });
    expect(refused.message).toMatch(/does not fit beside the 1 model\(s\) pinned here.*unload one/);
    expect(await rejection(cache.pin("B"))).toMatchObject({ code: "unavailable" });
    expect(cache.snapshot().loaded.map((entry) => entry.key)).toEqual(["A"]);
    expect(cache.unpin("A")).toBe(true);
    const admitted = cache.acquire("B");
    await flush();
    loader.finish("B");
    (await admitted).release();
    expect(cache.snapshot().loaded.map((entry) => entry.key)).toEqual(["B"]);
  });

  test("unpinning a model whose pinned load is still running cancels the pin", async () => {
    const { cache, loader } = setup({ limits: { maxModels: 1 } });
    const pinned = cache.pin("A");
    await flush();
    expect(cache.pinnedKeys()).toEqual(["A"]);
    expect(cache.unpin("A")).toBe(true);
    loader.finish("A");
    await pinned;
    expect(cache.snapshot().loaded).toEqual([expect.objectContaining({ key: "A", pinned: false })]);
  });

  test("unload drops the pin with the model", async () => {
    const { cache, loader, preloaded } = setup({ limits: { maxModels: 1 } });
    const pinned = cache.pin("A");
    await flush();
    loader.finish("A");
    await pinned;
    expect(await cache.unload("A")).toBe(true);
    await preloaded("A");
    await preloaded("B");
    expect(cache.snapshot().loaded.map((entry) => entry.key)).toEqual(["B"]);
  });
});
