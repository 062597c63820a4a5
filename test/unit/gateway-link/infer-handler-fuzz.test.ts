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
// request whose id it can read with a frame that follows the protocol, never answers one frame twice (nor
// a request in flight for a broken frame of its id), and stays usable.

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
          // Few ids, so that frames meet requests of their id in flight.
          id: fc.oneof(fc.constantFrom("a", "b"), fc.string({ minLength: 1, maxLength: 12 }), anything),
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
        // No frame is answered twice: an id gets at most one answer per frame that carried it (fewer where a
        // frame came while its id was in flight: a duplicate is dropped, and the request answers for itself).
        const carried = batch.flatMap((frame) => (frame.id === undefined ? [] : [frame.id]));
        for (const id of new Set(answeredIds)) {
          expect(count(answeredIds, id)).toBeLessThanOrEqual(count(carried, id));
        }
        // Every request whose id could be read got its answer, and nothing else did.
        expect(new Set(answeredIds)).toEqual(new Set(carried));
      }),
      { numRuns: 300 },
    );
  });

  it("a broken frame naming a request in flight is not answered: the request's own answer is its one", async () => {
    const sent: (Uint8Array | string)[] = [];
    const handler = new InferHandler({
      replicas: new Map([["0", replica]]),
      send: (frame) => sent.push(frame),
      log: () => {},
    });
    const body = encoder.encode('{"inputs":[]}');
    handler.handle(
      encodeBinaryFrame({ type: "infer", id: "a", replica: "0", model: "m", timeoutMs: 5000 }, body),
    );
    handler.handle(encodeBinaryFrame({ type: "infer", id: "a", replica: "0", model: 7 }, body));
    await handler.idle();
    expect(sent).toHaveLength(1);
    expect(sent[0]).toBeInstanceOf(Uint8Array);
  });
});

const count = (ids: readonly string[], id: string): number => ids.filter((each) => each === id).length;
