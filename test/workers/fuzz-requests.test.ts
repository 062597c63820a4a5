import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { oipInferRequest, pathSegment } from "../support/oip-arbitraries.ts";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import {
  ADMIN_KEY,
  AGENT_TOKEN,
  CLIENT_KEY,
  freshPool,
  gatewayFetch,
  SMALL_REQUEST,
} from "./support/gateway.ts";

// Generated hostile and malformed requests against the gateway, with an agent that answers every infer
// frame it gets (so a request that happens to be valid succeeds). Every answer must be a 200 or a 4xx with
// an OIP error body, in bounded time, and the pool must serve normally afterwards.

const ANSWER_WITHIN_MS = 10_000;

/**
 * Answers every infer frame the agent receives, and every query (a real agent answers each; left unanswered,
 * one would hold its request for the registry's QUERY_TIMEOUT_MS, as long as a test waits for an answer: the
 * counterexample ["m", null, "metadata"] asked to describe the one model the agent holds), until it is closed.
 */
function serveEverything(agent: FakeAgent): Promise<void> {
  const infers = (async () => {
    for (;;) {
      let received: Awaited<ReturnType<FakeAgent["nextInfer"]>>;
      try {
        received = await agent.nextInfer(60_000);
      } catch {
        return;
      }
      agent.answer(received);
    }
  })();
  const queries = (async () => {
    for (;;) {
      let frame: unknown;
      try {
        frame = await agent.nextText(60_000);
      } catch {
        return;
      }
      const query = frame as { type?: string; id?: string };
      if (query.type === "query" && typeof query.id === "string") {
        agent.sendJson({
          type: "answer",
          id: query.id,
          result: { ok: false, status: 404, message: "the fake agent describes no model" },
        });
      }
    }
  })();
  return Promise.all([infers, queries]).then(() => undefined);
}

async function answered(
  response: Promise<Response>,
  what: string,
): Promise<{ status: number; text: string }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer within ${ANSWER_WITHIN_MS} ms: ${what}`)),
      ANSWER_WITHIN_MS,
    );
  });
  try {
    const settled = await Promise.race([response, hang]);
    return { status: settled.status, text: await settled.text() };
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

/**
 * 200, or a 4xx whose body is exactly {"error": "<message>"}. The one 5xx allowed is a 504 for a deadline under a
 * second (a generated `X-Request-Timeout: 0.001`, or a tiny `timeout` parameter): no gateway can promise to meet
 * a millisecond, and the answer must say which deadline it missed.
 */
function expectRefusedCleanly({ status, text }: { status: number; text: string }, what: string): void {
  if (status === 200) return;
  if (status === 504) {
    const missed = /within the request's deadline of (\d+(?:\.\d+)?) ms/.exec(text)?.[1];
    expect(Number(missed), `${what} -> ${status} ${text.slice(0, 300)}`).toBeLessThan(1000);
    expect(JSON.parse(text) as unknown, what).toEqual({ error: expect.any(String) });
    return;
  }
  expect(status, `${what} -> ${status} ${text.slice(0, 300)}`).toBeGreaterThanOrEqual(400);
  expect(status, `${what} -> ${status} ${text.slice(0, 300)}`).toBeLessThan(500);
  const body = JSON.parse(text) as unknown;
  expect(body, what).toEqual({ error: expect.any(String) });
}

async function withServingAgent(test: (pool: string) => Promise<void>): Promise<void> {
  const pool = freshPool();
  const agent = await FakeAgent.connect(pool, {
    replicas: [replicaState({ loaded: ["m"], maxConcurrency: 64 })],
  });
  const serving = serveEverything(agent);
  try {
    await test(pool);
    // The pool still serves a plain request.
    const after = await gatewayFetch("/v2/models/m/infer", {
      method: "POST",
      headers: { Authorization: `Bearer ${CLIENT_KEY}`, "X-Switchyard-Pool": pool },
      body: SMALL_REQUEST,
    });
    expect(after.status).toBe(200);
    expect(agent.socket.readyState).toBe(WebSocket.OPEN);
  } finally {
    agent.close();
    await serving;
  }
}

describe("generated malformed requests", () => {
  it("infer bodies (JSON, binary, garbage) and their headers: 200 or a 4xx JSON error, never a 5xx or a hang", async () => {
    await withServingAgent(async (pool) => {
      await fc.assert(
        fc.asyncProperty(oipInferRequest, async (request) => {
          const result = await answered(
            gatewayFetch("/v2/models/m/infer", {
              method: "POST",
              headers: {
                Authorization: `Bearer ${CLIENT_KEY}`,
                "X-Switchyard-Pool": pool,
                ...request.headers,
              },
              body: request.body,
            }),
            request.describe,
          );
          expectRefusedCleanly(result, request.describe);
        }),
        {
          numRuns: 300,
          // A counterexample once: a deadline of 0.0010000000000000002 s was named "1.0000000000000002 ms".
          examples: [
            [
              {
                body: new TextEncoder().encode('{"inputs":[]}'),
                headers: {
                  "Content-Type": "application/json",
                  "X-Request-Timeout": "0.0010000000000000002",
                  "X-Runner-Hint": "",
                },
                describe: 'json {"inputs":[]} headers {"X-Request-Timeout":"0.0010000000000000002"}',
              },
            ],
          ],
        },
      );
    });
  });

  it("model names and versions in every client route: refused unless plain, never a path out of the repository", async () => {
    await withServingAgent(async (pool) => {
      await fc.assert(
        fc.asyncProperty(
          pathSegment,
          fc.option(pathSegment),
          fc.constantFrom("infer", "ready", "metadata"),
          async (model, version, action) => {
            const base = version === null ? `/v2/models/${model}` : `/v2/models/${model}/versions/${version}`;
            const path = action === "infer" ? `${base}/infer` : action === "ready" ? `${base}/ready` : base;
            const what = `${action} ${path}`;
            const result = await answered(
              gatewayFetch(path, {
                method: action === "infer" ? "POST" : "GET",
                headers: { Authorization: `Bearer ${CLIENT_KEY}`, "X-Switchyard-Pool": pool },
                ...(action === "infer" ? { body: SMALL_REQUEST } : {}),
              }),
              what,
            );
            // Metadata of a model nobody has loaded yet is 503 by design (its signature is not known).
            if (action === "metadata" && result.status === 503) return;
            expectRefusedCleanly(result, what);
            // Served only under a plain name: nothing percent-encoded, no dot or dash first. The name is the one
            // in the URL as resolved (dot segments like "./" are removed by URL parsing, before any route).
            const served = new URL(path, "http://gateway").pathname.split("/")[3] ?? "";
            if (result.status === 200) expect(served, what).toMatch(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/);
          },
        ),
        // The model the agent holds, asked for its metadata: a counterexample once (see serveEverything).
        { numRuns: 200, examples: [["m", null, "metadata"]] },
      );
    });
  });

  it("the agent and admin model routes: names that could escape the repository are refused", async () => {
    await fc.assert(
      fc.asyncProperty(pathSegment, pathSegment, fc.boolean(), async (model, version, admin) => {
        const path = admin
          ? `/admin/models/${model}/${version}`
          : `/agent/models/${model}/${version}/model.onnx`;
        const result = await answered(
          gatewayFetch(path, {
            method: admin ? "DELETE" : "GET",
            headers: { Authorization: `Bearer ${admin ? ADMIN_KEY : AGENT_TOKEN}` },
          }),
          path,
        );
        // Nothing was uploaded: every answer is a refusal (400 for a bad name, 404 for a good one).
        expect([400, 404], `${path} -> ${result.status} ${result.text}`).toContain(result.status);
        expect(JSON.parse(result.text)).toEqual({ error: expect.any(String) });
      }),
      { numRuns: 150 },
    );
  });

  it("repository index bodies: any JSON or garbage is a 200 or a 400", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.jsonValue().map((json) => JSON.stringify(json)),
          fc.string(),
        ),
        async (body) => {
          const result = await answered(
            gatewayFetch("/v2/repository/index", {
              method: "POST",
              headers: { Authorization: `Bearer ${CLIENT_KEY}`, "X-Switchyard-Pool": freshPool() },
              body,
            }),
            body,
          );
          expect([200, 400], `${body.slice(0, 100)} -> ${result.status} ${result.text}`).toContain(
            result.status,
          );
        },
      ),
      { numRuns: 100 },
    );
  });
});
