import { modelKey } from "../../shared/model-names.ts";
import type { Log, StatusLine } from "../log.ts";
import type { DownloadProgress } from "../models/repository.ts";
import { clearLine, drawOver, progressLine } from "./progress-bar.ts";
import { formatSize } from "./size.ts";

/**
 * What the agent shows while it downloads models. On a terminal: a progress bar on the last line, redrawn
 * in place (at most 10 times a second) and kept below the log lines. Anywhere else (a service's journal,
 * a pipe, --log-format json): plain log events when a download starts, at each quarter, and when it ends,
 * so a log file is not flooded with bar frames.
 */
const REDRAW_MS = 100;
/** A download not heard of for this long failed (the repository reports the error); its bar goes. */
const STALE_MS = 30_000;

interface Download {
  model: string;
  received: number;
  total: number | undefined;
  startedAt: number;
  updatedAt: number;
  /** Quarters already logged (plain mode). */
  quarters: number;
}

export class DownloadDisplay implements StatusLine {
  readonly #stream: NodeJS.WritableStream & { columns?: number };
  readonly #tty: boolean;
  readonly #downloads = new Map<string, Download>();
  #log: Log = () => {};
  #lastDraw = 0;
  #drawn = false;

  constructor(options: { stream: NodeJS.WritableStream & { columns?: number }; tty: boolean }) {
    this.#stream = options.stream;
    this.#tty = options.tty;
  }

  /** The log that start and end events go to (set once the log exists: it draws around this line). */
  attach(log: Log): void {
    this.#log = log;
  }

  /** The repository's onProgress hook. */
  readonly onProgress = (progress: DownloadProgress): void => {
    const model = modelKey(progress);
    let download = this.#downloads.get(model);
    const now = performance.now();
    if (download === undefined) {
      download = { model, received: 0, total: progress.total, startedAt: now, updatedAt: now, quarters: 0 };
      this.#downloads.set(model, download);
      this.#log("downloading model", {
        model,
        ...(progress.total === undefined ? {} : { size: formatSize(progress.total) }),
      });
    }
    download.received = progress.received;
    download.total = progress.total;
    download.updatedAt = now;
    if (download.total !== undefined && download.received >= download.total) {
      this.#downloads.delete(model);
      const seconds = (now - download.startedAt) / 1000;
      this.#log("model downloaded", {
        model,
        size: formatSize(download.received),
        seconds: Number(seconds.toFixed(2)),
        rate: `${formatSize(download.received / Math.max(seconds, 0.001))}/s`,
      });
      return;
    }
    if (this.#tty) {
      if (now - this.#lastDraw >= REDRAW_MS) this.redraw();
      return;
    }
    if (download.total !== undefined) {
      const quarters = Math.floor((4 * download.received) / download.total);
      if (quarters > download.quarters && quarters < 4) {
        download.quarters = quarters;
        this.#log("download progress", { model, percent: quarters * 25 });
      }
    }
  };

  clear(): void {
    if (!this.#drawn) return;
    clearLine(this.#stream);
    this.#drawn = false;
  }

  redraw(): void {
    if (!this.#tty) return;
    const now = performance.now();
    for (const [model, download] of this.#downloads) {
      if (now - download.updatedAt > STALE_MS) this.#downloads.delete(model);
    }
    const [first] = this.#downloads.values();
    if (first === undefined) {
      this.clear();
      return;
    }
    this.#lastDraw = now;
    const more = this.#downloads.size > 1 ? `  (+${this.#downloads.size - 1} more)` : "";
    const seconds = (now - first.startedAt) / 1000;
    drawOver(
      this.#stream,
      `${progressLine("⇣", first.model, { done: first.received, total: first.total, seconds })}${more}`,
    );
    this.#drawn = true;
  }
}
