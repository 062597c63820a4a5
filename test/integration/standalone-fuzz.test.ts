import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { SHARED_MEMORY_DIRECTORY } from "../../backend/server/shared-memory-regions.ts";
import { MLP_INPUT } from "../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS, REPO_DIR } from "../fixtures/paths.ts";
import { oipInferRequest, pathSegment } from "../support/oip-arbitraries.ts";
import { type AgentProcess, startStandaloneAgent } from "./support/agent-process.ts";

// Generated malformed and hostile requests against a real standalone agent process (the test repository,
// one CPU thread): every answer is a 200 or a 4xx OIP error, in bounded time, and the process survives.

const MODEL = MULTIPLEX_MODELS[0] ?? "";
const ANSWER_WITHIN_MS = 15_000;
let agent: AgentProcess;

beforeAll(async () => {
  agent = await startStandaloneAgent([
    "--models",
    REPO_DIR,
    "--threads",
    "1",
    "--preload",
    MODEL,
    "--allow-client-shm",
  ]);
});

afterAll(async () => {
  await agent?.stop("SIGKILL");
});

async function send(
  path: string,
  init: RequestInit,
  what: string,
): Promise<{ status: number; text: string }> {
  const response = await fetch(`${agent.url}${path}`, {
    ...init,
    signal: AbortSignal.timeout(ANSWER_WITHIN_MS),
  });
  const text = await response.text();
  if (agent.child.exitCode !== null || agent.child.signalCode !== null) {
    throw new Error(`the agent died on ${what}:\n${agent.log().slice(-2000)}`);
  }
  return { status: response.status, text };
}

function expectRefusedCleanly({ status, text }: { status: number; text: string }, what: string): void {
  if (status === 200) return;
  const shown = `${what} -> ${status} ${text.slice(0, 300)}`;
  expect(status, shown).toBeGreaterThanOrEqual(400);
  expect(status, shown).toBeLessThan(500);
  expect(JSON.parse(text), shown).toEqual({ error: expect.any(String) });
}

describe("generated malformed requests at the standalone agent", () => {
  test("infer bodies (JSON, binary, garbage) and their headers", async () => {
    await fc.assert(
      fc.asyncProperty(oipInferRequest, async (request) => {
        const result = await send(
          `/v2/models/${MODEL}/infer`,
          { method: "POST", headers: request.headers, body: request.body },
          request.describe,
        );
        expectRefusedCleanly(result, request.describe);
      }),
      { numRuns: 300 },
    );
  });

  test("model names and versions in every route, including the repository extension", async () => {
    await fc.assert(
      fc.asyncProperty(
        pathSegment,
        fc.option(pathSegment),
        fc.constantFrom("infer", "ready", "metadata", "load", "unload"),
        async (model, version, action) => {
          const base = version === null ? `/v2/models/${model}` : `/v2/models/${model}/versions/${version}`;
          const [method, path] =
            action === "load" || action === "unload"
              ? ["POST", `/v2/repository/models/${model}/${action}`]
              : action === "infer"
                ? ["POST", `${base}/infer`]
                : ["GET", action === "ready" ? `${base}/ready` : base];
          const what = `${method} ${path}`;
          const result = await send(path, { method, body: method === "POST" ? "{}" : null }, what);
          expectRefusedCleanly(result, what);
          if (result.status === 200) expect(model, what).toMatch(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/);
        },
      ),
      { numRuns: 200 },
    );
  });

  test("shared memory: registrations, and tensors that name regions, with any values", async () => {
    // One real region (64 zero bytes in /dev/shm) among made-up ones, so that some requests get as far as it.
    const object = `switchyard-fuzz-${process.pid}`;
    writeFileSync(join(SHARED_MEMORY_DIRECTORY, object), new Uint8Array(64));
    try {
      const registered = await send(
        "/v2/systemsharedmemory/region/real/register",
        { method: "POST", body: JSON.stringify({ key: `/${object}`, offset: 0, byte_size: 64 }) },
        "register the real region",
      );
      expect(registered.status).toBe(200);
      const value = fc.oneof(
        fc.constantFrom("real", "nope", "", 0, -1, 8, 64, 2 ** 53, 1e300, Number.MAX_SAFE_INTEGER),
        fc.jsonValue(),
      );
      const place = fc.record(
        {
          shared_memory_region: value,
          shared_memory_byte_size: value,
          shared_memory_offset: value,
          binary_data_size: value,
          classification: value,
        },
        { requiredKeys: [] },
      );
      await fc.assert(
        fc.asyncProperty(
          place,
          place,
          fc.option(fc.jsonValue()),
          fc.constantFrom("FP32", "BYTES", "INT64"),
          async (inputPlace, outputPlace, data, datatype) => {
            const body = JSON.stringify({
              inputs: [
                {
                  name: MLP_INPUT,
                  shape: [1, 16],
                  datatype,
                  parameters: inputPlace,
                  ...(data === null ? {} : { data }),
                },
              ],
              outputs: [{ name: "y", parameters: outputPlace }],
            });
            const result = await send(
              `/v2/models/${MODEL}/infer`,
              { method: "POST", body },
              body.slice(0, 300),
            );
            expectRefusedCleanly(result, body.slice(0, 300));
          },
        ),
        { numRuns: 200 },
      );
      await fc.assert(
        fc.asyncProperty(pathSegment, fc.jsonValue(), async (name, request) => {
          const path = `/v2/systemsharedmemory/region/${name}/register`;
          const result = await send(path, { method: "POST", body: JSON.stringify(request) }, path);
          expectRefusedCleanly(result, `${path} ${JSON.stringify(request).slice(0, 200)}`);
          // Nothing generated names an object that exists: no registration may succeed.
          expect(result.status, path).not.toBe(200);
        }),
        { numRuns: 100 },
      );
      await fc.assert(
        fc.asyncProperty(pathSegment, fc.constantFrom("status", "unregister"), async (name, action) => {
          const path = `/v2/systemsharedmemory/region/${name}/${action}`;
          const result = await send(path, { method: action === "status" ? "GET" : "POST" }, path);
          expectRefusedCleanly(result, path);
        }),
        { numRuns: 100 },
      );
    } finally {
      rmSync(join(SHARED_MEMORY_DIRECTORY, object), { force: true });
    }
  });

  test("repository index bodies, and an oversized one", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.jsonValue().map((json) => JSON.stringify(json)),
          fc.string(),
        ),
        async (body) => {
          const result = await send("/v2/repository/index", { method: "POST", body }, body.slice(0, 100));
          expect([200, 400], `${body.slice(0, 100)} -> ${result.status}`).toContain(result.status);
        },
      ),
      { numRuns: 100 },
    );
    const huge = await send(
      "/v2/repository/index",
      { method: "POST", body: `{"ready": true, "pad": "${"x".repeat(2 * 1024 * 1024)}"}` },
      "2 MiB index body",
    );
    expect(huge.status).toBe(413);
  });

  test("the agent is still alive and serves a plain request", async () => {
    const response = await fetch(`${agent.url}/v2/models/${MODEL}/infer`, {
      method: "POST",
      body: JSON.stringify({
        inputs: [{ name: MLP_INPUT, shape: [1, 16], datatype: "FP32", data: new Array(16).fill(0.5) }],
      }),
    });
    expect(response.status).toBe(200);
  });
});
