import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeBinaryFrame } from "../../shared/protocol/frames.ts";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { freshPool, infer } from "./support/gateway.ts";
import { snapshot } from "./support/registry.ts";

// Generated malformed and hostile frames from a connected agent. Whatever it sends, either the frame is
// valid and the agent stays, or its connection is closed with 1008 (policy) or 1009 (too big); the other
// agent of the pool is never touched and serves throughout.

const anything = fc.jsonValue({ maxDepth: 3 });
const TYPES = ["hello", "state", "error", "drain", "result", "welcome", "cancel", "gossip"];

/** A replica state with some fields replaced by anything. */
const mutatedReplica = fc
  .record({
    field: fc.constantFrom(...Object.keys(replicaState())),
    value: anything,
  })
  .map(({ field, value }) => ({ ...replicaState(), [field]: value }));

const textFrame = fc.oneof(
  fc.string({ maxLength: 64 }),
  anything.map((json) => JSON.stringify(json)),
  fc
    .record({
      type: fc.constantFrom(...TYPES),
      id: fc.oneof(fc.string({ maxLength: 20 }), anything),
      replica: fc.oneof(fc.constantFrom("0", "1", "0/0", ""), anything),
      status: fc.oneof(fc.integer({ min: 0, max: 999 }), anything),
      message: fc.oneof(fc.string({ maxLength: 20 }), anything),
      started: anything,
      protocol: fc.oneof(fc.constant(1), anything),
      replicas: fc.oneof(fc.array(mutatedReplica, { maxLength: 3 }), anything),
    })
    .map((frame) => JSON.stringify(frame)),
);

const binaryFrame = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc
    .record({
      header: fc.record({
        type: fc.constantFrom("result", "infer", "error"),
        id: fc.oneof(fc.string({ maxLength: 20 }), fc.stringMatching(/^[0-9a-f]{8}-[0-9a-z]{1,3}$/)),
        replica: fc.constantFrom("0", "9", ""),
        model: fc.oneof(fc.record({ name: fc.string(), version: fc.string() }), anything),
        cache: fc.oneof(fc.constantFrom("hit", "miss"), anything),
        timings: fc.oneof(
          fc.record({ queueMs: fc.double(), loadMs: fc.double(), inferMs: fc.double() }),
          anything,
        ),
        contentType: fc.oneof(fc.string({ maxLength: 20 }), anything),
      }),
      body: fc.uint8Array({ maxLength: 64 }),
      lie: fc.integer({ min: -2, max: 2 }),
    })
    .map(({ header, body, lie }) => {
      const frame = encodeBinaryFrame(header, body);
      if (lie !== 0)
        new DataView(frame.buffer).setUint32(0, Math.max(0, frame.length - 4 - body.length + lie), true);
      return frame;
    }),
);

describe("generated frames from an agent", () => {
  it("are accepted when valid, or close that agent's connection with 1008 or 1009; the other agent serves on", async () => {
    const pool = freshPool();
    const good = await FakeAgent.connect(pool, { name: "good", replicas: [replicaState({ loaded: ["m"] })] });
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.oneof(textFrame, binaryFrame), async (frame) => {
        run += 1;
        const agent = await FakeAgent.connect(pool, { name: `fuzz-${run}`, replicas: [replicaState()] });
        agent.socket.send(frame);
        const closed = await Promise.race([
          agent.closed,
          new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 150)),
        ]);
        const what = typeof frame === "string" ? frame.slice(0, 200) : `binary ${[...frame.slice(0, 40)]}`;
        if (closed === undefined) {
          // Still connected: the frame was valid, and the registry still lists the agent.
          const ids = (await snapshot(pool)).agents.map((listed) => listed.id);
          expect(ids, what).toContain(`fuzz-${run}`);
          agent.close();
        } else {
          expect([1008, 1009], `${what} closed with ${closed.code} ${closed.reason}`).toContain(closed.code);
        }
        expect(good.socket.readyState).toBe(WebSocket.OPEN);
      }),
      { numRuns: 60 },
    );
    const response = infer("m", { pool });
    good.answer(await good.nextInfer());
    expect((await response).status).toBe(200);
    good.close();
  });
});
