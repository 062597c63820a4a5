import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { gpuWranglerContents } from "../../../../scripts/lib/gpu-wrangler-pack.ts";
import { REPO_ROOT } from "../../../../scripts/lib/wrangler-dev.ts";
import { sourceFiles } from "../../../support/source-files.ts";

/** The packages (or files of them) that the Worker's sources import: gateway/ and shared/, tests aside. */
function workerImports(): Set<string> {
  const found = new Set<string>();
  for (const folder of ["gateway", "shared"]) {
    for (const file of sourceFiles(join(REPO_ROOT, folder))) {
      const source = readFileSync(file, "utf8");
      for (const [, specifier] of source.matchAll(/\bfrom\s+"([^"./][^"]*)"/g))
        if (specifier !== undefined && !/^(node|cloudflare):/.test(specifier)) found.add(specifier);
    }
  }
  return found;
}

describe("the pack that takes wrangler dev to a GPU host without npm", () => {
  const contents = gpuWranglerContents(REPO_ROOT);

  it("holds wrangler, the workerd and esbuild it runs, and leaves sharp out", () => {
    expect(contents).toContain("wrangler");
    expect(contents).toContain("esbuild");
    expect(contents.some((path) => path.startsWith("@esbuild/"))).toBe(true);
    expect(contents.filter((path) => path === "sharp" || path.startsWith("@img/"))).toEqual([]);
  });

  it("holds everything the Worker imports, which wrangler dev bundles there", () => {
    const imports = workerImports();
    expect(imports.size).toBeGreaterThan(0);
    for (const specifier of imports) {
      const parts = specifier.split("/");
      const name = specifier.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] ?? specifier);
      // The whole package, or the very file.
      expect(contents.includes(name) || contents.includes(specifier), specifier).toBe(true);
    }
  });
});
