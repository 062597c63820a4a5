import { describe, expect, test } from "vitest";
import {
  parseIndexRequest,
  parseLoadRequest,
  parseUnloadRequest,
} from "../../../shared/oip/model-control.ts";

describe("model control request bodies", () => {
  const bytes = (text: string) => new TextEncoder().encode(text);

  test("a load takes copies and a version, defaults to one copy of the highest version", () => {
    expect(parseLoadRequest(bytes(""))).toEqual({ copies: 1, version: undefined });
    expect(parseLoadRequest(bytes('{"parameters": {"copies": 3, "version": "2"}}'))).toEqual({
      copies: 3,
      version: "2",
    });
  });

  test("what a load cannot do here, or what is malformed, is a 400 that says so", () => {
    expect(() => parseLoadRequest(bytes('{"parameters": {"config": "{}"}}'))).toThrow(/push the model/);
    expect(() => parseLoadRequest(bytes('{"parameters": {"file:1/model.onnx": "AAAA"}}'))).toThrow(/files/);
    expect(() => parseLoadRequest(bytes('{"parameters": {"copies": 0}}'))).toThrow(/copies/);
    expect(() => parseLoadRequest(bytes('{"parameters": {"version": "01"}}'))).toThrow(
      /invalid model version/,
    );
    expect(() => parseLoadRequest(bytes("{"))).toThrow(/not valid JSON/);
    expect(() => parseUnloadRequest(bytes('{"parameters": 3}'))).toThrow();
    expect(parseIndexRequest(bytes('{"ready": true}'))).toEqual({ readyOnly: true });
    expect(parseIndexRequest(bytes(""))).toEqual({ readyOnly: false });
  });
});
