/**
 * Where the Worker isolate's time goes: a V8 sampling profile taken through `wrangler dev`'s inspector (the
 * DevTools protocol wrangler serves for the Worker, on 9229 or whichever port it found free), split into the
 * registry's code and the Worker's by the source file of each sample's frames. The bundle `wrangler deploy
 * --dry-run` writes keeps a "// <source path>" comment before each module's code, which is what maps a
 * frame's line back to its file. workerd CPU from /proc says how much; this says what for.
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import WebSocket from "ws";
import { processTree } from "./process-cpu.ts";

// ---- finding the inspector ----

/** TCP ports some process of the tree listens on (from /proc/net/tcp*, matched to the tree's sockets). */
function listeningPorts(root: number): number[] {
  const inodes = new Set<string>();
  for (const { pid } of processTree(root)) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (match?.[1] !== undefined) inodes.add(match[1]);
      } catch {
        // Closed meanwhile.
      }
    }
  }
  const ports = new Set<number>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let lines: string[] = [];
    try {
      lines = readFileSync(table, "utf8").split("\n").slice(1);
    } catch {
      continue;
    }
    for (const line of lines) {
      const fields = line.trim().split(/\s+/);
      // local_address is "<hex ip>:<hex port>"; st 0A is LISTEN; the inode is the tenth field.
      const port = fields[1]?.split(":")[1];
      if (fields[3] !== "0A" || port === undefined || !inodes.has(fields[9] ?? "")) continue;
      ports.add(Number.parseInt(port, 16));
    }
  }
  return [...ports];
}

/**
 * The DevTools websocket of the Worker that `wrangler dev` (pid `root`) serves; undefined when none answers.
 * wrangler's inspector proxy (in its proxy workerd, "workers") is preferred over the worker workerd's own
 * inspector, which wrangler holds a session to already and which then does not answer a second one.
 */
export async function findInspector(root: number): Promise<string | undefined> {
  const found: Array<{ url: string; wranglers: boolean }> = [];
  for (const port of listeningPorts(root)) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/json`, { signal: AbortSignal.timeout(1_000) });
      const targets = (await response.json()) as Array<{
        webSocketDebuggerUrl?: unknown;
        description?: unknown;
      }>;
      const target = targets[0];
      if (typeof target?.webSocketDebuggerUrl !== "string") continue;
      found.push({ url: target.webSocketDebuggerUrl, wranglers: target.description !== "workerd worker" });
    } catch {
      // Not an inspector (the Worker's own port, wrangler's other servers).
    }
  }
  return (found.find((candidate) => candidate.wranglers) ?? found[0])?.url;
}

// ---- the profiler ----

/** The parts of a DevTools Profiler.Profile that the summary reads. */
export interface CpuProfile {
  nodes: Array<{
    id: number;
    callFrame: { functionName: string; lineNumber: number; url: string };
    children?: number[];
  }>;
  samples: number[];
  timeDeltas: number[];
}

/** One DevTools session: Profiler.start, then Profiler.stop for the profile; or the heap's size now. */
export class IsolateProfiler {
  readonly #socket: WebSocket;
  readonly #waiting = new Map<
    number,
    { resolve: (result: unknown) => void; reject: (error: Error) => void }
  >();
  #nextId = 0;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.on("message", (data) => {
      const message = JSON.parse(data.toString()) as {
        id?: number;
        result?: unknown;
        error?: { message: string };
      };
      const waiter = message.id === undefined ? undefined : this.#waiting.get(message.id);
      if (waiter === undefined || message.id === undefined) return;
      this.#waiting.delete(message.id);
      if (message.error !== undefined) waiter.reject(new Error(message.error.message));
      else waiter.resolve(message.result);
    });
  }

  static async connect(url: string): Promise<IsolateProfiler> {
    const socket = new WebSocket(url, { handshakeTimeout: 5_000 });
    await new Promise((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("error", reject);
    });
    return new IsolateProfiler(socket);
  }

  /** A DevTools call; an inspector that does not answer in `timeoutMs` fails it (a profile is optional). */
  #call(method: string, params: object = {}, timeoutMs = 10_000): Promise<unknown> {
    this.#nextId += 1;
    const id = this.#nextId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error(`the inspector did not answer ${method} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiting.set(id, {
        resolve: (result) => {
          clearTimeout(timer);
          resolve(result);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.#socket.send(JSON.stringify({ id, method, params }));
    });
  }

  async start(intervalUs: number): Promise<void> {
    await this.#call("Profiler.enable");
    await this.#call("Profiler.setSamplingInterval", { interval: intervalUs });
    await this.#call("Profiler.start");
  }

  /**
   * The isolate's JS heap in bytes (used, and reserved), after a full collection when `collect` (so that
   * what is counted is what is still held, not garbage not yet collected).
   */
  async heapUsage(collect: boolean): Promise<{ usedBytes: number; totalBytes: number }> {
    if (collect) await this.#call("HeapProfiler.collectGarbage", {}, 60_000);
    const usage = (await this.#call("Runtime.getHeapUsage", {}, 60_000)) as {
      usedSize: number;
      totalSize: number;
    };
    return { usedBytes: usage.usedSize, totalBytes: usage.totalSize };
  }

  async stop(): Promise<CpuProfile> {
    const result = (await this.#call("Profiler.stop", {}, 60_000)) as { profile: CpuProfile };
    return result.profile;
  }

  close(): void {
    this.#socket.close();
  }
}

// ---- the summary ----

/** Where a sample's time went. */
export type Share = "registry" | "relay" | "worker" | "native" | "gc" | "idle";

export interface ProfileSummary {
  /** Sampled time (ms) by share; `native` is runtime work no JS frame owns (I/O, RPC, serialization). */
  ms: Record<Share, number>;
  /** Functions with the most self time in the registry's code. */
  topRegistry: ProfileEntry[];
  /** The same in the agents' relays (gateway/agent-relay/, and what they call). */
  topRelay: ProfileEntry[];
  /** The same in the Worker's code (its route handlers, Hono, the OIP codec on the Worker's side). */
  topWorker: ProfileEntry[];
}

export interface ProfileEntry {
  name: string;
  /** Its source file (a native function: its caller's). */
  file: string;
  /** The nearest JS function under another name that called it. */
  caller?: string;
  /** Self time, ms. */
  ms: number;
}

/** The registry's code: the Durable Object and what only it runs (its metrics). */
const REGISTRY_FILES = /^(gateway\/registry\/|gateway\/metrics\/pool-)/;
/** An agent's relay (its entry points are AgentRelay methods; it also calls the frame parser in registry/). */
const RELAY_FILES = /^gateway\/agent-relay\//;

/** "// <path>" comments of the bundle: the line each module starts at, in order. */
function moduleStarts(bundle: string): Array<{ line: number; file: string }> {
  const starts: Array<{ line: number; file: string }> = [];
  bundle.split("\n").forEach((text, index) => {
    const match = /^\/\/ (\S+\.[cm]?[jt]s)$/.exec(text);
    if (match?.[1] !== undefined) starts.push({ line: index, file: match[1] });
  });
  return starts;
}

function fileAt(starts: ReadonlyArray<{ line: number; file: string }>, line: number): string {
  let low = 0;
  let high = starts.length - 1;
  let found = "";
  while (low <= high) {
    const middle = (low + high) >> 1;
    const start = starts[middle];
    if (start === undefined) break;
    if (start.line <= line) {
      found = start.file;
      low = middle + 1;
    } else high = middle - 1;
  }
  return found;
}

/**
 * Splits a profile's samples: a stack with any frame in an agent relay's code is the relays', else one with
 * any frame in the registry's code is the registry's (their entry points, RPC methods and websocket handlers,
 * are their methods, and so are the continuations of their awaits); another stack with JS frames is the
 * Worker's; the rest is the runtime's own (native), GC or idle.
 */
export function summarizeProfile(
  profile: CpuProfile,
  bundleSource: string,
  bundleUrl = "index.js",
  top = 12,
): ProfileSummary {
  const starts = moduleStarts(bundleSource);
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  // Frames of the bundle map to their source file; the runtime's own scripts (nodejs_compat's
  // "node-internal:..." modules) are named by their URL.
  const fileOf = (id: number) => {
    const frame = byId.get(id)?.callFrame;
    if (frame === undefined || frame.url === "" || frame.lineNumber < 0) return "";
    return frame.url === bundleUrl ? fileAt(starts, frame.lineNumber) : frame.url;
  };
  const shareCache = new Map<number, Share>();
  const shareOf = (id: number): Share => {
    const known = shareCache.get(id);
    if (known !== undefined) return known;
    const name = byId.get(id)?.callFrame.functionName;
    let share: Share = name === "(idle)" ? "idle" : name === "(garbage collector)" ? "gc" : "native";
    // The whole stack is looked at: the object whose entry point is at its bottom owns it (a relay's
    // frame wins over the registry's parser it calls).
    for (let at: number | undefined = id; at !== undefined; at = parentOf.get(at)) {
      const file = fileOf(at);
      if (RELAY_FILES.test(file)) {
        share = "relay";
        break;
      }
      if (REGISTRY_FILES.test(file)) share = "registry";
      else if (file !== "" && share === "native") share = "worker";
    }
    shareCache.set(id, share);
    return share;
  };
  const ms: Record<Share, number> = { registry: 0, relay: 0, worker: 0, native: 0, gc: 0, idle: 0 };
  const selfTime = new Map<number, number>();
  profile.samples.forEach((id, index) => {
    const delta = (profile.timeDeltas[index] ?? 0) / 1000;
    ms[shareOf(id)] += delta;
    selfTime.set(id, (selfTime.get(id) ?? 0) + delta);
  });
  const nameOf = (id: number) => byId.get(id)?.callFrame.functionName || "(anonymous)";
  const libraryOf = (id: number) => /^node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(fileOf(id))?.[1];
  const topOf = (share: Share) => {
    const byFunction = new Map<string, ProfileEntry>();
    for (const [id, time] of selfTime) {
      if (shareOf(id) !== share) continue;
      // A library's frames (zod's parse, Hono's router) count as the library, called by the first frame
      // outside it: what matters is which of our functions asked for the work.
      const library = libraryOf(id);
      const name = library ?? nameOf(id);
      // The first JS caller under another name: a native frame (a storage call, JSON.parse) is only
      // understood with it, and takes its file. For a native frame anonymous callers are passed over too:
      // they are thin wrappers (the metered storage's list, a callback handed to the relay).
      const native = fileOf(id) === "";
      let caller: number | undefined = parentOf.get(id);
      while (
        caller !== undefined &&
        (fileOf(caller) === "" ||
          nameOf(caller) === name ||
          (native && nameOf(caller) === "(anonymous)") ||
          (library !== undefined && libraryOf(caller) === library))
      )
        caller = parentOf.get(caller);
      const file =
        library === undefined
          ? fileOf(id) || (caller === undefined ? "" : fileOf(caller))
          : caller === undefined
            ? `node_modules/${library}`
            : fileOf(caller);
      const callerName = caller === undefined ? undefined : nameOf(caller);
      const key = `${name} ${file} ${callerName}`;
      const entry = byFunction.get(key) ?? {
        name,
        file,
        ms: 0,
        ...(callerName === undefined ? {} : { caller: callerName }),
      };
      entry.ms += time;
      byFunction.set(key, entry);
    }
    return [...byFunction.values()].sort((a, b) => b.ms - a.ms).slice(0, top);
  };
  return { ms, topRegistry: topOf("registry"), topRelay: topOf("relay"), topWorker: topOf("worker") };
}
