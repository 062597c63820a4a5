/**
 * Packs what `wrangler dev` needs on a GPU host that has no npm and no network (README: the agent on a GPU
 * host; ../shared/gpu/README.md): wrangler, workerd, esbuild and the Worker's own imports
 * (lib/gpu-wrangler-pack.ts), into .gpu-wrangler/ (39 MB), so that bench:hot-path can measure the gateway and
 * the relay anchor on the same host as the agent. Run here, where npm installed them. A pack of its own, in
 * the GPU kit's shape (a tarball and a setup.sh), because what one call takes to the host is capped at 64
 * MiB and the kit's two packs are 41 and 37 MB already; the kit's .gpu-base/ (node, onnxruntime-node) goes
 * first, and this one adds to its /opt/gpu/node_modules.
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
import { gpuWranglerContents } from "./lib/gpu-wrangler-pack.ts";
import { repositoryRoot } from "./lib/repository-root.ts";

const REPO_ROOT = repositoryRoot(import.meta.dirname);
const OUT = ".gpu-wrangler";
const packages = gpuWranglerContents(REPO_ROOT);
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
