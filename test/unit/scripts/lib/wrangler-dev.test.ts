import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { build } from "esbuild";
import { afterAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../../../scripts/lib/wrangler-dev.ts";

const made: string[] = [];
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

describe("wrangler dev's paths", () => {
  it("are found from dist/ when the module runs bundled into a benchmark there (a GPU host)", async () => {
    // A repository's shape, with the module bundled into its dist/ as scripts/build-bundles.ts bundles it.
    const repo = mkdtempSync(join(tmpdir(), "switchyard-repo-root-"));
    made.push(repo);
    writeFileSync(join(repo, "wrangler.toml"), 'name = "switchyard"\n');
    mkdirSync(join(repo, "dist"));
    const bundle = join(repo, "dist", "bench.mjs");
    await build({
      stdin: {
        contents: 'export { WRANGLER_CONFIG, WRANGLER_JS } from "./scripts/lib/wrangler-dev.ts";',
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
    const bundled = (await import(pathToFileURL(bundle).href)) as {
      WRANGLER_CONFIG: string;
      WRANGLER_JS: string;
    };
    // That repository's wrangler and configuration, not the folder above it.
    expect(bundled.WRANGLER_CONFIG).toBe(join(repo, "wrangler.toml"));
    expect(bundled.WRANGLER_JS).toBe(join(repo, "node_modules", "wrangler", "bin", "wrangler.js"));
  });
});
