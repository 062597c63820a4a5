import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { MULTIPLEX_MODELS, REPO_DIR } from "../fixtures/paths.ts";
import { type AgentProcess as GatewayAgent, startAgent } from "./harness/agents.ts";
import { waitForAgents } from "./harness/oip-client.ts";
import { type GatewayProcess, SECRETS, startGateway } from "./harness/wrangler-dev.ts";
import { type AgentProcess as StandaloneAgent, startStandaloneAgent } from "./support/agent-process.ts";

// A hand-written corpus of malformed HTTP, written byte for byte on a raw socket (no client library would
// send it), against the standalone agent and the gateway with a real agent behind it. Every answer is a
// 4xx with a JSON error body, and none carries a stack trace or a file path.

const MODEL = MULTIPLEX_MODELS[0] ?? "m000";
let standalone: StandaloneAgent;
/** The same agent with its HTTP on intake threads (--http-threads): the same answers are expected. */
let threaded: StandaloneAgent;
let gateway: GatewayProcess;
let agent: GatewayAgent;

beforeAll(async () => {
  [standalone, threaded, gateway] = await Promise.all([
    startStandaloneAgent(["--threads", "1", "--models", REPO_DIR]),
    startStandaloneAgent(["--threads", "1", "--models", REPO_DIR, "--http-threads", "2"]),
    startGateway(),
  ]);
  agent = await startAgent({ gateway: gateway.wsUrl, name: "corpus" });
  await waitForAgents(gateway.url, 1);
}, 180_000);

afterAll(async () => {
  await Promise.all([standalone?.stop(), threaded?.stop(), agent?.stop("SIGKILL")]);
  await gateway?.stop();
});

/** Writes `request` as is and reads the whole answer (the connection is closed by either side). */
function exchange(url: string, request: Buffer): Promise<{ status: number; headers: string; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    socket.setTimeout(20_000, () => socket.destroy(new Error("no answer within 20 s")));
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const [head = "", ...rest] = text.split("\r\n\r\n");
      resolve({
        status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0),
        headers: head,
        body: rest.join("\r\n\r\n"),
      });
    });
    socket.end(request);
  });
}

const CRLF = "\r\n";
const head = (lines: string[]) => Buffer.from(`${lines.join(CRLF)}${CRLF}${CRLF}`, "latin1");
const withBody = (path: string, body: Buffer | string, extra: string[] = []) => {
  const bytes = typeof body === "string" ? Buffer.from(body) : body;
  return Buffer.concat([
    head([
      `POST ${path} HTTP/1.1`,
      "Host: switchyard",
      `Authorization: Bearer ${SECRETS.apiKey}`,
      `Content-Length: ${bytes.byteLength}`,
      ...extra,
      "Connection: close",
    ]),
    bytes,
  ]);
};
const infer = `/v2/models/${MODEL}/infer`;
const tensor = (id: string) =>
  JSON.stringify({
    id,
    inputs: [{ name: "x", datatype: "FP32", shape: [1, 16], data: new Array(16).fill(0) }],
  });

const CORPUS: ReadonlyArray<[string, Buffer]> = [
  ["a request id of 1 MB", withBody(infer, tensor("i".repeat(1_000_000)))],
  ["a request id of 100 KB", withBody(infer, tensor("i".repeat(100_000)))],
  ["JSON nested 200,000 deep", withBody(infer, "[".repeat(200_000))],
  ["a body that is not UTF-8", withBody(infer, Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))],
  [
    "an Inference-Header-Content-Length past the body",
    withBody(infer, tensor("a"), ["Inference-Header-Content-Length: 99999"]),
  ],
  [
    "an Inference-Header-Content-Length of 20 digits",
    withBody(infer, tensor("a"), ["Inference-Header-Content-Length: 99999999999999999999"]),
  ],
  [
    "a negative Inference-Header-Content-Length",
    withBody(infer, tensor("a"), ["Inference-Header-Content-Length: -4"]),
  ],
  [
    "binary data the header does not account for",
    withBody(infer, Buffer.concat([Buffer.from(tensor("a")), Buffer.alloc(64)]), [
      `Inference-Header-Content-Length: ${tensor("a").length}`,
    ]),
  ],
  ["a Content-Encoding it does not know", withBody(infer, tensor("a"), ["Content-Encoding: zstd"])],
  ["gzip that is garbage", withBody(infer, "garbage", ["Content-Encoding: gzip"])],
  [
    "an unknown method",
    head([
      `DELETE ${infer} HTTP/1.1`,
      "Host: switchyard",
      `Authorization: Bearer ${SECRETS.apiKey}`,
      "Connection: close",
    ]),
  ],
  [
    "a NUL in the model name",
    head([
      "GET /v2/models/%00/ready HTTP/1.1",
      "Host: switchyard",
      `Authorization: Bearer ${SECRETS.apiKey}`,
      "Connection: close",
    ]),
  ],
  [
    "a model name of 10,000 characters",
    head([
      `GET /v2/models/${"m".repeat(10_000)} HTTP/1.1`,
      "Host: switchyard",
      `Authorization: Bearer ${SECRETS.apiKey}`,
      "Connection: close",
    ]),
  ],
  [
    "two Content-Lengths that disagree",
    Buffer.from(
      `POST ${infer} HTTP/1.1\r\nHost: switchyard\r\nAuthorization: Bearer ${SECRETS.apiKey}\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\n{}{}{}`,
    ),
  ],
  [
    "a URL of 100 KB",
    head([`GET /v2/${"a".repeat(100_000)} HTTP/1.1`, "Host: switchyard", "Connection: close"]),
  ],
];

const STACK_TRACE = /\n\s+at |\.(?:ts|js|mjs):\d+|node_modules|file:\/\//;

const TARGETS = {
  standalone: () => standalone.url,
  "standalone on HTTP threads": () => threaded.url,
  gateway: () => gateway.url,
};

describe.each(Object.keys(TARGETS) as (keyof typeof TARGETS)[])("malformed HTTP against the %s", (target) => {
  const url = TARGETS[target];

  test.each(CORPUS)("%s: a 4xx JSON error, no stack trace", async (_label, request) => {
    const answer = await exchange(url(), request);
    expect(answer.status, answer.headers).toBeGreaterThanOrEqual(400);
    expect(answer.status, answer.body.slice(0, 200)).toBeLessThan(500);
    expect(`${answer.headers}\n${answer.body}`).not.toMatch(STACK_TRACE);
    if (
      !/\b(414|431)\b/.test(answer.headers.split(CRLF)[0] ?? "") &&
      !/invalid content-length/.test(answer.body)
    ) {
      expect(answer.headers.toLowerCase()).toContain("content-type: application/json");
      expect(Object.keys(JSON.parse(answer.body) as object)).toEqual(["error"]);
    }
    // No header longer than a correlation id: the id is never echoed unbounded.
    for (const line of answer.headers.split(CRLF)) expect(line.length).toBeLessThan(1024);
  });
});

test.each([
  ["", () => standalone.url],
  [" on HTTP threads", () => threaded.url],
])("the standalone agent%s answers broken chunked framing with a 400 JSON error", async (_on, url) => {
  // (wrangler dev's own local proxy, in front of the Worker, answers this itself; Cloudflare's edge refuses
  // such framing before any Worker runs. The Worker's answer to a body that breaks off is tested in workerd.)
  const answer = await exchange(
    url(),
    Buffer.from(
      `POST ${infer} HTTP/1.1\r\nHost: switchyard\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`,
    ),
  );
  expect(answer.status).toBe(400);
  expect(JSON.parse(answer.body)).toEqual({ error: expect.stringMatching(/malformed|broke off/) });
});

test.each([
  ["", () => standalone.url],
  [" on HTTP threads", () => threaded.url],
])(
  "the standalone agent%s answers a request target no URL parser takes with a 400 JSON error",
  async (_on, url) => {
    const answer = await exchange(
      url(),
      head(["GET http://[bad/v2 HTTP/1.1", "Host: switchyard", "Connection: close"]),
    );
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toEqual({ error: expect.stringMatching(/cannot be read/) });
  },
);
