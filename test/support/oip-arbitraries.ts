import fc from "fast-check";

/**
 * Generated OIP v2 infer requests that are wrong in the ways clients get them wrong, and in ways only an
 * attacker would: structurally plausible JSON with the wrong types, shapes that disagree with their data,
 * datatypes that do not exist, binary bodies whose Inference-Header-Content-Length lies, raw garbage, and
 * the headers and paths around them. Used against the gateway (in workerd) and the standalone agent (a real
 * process): whatever comes in, the answer is a 4xx JSON error (or a 200 when the request happens to be
 * valid), never a 5xx, a crash or a hang.
 */

const DATATYPES = ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"];

/** Any JSON value, small. */
const anything = fc.jsonValue({ maxDepth: 3 });

const dimension = fc.oneof(
  fc.integer({ min: 0, max: 4 }),
  fc.integer({ min: -3, max: -1 }),
  fc.constantFrom(2 ** 31, 2 ** 53, 1e300, 0.5, Number.MAX_SAFE_INTEGER),
);

const element = fc.oneof(
  fc.double(),
  fc.integer(),
  fc.boolean(),
  fc.string({ maxLength: 8 }),
  fc.constantFrom("NaN", "Infinity", "-Infinity", "1e999", "-0", "9007199254740993", null),
);

const nestedData = fc.oneof(
  fc.array(element, { maxLength: 12 }),
  fc.array(fc.array(element, { maxLength: 4 }), { maxLength: 4 }),
  element,
  anything,
);

const tensorJson = fc.record(
  {
    name: fc.oneof(fc.string({ maxLength: 12 }), fc.constant("input"), anything),
    shape: fc.oneof(fc.array(dimension, { maxLength: 5 }), anything),
    datatype: fc.oneof(fc.constantFrom(...DATATYPES), fc.string({ maxLength: 6 }), anything),
    data: nestedData,
    parameters: fc.oneof(
      fc.record(
        { binary_data_size: fc.oneof(fc.integer({ min: -10, max: 1 << 20 }), anything) },
        { requiredKeys: [] },
      ),
      anything,
    ),
  },
  { requiredKeys: [] },
);

/** A JSON infer request, wrong somewhere (or, now and then, right). */
export const oipJsonRequest = fc.record(
  {
    id: fc.oneof(fc.string({ maxLength: 16 }), anything),
    inputs: fc.oneof(fc.array(tensorJson, { maxLength: 3 }), anything),
    outputs: fc.oneof(
      fc.array(
        fc.record(
          {
            name: fc.oneof(fc.string({ maxLength: 8 }), anything),
            parameters: fc.oneof(fc.record({ binary_data: anything }), anything),
          },
          { requiredKeys: [] },
        ),
        { maxLength: 3 },
      ),
      anything,
    ),
    parameters: fc.oneof(
      fc.record(
        {
          timeout: fc.oneof(fc.integer({ min: -5, max: 10_000_000 }), fc.double(), anything),
          binary_data_output: anything,
        },
        { requiredKeys: [] },
      ),
      anything,
    ),
  },
  { requiredKeys: [] },
);

export interface GeneratedRequest {
  body: Uint8Array;
  headers: Record<string, string>;
  /** What it is, for a failure's report. */
  describe: string;
}

const encoder = new TextEncoder();

const jsonBody = fc.oneof(oipJsonRequest, anything).map(
  (json): GeneratedRequest => ({
    body: encoder.encode(JSON.stringify(json) ?? "null"),
    headers: { "Content-Type": "application/json" },
    describe: `json ${JSON.stringify(json)?.slice(0, 300)}`,
  }),
);

/** A JSON header followed by raw tensor bytes, with a header length that may or may not tell the truth. */
const binaryBody = fc
  .tuple(
    oipJsonRequest,
    fc.uint8Array({ maxLength: 256 }),
    fc.oneof(
      fc.constant("exact"),
      fc.integer({ min: -4, max: 4 }).map((offset) => `offset ${offset}`),
      fc.constantFrom("-1", "1e3", "abc", "", "99999999999", "0x10", " 5", "5.5"),
    ),
  )
  .map(([json, tail, length]): GeneratedRequest => {
    const header = encoder.encode(JSON.stringify(json));
    const body = new Uint8Array(header.length + tail.length);
    body.set(header);
    body.set(tail, header.length);
    const headerLength =
      length === "exact"
        ? String(header.length)
        : length.startsWith("offset ")
          ? String(header.length + Number(length.slice(7)))
          : length;
    return {
      body,
      headers: {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": headerLength,
      },
      describe: `binary length=${JSON.stringify(headerLength)} header ${JSON.stringify(json).slice(0, 200)} + ${tail.length} bytes`,
    };
  });

const garbageBody = fc
  .tuple(fc.uint8Array({ maxLength: 512 }), fc.option(fc.constantFrom("0", "4", "512", "-7")))
  .map(
    ([bytes, length]): GeneratedRequest => ({
      body: bytes,
      headers: length === null ? {} : { "Inference-Header-Content-Length": length },
      describe: `garbage ${bytes.length} bytes, length ${length}`,
    }),
  );

/** Headers a client may add: deadlines and hints, well-formed or not. */
const optionalHeaders = fc.record(
  {
    "X-Request-Timeout": fc.oneof(
      fc.constantFrom("0", "-1", "abc", "1e309", "NaN", "0.001", "5", ""),
      fc.double().map(String),
    ),
    "X-Runner-Hint": fc.oneof(fc.string({ maxLength: 40 }), fc.constant("x".repeat(5000))),
  },
  { requiredKeys: [] },
);

/** Any infer request body with its headers. */
export const oipInferRequest = fc
  .tuple(fc.oneof(jsonBody, binaryBody, garbageBody), optionalHeaders)
  .map(([request, extra]): GeneratedRequest => {
    const headers = { ...request.headers };
    for (const [name, value] of Object.entries(extra)) {
      // Header values cannot hold control characters; such a client never gets past its own HTTP library.
      const printable = [...value].every((char) => char.charCodeAt(0) >= 0x20 && char.charCodeAt(0) !== 0x7f);
      if (printable) headers[name] = value;
    }
    return {
      ...request,
      headers,
      describe: `${request.describe} headers ${JSON.stringify(extra).slice(0, 100)}`,
    };
  });

/**
 * A model name or version as it may appear in a URL path, percent-encoded: traversal (`..`, encoded
 * slashes and dots), absolute paths, NUL, flags, unicode, and plain names.
 */
export const pathSegment = fc
  .oneof(
    fc.constantFrom(
      "..",
      ".",
      "%2e%2e",
      "%2E%2E%2Fetc",
      "..%2F..%2Fetc%2Fpasswd",
      "%2Fetc%2Fpasswd",
      "m%00",
      "%00",
      "-rf",
      ".hidden",
      "m%2F1",
      "%252e%252e",
      "C:%5Cwindows",
      "m..",
      "0",
      "01",
      "18446744073709551616",
      "%C0%AE%C0%AE",
      "%EF%BC%8E%EF%BC%8E",
    ),
    fc.string({ minLength: 1, maxLength: 20 }).map(encodeURIComponent),
    fc.stringMatching(/^[A-Za-z0-9_.-]{1,12}$/),
  )
  .filter((segment) => segment.length > 0);
