import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { z } from "zod";
import { SwitchyardError } from "../../../shared/errors.ts";
import { emptyStatistics } from "../../../shared/oip/statistics.ts";
import {
  AgentTextFrameSchema,
  AnswerSchema,
  CancelSchema,
  DrainSchema,
  decodeBinaryFrame,
  decodeTextFrame,
  ErrorFrameSchema,
  encodeBinaryFrame,
  GatewayTextFrameSchema,
  type Hello,
  HelloSchema,
  InferHeaderSchema,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  QUERY_ANSWERS,
  type Query,
  QueryFrameSchema,
  QuerySchema,
  type ResultHeader,
  ResultHeaderSchema,
  type StateFrame,
  StateSchema,
  WelcomeSchema,
} from "../../../shared/protocol/frames.ts";
import { type ModelSignature, NO_DECLARED_BATCHING } from "../../../shared/protocol/model-signatures.ts";
import { replicaState } from "../../support/replica-state.ts";

// The agent <-> gateway wire protocol: binary frames that carry OIP bodies untouched, and text frames whose
// every required field must be sent (no schema default hides an agent that never sends one).

const signature: ModelSignature = {
  name: "det",
  version: "1",
  inputs: [{ name: "x", datatype: "FP32", shape: [-1, 3, -1, -1] }],
  outputs: [{ name: "maps", datatype: "FP32", shape: [-1, 1, -1, -1] }],
  batching: NO_DECLARED_BATCHING,
};

const state = replicaState({ maxConcurrency: 2, loaded: ["det"], loading: ["ocr"] });

const hello: Hello = {
  type: "hello",
  protocol: PROTOCOL_VERSION,
  agent: { name: "gpu-host-1", version: "0.1.0" },
  hints: ["lora-7"],
  replicas: [state],
  signatures: [signature],
  repository: { kind: "own", models: [{ name: "det", version: "1", bytes: 4_600_000 }] },
  channel: "3f0c8c2e-6a51-4a4e-9d55-2b8e0c1f7a10",
};

const stateFrame: StateFrame = { type: "state", replicas: [state], signatures: [] };

const resultHeader: ResultHeader = {
  type: "result",
  id: "req-1",
  replica: "0",
  model: { name: "det", version: "1" },
  cache: "hit",
  timings: { queueMs: 0, loadMs: 0, inferMs: 12 },
  contentType: "application/octet-stream",
  headerLength: 96,
  state,
};

const inferHeader = {
  type: "infer",
  id: "req-1",
  replica: "0",
  model: "det",
  version: "1",
  hint: "lora-7",
  timeoutMs: 30_000,
  headerLength: 80,
  requestId: "client-request-7",
};

/** Every frame of the protocol, complete, with the fields that may legitimately be absent. */
const FRAMES: Array<{ name: string; schema: z.ZodType; frame: Record<string, unknown>; optional: string[] }> =
  [
    { name: "hello", schema: HelloSchema, frame: hello, optional: [] },
    { name: "state", schema: StateSchema, frame: stateFrame, optional: [] },
    { name: "result", schema: ResultHeaderSchema, frame: resultHeader, optional: ["headerLength", "state"] },
    {
      name: "error",
      schema: ErrorFrameSchema,
      frame: {
        type: "error",
        id: "req-1",
        replica: "0",
        status: 500,
        message: "crashed",
        started: true,
        state,
      },
      optional: ["state"],
    },
    { name: "drain", schema: DrainSchema, frame: { type: "drain" }, optional: [] },
    {
      name: "answer",
      schema: AnswerSchema,
      frame: { type: "answer", id: "q-1", result: { ok: true, value: { unloaded: true } } },
      optional: [],
    },
    {
      name: "welcome",
      schema: WelcomeSchema,
      frame: { type: "welcome", protocol: PROTOCOL_VERSION, agentId: "gpu-host-1", heartbeatMs: 10_000 },
      optional: [],
    },
    {
      name: "infer",
      schema: InferHeaderSchema,
      frame: inferHeader,
      optional: ["version", "hint", "headerLength", "requestId"],
    },
    { name: "cancel", schema: CancelSchema, frame: { type: "cancel", id: "req-1" }, optional: [] },
    {
      name: "query",
      schema: QueryFrameSchema,
      frame: { type: "query", id: "q-1", query: { kind: "describe", model: "det" } },
      optional: [],
    },
  ];

const without = (frame: Record<string, unknown>, ...keys: string[]) =>
  Object.fromEntries(Object.entries(frame).filter(([key]) => !keys.includes(key)));

/** What `run` threw, or undefined when it returned. */
function thrownBy(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  return undefined;
}

const encoder = new TextEncoder();

/** A binary frame as sent: `told` as its header length, then header and body bytes. */
function framed(told: number, header: Uint8Array, body: Uint8Array): Uint8Array {
  const frame = new Uint8Array(4 + header.length + body.length);
  new DataView(frame.buffer).setUint32(0, told, true);
  frame.set(header, 4);
  frame.set(body, 4 + header.length);
  return frame;
}

describe("binary frames", () => {
  test("the layout: a 4-byte little-endian header length, the JSON header, then the body bytes untouched", () => {
    const body = new Uint8Array([0, 255, 10, 13]);
    const frame = encodeBinaryFrame({ type: "x" }, body);
    const json = '{"type":"x"}';
    expect([...frame.subarray(0, 4)]).toEqual([json.length, 0, 0, 0]);
    expect(new TextDecoder().decode(frame.subarray(4, 4 + json.length))).toBe(json);
    expect([...frame.subarray(4 + json.length)]).toEqual([0, 255, 10, 13]);
    expect(frame.length).toBe(4 + json.length + body.length);
  });

  test("a result header and its body come back as sent", () => {
    const body = encoder.encode('{"outputs":[]}');
    const decoded = decodeBinaryFrame(encodeBinaryFrame(resultHeader, body), ResultHeaderSchema);
    expect(decoded.header).toStrictEqual(resultHeader);
    expect(new TextDecoder().decode(decoded.body)).toBe('{"outputs":[]}');
  });

  test("round trip: any header and any body bytes, wherever the frame lies in the buffer it arrives in", () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 }),
        fc.uint8Array({ maxLength: 512 }),
        fc.nat({ max: 16 }),
        (header, body, offset) => {
          const frame = encodeBinaryFrame(header, body);
          // A websocket message is often a view into a bigger buffer: the frame starts at `offset`.
          const carrier = new Uint8Array(offset + frame.length + 7).fill(0xee);
          carrier.set(frame, offset);
          const decoded = decodeBinaryFrame(carrier.subarray(offset, offset + frame.length), z.unknown());
          // The header travels as JSON (so -0 arrives as 0); the body byte for byte.
          expect(decoded.header).toEqual(JSON.parse(JSON.stringify(header)));
          expect([...decoded.body]).toEqual([...body]);
        },
      ),
      { numRuns: 300 },
    );
  });

  test("alignBodyAt: that offset of the body falls at a multiple of 8 in the frame, which reads as it was sent", () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
        fc.uint8Array({ maxLength: 64 }),
        fc.nat({ max: 64 }),
        (header, body, at) => {
          const alignBodyAt = Math.min(at, body.length);
          const frame = encodeBinaryFrame(header, body, "request", { alignBodyAt });
          const bodyStart = frame.length - body.length;
          expect((bodyStart + alignBodyAt) % 8).toBe(0);
          // At most 7 bytes of padding, all of it spaces after the JSON.
          expect(bodyStart - 4 - JSON.stringify(header).length).toBeLessThan(8);
          const decoded = decodeBinaryFrame(frame, z.unknown());
          expect(decoded.header).toEqual(JSON.parse(JSON.stringify(header)));
          expect([...decoded.body]).toEqual([...body]);
        },
      ),
      { numRuns: 300 },
    );
  });

  test("a body given as parts makes the same frame as the parts joined", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 32 }), { maxLength: 5 }), (parts) => {
        const joined = Uint8Array.from(parts.flatMap((part) => [...part]));
        expect([...encodeBinaryFrame(resultHeader, parts, "result")]).toEqual([
          ...encodeBinaryFrame(resultHeader, joined, "result"),
        ]);
      }),
    );
  });

  test("a frame of exactly MAX_FRAME_BYTES is built; one byte more is refused with a 413", () => {
    const header = { type: "infer" };
    const room = MAX_FRAME_BYTES - 4 - JSON.stringify(header).length;
    expect(encodeBinaryFrame(header, new Uint8Array(room)).length).toBe(MAX_FRAME_BYTES);
    const error = thrownBy(() => encodeBinaryFrame(header, new Uint8Array(room + 1)));
    expect(error).toBeInstanceOf(SwitchyardError);
    expect((error as SwitchyardError).code).toBe("too_large");
    expect((error as SwitchyardError).status).toBe(413);
    expect((error as SwitchyardError).message).toBe(
      `request of ${MAX_FRAME_BYTES + 1} bytes is over the ${MAX_FRAME_BYTES}-byte limit of a relayed message`,
    );
  });

  test("whatever the header, a frame over MAX_FRAME_BYTES is refused with a 413 instead of being built", () => {
    const big = new Uint8Array(MAX_FRAME_BYTES); // one buffer, viewed at the sizes each run needs
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
        fc.integer({ min: 1, max: 1_000 }),
        (header, excess) => {
          const headerBytes = encoder.encode(JSON.stringify(header)).length;
          const body = big.subarray(0, MAX_FRAME_BYTES - 4 - headerBytes + excess);
          const error = thrownBy(() => encodeBinaryFrame(header, body));
          expect(error).toBeInstanceOf(SwitchyardError);
          expect((error as SwitchyardError).status).toBe(413);
        },
      ),
      { numRuns: 50 },
    );
  });

  test.each([
    ["shorter than its length prefix", new Uint8Array([1, 0, 0]), /shorter than its length prefix/],
    [
      "a header length past the end",
      framed(100, encoder.encode("{}"), new Uint8Array()),
      /overruns the frame/,
    ],
    ["a header that is not JSON", framed(3, encoder.encode("{no"), new Uint8Array()), /not JSON/],
    [
      "a header the schema refuses",
      encodeBinaryFrame(without(resultHeader, "cache"), new Uint8Array()),
      /bad frame header:[\s\S]*cache/,
    ],
  ])("%s: a 400 that says what is wrong", (_, frame, message) => {
    const error = thrownBy(() => decodeBinaryFrame(frame, ResultHeaderSchema));
    expect(error).toBeInstanceOf(SwitchyardError);
    expect((error as SwitchyardError).code).toBe("bad_input");
    expect((error as SwitchyardError).message).toMatch(message);
  });

  test("arbitrary bytes are decoded or refused with a bad_input SwitchyardError, never anything else", () => {
    const junk = fc.uint8Array({ maxLength: 64 });
    const hostile = fc.oneof(
      junk,
      // A right length around garbage.
      fc.tuple(junk, junk).map(([header, body]) => framed(header.length, header, body)),
      // Any JSON as the header, its length told right or wrong.
      fc
        .record({ header: fc.jsonValue({ maxDepth: 3 }), body: junk, lie: fc.integer({ min: -3, max: 3 }) })
        .map(({ header, body, lie }) => {
          const bytes = encoder.encode(JSON.stringify(header));
          return framed(Math.max(0, bytes.length + lie), bytes, body);
        }),
      // A real header with one field replaced by anything.
      fc
        .record({
          field: fc.constantFrom(...Object.keys(resultHeader), ...Object.keys(inferHeader)),
          value: fc.jsonValue({ maxDepth: 2 }),
          base: fc.constantFrom<object>(resultHeader, inferHeader),
          body: junk,
        })
        .map(({ field, value, base, body }) => encodeBinaryFrame({ ...base, [field]: value }, body)),
      // Any length prefix at all.
      fc
        .tuple(fc.integer({ min: 0, max: 2 ** 32 - 1 }), junk)
        .map(([told, rest]) => framed(told, rest, new Uint8Array())),
    );
    fc.assert(
      fc.property(
        hostile,
        fc.constantFrom<z.ZodType>(ResultHeaderSchema, InferHeaderSchema),
        (frame, schema) => {
          const error = thrownBy(() => decodeBinaryFrame(frame, schema));
          if (error === undefined) return;
          expect(error).toBeInstanceOf(SwitchyardError);
          expect((error as SwitchyardError).code).toBe("bad_input");
        },
      ),
      { numRuns: 1_000 },
    );
  });
});

describe("text frames: every required field is sent, none is defaulted", () => {
  test.each(FRAMES)(
    "a complete $name frame parses to exactly what was sent, nothing added",
    ({ schema, frame }) => {
      expect(schema.parse(frame)).toStrictEqual(frame);
      expect(decodeTextFrame(JSON.stringify(frame), schema)).toStrictEqual(frame);
    },
  );

  test("a hello without signatures is refused (version 1 defaulted them to [], and no agent sent any)", () => {
    expect(() => decodeTextFrame(JSON.stringify(without(hello, "signatures")), HelloSchema)).toThrow(
      /bad frame:[\s\S]*signatures/,
    );
  });

  test("a hello that does not say where its models come from is refused", () => {
    expect(() => decodeTextFrame(JSON.stringify(without(hello, "repository")), HelloSchema)).toThrow(
      /repository/,
    );
    // "own" must list its models; an unknown kind is no repository.
    const own = { ...hello, repository: { kind: "own" } };
    expect(HelloSchema.safeParse(own).success).toBe(false);
    expect(HelloSchema.safeParse({ ...hello, repository: { kind: "s3" } }).success).toBe(false);
    expect(HelloSchema.parse({ ...hello, repository: { kind: "gateway" } }).repository).toEqual({
      kind: "gateway",
    });
  });

  test("a state frame without signatures is refused, even when it learned none since the last", () => {
    expect(() => decodeTextFrame(JSON.stringify(without(stateFrame, "signatures")), StateSchema)).toThrow(
      /signatures/,
    );
  });

  test("a version 1 hello is refused, saying what to upgrade (the registry closes the socket with this)", () => {
    expect(HelloSchema.safeParse({ ...hello, protocol: 1 }).success).toBe(false);
    expect(() => decodeTextFrame(JSON.stringify({ ...hello, protocol: 1 }), AgentTextFrameSchema)).toThrow(
      /^bad frame: ✖ protocol 1, not 3: upgrade the older of agent and gateway/,
    );
  });

  test("any frame missing a required field is refused; one missing only optional fields is accepted", () => {
    const missing = fc
      .constantFrom(...FRAMES)
      .chain((entry) =>
        fc.record({ entry: fc.constant(entry), dropped: fc.subarray(Object.keys(entry.frame)) }),
      );
    fc.assert(
      fc.property(missing, ({ entry, dropped }) => {
        const required = dropped.filter((key) => !entry.optional.includes(key));
        const parsed = entry.schema.safeParse(without(entry.frame, ...dropped));
        expect(parsed.success, `${entry.name} without ${dropped.join(", ")}`).toBe(required.length === 0);
      }),
      { numRuns: 500 },
    );
  });

  test("every field of a replica's state is required, in hello and state frames alike", () => {
    for (const field of Object.keys(state)) {
      const partial = without(state, field);
      expect(StateSchema.safeParse({ ...stateFrame, replicas: [partial] }).success, field).toBe(false);
      expect(HelloSchema.safeParse({ ...hello, replicas: [partial] }).success, field).toBe(false);
    }
  });

  test("a loaded model must say whether it is pinned; only idempotent may be left out", () => {
    const loaded = state.loaded[0] as Record<string, unknown>;
    for (const field of Object.keys(loaded)) {
      const replica = { ...state, loaded: [without(loaded, field)] };
      expect(StateSchema.safeParse({ ...stateFrame, replicas: [replica] }).success, field).toBe(false);
    }
    const replica = { ...state, loaded: [{ ...loaded, idempotent: false }] };
    expect(StateSchema.parse({ ...stateFrame, replicas: [replica] }).replicas[0]?.loaded[0]?.idempotent).toBe(
      false,
    );
  });

  test("a frame must carry at least one replica", () => {
    expect(StateSchema.safeParse({ ...stateFrame, replicas: [] }).success).toBe(false);
    expect(HelloSchema.safeParse({ ...hello, replicas: [] }).success).toBe(false);
  });
});

describe("text frames: each side reads its peer's frames", () => {
  test("the gateway reads hello, state, error, drain and answer; not its own frames", () => {
    for (const { name, frame } of FRAMES) {
      const agentSends = ["hello", "state", "error", "drain", "answer"].includes(name);
      expect(AgentTextFrameSchema.safeParse(frame).success, name).toBe(agentSends);
    }
  });

  test("the agent reads welcome, cancel and query; not its own frames", () => {
    for (const { name, frame } of FRAMES) {
      const gatewaySends = ["welcome", "cancel", "query"].includes(name);
      expect(GatewayTextFrameSchema.safeParse(frame).success, name).toBe(gatewaySends);
    }
  });

  test("malformed text is refused with a bad_input SwitchyardError", () => {
    for (const text of ["", "ping", "{", '{"type":"gossip"}', "null", "[]"]) {
      const error = thrownBy(() => decodeTextFrame(text, AgentTextFrameSchema));
      expect(error, text).toBeInstanceOf(SwitchyardError);
      expect((error as SwitchyardError).code).toBe("bad_input");
    }
  });
});

describe("queries and their answers", () => {
  const QUERIES: Array<{ query: Query; optional: string[] }> = [
    { query: { kind: "describe", model: "det", version: "1" }, optional: ["version"] },
    { query: { kind: "stats", model: "det", version: "1" }, optional: ["model", "version"] },
    { query: { kind: "load", replica: "0", model: "det", version: "1", pin: true }, optional: ["version"] },
    {
      query: { kind: "unload", model: "det", version: "1", evict: false, replica: "0" },
      optional: ["version", "replica"],
    },
    { query: { kind: "keep-alive", model: "det", keepAliveMs: 30_000 }, optional: [] },
  ];

  test("each kind of query needs what it acts on, and says whether to pin or evict", () => {
    for (const { query, optional } of QUERIES) {
      expect(QuerySchema.parse(query)).toStrictEqual(query);
      for (const field of Object.keys(query)) {
        const parsed = QuerySchema.safeParse(without(query, field));
        expect(parsed.success, `${query.kind} without ${field}`).toBe(optional.includes(field));
      }
    }
  });

  const ANSWERS = {
    describe: signature,
    stats: [emptyStatistics("det", "1"), emptyStatistics("ocr", "2")],
    load: { signature, state },
    unload: { unloaded: false },
    "keep-alive": { replicas: 2 },
  } satisfies Record<Query["kind"], unknown>;
  const KINDS = Object.keys(ANSWERS) as Array<keyof typeof ANSWERS>;

  test("each kind's answer parses as sent", () => {
    for (const kind of KINDS)
      expect(QUERY_ANSWERS[kind].parse(ANSWERS[kind]), kind).toStrictEqual(ANSWERS[kind]);
    expect(QUERY_ANSWERS.stats.parse([])).toEqual([]);
  });

  test("an answer of another kind is refused: an agent cannot answer the wrong question", () => {
    for (const kind of KINDS) {
      for (const other of KINDS) {
        if (other === kind) continue;
        expect(QUERY_ANSWERS[kind].safeParse(ANSWERS[other]).success, `${kind} answered as ${other}`).toBe(
          false,
        );
      }
    }
  });

  test("a load's answer without the replica's state is refused: the registry counts the copy from it", () => {
    expect(QUERY_ANSWERS.load.safeParse({ signature }).success).toBe(false);
  });

  test("a failed answer carries an HTTP error status and a message", () => {
    const failed = (result: object) => AnswerSchema.safeParse({ type: "answer", id: "q-1", result }).success;
    expect(failed({ ok: false, status: 404, message: "model 'det' not found" })).toBe(true);
    expect(failed({ ok: false, message: "model 'det' not found" })).toBe(false);
    expect(failed({ ok: false, status: 200, message: "fine" })).toBe(false);
    expect(failed({ ok: false, status: 404 })).toBe(false);
  });
});
