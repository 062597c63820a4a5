import { formatSize } from "./size.ts";

/**
 * One line of a transfer's progress, as the agent's downloads and `switchyard models push` draw it:
 *   ⇣ det:1  ███████████░░░░░░░░░░░░░  47%  9.4 MiB / 19.8 MiB  8.1 MiB/s
 */
const BAR_WIDTH = 24;

export function progressLine(
  arrow: string,
  label: string,
  transfer: { done: number; total: number | undefined; seconds: number },
): string {
  const rate = `${formatSize(transfer.done / Math.max(transfer.seconds, 0.001))}/s`;
  if (transfer.total === undefined || transfer.total === 0) {
    return `${arrow} ${label}  ${formatSize(transfer.done)}  ${rate}`;
  }
  const fraction = Math.min(1, transfer.done / transfer.total);
  const filled = Math.round(fraction * BAR_WIDTH);
  const bar = `${"█".repeat(filled)}${"░".repeat(BAR_WIDTH - filled)}`;
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  return `${arrow} ${label}  ${bar} ${percent}  ${formatSize(transfer.done)} / ${formatSize(transfer.total)}  ${rate}`;
}

/** Draws `line` over the terminal's last line (no newline), cut to the terminal's width. */
export function drawOver(stream: NodeJS.WritableStream & { columns?: number }, line: string): void {
  const width = stream.columns ?? 100;
  stream.write(`\r\x1b[2K${line.slice(0, Math.max(20, width - 1))}`);
}

export function clearLine(stream: NodeJS.WritableStream): void {
  stream.write("\r\x1b[2K");
}
