import { readFileSync } from "node:fs";
import { afterAll, beforeAll, expect, it } from "vitest";
import { threadedLoad } from "../../bench/hot-path/client-threads.ts";
import { grpcRequests } from "../../bench/hot-path/grpc-requests.ts";
import { infer } from "../../shared/oip/http-client.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { seededFloats } from "../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS } from "../fixtures/paths.ts";
import { type GrpcAgent, grpcAddressIn, startGrpcAgent, stopGrpcAgent } from "./support/grpc-client.ts";
import { inferenceCount } from "./support/model-stats.ts";

// The hot-path benchmark's gRPC client (grpc-requests.ts) against a real agent reading gRPC on two HTTP
// threads: with --grpc-channels N its calls go over N connections of their own (as N client processes'
// would, so that the agent's threads share them), each answer still checked against the model's own, and
// the benchmark's client threads run such loops and count what they sent.

const MLP = MULTIPLEX_MODELS[0] ?? "m000";
const x: Tensor = { name: "x", datatype: "FP32", shape: [2, 16], data: seededFloats(5, 32) };
let started: GrpcAgent;
let expected: { name: string; bytes: Uint8Array }[];

beforeAll(async () => {
  started = await startGrpcAgent(["--http-threads", "2"]);
  const answer = await infer(started.agent.url, MLP, { inputs: [x] });
  expected = answer.response.outputs.map((output) => ({
    name: output.name,
    bytes: new Uint8Array((output.data as Float32Array).slice().buffer),
  }));
});
afterAll(() => stopGrpcAgent(started));

/** Requests the model has run, from its statistics over HTTP. */
const ran = () => inferenceCount(started.agent.url, MLP);

/**
 * TCP connections to a local port, by their client end's address (Linux's /proc/net/tcp, ESTABLISHED: the
 * whole network namespace's, which only this test's clients open to the agent's port).
 */
function connectionsTo(port: number): Set<string> {
  const remote = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  return new Set(
    readFileSync("/proc/self/net/tcp", "utf8")
      .split("\n")
      .slice(1)
      .map((line) => line.trim().split(/\s+/))
      .filter(([, , address, state]) => state === "01" && address?.endsWith(remote) === true)
      .map(([, local]) => local ?? ""),
  );
}

it("spread over client threads (client-threads.ts), the calls of every thread are answered and counted", async () => {
  const address = grpcAddressIn(started.agent.log());
  const before = await ran();
  const { load } = await threadedLoad({
    work: { kind: "grpc", address, model: MLP, input: x, channels: 4 },
    concurrency: 6,
    threads: 3,
    warmupS: 0,
    seconds: 0.5,
  });
  expect(load).toMatchObject({ concurrency: 6, failed: 0 });
  expect(load.completed).toBeGreaterThan(6);
  // Every call the loops sent reached the model: none of them answered by anything else.
  expect((await ran()) - before).toBe(load.answered);
});

it.each([1, 4])("%i channel(s): as many connections, every answer the model's", async (channels) => {
  const address = grpcAddressIn(started.agent.log());
  const port = Number(address.split(":")[1]);
  const before = connectionsTo(port);
  const requests = grpcRequests(address, MLP, x, expected, channels);
  try {
    const answers = await Promise.all(Array.from({ length: 8 }, () => requests.send()));
    for (const answer of answers) requests.verify(answer);
    // (One an earlier case closed may still be open: only the new ones count.)
    expect([...connectionsTo(port)].filter((local) => !before.has(local))).toHaveLength(channels);
    // A wrong answer is refused.
    const wrong = grpcRequests(address, MLP, x, [{ name: "y", bytes: new Uint8Array(32 * 4) }], 1);
    try {
      expect(() => wrong.verify(answers[0] as (typeof answers)[number])).toThrow(/differs from a direct run/);
    } finally {
      wrong.close();
    }
  } finally {
    requests.close();
  }
});
