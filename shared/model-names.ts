/**
 * Model names and versions as they arrive from clients and repositories. Both become path segments of a
 * model repository (`<repo>/<name>/<version>/model.onnx`) and of URLs, so anything that could climb out of
 * the repository or be read two ways is refused outright rather than cleaned up: an allow-list of plain
 * ASCII, no separators, no leading dot or dash (no `..`, no hidden files, nothing that looks like a flag),
 * and no `%` (a percent-encoded `..` that a router already decoded once must not get a second chance).
 * Isomorphic: the gateway validates with the same rules as the agent.
 */
import { badInput } from "./errors.ts";

export const MAX_MODEL_NAME_LENGTH = 128;

const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
// Positive, no leading zero (so "1" and "01" cannot name the same version), at most 18 digits so every
// version fits in a signed 64-bit integer.
const MODEL_VERSION = /^[1-9][0-9]{0,17}$/;

/** `name` itself when it is a valid model name; otherwise a 400 saying what a valid name looks like. */
export function parseModelName(name: string): string {
  if (name.length > MAX_MODEL_NAME_LENGTH) {
    throw badInput(
      `model name ${quote(name)} is ${name.length} characters long; at most ${MAX_MODEL_NAME_LENGTH} are allowed`,
    );
  }
  if (!MODEL_NAME.test(name)) {
    throw badInput(
      `invalid model name ${quote(name)}: use letters, digits, '_', '.' and '-', starting with a letter or digit`,
    );
  }
  return name;
}

/** `version` itself when it is a valid model version (a positive integer in decimal); otherwise a 400. */
export function parseModelVersion(version: string): string {
  if (!MODEL_VERSION.test(version)) {
    throw badInput(
      `invalid model version ${quote(version)}: versions are positive integers such as "1" or "12"`,
    );
  }
  return version;
}

/** Orders valid versions numerically ("9" before "10"); for sort() and for picking the highest. */
export function compareModelVersions(a: string, b: string): number {
  // Valid versions have no leading zeros, so a longer one is larger and equal lengths compare as text.
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/** The highest of some valid versions, or undefined when there are none. */
export function highestModelVersion(versions: Iterable<string>): string | undefined {
  let highest: string | undefined;
  for (const version of versions) {
    if (highest === undefined || compareModelVersions(version, highest) > 0) highest = version;
  }
  return highest;
}

/** Whether `name` is a valid model name; for scanning repositories, which skip what they cannot serve. */
export function isModelName(name: string): boolean {
  return name.length <= MAX_MODEL_NAME_LENGTH && MODEL_NAME.test(name);
}

export function isModelVersion(version: string): boolean {
  return MODEL_VERSION.test(version);
}

/** The offending input in an error message: escaped (control characters become visible) and shortened. */
function quote(input: string): string {
  const shown = input.length > 40 ? `${input.slice(0, 40)}…` : input;
  return JSON.stringify(shown);
}

/** Orders (name, version) pairs by name, then by version numerically; for stable listings. */
export function compareModelEntries(
  a: { name: string; version: string },
  b: { name: string; version: string },
): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : compareModelVersions(a.version, b.version);
}

// ---- Model keys: "name:version" ----

/**
 * A model version's key, "name:version": the one form every cache, map, log line and metric label uses.
 * Versions never contain ':' (they are digits), so the last ':' splits a key; names may contain none either.
 */
export const modelKey = (ref: { name: string; version: string }): string => `${ref.name}:${ref.version}`;

/** A key's name and version (the inverse of modelKey). */
export function parseModelKey(key: string): { name: string; version: string } {
  const separator = key.lastIndexOf(":");
  return separator < 0
    ? { name: key, version: "" }
    : { name: key.slice(0, separator), version: key.slice(separator + 1) };
}

/** The key of what a request asks for: a version, or `name:*` for whichever version serves by default. */
export const requestedModelKey = (name: string, version: string | undefined): string =>
  `${name}:${version ?? "*"}`;

/** "name" or "name:version", as flags and operators write a model (--preload det:2); no version: undefined. */
export function parseModelSpec(spec: string): { name: string; version: string | undefined } {
  const separator = spec.lastIndexOf(":");
  return separator < 0
    ? { name: spec, version: undefined }
    : { name: spec.slice(0, separator), version: spec.slice(separator + 1) };
}
