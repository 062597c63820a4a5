/**
 * Where the session worker's entry is. From sources (Node's type stripping, vitest) this module is a .ts
 * file beside session-worker.ts. In the agent's bundle (dist/switchyard-agent.mjs) this module is inlined,
 * and scripts/build-bundles.ts writes the worker beside it as dist/session-worker.mjs: a host given the
 * bundle needs both files.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

export function sessionWorkerUrl(): URL {
  if (import.meta.url.endsWith(".ts")) return new URL("./session-worker.ts", import.meta.url);
  const bundled = new URL("./session-worker.mjs", import.meta.url);
  // Said plainly here: a missing entry would otherwise surface as a worker's "Cannot find module".
  if (!existsSync(fileURLToPath(bundled))) {
    throw new Error(
      `${fileURLToPath(bundled)} is missing: copy it from dist/ (npm run build:bundles writes it) beside ` +
        `${fileURLToPath(import.meta.url)}`,
    );
  }
  return bundled;
}
