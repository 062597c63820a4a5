import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { InferHandler } from "../../../backend/gateway-link/infer-handler.ts";
import type { LinkedReplica } from "../../../backend/gateway-link/linked-replica.ts";
import {
  decodeBinaryFrame,
  decodeTextFrame,
  ErrorFrameSchema,
  encodeBinaryFrame,
  ResultHeaderSchema,
} from "../../../shared/protocol/frames.ts";
import type { ReplicaState } from "../../../shared/protocol/replica-state.ts";
import { oipJsonRequest } from "../../support/oip-arbitraries.ts";
import { replicaState } from "../../support/replica-state.ts";

// Generated infer frames from a gateway, broken or hostile: the agent's handler never throws, answers every
// frame whose id it can read exactly once with a frame that follows the protocol, and stays usable.

const state: ReplicaState = replicaState({ maxConcurrency: 4 });

const replica: LinkedReplica = {
  id: "0",
  // An identity model: it returns its inputs, so whatever decodes comes back as a result frame.
  infer: async (call) => ({
    model: { name: call.model, version: "1" },
    outputs: call.inputs,
    cache: "hit",
    timings: { queueMs: 0, loadMs: 0, inferMs: 0, sessionMs: 0 },
  }),
  state: () => state,
  onChange: () => () => {},
};

const encoder = new TextEncoder();
const anything = fc.jsonValue({ maxDepth: 2 });

/** A frame, and the request id it carries where the agent can read one (it must then be answered). */
const frames = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((bytes) => ({ bytes, id: undefined as string | undefined })),
  fc
    .record({
      header: fc.record(
        {
          type: fc.oneof(fc.constant("infer"), anything),
          id: fc.oneof(fc.string({ minLength: 1, maxLength: 12 }), anything),
          replica: fc.oneof(fc.constantFrom("0", "1", ""), anything),
          model: fc.oneof(fc.constant("m"), anything),
          timeoutMs: fc.oneof(fc.integer({ min: -1, max: 5000 }), anything),
          headerLength: fc.oneof(fc.integer({ min: -1, max: 100 }), anything),
        },
        { requiredKeys: [] },
      ),
      body: oipJsonRequest.map((json) => encoder.encode(JSON.stringify(json))),
    })
    .map(({ header, body }) => ({
      bytes: encodeBinaryFrame(header, body),
      id: typeof header.id === "string" && header.id.length > 0 ? header.id : undefined,
    })),
);

describe("the agent's infer handler under generated frames", () => {
  it("never throws, and answers each readable request once, by the protocol", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(frames, { minLength: 1, maxLength: 5 }), async (batch) => {
        const sent: (Uint8Array | string)[] = [];
        const handler = new InferHandler({
          replicas: new Map([["0", replica]]),
          send: (frame) => sent.push(frame),
          log: () => {},
        });
        for (const frame of batch) expect(() => handler.handle(frame.bytes)).not.toThrow();
        await handler.idle();
        const answeredIds = sent.map((frame) =>
          typeof frame === "string"
            ? decodeTextFrame(frame, ErrorFrameSchema).id
            : decodeBinaryFrame(frame, ResultHeaderSchema).header.id,
        );
        // No request is answered twice (duplicate ids in one batch are dropped, not answered twice).
        expect(new Set(answeredIds).size).toBe(answeredIds.length);
        // Every request whose id could be read got its answer, and nothing else did.
        const readable = new Set(batch.flatMap((frame) => (frame.id === undefined ? [] : [frame.id])));
        expect(new Set(answeredIds)).toEqual(readable);
      }),
      { numRuns: 300 },
    );
  });
});
