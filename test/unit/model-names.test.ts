import { describe, expect, test } from "vitest";
import { SwitchyardError } from "../../shared/errors.ts";
import {
  compareModelVersions,
  highestModelVersion,
  parseModelName,
  parseModelVersion,
} from "../../shared/model-names.ts";

function rejection(parse: () => unknown): SwitchyardError {
  try {
    parse();
  } catch (error) {
    if (error instanceof SwitchyardError) return error;
    throw error;
  }
  throw new Error("expected the input to be rejected");
}

describe("parseModelName", () => {
  test.each(["det", "rec", "ResNet50", "ppocr_v4.det", "model-2", "7", "a".repeat(128)])(
    "accepts %j",
    (name) => {
      expect(parseModelName(name)).toBe(name);
    },
  );

  test.each([
    "",
    ".",
    "..",
    "../x",
    "x/..",
    "/abs",
    "a/b",
    "a\\b",
    "..\\x",
    "%2e%2e",
    "%2e%2e%2fetc",
    "a\u0000b",
    "a\nb",
    "tab\there",
    "del\u007f",
    ".hidden",
    "-rf",
    "_x",
    "with space",
    "ünïcode",
    "a".repeat(129),
    "a".repeat(10_000),
  ])("rejects %j with 400", (name) => {
    const error = rejection(() => parseModelName(name));
    expect(error.status).toBe(400);
    expect(error.message).toContain("model name");
  });

  test("error messages show control characters escaped and long names shortened", () => {
    expect(rejection(() => parseModelName("a\u0000b")).message).toContain('"a\\u0000b"');
    expect(rejection(() => parseModelName("x".repeat(10_000))).message.length).toBeLessThan(200);
  });
});

describe("parseModelVersion", () => {
  test.each(["1", "2", "10", "123456789012345678"])("accepts %j", (version) => {
    expect(parseModelVersion(version)).toBe(version);
  });

  test.each([
    "",
    "0",
    "01",
    "-1",
    "+1",
    "1.0",
    "1e3",
    "v1",
    "latest",
    "..",
    "1/..",
    " 1",
    "1234567890123456789",
  ])("rejects %j with 400", (version) => {
    expect(rejection(() => parseModelVersion(version)).status).toBe(400);
  });
});

test("versions order numerically, not as text", () => {
  expect(["10", "9", "1", "100", "2"].sort(compareModelVersions)).toEqual(["1", "2", "9", "10", "100"]);
  expect(highestModelVersion(["9", "10", "2"])).toBe("10");
  expect(highestModelVersion([])).toBeUndefined();
});
