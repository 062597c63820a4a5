import { describe, expect, test } from "vitest";
import {
  parseServerTiming,
  readHeaderLength,
  readHint,
  requestIdHeader,
  serverTiming,
} from "../../../shared/oip/request-options.ts";

const headers = (entries: Record<string, string>) => new Headers(entries);

describe("readHint and serverTiming", () => {
  test("the hint under any of its three names, X-Runner-Hint first", () => {
    expect(readHint(headers({ "X-Fal-Runner-Hint": "b", "X-Runner-Hint": "a" }))).toBe("a");
    expect(readHint(headers({ serve_multiplexed_model_id: "c" }))).toBe("c");
    expect(readHint(headers({ "X-Runner-Hint": "  " }))).toBeUndefined();
  });

  test("Server-Timing lists each phase in milliseconds", () => {
    expect(serverTiming({ queue: 1, infer: 2.345 })).toBe("queue;dur=1.00, infer;dur=2.35");
  });

  test("a Server-Timing value reads back as its phases; entries without a duration are skipped", () => {
    expect(parseServerTiming(serverTiming({ queue: 1, infer: 2.345 }))).toEqual({ queue: 1, infer: 2.35 });
    expect(parseServerTiming('cache;desc="hit", total;dur=7.5')).toEqual({ total: 7.5 });
    expect(parseServerTiming(null)).toEqual({});
  });
});

describe("response headers of a request", () => {
  test("X-Request-Id carries the request's id when a header can, else a fresh one", () => {
    expect(requestIdHeader("req-42")).toBe("req-42");
    expect(requestIdHeader("a b")).toBe("a b");
    for (const id of [undefined, "", " padded", "naïve", "line\nbreak"]) {
      expect(requestIdHeader(id)).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  test("Inference-Header-Content-Length is a byte count or a 400", () => {
    const headers = (value: string) => new Headers({ "Inference-Header-Content-Length": value });
    expect(readHeaderLength(new Headers())).toBeUndefined();
    expect(readHeaderLength(headers("12"))).toBe(12);
    for (const value of ["-1", "1.5", "abc", "", "99999999999999999999"]) {
      expect(() => readHeaderLength(headers(value)), value).toThrow(/must be a byte count/);
    }
  });
});
