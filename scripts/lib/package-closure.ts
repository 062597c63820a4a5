import { existsSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

/** The folder Node would load package `name` from, looking up from `dir` (nested node_modules first). */
function resolvePackage(dir: string, name: string, root: string): string | undefined {
  for (let at = dir; ; at = dirname(at)) {
    const candidate = join(at, "node_modules", name);
    if (existsSync(join(candidate, "package.json"))) return candidate;
    if (at === root || dirname(at) === at) return undefined;
  }
}

/**
 * Every installed package that `roots` need at run time in `root`'s node_modules: their dependencies and the
 * optional ones this platform has (esbuild's and workerd's binaries), as the top-level folders to copy; a
 * package nested in another's node_modules travels inside that folder. `leaveOut` names packages not taken,
 * nor what they need. A dependency that is not installed is refused (what is packed would not run); an
 * optional one is not (the other platforms' binaries).
 */
export function packageClosure(
  repository: string,
  roots: readonly string[],
  leaveOut: ReadonlySet<string> = new Set(),
): string[] {
  const root = resolve(repository);
  const found = new Set<string>();
  const visit = (dir: string) => {
    if (found.has(dir)) return;
    found.add(dir);
    const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
      dependencies?: Record<string, string>;
      optionalDependencies?: Record<string, string>;
    };
    const optional = new Set(Object.keys(manifest.optionalDependencies ?? {}));
    for (const name of Object.keys({ ...manifest.dependencies, ...manifest.optionalDependencies })) {
      if (leaveOut.has(name)) continue;
      const at = resolvePackage(dir, name, root);
      if (at !== undefined) visit(at);
      else if (!optional.has(name))
        throw new Error(`${relative(root, dir)} needs ${name}, which is not installed: run npm ci first`);
    }
  };
  for (const name of roots) {
    const at = resolvePackage(root, name, root);
    if (at === undefined) throw new Error(`node_modules/${name} is missing: run npm ci first`);
    visit(at);
  }
  const modules = join(root, "node_modules");
  return [...found]
    .map((dir) => relative(modules, dir))
    .filter((path) => !path.includes("node_modules"))
    .sort();
}
