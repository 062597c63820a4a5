/** The log's formats (--log-format, and log_format of the logging extension). */
export const LOG_FORMATS = ["text", "json"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** How serious a line is (log.ts levelOf names each event's). */
export type LogLevel = "info" | "warn" | "error";

export interface LogSettingsState {
  /** Whether lines of each level are written. */
  info: boolean;
  warning: boolean;
  error: boolean;
  /** 0: no line per request; 1 or more: one per request, as --log-requests writes them. */
  verboseLevel: number;
  format: LogFormat;
}

/**
 * What the agent's log writes, as the flags set it at start (--log-format, --log-requests) and Triton's
 * logging extension changes it while the agent runs (GET/POST /v2/logging, gRPC LogSettings): the log and the
 * request lines read it at each line, so a change takes effect with the next one.
 */
export class LogSettings {
  #state: LogSettingsState;

  constructor(initial: Partial<LogSettingsState> = {}) {
    this.#state = { info: true, warning: true, error: true, verboseLevel: 0, format: "text", ...initial };
  }

  get state(): Readonly<LogSettingsState> {
    return { ...this.#state };
  }

  get format(): LogFormat {
    return this.#state.format;
  }

  /** Whether each request gets its line (--log-requests, or a verbose level of 1 or more). */
  get requestLines(): boolean {
    return this.#state.verboseLevel >= 1 && this.#state.info;
  }

  allows(level: LogLevel): boolean {
    return level === "info" ? this.#state.info : level === "warn" ? this.#state.warning : this.#state.error;
  }

  update(changes: Partial<LogSettingsState>): void {
    this.#state = { ...this.#state, ...changes };
  }
}
