import { AsyncLocalStorage } from "node:async_hooks";
import { type LogLevel, LogSettings } from "./log-settings.ts";

/**
 * The agent's log: one line per event on stderr. `text` (the default) is `<time> event key=value ...`, for
 * people; `json` (`--log-format json`) is one JSON object per line, for log shippers:
 *
 *   {"time":"2026-11-22T05:40:00.000Z","level":"info","event":"request","requestId":"7f3c…","model":"det",…}
 *
 * Lines written while a request is handled carry its id (`requestId`), taken from the async context that
 * withRequestId() opens, so a request can be followed from the gateway's X-Request-Id into the agent's log.
 * Secrets never reach it: callers pass only what is safe to print.
 */
export type Log = (event: string, fields?: Record<string, unknown>) => void;

/** A line a terminal redraws in place (a progress bar): cleared before a log line, drawn again after. */
export interface StatusLine {
  clear(): void;
  redraw(): void;
}

export interface LogOptions {
  /** Its format and which levels it writes, read at each line (changed at run time by /v2/logging). */
  settings?: LogSettings;
  stream?: NodeJS.WritableStream;
  statusLine?: StatusLine;
}

const requestContext = new AsyncLocalStorage<{ requestId: string }>();

/** Runs `work` with `requestId` attached to every line it logs (across awaits); undefined: as it is. */
export function withRequestId<T>(requestId: string | undefined, work: () => T): T {
  return requestId === undefined ? work() : requestContext.run({ requestId }, work);
}

export function currentRequestId(): string | undefined {
  return requestContext.getStore()?.requestId;
}

export function createLog(options: LogOptions = {}): Log {
  const stream = options.stream ?? process.stderr;
  const settings = options.settings ?? new LogSettings();
  return (event, fields = {}) => {
    const level = levelOf(event);
    if (!settings.allows(level)) return;
    const requestId = currentRequestId();
    const all = requestId === undefined || "requestId" in fields ? fields : { requestId, ...fields };
    const time = new Date().toISOString();
    const line =
      settings.format === "json"
        ? jsonLine(time, level, event, all)
        : `${time} ${event}${Object.keys(all).length > 0 ? ` ${textFields(all)}` : ""}`;
    options.statusLine?.clear();
    stream.write(`${line}\n`);
    options.statusLine?.redraw();
  };
}

/** How serious an event is, from its name: the agent's events say what happened in words. */
export function levelOf(event: string): LogLevel {
  if (/fail|error|refus|cannot|could not|violation/i.test(event)) return "error";
  if (/warn|disconnect|lost|retry|drain|signal|stale/i.test(event)) return "warn";
  return "info";
}

function jsonLine(time: string, level: LogLevel, event: string, fields: Record<string, unknown>): string {
  return JSON.stringify({ time, level, event, ...fields }, (_key, value: unknown) =>
    value instanceof Error ? value.message : typeof value === "bigint" ? value.toString() : value,
  );
}

function textFields(fields: Record<string, unknown>): string {
  return Object.entries(fields)
    .map(([key, value]) => `${key}=${format(value)}`)
    .join(" ");
}

function format(value: unknown): string {
  const text =
    typeof value === "string" ? value : value instanceof Error ? value.message : JSON.stringify(value);
  return /[\s"]/.test(text ?? "") ? JSON.stringify(text) : String(text);
}
