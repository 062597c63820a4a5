import { readFileSync } from "node:fs";

/**
 * The agent's config file (`--config agent.json`): a JSON object whose keys are the flags' names, as on
 * the command line without the dashes in front ("max-models": 3, "gpus": "0,1" or [0, 1], "standalone":
 * true). It sits below flags and environment variables: flags > environment > file > defaults, so a host's
 * file holds its settings and a flag changes one for a run. Mistakes stop the agent with one line that
 * names the file, the key and the fix.
 */
export type ConfigValues = Record<string, string | boolean>;

export function readConfigFile(
  file: string,
  flags: Readonly<Record<string, { type: "string" | "boolean" }>>,
): ConfigValues {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : String(error);
    throw new Error(`--config ${file}: cannot read it (${why})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(`--config ${file}: not valid JSON (${(error as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(
      `--config ${file}: must be a JSON object of flags, e.g. {"gpus": "0,1", "max-models": 4}`,
    );
  }
  const values: ConfigValues = {};
  for (const [key, value] of Object.entries(json)) {
    const spec = flags[key];
    if (spec === undefined || key === "config" || key === "help") {
      const guess = closest(key, Object.keys(flags));
      throw new Error(
        `--config ${file}: unknown key "${key}"${guess === undefined ? "" : ` (did you mean "${guess}"?)`}; keys are the flags' names, see --help`,
      );
    }
    values[key] = toFlagValue(file, key, spec.type, value);
  }
  return values;
}

function toFlagValue(
  file: string,
  key: string,
  type: "string" | "boolean",
  value: unknown,
): string | boolean {
  if (type === "boolean") {
    if (typeof value === "boolean") return value;
    throw new Error(`--config ${file}: "${key}" is a switch: use true or false`);
  }
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  if (Array.isArray(value) && value.every((item) => typeof item === "string" || typeof item === "number")) {
    return value.join(",");
  }
  throw new Error(
    `--config ${file}: "${key}" takes a string or a number${key.endsWith("s") ? " (or a list)" : ""}`,
  );
}

/** The known key nearest to a misspelled one, when it is near enough to be a typo. */
function closest(key: string, known: readonly string[]): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const name of known) {
    const distance = editDistance(key, name);
    if (best === undefined || distance < best.distance) best = { name, distance };
  }
  return best !== undefined && best.distance <= Math.max(2, Math.floor(key.length / 4))
    ? best.name
    : undefined;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + cost);
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}
