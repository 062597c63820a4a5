/**
 * Where a worker thread's entry module is. From sources (Node's type stripping, vitest) it is a .ts file
 * beside the module that asks (`beside`, its import.meta.url). In the agent's bundle (dist/switchyard-agent.mjs)
 * that module is inlined, and scripts/build-bundles.ts writes each worker entry beside the bundle as
 * dist/<name>.mjs: a host given the bundle needs all of those files.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

export function workerEntryUrl(beside: string, name: string): URL {
  if (beside.endsWith(".ts")) return new URL(`./${name}.ts`, beside);
  const bundled = new URL(`./${name}.mjs`, beside);
  // Said plainly here: a missing entry would otherwise surface as a worker's "Cannot find module".
  if (!existsSync(fileURLToPath(bundled))) {
    throw new Error(
      `${fileURLToPath(bundled)} is missing: copy it from dist/ (npm run build:bundles writes it) beside ` +
        `${fileURLToPath(beside)}`,
    );
  }
  return bundled;
}
