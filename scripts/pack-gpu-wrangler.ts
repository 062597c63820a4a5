/**
 * Packs what `wrangler dev` needs on a GPU host that has no npm and no network (README: the agent on a GPU
 * host; ../shared/gpu/README.md): wrangler, workerd, esbuild and the gateway's own dependencies, into
 * .gpu-wrangler/ (about 45 MB), so that bench:hot-path can measure the gateway and the relay anchor on the
 * same host as the agent. The GPU kit's .gpu-base/ (node, onnxruntime-node) goes first; this one adds to its
 * /opt/gpu/node_modules.
 *
 *   node scripts/pack-gpu-wrangler.ts
 *   (on the host, after bash .gpu-base/setup.sh)  bash .gpu-wrangler/setup.sh
 */
import { execFileSync } from "node:child_process";
import {
  appendFileSync,
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { packageClosure } from "./lib/package-closure.ts";
import { REPO_ROOT } from "./lib/wrangler-dev.ts";

const OUT = ".gpu-wrangler";
/**
 * wrangler runs the gateway, and bundles the Worker from the sources: the packages the Worker imports
 * (gateway/ and shared/) come along.
 */
const ROOTS = ["wrangler", "hono", "zod"];
/** Of echarts (62 MB) the dashboard imports one self-contained file (gateway/dashboard/assets.ts). */
const FILES = ["echarts/package.json", "echarts/dist/echarts.common.min.js"];
/**
 * Left out: miniflare imports sharp only for the Images binding (a dynamic import), which neither Worker
 * binds, and its native libraries would take a fifth of the pack.
 */
const LEFT_OUT = new Set(["sharp"]);

const packages = [...packageClosure(REPO_ROOT, ROOTS, LEFT_OUT), ...FILES];
const out = join(REPO_ROOT, OUT);
rmSync(out, { recursive: true, force: true });
mkdirSync(out);
const exclude = join(REPO_ROOT, ".git", "info", "exclude");
if (
  existsSync(dirname(exclude)) &&
  !(existsSync(exclude) && readFileSync(exclude, "utf8").includes(`/${OUT}/`))
)
  appendFileSync(exclude, `/${OUT}/\n`);
execFileSync(
  "tar",
  ["-cJf", join(out, "modules.tar.xz"), "-C", join(REPO_ROOT, "node_modules"), ...packages],
  {
    env: { ...process.env, XZ_OPT: "-9 -T0" },
    stdio: "inherit",
  },
);
const setup = join(out, "setup.sh");
writeFileSync(
  setup,
  `#!/usr/bin/env bash
# On the GPU host, after .gpu-base/setup.sh: wrangler, workerd and esbuild into /opt/gpu/node_modules.
set -e; d="$(cd "$(dirname "$0")" && pwd)"
[ -d /opt/gpu/node_modules ] || { echo "/opt/gpu is missing: run .gpu-base/setup.sh first" >&2; exit 3; }
tar xJf "$d/modules.tar.xz" -C /opt/gpu/node_modules
[ -e node_modules ] || ln -s /opt/gpu/node_modules node_modules
echo "wrangler ready: $(/opt/gpu/bin/node /opt/gpu/node_modules/wrangler/bin/wrangler.js --version)"
`,
);
chmodSync(setup, 0o755);
console.log(`${OUT}/: ${packages.join(" ")}`);
execFileSync("du", ["-sh", out], { stdio: "inherit" });
