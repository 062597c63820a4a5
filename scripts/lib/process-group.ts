import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";

/**
 * A child process started as the leader of its own process group, so that stopping it also stops whatever it
 * started (wrangler dev runs workerd; npm runs node). Every group still alive when this process exits is
 * killed, so a failed or interrupted run leaves no orphans listening on ports. `npm start`, the integration
 * tests and the benchmarks all start their processes through this (scripts/lib/: development tooling they
 * share, not part of the agent or the gateway).
 */
export interface ManagedProcess {
  readonly child: ChildProcess;
  readonly name: string;
  /** stdout and stderr so far, interleaved (only the last `keepOutputChars` when that was given). */
  output(): string;
  /** Resolves with the first match of `pattern` in the output (now or later); rejects if the process exits. */
  waitForOutput(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
  /** Signals the group, then SIGKILLs it after `graceMs`; resolves once the leader has exited. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
}

export interface SpawnGroupOptions {
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Hears each complete line of stdout and stderr as it comes (e.g. to show it with a prefix). */
  onLine?: (line: string) => void;
  /**
   * Keep only the last this many characters of output, for processes that run for hours (`npm start`);
   * everything by default, as tests read all of it.
   */
  keepOutputChars?: number;
}

const live = new Set<number>();
process.once("exit", () => {
  for (const pid of live) signalGroup(pid, "SIGKILL");
});

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

export function spawnGroup(
  name: string,
  command: string,
  args: readonly string[],
  options: SpawnGroupOptions = {},
): ManagedProcess {
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${name}: could not start ${command}`);
  live.add(pid);
  let output = "";
  const watchers = new Set<() => void>();
  const lineReader = (onLine: (line: string) => void) => {
    let pending = "";
    return (text: string) => {
      const lines = (pending + text).split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) onLine(line);
    };
  };
  const append = (text: string) => {
    output += text;
    const keep = options.keepOutputChars;
    if (keep !== undefined && output.length > keep * 2) output = output.slice(-keep);
    for (const watcher of watchers) watcher();
  };
  // stdout and stderr each have their own partial last line.
  for (const stream of [child.stdout, child.stderr]) {
    const lines = options.onLine === undefined ? undefined : lineReader(options.onLine);
    stream?.on("data", (chunk: Buffer) => {
      const text = chunk.toString("utf8");
      append(text);
      lines?.(text);
    });
  }
  const exited = once(child, "exit").then(([code]) => {
    // The leader is gone; anything it left in its group goes with it.
    signalGroup(pid, "SIGKILL");
    live.delete(pid);
    for (const watcher of watchers) watcher();
    return code as number | null;
  });

  return {
    child,
    name,
    output: () => output,
    exited,
    waitForOutput(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(output);
          if (match !== null) return finish(() => resolve(match));
          if (child.exitCode !== null || child.signalCode !== null) {
            finish(() =>
              reject(
                new Error(
                  `${name} exited (${child.exitCode ?? child.signalCode}) before ${pattern}:\n${tail(output)}`,
                ),
              ),
            );
          }
        };
        const timer = setTimeout(
          () =>
            finish(() =>
              reject(new Error(`${name}: no ${pattern} within ${timeoutMs} ms:\n${tail(output)}`)),
            ),
          timeoutMs,
        );
        const finish = (settle: () => void) => {
          clearTimeout(timer);
          watchers.delete(check);
          settle();
        };
        watchers.add(check);
        check();
      });
    },
    async stop(signal = "SIGTERM", graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      signalGroup(pid, signal);
      const killer = setTimeout(() => signalGroup(pid, "SIGKILL"), graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(killer);
      }
    },
  };
}

/** Whether the group's leader is still running. */
export const isRunning = (process: ManagedProcess): boolean =>
  process.child.exitCode === null && process.child.signalCode === null;

/** The last lines of a process's output, for error messages. */
export function tail(text: string, lines = 40): string {
  return text.split("\n").slice(-lines).join("\n");
}

/** The tail of each process's output, for a failed test's report. */
export function describeProcesses(processes: readonly ManagedProcess[], lines = 30): string {
  return processes.map((process) => `---- ${process.name} ----\n${tail(process.output(), lines)}`).join("\n");
}
