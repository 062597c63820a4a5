import { describe, expect, test } from "vitest";
import { UnadvertisedHints } from "../../../gateway/unadvertised-hints.ts";

describe("UnadvertisedHints: hints no shard advertised, remembered a while", () => {
  test("a hint found nowhere is remembered for 30 s, then looked for again", () => {
    const hints = new UnadvertisedHints();
    expect(hints.has("lora-9", 0)).toBe(false);
    hints.add("lora-9", 0);
    expect(hints.has("lora-9", 29_999)).toBe(true);
    expect(hints.has("lora-8", 1)).toBe(false);
    expect(hints.has("lora-9", 30_000)).toBe(false);
  });

  test("at most 1,000 are kept: the oldest go first", () => {
    const hints = new UnadvertisedHints();
    for (let index = 0; index <= 1_000; index++) hints.add(`hint-${index}`, index);
    expect(hints.has("hint-0", 1_001)).toBe(false);
    expect(hints.has("hint-1", 1_001)).toBe(true);
    expect(hints.has("hint-1000", 1_001)).toBe(true);
  });
});
