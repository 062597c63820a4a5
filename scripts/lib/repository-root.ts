import { existsSync } from "node:fs";
import { dirname, join } from "node:path";

/**
 * The repository's root as seen from a module in folder `from`: the nearest folder at or above it that holds
 * wrangler.toml. A fixed "../../" would be right for the sources (scripts/lib/) but, in a benchmark bundled
 * into dist/ and run on a GPU host, name the folder above the repository. A bundle copied outside any
 * checkout finds none: `from` itself then, so that what does not need the repository still runs (wrangler,
 * which does, then fails to start, and says where it looked).
 */
export function repositoryRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "wrangler.toml"))) return dir;
    if (dirname(dir) === dir) return from;
  }
}
