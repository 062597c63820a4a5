/**
 * The agent's log: one line per event on stderr, `event key=value ...`, so that both people and log
 * shippers can read it. Secrets never reach it: callers pass only what is safe to print.
 */
export type Log = (event: string, fields?: Record<string, unknown>) => void;

export function createLog(stream: NodeJS.WritableStream = process.stderr): Log {
  return (event, fields = {}) => {
    const parts = Object.entries(fields).map(([key, value]) => `${key}=${format(value)}`);
    stream.write(`${new Date().toISOString()} ${event}${parts.length > 0 ? ` ${parts.join(" ")}` : ""}\n`);
  };
}

function format(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return /[\s"]/.test(text ?? "") ? JSON.stringify(text) : String(text);
}
