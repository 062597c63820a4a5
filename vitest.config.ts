import { defineConfig } from "vitest/config";

// Three kinds of tests, one command (`npm test`):
// unit        pure logic and single components on real parts (onnxruntime sessions, real files)
// integration real processes: the agent CLI, `wrangler dev`, websockets between them
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          environment: "node",
          testTimeout: 30_000,
          globalSetup: ["test/fixtures/global-setup.ts"],
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          environment: "node",
          testTimeout: 120_000,
          hookTimeout: 120_000,
          // Each file spawns real processes; running them one by one keeps a 2-core machine honest.
          fileParallelism: false,
          globalSetup: ["test/fixtures/global-setup.ts"],
        },
      },
    ],
  },
});
