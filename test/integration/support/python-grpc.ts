import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { GENERATED_DIR } from "../../fixtures/paths.ts";

/**
 * The Python gRPC client the interop test drives: grpcio (gRPC's C core, what tritonclient.grpc and KServe's
 * client run on) and protobuf's upb runtime, in a virtual environment of their own under the generated
 * fixtures. scripts/test-prerequisites.ts creates it once with these pinned versions, from pip's configured
 * index; $PYTHON_GRPC points the test at another interpreter that has them.
 */
export const PYTHON_GRPC_VENV = join(GENERATED_DIR, "python-grpc");
export const PYTHON_GRPC = process.env.PYTHON_GRPC ?? join(PYTHON_GRPC_VENV, "bin", "python");
export const PYTHON_GRPC_REQUIREMENTS = ["grpcio==1.84.0", "grpcio-tools==1.84.0", "protobuf==7.36.2"];

/** Whether `python` imports grpc and grpc_tools. */
export function hasPythonGrpc(python = PYTHON_GRPC): boolean {
  return spawnSync(python, ["-c", "import grpc, grpc_tools"], { stdio: "ignore" }).status === 0;
}
