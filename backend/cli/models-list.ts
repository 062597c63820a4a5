import type { StoredVersion } from "./admin-client.ts";
import { formatSize } from "./size.ts";

/** `switchyard models ls`: the gateway's model versions as a table (or JSON with --json). */
export function modelsTable(versions: readonly StoredVersion[]): string {
  if (versions.length === 0) return "no models on the gateway yet: switchyard models push <dir>\n";
  const rows = versions.map((entry) => {
    const model = entry.files["model.onnx"];
    const config = entry.files["config.json"];
    return [
      entry.name,
      entry.version,
      model === undefined ? "-" : formatSize(model.size),
      model?.sha256 ?? "-",
      config === undefined ? "-" : "yes",
      (model ?? config)?.uploaded.replace(/\.\d+Z$/, "Z") ?? "-",
    ];
  });
  const header = ["MODEL", "VERSION", "SIZE", "SHA256", "CONFIG", "UPLOADED"];
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join("  ")
      .trimEnd();
  return `${[line(header), ...rows.map(line)].join("\n")}\n`;
}
