import { envName, FLAG_SPECS, type FlagSpec } from "./flag-specs.ts";

const FLAG_COLUMN = 34;

/**
 * The default --help shows for a flag: the text that applies (parsed like a user's), or the words of a
 * derived one. Nothing for a switch (off unless given) nor for an empty list.
 */
export function shownDefault(spec: FlagSpec): string | undefined {
  if (spec.derived !== undefined) return spec.derived.shown;
  return typeof spec.default === "string" && spec.default !== "" ? spec.default : undefined;
}

function row(flag: string, spec: FlagSpec): string {
  const left = `  --${flag}${spec.value === undefined ? "" : ` ${spec.value}`}`;
  const shown = shownDefault(spec);
  const byDefault = shown === undefined ? "" : ` (default: ${shown})`;
  return `${left.padEnd(FLAG_COLUMN)}${spec.help}${byDefault}\n${" ".repeat(FLAG_COLUMN)}env ${envName(flag)}`;
}

export function helpText(): string {
  return [
    "switchyard-agent: serve ONNX models from this host, one replica per GPU (or on the CPU)",
    "",
    "Usage:",
    "  switchyard-agent --standalone --port 8000 --models ./models       serve OIP v2 over HTTP",
    "  switchyard-agent --gpus 0,1 --models ./models --standalone        one replica per GPU",
    "  SWITCHYARD_TOKEN=… switchyard-agent --gateway wss://gw.example --gpus 0,1   join a gateway",
    "  switchyard-agent --config /etc/switchyard/agent.json --metrics-port 9464       settings from a file",
    "",
    "Options:",
    ...Object.entries(FLAG_SPECS).map(([flag, spec]: [string, FlagSpec]) => row(flag, spec)),
    "",
  ].join("\n");
}
