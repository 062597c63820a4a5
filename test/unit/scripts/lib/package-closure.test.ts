import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { packageClosure } from "../../../../scripts/lib/package-closure.ts";

const made: string[] = [];
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** A fresh folder to install packages into. */
function repository(): string {
  const root = mkdtempSync(join(tmpdir(), "switchyard-closure-"));
  made.push(root);
  return root;
}

/** A package folder under `at` with these dependencies. */
function pkg(
  at: string,
  name: string,
  deps: { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> } = {},
): void {
  const dir = join(at, "node_modules", name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name, version: "1.0.0", ...deps }));
}

describe("packageClosure: what a package needs at run time, to take to a host without npm", () => {
  it("follows dependencies and installed optional ones as Node resolves them, nested ones inside their parent", () => {
    const root = repository();
    pkg(root, "app", {
      dependencies: { lib: "2", util: "1" },
      // One built for this platform is installed, the others are not.
      optionalDependencies: { "@native/linux-x64": "1", "@native/darwin-arm64": "1" },
    });
    pkg(join(root, "node_modules", "app"), "lib", { dependencies: { deep: "1" } });
    pkg(root, "lib"); // another version, which nothing here loads
    pkg(root, "deep");
    pkg(root, "util", { dependencies: { images: "1" } });
    pkg(root, "images", { dependencies: { "images-native": "1" } });
    pkg(root, "images-native");
    pkg(root, "@native/linux-x64");
    pkg(root, "unrelated");

    expect(packageClosure(root, ["app"])).toEqual([
      "@native/linux-x64",
      "app",
      "deep",
      "images",
      "images-native",
      "util",
    ]);
    // A package left out takes what only it needs with it.
    expect(packageClosure(root, ["app"], new Set(["images"]))).toEqual([
      "@native/linux-x64",
      "app",
      "deep",
      "util",
    ]);
  });

  it("refuses a dependency that is not installed (what it packed would not run)", () => {
    const root = repository();
    pkg(root, "app", { dependencies: { lib: "1" } });
    expect(() => packageClosure(root, ["app"])).toThrow(
      "node_modules/app needs lib, which is not installed: run npm ci first",
    );
  });

  it("refuses a root that is not installed", () => {
    const root = repository();
    expect(() => packageClosure(root, ["wrangler"])).toThrow(
      "node_modules/wrangler is missing: run npm ci first",
    );
  });
});
