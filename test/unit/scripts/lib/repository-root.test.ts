import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { repositoryRoot } from "../../../../scripts/lib/repository-root.ts";

const made: string[] = [];
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

describe("repositoryRoot", () => {
  it("is this repository's root from its scripts/lib/", () => {
    const root = repositoryRoot(join(import.meta.dirname, "..", "..", "..", "..", "scripts", "lib"));
    const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { name: string };
    expect(manifest.name).toBe("switchyard");
    expect(existsSync(join(root, "scripts", "lib", "repository-root.ts"))).toBe(true);
  });

  it("is the nearest folder above that holds wrangler.toml, however deep the module sits", () => {
    const repo = mkdtempSync(join(tmpdir(), "switchyard-repo-"));
    made.push(repo);
    writeFileSync(join(repo, "wrangler.toml"), 'name = "switchyard"\n');
    const deep = join(repo, "dist", "nested", "more");
    mkdirSync(deep, { recursive: true });
    expect(repositoryRoot(deep)).toBe(repo);
  });

  it("is the folder itself where none at or above it holds wrangler.toml (a bundle outside a checkout)", () => {
    const lone = mkdtempSync(join(tmpdir(), "switchyard-no-repo-"));
    made.push(lone);
    const deep = join(lone, "dist");
    mkdirSync(deep);
    expect(repositoryRoot(deep)).toBe(deep);
  });
});
