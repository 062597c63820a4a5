import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../gateway/app.ts";
import { MAX_FRAME_BYTES } from "../../shared/protocol/frames.ts";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { CLIENT_KEY, errorOf, freshPool, gatewayFetch, infer, SMALL_REQUEST } from "./support/gateway.ts";

/** A valid OIP request of `elements` UINT8 values in the binary extension. */
function binaryRequest(elements: number): { bytes: Uint8Array; headerLength: number } {
  const json = JSON.stringify({
    inputs: [{ name: "x", shape: [elements], datatype: "UINT8", parameters: { binary_data_size: elements } }],
  });
  const bytes = new Uint8Array(json.length + elements);
  bytes.set(new TextEncoder().encode(json));
  return { bytes, headerLength: json.length };
}

describe("request validation before anything reaches an agent", () => {
  it("refuses bodies over the limit with 413, by Content-Length or by size", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState({ loaded: ["m"] })] });
    const big = new Uint8Array(MAX_FRAME_BYTES);
    const response = await infer("m", { pool, body: big });
    expect(response.status).toBe(413);
    expect(await errorOf(response)).toMatch(/larger than the limit/);
    const streamed = await infer("m", {
      pool,
      body: new ReadableStream({
        start(controller) {
          controller.enqueue(big);
          controller.close();
        },
      }),
    });
    expect(streamed.status).toBe(413);
    expect(agent.pendingInfers).toBe(0);
    agent.close();
  });

  it("limits the body of every route that reads one: the repository index takes 64 KiB", async () => {
    const response = await gatewayFetch("/v2/repository/index", {
      method: "POST",
      headers: { Authorization: `Bearer ${CLIENT_KEY}` },
      body: `{"ready":true,"pad":"${"x".repeat(128 * 1024)}"}`,
    });
    expect(response.status).toBe(413);
    expect(await errorOf(response)).toMatch(/larger than the limit of 65536 bytes/);
  });

  it("relays a large binary request and response intact", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState({ loaded: ["m"] })] });
    const elements = 6 * 1024 * 1024;
    const json = JSON.stringify({
      inputs: [
        { name: "x", shape: [elements], datatype: "UINT8", parameters: { binary_data_size: elements } },
      ],
    });
    const request = new Uint8Array(json.length + elements);
    request.set(new TextEncoder().encode(json));
    for (let index = json.length; index < request.length; index += 4093) request[index] = index % 251;
    const response = infer("m", {
      pool,
      body: request,
      headers: { "Inference-Header-Content-Length": String(json.length) },
    });
    const received = await agent.nextInfer();
    expect(received.body.length).toBe(request.length);
    expect(received.body.every((byte, index) => byte === request[index])).toBe(true);
    const answer = "x".repeat(elements);
    agent.answer(received, { body: answer });
    const answered = await response;
    expect(answered.status).toBe(200);
    expect((await answered.text()) === answer).toBe(true);
    agent.close();
  });

  it("answers 429 once an agent's relay holds MAX_PENDING_BYTES of request bodies (16 MiB here)", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, {
      replicas: [replicaState({ loaded: ["m"], maxConcurrency: 3 })],
    });
    const body = binaryRequest(6 * 1024 * 1024);
    const send = () =>
      infer("m", {
        pool,
        body: body.bytes,
        headers: { "Inference-Header-Content-Length": String(body.headerLength) },
      });
    const running = [send(), send()];
    const first = [await agent.nextInfer(), await agent.nextInfer()];
    // A third slot is free, but its body would take the relay past its limit.
    const refused = await send();
    expect(refused.status).toBe(429);
    expect(refused.headers.get("Retry-After")).toBe("1");
    expect(await errorOf(refused)).toMatch(
      /agent's relay holds \d+ bytes of requests already \(limit 16777216\)/,
    );
    for (const received of first) agent.answer(received);
    for (const response of running) expect((await response).status).toBe(200);
    // The bytes are given back as requests end.
    const after = send();
    agent.answer(await agent.nextInfer());
    expect((await after).status).toBe(200);
    agent.close();
  });

  it("holds more bytes in flight across a pool's agents than any one object may (72 MiB over six relays)", async () => {
    const pool = freshPool();
    const agents = await Promise.all(
      Array.from({ length: 6 }, (_, index) =>
        FakeAgent.connect(pool, {
          name: `a${index}`,
          replicas: [replicaState({ loaded: ["m"], maxConcurrency: 2 })],
        }),
      ),
    );
    const body = binaryRequest(6 * 1024 * 1024);
    const responses = Array.from({ length: 12 }, () =>
      infer("m", {
        pool,
        body: body.bytes,
        headers: { "Inference-Header-Content-Length": String(body.headerLength) },
      }),
    );
    // Every request is at its agent at once: 12 x 6 MiB in flight, each relay holding 12 MiB of it.
    const received = (
      await Promise.all(agents.map(async (agent) => [await agent.nextInfer(), await agent.nextInfer()]))
    ).flat();
    const inFlight = received.reduce((sum, infer) => sum + infer.body.byteLength, 0);
    expect(inFlight).toBeGreaterThan(64 * 1024 * 1024);
    agents.forEach((agent, index) => {
      for (const infer of received.slice(index * 2, index * 2 + 2)) agent.answer(infer);
    });
    for (const response of responses) expect((await response).status).toBe(200);
    for (const agent of agents) agent.close();
  });

  it("answers 400 with the codec's message for malformed OIP bodies, bad names and bad options", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState({ loaded: ["m"] })] });
    const cases: [string, Parameters<typeof infer>[1], RegExp][] = [
      ["m", { pool, body: "{" }, /./],
      [
        "m",
        { pool, body: '{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1]}]}' },
        /shape \[2\] needs 2 elements/,
      ],
      [
        "m",
        { pool, body: '{"inputs":[{"name":"x","shape":[1],"datatype":"FP99","data":[1]}]}' },
        /unknown datatype/,
      ],
      ["-flag", { pool }, /invalid model name/],
      ["a%2F..%2Fb", { pool }, /invalid model name/],
      ["m", { pool, version: "0" }, /invalid model version/],
      ["m", { pool, headers: { "X-Request-Timeout": "soon" } }, /X-Request-Timeout/],
      [
        "m",
        { pool, headers: { "Inference-Header-Content-Length": "-1" } },
        /Inference-Header-Content-Length/,
      ],
      ["m", { pool: "bad pool!" }, /invalid pool name/],
    ];
    for (const [model, options, message] of cases) {
      const response = await infer(model, options);
      expect(
        response.status,
        `${model} ${JSON.stringify(options.headers ?? options.body ?? options.pool)}`,
      ).toBe(400);
      expect(await errorOf(response)).toMatch(message);
    }
    expect(agent.pendingInfers).toBe(0);
    agent.close();
  });
});

describe("bodies that break off or come compressed", () => {
  const app = createApp();
  const call = (body: BodyInit, headers: Record<string, string> = {}) =>
    Promise.resolve(
      app.fetch(
        new Request("https://gateway.test/v2/models/m/infer", {
          method: "POST",
          headers: { Authorization: `Bearer ${CLIENT_KEY}`, "X-Switchyard-Pool": freshPool(), ...headers },
          body,
        }),
        env,
        createExecutionContext(),
      ),
    );

  it("a body stream that fails mid-way is the request's fault: 400 JSON, never a 500", async () => {
    const broken = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"inputs": ['));
      },
      pull(controller) {
        controller.error(new Error("Network connection lost."));
      },
    });
    const response = await call(broken);
    expect(response.status).toBe(400);
    expect(await errorOf(response)).toBe(
      "request body could not be read: it broke off, or its transfer encoding is malformed",
    );
  });

  it("gzip and deflate bodies are decompressed, limits apply to what they inflate to, unknown encodings get 415", async () => {
    const compress = async (text: string, format: "gzip" | "deflate") =>
      new Uint8Array(
        await new Response(
          new Blob([text]).stream().pipeThrough(new CompressionStream(format)),
        ).arrayBuffer(),
      );
    // No agent in the pool: a body that decodes fine gets as far as routing (503).
    for (const format of ["gzip", "deflate"] as const) {
      const response = await call(await compress(SMALL_REQUEST, format), { "Content-Encoding": format });
      expect(response.status, format).toBe(503);
    }
    const bomb = await compress("0".repeat(40 * 2 ** 20), "gzip");
    expect(bomb.byteLength).toBeLessThan(1 << 20);
    const refused = await call(bomb, { "Content-Encoding": "gzip" });
    expect(refused.status).toBe(413);
    expect(await errorOf(refused)).toMatch(/larger than the limit of \d+ bytes once decompressed/);
    const unknown = await call(SMALL_REQUEST, { "Content-Encoding": "br" });
    expect(unknown.status).toBe(415);
  });

  it("health takes the client key when HEALTH_REQUIRES_KEY is set", async () => {
    const probe = (headers: Record<string, string>) =>
      Promise.resolve(
        app.fetch(
          new Request("https://gateway.test/v2/health/live", { headers }),
          { ...env, HEALTH_REQUIRES_KEY: "true" },
          createExecutionContext(),
        ),
      );
    expect((await probe({})).status).toBe(401);
    expect((await probe({ Authorization: "Bearer wrong" })).status).toBe(403);
    expect((await probe({ Authorization: `Bearer ${CLIENT_KEY}` })).status).toBe(200);
  });
});
