import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// Three kinds of tests, one command (`npm test`):
// unit        pure logic and single components on real parts (onnxruntime sessions, real files)
// workers     the gateway inside workerd (Workers Vitest integration): real Registry Durable Objects, R2,
//             websockets from test peers speaking the agent protocol
// integration real processes: the agent CLI, `wrangler dev`, websockets between them
// integration-sharded the suites below again, each pool's registry split into four shards
const SHARDED_SUITES = [
  "test/integration/gateway-routing.test.ts",
  "test/integration/gateway-routing-behaviours.test.ts",
  "test/integration/gateway-failures.test.ts",
  "test/integration/gateway-agent-loss.test.ts",
  "test/integration/gateway-reliability.test.ts",
];

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
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              // The local development secrets; a second client key proves comma-separated lists work.
              bindings: {
                API_KEYS: "local-dev-key, second-client-key",
                AGENT_TOKENS: "local-agent-token",
                ADMIN_KEY: "local-admin-key",
                HEARTBEAT_SECONDS: "10",
                QUEUE_LIMIT: "4",
                // Short, so a test sees waiting requests give up when no agent comes back.
                AGENT_GRACE_SECONDS: "5",
                MAX_PENDING_BYTES: String(16 * 1024 * 1024),
                // Small, so that the managed queue's limits show in a few requests (test/workers/queue.test.ts).
                QUEUE_IN_FLIGHT: "1",
                QUEUE_ASYNC_LIMIT: "8",
                QUEUE_RESULT_TTL_SECONDS: "1",
                // Set, so that submits with a webhook are checked for their URL (test/workers/fuzz-queue.test.ts).
                WEBHOOK_SECRET: "workers-webhook-secret",
              },
            },
          }),
        ],
        test: {
          name: "workers",
          include: ["test/workers/**/*.test.ts"],
          testTimeout: 20_000,
          setupFiles: ["test/workers/support/quiet-events.ts"],
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
      {
        test: {
          // The routing, failure and chaos promises again, on pools whose registry is four shards
          // (REGISTRY_SHARDS; test/integration/harness/wrangler-dev.ts), after the other projects are done.
          name: "integration-sharded",
          include: SHARDED_SUITES,
          environment: "node",
          env: { SWITCHYARD_TEST_REGISTRY_SHARDS: "4" },
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
          globalSetup: ["test/fixtures/global-setup.ts"],
        },
      },
    ],
  },
});
