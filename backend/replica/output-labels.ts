/**
 * Triton's label files: an output's `label_filename` in config.json names a file in the model's directory
 * (ResolvedModel.labelsDir; an http repository's are fetched into its cache), one class label per line, line
 * i labelling class i, that classification results carry ("<value>:<index>:<label>",
 * shared/oip/classification.ts). Read at load, so that a file that is missing, or a label for an output the
 * model does not have, fails the load as it does in Triton, rather than a request finding out.
 */
import type { ModelConfig } from "../../shared/model-config.ts";
import type { OutputLabels } from "../../shared/oip/classification.ts";
import { type ReferencedDirs, readReferencedFile } from "../models/repository.ts";

/** The labels of every output config.json gives a label_filename, by output name. */
export async function readOutputLabels(config: ModelConfig, dirs: ReferencedDirs): Promise<OutputLabels> {
  const labels = new Map<string, string[]>();
  for (const output of config.output ?? []) {
    const name = output.label_filename;
    if (name === undefined) continue;
    const bytes = await readReferencedFile(dirs, { kind: "labels", name }).catch((error: unknown) => {
      const why = error instanceof Error ? error.message : String(error);
      throw new Error(`output '${output.name}': label_filename '${name}' ${why}`, { cause: error });
    });
    labels.set(output.name, linesOf(new TextDecoder().decode(bytes)));
  }
  return labels;
}

/** Throws for a labelled output the model does not have (a name config.json got wrong). */
export function checkLabelledOutputs(labels: OutputLabels, outputs: readonly { name: string }[]): void {
  const names = outputs.map((output) => output.name);
  for (const name of labels.keys()) {
    if (!names.includes(name)) {
      throw new Error(
        `config.json's output '${name}' has a label_filename, but the model has no such output (outputs: ${names.join(", ")})`,
      );
    }
  }
}

/** One label per line, whatever the line ends with; the last line's ending is optional. */
function linesOf(text: string): string[] {
  const lines = text.split(/\r?\n/);
  if (lines.at(-1) === "") lines.pop();
  return lines;
}
