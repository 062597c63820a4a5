import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { InferHandler } from "../../../backend/gateway-link/infer-handler.ts";
import {
  decodeBinaryFrame,
  decodeTextFrame,
  ErrorFrameSchema,
  encodeBinaryFrame,
  InferHeaderSchema,
  ResultHeaderSchema,
} from "../../../shared/protocol/frames.ts";
import { oipJsonRequest } from "../../support/oip-arbitraries.ts";
import { replicaState } from "../../support/replica-state.ts";
import { handlerOptions, identityReplica } from "./identity-replica.ts";

// Generated infer frames from a gateway, broken or hostile: the agent's handler never throws, answers every
// frame whose id it can read exactly once with a frame that follows the protocol, except one that comes while
// a request of its id is in flight (that request's own answer is the one), and stays usable.

// An identity model: it returns its inputs, so whatever decodes comes back as a result frame.
const replica = identityReplica({ state: replicaState({ maxConcurrency: 4 }) });

const encoder = new TextEncoder();
const anything = fc.jsonValue({ maxDepth: 2 });

/**
 * A frame, the request id it carries where the agent can read one, and whether its header is a valid infer
 * header (then its request is in flight from that frame on).
 */
interface Generated {
  bytes: Uint8Array;
  id: string | undefined;
  valid: boolean;
}

const generated = (header: Record<string, unknown>, body: Uint8Array): Generated => ({
  bytes: encodeBinaryFrame(header, body),
  id: typeof header.id === "string" && header.id.length > 0 ? header.id : undefined,
  // As the agent will read it: through JSON.
  valid: InferHeaderSchema.safeParse(JSON.parse(JSON.stringify(header))).success,
});

const jsonBody = oipJsonRequest.map((json) => encoder.encode(JSON.stringify(json)));

const frames = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((bytes): Generated => ({ bytes, id: undefined, valid: false })),
  fc
    .record({
      header: fc.record(
        {
          type: fc.oneof(fc.constant("infer"), anything),
          id: fc.oneof(fc.constantFrom("a", "b"), fc.string({ minLength: 1, maxLength: 12 }), anything),
          replica: fc.oneof(fc.constantFrom("0", "1", ""), anything),
          model: fc.oneof(fc.constant("m"), anything),
          timeoutMs: fc.oneof(fc.integer({ min: -1, max: 5000 }), anything),
          headerLength: fc.oneof(fc.integer({ min: -1, max: 100 }), anything),
        },
        { requiredKeys: [] },
      ),
      body: jsonBody,
    })
    .map(({ header, body }) => generated(header, body)),
  // Valid requests of few ids, so that broken frames and duplicates meet requests of their id in flight.
  fc
    .record({
      id: fc.constantFrom("a", "b"),
      replica: fc.constantFrom("0", "1"),
      body: jsonBody,
    })
    .map(({ id, replica, body }) =>
      generated({ type: "infer", id, replica, model: "m", timeoutMs: 5000 }, body),
    ),
);

/**
 * The ids the handler must answer, one entry per answer, for frames handled one after the other in one turn
 * (nothing finishes meanwhile): a frame with a readable id is answered unless a request of that id is in
 * flight (a duplicate is dropped; a broken frame is not answered for it); a valid one then is in flight.
 */
function expectedAnswers(batch: readonly Generated[]): string[] {
  const inFlight = new Set<string>();
  const answers: string[] = [];
  for (const { id, valid } of batch) {
    if (id === undefined || inFlight.has(id)) continue;
    answers.push(id);
    if (valid) inFlight.add(id);
  }
  return answers;
}

describe("the agent's infer handler under generated frames", () => {
  it("never throws, and answers each readable request once, by the protocol", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(frames, { minLength: 1, maxLength: 5 }), async (batch) => {
        const sent: (Uint8Array | string)[] = [];
        const handler = new InferHandler(handlerOptions(replica, sent));
        for (const frame of batch) expect(() => handler.handle(frame.bytes)).not.toThrow();
        await handler.idle();
        const answeredIds = sent.map((frame) =>
          typeof frame === "string"
            ? decodeTextFrame(frame, ErrorFrameSchema).id
            : decodeBinaryFrame(frame, ResultHeaderSchema).header.id,
        );
        // Every request whose id could be read is answered exactly once, and nothing else is.
        expect(answeredIds.sort()).toEqual(expectedAnswers(batch).sort());
      }),
      { numRuns: 300 },
    );
  });

  it("a broken frame naming a request in flight is not answered: the request's own answer is its one", async () => {
    const sent: (Uint8Array | string)[] = [];
    const handler = new InferHandler(handlerOptions(replica, sent));
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
