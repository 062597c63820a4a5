import { isAbsolute, resolve as resolvePath } from "node:path";
import { fileURLToPath } from "node:url";
import { badInput } from "../../shared/errors.ts";
import { openHttpRepository } from "./http-repository.ts";
import { openLocalRepository } from "./local-repository.ts";
import type { ModelRepository, RepositoryOptions } from "./repository.ts";

const URL_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/** A repository for `--models`: an http(s) URL, a file: URL, or a directory path (relative to the cwd). */
export function openRepository(source: string, options: RepositoryOptions): ModelRepository {
  if (/^https?:\/\//i.test(source)) return openHttpRepository(source, options);
  if (/^file:\/\//i.test(source)) return openLocalRepository(fileURLToPath(source));
  if (URL_SCHEME.test(source)) {
    throw badInput(
      `unsupported model repository ${JSON.stringify(source)}: use a directory or an http(s) URL`,
    );
  }
  if (source === "") throw badInput("the model repository is empty: give a directory or an http(s) URL");
  return openLocalRepository(isAbsolute(source) ? source : resolvePath(source));
}
