/** The GPU benchmark's results as Markdown tables (the raw numbers stay in gpu-bench.json). */
import type { BatchingCell } from "./batching.ts";
import { round } from "./measure.ts";

type Json = Record<string, unknown>;

const table = (header: string[], rows: unknown[][]) =>
  [
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...rows.map(
      (row) =>
        `| ${row.map((cell) => (typeof cell === "object" ? JSON.stringify(cell) : String(cell))).join(" | ")} |`,
    ),
  ].join("\n");

function failed(part: unknown): string | undefined {
  return part !== null && typeof part === "object" && "error" in part
    ? String((part as Json).error)
    : undefined;
}

function batchingTable(cells: BatchingCell[]): string {
  const rows = cells.map((cell) => [
    cell.path,
    cell.model,
    cell.mode,
    cell.result.concurrency,
    round(cell.result.throughput, 1),
    round(cell.result.latency.p50, 2),
    round(cell.result.latency.p99, 2),
    round(cell.result.meanBatch ?? Number.NaN, 1),
    cell.result.failed,
  ]);
  return table(
    ["path", "model", "batching", "clients", "req/s", "p50 ms", "p99 ms", "mean batch", "failed"],
    rows,
  );
}

export function renderReport(results: Json): string {
  const lines: string[] = [
    `# GPU benchmark run`,
    "",
    `- GPU: ${results.gpu} (${results.device}); CPUs: ${results.cpus}; Node ${results.node}`,
    `- Command: \`${results.command}\`; det input ${JSON.stringify(results.detInput)}; ${results.elapsedS} s`,
    "",
  ];
  const section = (title: string, part: unknown, render: () => string) => {
    if (part === undefined) return;
    lines.push(`## ${title}`, "");
    const error = failed(part);
    lines.push(error === undefined ? render() : `failed: ${error}`, "");
  };
  section("Session variants (det)", results.variants, () =>
    table(
      [
        "variant",
        "load ms",
        "measured MiB",
        "after load",
        "b1 first/p50 ms",
        "after b1",
        "b8 first/p50 ms",
        "after b8",
        "after release",
      ],
      (results.variants as Json[]).map((row) => [
        row.variant,
        row.loadMs,
        row.measuredMiB,
        row.afterLoadMiB,
        `${(row.batch1 as Json).firstMs} / ${(row.batch1 as Json).p50}`,
        row.afterBatch1MiB,
        `${(row.batch8 as Json).firstMs} / ${(row.batch8 as Json).p50}`,
        row.afterBatch8MiB,
        row.afterReleaseMiB,
      ]),
    ),
  );
  section(
    "Overhead (det, batch 1)",
    results.overhead,
    () => `\`\`\`json\n${JSON.stringify(results.overhead, null, 2)}\n\`\`\``,
  );
  section("Batching in process", results.batching, () => {
    const batching = results.batching as { cells: BatchingCell[]; warmups: unknown[] };
    return [
      batchingTable(batching.cells),
      "",
      `\`\`\`json\n${JSON.stringify(batching.warmups)}\n\`\`\``,
    ].join("\n");
  });
  section("Batching over HTTP", results.http, () => batchingTable(results.http as BatchingCell[]));
  section("Model swaps", results.swaps, () => {
    const swaps = results.swaps as Json;
    const perSize = swaps.perSize as Json[];
    return [
      table(
        Object.keys(perSize[0] ?? {}),
        perSize.map((row) => Object.values(row)),
      ),
      "",
      `\`\`\`json\n${JSON.stringify({ cycles: swaps.cycles, fit: swaps.fit }, null, 2)}\n\`\`\``,
    ].join("\n");
  });
  section("Shape changes (det)", results.shapes, () =>
    table(
      ["scenario", "ms per run, in order"],
      Object.entries(results.shapes as Record<string, number[]>).map(([name, times]) => [
        name,
        times.join(", "),
      ]),
    ),
  );
  return `${lines.join("\n")}\n`;
}
