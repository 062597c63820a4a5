import { copyFileSync } from "node:fs";
import { build } from "esbuild";

/**
 * Single-file bundles of the agent and the GPU benchmarks, for hosts that get a Node binary and
 * onnxruntime-node but no npm install (see README: installing the agent on a GPU host). onnxruntime-node
 * stays external: it carries the native binding and, on GPU hosts, the CUDA provider beside it.
 */
const entries: Record<string, string> = {
  "switchyard-agent": "backend/bin/switchyard-agent.ts",
  // The thread each loaded model's session runs in: the agent (and gpu-bench, through its replicas) start
  // it from beside themselves (backend/worker-entry-url.ts).
  "session-worker": "backend/replica/session-worker.ts",
  // The standalone server's HTTP intake threads (--http-threads), started from beside the agent's bundle.
  "intake-thread": "backend/server/intake-thread.ts",
  "gpu-smoke": "bench/gpu/smoke.ts",
  "gpu-bench": "bench/gpu/gpu-bench.ts",
  "two-gpus": "bench/gpu/two-gpus.ts",
  "bucket-load": "bench/gpu/bucket-load.ts",
  // The hot-path benchmark and its anchor server (it starts the anchor and the agent from beside itself).
  "hot-path": "bench/hot-path/hot-path.ts",
  "hot-path-anchor": "bench/hot-path/anchor-server.ts",
  // The threaded anchor's HTTP threads (anchor-server.ts --http-threads starts them from beside itself).
  "anchor-http-thread": "bench/hot-path/anchor-http-thread.ts",
  // Its client's threads (bench/hot-path/client-threads.ts starts them from beside itself).
  "http-load-thread": "bench/hot-path/http-load-thread.ts",
};

await build({
  entryPoints: entries,
  outdir: "dist",
  outExtension: { ".js": ".mjs" },
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node24",
  external: ["onnxruntime-node"],
  // Bundled CommonJS dependencies (ws) still call require().
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
  logLevel: "info",
});

// The gRPC server reads the protocol's .proto from beside itself at start (backend/server/grpc/grpc-proto.ts).
copyFileSync("backend/server/grpc/inference.proto", "dist/inference.proto");
