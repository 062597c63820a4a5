/**
 * The servers the hot-path benchmark measures, each its own process group: the anchors (one per model and
 * kind: one thread, HTTP threads, the HTTP floor), the standalone agent, the agent behind `wrangler dev`, and
 * the relay anchor. Each resolves once it serves, with the URL and the headers a client needs.
 */
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ReplicaDevice } from "../../backend/replica/device.ts";
import { type ManagedProcess, spawnGroup } from "../../scripts/lib/process-group.ts";
import { onFreePort, REPO_ROOT, startWranglerDev } from "../../scripts/lib/wrangler-dev.ts";

export interface Target {
  /** agent-main: the agent serving HTTP on its main thread (--http-threads 0), as before intake threads. */
  /** anchor-threads: the anchor with its HTTP on threads of its own (anchor-server.ts --http-threads). */
  /** relay-anchor: the relay anchor (relay-anchor/worker.ts) in wrangler dev, an anchor server behind it per model. */
  /** http-floor: the threaded anchor answering from memory (anchor-server.ts --memo): HTTP alone. */
  /** grpc-anchor: the anchor serving gRPC (anchor-server.ts --grpc): the floor of a Node gRPC server. */
  kind:
    | "anchor"
    | "anchor-threads"
    | "http-floor"
    | "grpc-anchor"
    | "agent-main"
    | "agent"
    | "gateway"
    | "relay-anchor";
  url: string;
  headers: Record<string, string>;
  /** The standalone agent's gRPC host:port, where it serves gRPC (--grpc-port). */
  grpcAddress?: string;
  /** The one model it serves (the anchor), or every model. */
  model?: string;
  /** The anchor batches what arrives while it runs (--max-batch): it stands for the model's batched twin. */
  batched?: boolean;
  /** It serves every model, but not their batched twins. */
  unbatchedOnly?: boolean;
  /**
   * The server's process (the anchors, the standalone agent; behind the gateway, its agent, as workerd's CPU
   * is not the agent's): its CPU is read around each load.
   */
  pid?: number;
  /**
   * Behind `wrangler dev` (the gateway, the relay anchor): wrangler's pid and the port it serves, to read what
   * its workerd processes spend around each load (bench/registry/process-cpu.ts readTreeCpu).
   */
  wrangler?: { pid: number; port: number };
  stop(): Promise<void>;
}

const KEYS = { API_KEYS: "bench-key", AGENT_TOKENS: "bench-agent", ADMIN_KEY: "bench-admin" };

/** A bundle in dist/ when run from one (a GPU host), else the sources. */
function entry(bundled: string, source: string): string {
  const beside = join(import.meta.dirname, bundled);
  return existsSync(beside) ? beside : join(REPO_ROOT, source);
}

async function started(process: ManagedProcess, pattern: RegExp, what: string): Promise<string> {
  const match = await process.waitForOutput(pattern, 120_000).catch(async (error: unknown) => {
    await process.stop("SIGKILL");
    throw new Error(`${what} did not start: ${error instanceof Error ? error.message : String(error)}`);
  });
  const url = match[1];
  if (url === undefined) throw new Error(`${what}: no URL in ${match[0]}`);
  return url;
}

/** What anchor-server.ts prints once it serves (over HTTP, or with --relay once its socket is open). */
const ANCHOR_LISTENING = /anchor listening (\S+)/;

/** `wrangler dev` on a free port with its state in a fresh directory, as each target that runs one starts it. */
async function wranglerOnFreePort(
  name: string,
  statePrefix: string,
  options: { config?: string; vars?: Record<string, string> } = {},
): Promise<{ port: number; process: ManagedProcess }> {
  const { port, started: process } = await onFreePort((port) =>
    startWranglerDev({
      name,
      port,
      ...options,
      persistTo: mkdtempSync(join(tmpdir(), statePrefix)),
      startTimeoutMs: 120_000,
    }),
  );
  return { port, process };
}

/** A target's `wrangler` (Target.wrangler), where its process has a pid. */
function wranglerOf(wrangler: ManagedProcess, port: number): Pick<Target, "wrangler"> {
  return wrangler.child.pid === undefined ? {} : { wrangler: { pid: wrangler.child.pid, port } };
}

/** The anchor server's arguments for one model's session (anchor-server.ts). */
function anchorArgs(path: string, device: ReplicaDevice, threads: number | undefined): string[] {
  return [
    entry("hot-path-anchor.mjs", "bench/hot-path/anchor-server.ts"),
    "--model",
    path,
    ...(device.kind === "cuda" ? ["--device", "cuda", "--gpu", String(device.deviceId)] : []),
    ...(threads === undefined ? [] : ["--threads", String(threads)]),
  ];
}

/** How an anchor serves (anchor-server.ts): batching up to `maxBatch`, on HTTP threads, from memory, gRPC. */
export interface AnchorShape {
  maxBatch?: number | undefined;
  httpThreads?: number;
  memo?: boolean;
  grpc?: boolean;
}

export async function startAnchorTarget(
  model: string,
  path: string,
  device: ReplicaDevice,
  threads: number | undefined,
  { maxBatch, httpThreads = 0, memo = false, grpc = false }: AnchorShape = {},
): Promise<Target> {
  const args = [
    ...anchorArgs(path, device, threads),
    ...(maxBatch === undefined ? [] : ["--max-batch", String(maxBatch)]),
    "--http-threads",
    String(httpThreads),
    ...(memo ? ["--memo"] : []),
    ...(grpc ? ["--grpc"] : []),
  ];
  const kind = grpc ? "grpc-anchor" : memo ? "http-floor" : httpThreads > 0 ? "anchor-threads" : "anchor";
  const label = `${kind} ${model}${maxBatch === undefined ? "" : " batched"}`;
  const process = spawnGroup(label, globalThis.process.execPath, args, { cwd: REPO_ROOT });
  const url = await started(process, ANCHOR_LISTENING, "the anchor");
  return {
    kind,
    url,
    ...(grpc ? { grpcAddress: url.replace("grpc://", "") } : {}),
    headers: {},
    model,
    batched: maxBatch !== undefined,
    ...(process.child.pid === undefined ? {} : { pid: process.child.pid }),
    stop: () => process.stop().then(() => undefined),
  };
}

/**
 * The relay anchor (relay-anchor/worker.ts) in `wrangler dev` on a free port, and an anchor server per model
 * that dials it (anchor-server.ts --relay): the floor of a gateway of the gateway's shape. Unbatched only.
 */
export async function startRelayAnchorTarget(
  models: readonly { name: string; path: string }[],
  device: ReplicaDevice,
  threads: number | undefined,
): Promise<Target> {
  const { port, process: relay } = await wranglerOnFreePort(
    "relay anchor",
    "switchyard-relay-anchor-state-",
    {
      config: join(REPO_ROOT, "bench/hot-path/relay-anchor/wrangler.toml"),
    },
  );
  const peers: ManagedProcess[] = [];
  const stop = async () => {
    await Promise.all(peers.map((peer) => peer.stop()));
    await relay.stop();
  };
  try {
    for (const { name, path } of models) {
      const args = [
        ...anchorArgs(path, device, threads),
        "--relay",
        `ws://127.0.0.1:${port}/connect/${name}`,
      ];
      const peer = spawnGroup(`relay anchor ${name}`, process.execPath, args, { cwd: REPO_ROOT });
      peers.push(peer);
      await started(peer, ANCHOR_LISTENING, "the relay anchor's peer");
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    kind: "relay-anchor",
    url: `http://127.0.0.1:${port}`,
    headers: {},
    unbatchedOnly: true,
    ...wranglerOf(relay, port),
    stop,
  };
}

/** `nodeArgs` go to Node itself (`--cpu-prof --cpu-prof-dir <dir>` profiles the agent). */
export async function startAgentTarget(
  args: readonly string[],
  nodeArgs: readonly string[] = [],
  kind: "agent" | "agent-main" = "agent",
): Promise<Target> {
  const agentArgs = [
    ...nodeArgs,
    entry("switchyard-agent.mjs", "backend/bin/switchyard-agent.ts"),
    "--standalone",
    "--port",
    "0",
  ];
  const process = spawnGroup(kind, globalThis.process.execPath, [...agentArgs, ...args], {
    cwd: REPO_ROOT,
  });
  const url = await started(process, /standalone server listening url=(\S+)/, "the agent");
  const grpc = args.includes("--grpc-port")
    ? (await process.waitForOutput(/grpc server listening address=(\S+)/, 120_000))[1]
    : undefined;
  await process.waitForOutput(/agent ready/, 120_000);
  return {
    kind,
    url,
    ...(grpc === undefined ? {} : { grpcAddress: grpc }),
    headers: {},
    ...(process.child.pid === undefined ? {} : { pid: process.child.pid }),
    stop: () => process.stop().then(() => undefined),
  };
}

/** `wrangler dev` on a free port, and an agent that joins it with its own repository (`nodeArgs` as above). */
export async function startGatewayTarget(
  args: readonly string[],
  nodeArgs: readonly string[] = [],
): Promise<Target> {
  const { port, process: gateway } = await wranglerOnFreePort("wrangler dev", "switchyard-hot-path-state-", {
    vars: KEYS,
  });
  const url = `http://127.0.0.1:${port}`;
  const agent = spawnGroup(
    "agent (gateway)",
    process.execPath,
    [
      ...nodeArgs,
      entry("switchyard-agent.mjs", "backend/bin/switchyard-agent.ts"),
      "--gateway",
      `ws://127.0.0.1:${port}`,
      "--token",
      KEYS.AGENT_TOKENS,
      ...args,
    ],
    { cwd: REPO_ROOT },
  );
  try {
    await agent.waitForOutput(/connected to the gateway/, 120_000);
  } catch (error) {
    await Promise.all([agent.stop("SIGKILL"), gateway.stop("SIGKILL")]);
    throw error;
  }
  return {
    kind: "gateway",
    url,
    headers: { Authorization: `Bearer ${KEYS.API_KEYS}` },
    ...(agent.child.pid === undefined ? {} : { pid: agent.child.pid }),
    ...wranglerOf(gateway, port),
    stop: async () => {
      await agent.stop();
      await gateway.stop();
    },
  };
}
