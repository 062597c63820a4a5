import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { build } from "esbuild";
import { describe, expect, it } from "vitest";
import { REPO_ROOT, repositoryRoot, WRANGLER_JS } from "../../../../scripts/lib/wrangler-dev.ts";

describe("the repository's root, for wrangler dev", () => {
  it("is the folder above scripts/lib that holds wrangler.toml and the package", () => {
    expect(REPO_ROOT).toBe(join(import.meta.dirname, "..", "..", "..", ".."));
    expect(WRANGLER_JS).toBe(join(REPO_ROOT, "node_modules", "wrangler", "bin", "wrangler.js"));
  });

  it("is found from dist/ when the module runs bundled into a benchmark there (a GPU host)", async () => {
    // A repository's shape, with the module bundled into its dist/ as scripts/build-bundles.ts bundles it.
    const repo = mkdtempSync(join(tmpdir(), "switchyard-repo-root-"));
    writeFileSync(join(repo, "wrangler.toml"), 'name = "switchyard"\n');
    mkdirSync(join(repo, "dist"));
    const bundle = join(repo, "dist", "bench.mjs");
    await build({
      stdin: {
        contents: 'export { REPO_ROOT, WRANGLER_JS } from "./scripts/lib/wrangler-dev.ts";',
        resolveDir: REPO_ROOT,
        loader: "ts",
      },
      outfile: bundle,
      bundle: true,
      platform: "node",
      format: "esm",
      external: ["wrangler"],
      logLevel: "silent",
    });
    const bundled = (await import(pathToFileURL(bundle).href)) as { REPO_ROOT: string; WRANGLER_JS: string };
    expect(bundled.REPO_ROOT).toBe(repo);
    expect(bundled.WRANGLER_JS).toBe(join(repo, "node_modules", "wrangler", "bin", "wrangler.js"));
  });

  it("is refused, naming the folder, where no folder above holds wrangler.toml", () => {
    const lone = mkdtempSync(join(tmpdir(), "switchyard-no-repo-"));
    expect(() => repositoryRoot(lone)).toThrow(`no wrangler.toml in ${lone} or any folder above it`);
  });
});
