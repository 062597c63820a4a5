/**
 * The Prometheus text exposition format (version 0.0.4), written by hand: prom-client is a Node library
 * (it reaches for process and cluster APIs), and the format is small. Families are collected first and
 * written once each, so samples of several pools under one name stay together as the format requires.
 */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export type Labels = Record<string, string>;
type Kind = "counter" | "gauge" | "histogram";

interface Family {
  kind: Kind;
  help: string;
  lines: string[];
}

export interface HistogramSample {
  labels: Labels;
  /** Upper bounds, ascending, without +Inf. */
  bounds: readonly number[];
  /** Observations per bucket (not cumulative), one more than bounds: the last is above the largest bound. */
  counts: readonly number[];
  sum: number;
  count: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export class Exposition {
  readonly #families = new Map<string, Family>();

  counter(name: string, help: string, samples: ReadonlyArray<{ labels: Labels; value: number }>): this {
    const family = this.#family(name, "counter", help);
    for (const sample of samples) family.lines.push(line(name, sample.labels, sample.value));
    return this;
  }

  gauge(name: string, help: string, samples: ReadonlyArray<{ labels: Labels; value: number }>): this {
    const family = this.#family(name, "gauge", help);
    for (const sample of samples) family.lines.push(line(name, sample.labels, sample.value));
    return this;
  }

  histogram(name: string, help: string, samples: readonly HistogramSample[]): this {
    const family = this.#family(name, "histogram", help);
    for (const sample of samples) {
      let cumulative = 0;
      sample.bounds.forEach((bound, index) => {
        cumulative += sample.counts[index] ?? 0;
        family.lines.push(line(`${name}_bucket`, { ...sample.labels, le: formatValue(bound) }, cumulative));
      });
      family.lines.push(line(`${name}_bucket`, { ...sample.labels, le: "+Inf" }, sample.count));
      family.lines.push(line(`${name}_sum`, sample.labels, sample.sum));
      family.lines.push(line(`${name}_count`, sample.labels, sample.count));
    }
    return this;
  }

  toString(): string {
    const out: string[] = [];
    for (const [name, family] of this.#families) {
      out.push(`# HELP ${name} ${escapeHelp(family.help)}`, `# TYPE ${name} ${family.kind}`, ...family.lines);
    }
    return out.length === 0 ? "" : `${out.join("\n")}\n`;
  }

  #family(name: string, kind: Kind, help: string): Family {
    if (!NAME.test(name)) throw new Error(`invalid metric name ${JSON.stringify(name)}`);
    const known = this.#families.get(name);
    if (known !== undefined) {
      if (known.kind !== kind) throw new Error(`metric ${name} is a ${known.kind}, not a ${kind}`);
      return known;
    }
    const family: Family = { kind, help, lines: [] };
    this.#families.set(name, family);
    return family;
  }
}

function line(name: string, labels: Labels, value: number): string {
  const pairs = Object.entries(labels).map(([label, text]) => {
    if (!LABEL_NAME.test(label)) throw new Error(`invalid label name ${JSON.stringify(label)}`);
    return `${label}="${escapeLabelValue(text)}"`;
  });
  return `${name}${pairs.length === 0 ? "" : `{${pairs.join(",")}}`} ${formatValue(value)}`;
}

export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}

const escapeLabelValue = (text: string) =>
  text.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
const escapeHelp = (text: string) => text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
