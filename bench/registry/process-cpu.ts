/**
 * CPU time of a process tree, read from /proc (Linux only): what the registry benchmark charges to the
 * gateway. `wrangler dev` is a Node process that starts further Node processes and one or more workerd
 * processes (the Worker and its Durable Objects run in workerd); the tree is walked from wrangler's pid at
 * every reading, so a workerd that wrangler restarts is still found.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** Clock ticks per second, the unit of utime and stime in /proc/<pid>/stat (100 on every usual Linux). */
const TICKS_PER_SECOND = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

export interface ProcessStat {
  pid: number;
  ppid: number;
  comm: string;
  /** User + system CPU of the process (all its threads), in milliseconds. */
  cpuMs: number;
}

/**
 * /proc/<pid>/stat of one process; undefined when it is gone. The command name is in parentheses and may
 * itself hold spaces and parentheses, so the fields are counted from the last ")".
 */
export function readStat(pid: number): ProcessStat | undefined {
  return parseStat(pid, `/proc/${pid}/stat`);
}

/**
 * The same for one thread of a process (its main thread: `tid` = `pid`): what that thread alone spent, where
 * /proc/<pid>/stat sums every thread's.
 */
export function readThreadStat(pid: number, tid: number): ProcessStat | undefined {
  return parseStat(pid, `/proc/${pid}/task/${tid}/stat`);
}

function parseStat(pid: number, path: string): ProcessStat | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return undefined;
  // After ") ": state(3) ppid(4) ... utime(14) stime(15), i.e. indices 0, 1, ... 11, 12 here.
  const fields = text.slice(close + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return {
    pid,
    ppid: Number(fields[1]),
    comm: text.slice(open + 1, close),
    cpuMs: (ticks * 1000) / TICKS_PER_SECOND,
  };
}

/** `root` and every process below it, as they are now. */
export function processTree(root: number): ProcessStat[] {
  const all: ProcessStat[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(Number(entry));
    if (stat !== undefined) all.push(stat);
  }
  const children = new Map<number, ProcessStat[]>();
  for (const stat of all) children.set(stat.ppid, [...(children.get(stat.ppid) ?? []), stat]);
  const rootStat = all.find((stat) => stat.pid === root);
  if (rootStat === undefined) return [];
  const tree: ProcessStat[] = [];
  const work = [rootStat];
  for (let next = work.pop(); next !== undefined; next = work.pop()) {
    tree.push(next);
    work.push(...(children.get(next.pid) ?? []));
  }
  return tree;
}

/**
 * What a process of `wrangler dev`'s tree does. wrangler runs two workerd processes: its dev proxy, which
 * listens on the public port and forwards every request, and the one that runs the Worker and its Durable
 * Objects (the registry). They are told apart by the socket their command line binds.
 */
export type Role = "worker" | "proxy" | "node";

export function roleOf(stat: ProcessStat, publicPort: number): Role {
  if (stat.comm !== "workerd") return "node";
  let commandLine = "";
  try {
    commandLine = readFileSync(`/proc/${stat.pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    // Gone: counted as the Worker's, which a window never sees anyway.
  }
  return new RegExp(`--socket-addr=entry=[^ ]*:${publicPort}( |$)`).test(commandLine) ? "proxy" : "worker";
}

/** CPU of a process tree at one moment: ms per pid, with each pid's role. */
export interface CpuReading {
  at: number;
  cpuMs: Map<number, { role: Role; ms: number }>;
}

export function readTreeCpu(root: number, publicPort: number): CpuReading {
  const cpuMs = new Map<number, { role: Role; ms: number }>();
  for (const stat of processTree(root))
    cpuMs.set(stat.pid, { role: roleOf(stat, publicPort), ms: stat.cpuMs });
  return { at: performance.now(), cpuMs };
}

/**
 * A reader of a `wrangler dev` gateway's CPU (the harness's GatewayProcess, of this tree or another commit's):
 * its process tree from wrangler's pid, its roles told apart by the public port. Undefined without a pid.
 */
export function gatewayCpuReader(gateway: {
  url: string;
  process: { child: { pid?: number | undefined } };
}): () => CpuReading | undefined {
  const root = gateway.process.child.pid;
  const port = Number(new URL(gateway.url).port);
  return () => (root === undefined ? undefined : readTreeCpu(root, port));
}

export interface CpuDelta {
  wallMs: number;
  /** CPU ms of the workerd running the Worker and the registry. */
  workerMs: number;
  /** CPU ms of wrangler's dev proxy (a workerd too; not there in production). */
  proxyMs: number;
  /** CPU ms of wrangler's Node processes (and esbuild). */
  nodeMs: number;
}

/**
 * What the tree spent between two readings. A process that appeared meanwhile counts from zero; one that
 * vanished counts for nothing (its last interval is lost, which a benchmark window should never see).
 */
export function cpuBetween(before: CpuReading, after: CpuReading): CpuDelta {
  const delta: CpuDelta = { wallMs: after.at - before.at, workerMs: 0, proxyMs: 0, nodeMs: 0 };
  for (const [pid, { role, ms }] of after.cpuMs) {
    const spent = ms - (before.cpuMs.get(pid)?.ms ?? 0);
    if (role === "worker") delta.workerMs += spent;
    else if (role === "proxy") delta.proxyMs += spent;
    else delta.nodeMs += spent;
  }
  return delta;
}

/**
 * CPU the whole machine spent (all cores, user + system + interrupts), in ms, from /proc/stat: what the
 * benchmark's processes did not spend of it is other work on the machine competing with the measurement.
 */
export function machineBusyMs(): number {
  const first = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  const ticks = first.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...: idle and iowait are not work.
  const busy = ticks
    .slice(0, 8)
    .reduce((sum, value, index) => (index === 3 || index === 4 ? sum : sum + value), 0);
  return (busy * 1000) / TICKS_PER_SECOND;
}

/** This process's own CPU (the load generator: clients and simulated agents), in ms. */
export function ownCpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}
