/**
 * Run by `npm test` (and `npm run test:integration`) before vitest: the programs the tests need besides npm's
 * packages are there, or are installed now.
 *
 *   chromium   the dashboard test drives it through playwright-core, which downloads no browser
 *   promtool   (Debian's prometheus package) checks both /metrics scrapes with Prometheus' own parser
 *   grpcio     the gRPC interop test's Python client (test/integration/support/python-grpc.ts), in a virtual
 *              environment under the generated fixtures, from pip's configured index
 *
 * The tests look for them where test/integration/support/{browser,promtool}.ts say ($CHROMIUM or
 * /usr/bin/chromium, $PROMTOOL or /usr/bin/promtool), and so does this. When one is missing and this machine
 * can install Debian packages (apt-get, as root or with passwordless sudo) it installs them, saying so in one
 * line; otherwise it stops with exit code 1 and the command to run. This is the only place that installs
 * them: CI (.ci/run) runs `npm test` like everyone else.
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { CHROMIUM } from "../test/integration/support/browser.ts";
import { PROMTOOL } from "../test/integration/support/promtool.ts";
import {
  hasPythonGrpc,
  PYTHON_GRPC,
  PYTHON_GRPC_REQUIREMENTS,
  PYTHON_GRPC_VENV,
} from "../test/integration/support/python-grpc.ts";

interface Prerequisite {
  /** What the tests run. */
  path: string;
  /** The environment variable that points the tests elsewhere. */
  variable: string;
  /** The Debian package that installs it at its default path. */
  debianPackage: string;
}

const PREREQUISITES: Prerequisite[] = [
  { path: CHROMIUM, variable: "CHROMIUM", debianPackage: "chromium" },
  { path: PROMTOOL, variable: "PROMTOOL", debianPackage: "prometheus" },
];

const executable = (path: string): boolean => {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

const succeeds = (command: string, args: string[]): boolean =>
  spawnSync(command, args, { stdio: "ignore" }).status === 0;

function fail(message: string): never {
  process.stderr.write(`npm test: ${message}\n`);
  process.exit(1);
}

const missing = PREREQUISITES.filter((prerequisite) => !executable(prerequisite.path));
if (missing.length > 0) {
  const packages = missing.map((prerequisite) => prerequisite.debianPackage);
  const what = missing.map((prerequisite) => prerequisite.path).join(" and ");
  const install = ["apt-get", "install", "-y", "--no-install-recommends", ...packages];
  const root = process.getuid?.() === 0;
  const sudo = root ? "" : "sudo ";
  const command = `${sudo}apt-get update && ${sudo}${install.join(" ")}`;
  const pointedElsewhere = missing.filter((prerequisite) => process.env[prerequisite.variable] !== undefined);
  if (pointedElsewhere.length > 0) {
    // Installing would put them at the default paths, not where the variables point.
    fail(
      `${what} not found; ${pointedElsewhere.map((prerequisite) => prerequisite.variable).join(" and ")} point${pointedElsewhere.length === 1 ? "s" : ""} there: fix the variable or unset it and run: ${command}`,
    );
  }
  const asRoot = root ? [] : ["sudo", "-n"];
  const apt = succeeds("apt-get", ["--version"]);
  if (!apt) {
    fail(
      `the operators' tests need ${what}; on Debian or Ubuntu run: ${command} (elsewhere, install Chromium and Prometheus' promtool and set CHROMIUM and PROMTOOL to their paths)`,
    );
  }
  if (!root && !succeeds("sudo", ["-n", "true"])) {
    fail(
      `the operators' tests need ${what}, which this user cannot install without a password; run: ${command}`,
    );
  }
  process.stdout.write(
    `npm test: installing ${packages.join(" and ")} with apt-get for the operators' tests (once; about a minute)\n`,
  );
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (const args of [
    ["apt-get", "update", "-qq"],
    [...install, "-qq"],
  ]) {
    const [program = "", ...rest] = [...asRoot, ...args];
    const run = spawnSync(program, rest, { env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    if (run.status !== 0) {
      process.stderr.write(`${run.stdout ?? ""}${run.stderr ?? ""}`);
      fail(`${args.join(" ")} failed (${run.status ?? run.signal ?? run.error?.message}); run: ${command}`);
    }
  }
  const still = missing.filter((prerequisite) => !executable(prerequisite.path));
  if (still.length > 0) {
    fail(
      `${still.map((prerequisite) => prerequisite.path).join(" and ")} still missing after apt-get install`,
    );
  }
}

// The Python gRPC client: a virtual environment of its own, made once.
if (!hasPythonGrpc()) {
  const python = process.env.PYTHON ?? "python3";
  const command = `${python} -m venv ${PYTHON_GRPC_VENV} && ${PYTHON_GRPC_VENV}/bin/pip install ${PYTHON_GRPC_REQUIREMENTS.join(" ")}`;
  if (process.env.PYTHON_GRPC !== undefined)
    fail(
      `PYTHON_GRPC (${PYTHON_GRPC}) cannot import grpc and grpc_tools: fix it or unset it and run: ${command}`,
    );
  process.stdout.write(
    `npm test: installing ${PYTHON_GRPC_REQUIREMENTS.join(", ")} in ${PYTHON_GRPC_VENV} for the gRPC interop test (once)\n`,
  );
  for (const [program, ...args] of [
    [python, "-m", "venv", PYTHON_GRPC_VENV],
    [`${PYTHON_GRPC_VENV}/bin/pip`, "install", "--quiet", ...PYTHON_GRPC_REQUIREMENTS],
  ] as [string, ...string[]][]) {
    const run = spawnSync(program, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    if (run.status !== 0) {
      process.stderr.write(`${run.stdout ?? ""}${run.stderr ?? ""}`);
      fail(
        `${[program, ...args].join(" ")} failed (${run.status ?? run.signal ?? run.error?.message}); run: ${command}`,
      );
    }
  }
  if (!hasPythonGrpc()) fail(`${PYTHON_GRPC} still cannot import grpc after: ${command}`);
}
