import { describe, expect, test } from "vitest";
import {
  decodeAnchorFrame,
  encodeAnchorFrame,
} from "../../../../../bench/hot-path/relay-anchor/anchor-frames.ts";

describe("the relay anchor's frames", () => {
  test("a binary answer's parts come back as one body, with its id and header length", () => {
    const json = new TextEncoder().encode('{"outputs":[]}');
    const data = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
    const frame = decodeAnchorFrame(encodeAnchorFrame(0xfffffffe, json.byteLength, [json, data]));
    expect(frame.id).toBe(0xfffffffe);
    expect(frame.headerLength).toBe(json.byteLength);
    expect([...frame.body]).toEqual([...json, ...data]);
  });

  test("a body that is all JSON has no header length, and a header length of 0 stays 0", () => {
    const body = new TextEncoder().encode("{}");
    expect(decodeAnchorFrame(encodeAnchorFrame(7, undefined, [body])).headerLength).toBeUndefined();
    expect(decodeAnchorFrame(encodeAnchorFrame(7, 0, [body])).headerLength).toBe(0);
  });

  test("a frame read from the middle of a larger buffer (a socket's chunk) decodes from its own offset", () => {
    const frame = encodeAnchorFrame(3, undefined, [Uint8Array.from([9, 9])]);
    const chunk = new Uint8Array(frame.byteLength + 5);
    chunk.set(frame, 5);
    const decoded = decodeAnchorFrame(chunk.subarray(5));
    expect(decoded.id).toBe(3);
    expect([...decoded.body]).toEqual([9, 9]);
  });

  test("a frame shorter than its prefix is refused", () => {
    expect(() => decodeAnchorFrame(new Uint8Array(7))).toThrow(/shorter than its prefix/);
  });
});
