import { packageClosure } from "./package-closure.ts";

/**
 * What `wrangler dev` needs on a GPU host that has no npm (scripts/pack-gpu-wrangler.ts packs it): wrangler,
 * which bundles the Worker from the sources there, and the packages the Worker imports (gateway/ and shared/;
 * test/unit/scripts/lib/gpu-wrangler-pack.test.ts checks that every one of them is here).
 */
const ROOTS = ["wrangler", "hono", "zod"];
/** Of echarts (62 MB) the dashboard imports one self-contained file (gateway/dashboard/assets.ts). */
const FILES = ["echarts/package.json", "echarts/dist/echarts.common.min.js"];
/**
 * Left out: miniflare imports sharp only for the Images binding (a dynamic import), which neither Worker
 * binds, and its native libraries would take a fifth of the pack.
 */
const LEFT_OUT = new Set(["sharp"]);

/** The folders and files under `repository`'s node_modules that the pack holds. */
export function gpuWranglerContents(repository: string): string[] {
  return [...packageClosure(repository, ROOTS, LEFT_OUT), ...FILES];
}
