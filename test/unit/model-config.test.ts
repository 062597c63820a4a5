import { describe, expect, test } from "vitest";
import { SwitchyardError } from "../../shared/errors.ts";
import { parseModelConfig } from "../../shared/model-config.ts";

const parse = (json: object) => parseModelConfig(JSON.stringify(json), "m/1/config.json");

describe("a model's config.json", () => {
  test("keeps what users put there, and defaults only what a missing key means", () => {
    const config = parse({ owner: "team-a", keep_alive_s: 30 });
    expect(config).toMatchObject({ owner: "team-a", keep_alive_s: 30, idempotent: true });
    expect(parse({}).keep_alive_s).toBeUndefined();
  });

  test("a keep_alive_s that is not a number of seconds stops the model from loading, naming the key", () => {
    for (const bad of [-1, "30", null]) {
      expect(() => parse({ keep_alive_s: bad })).toThrow(SwitchyardError);
      expect(() => parse({ keep_alive_s: bad })).toThrow(/m\/1\/config.json is malformed: keep_alive_s/);
    }
  });

  test("min_copies and max_copies: whole numbers, and no more pinned copies than the cap allows", () => {
    expect(parse({ min_copies: 1, max_copies: 2 })).toMatchObject({ min_copies: 1, max_copies: 2 });
    expect(parse({ min_copies: 0 }).max_copies).toBeUndefined();
    for (const bad of [{ min_copies: -1 }, { max_copies: 0 }, { min_copies: 1.5 }]) {
      expect(() => parse(bad)).toThrow(/m\/1\/config.json is malformed: (min|max)_copies/);
    }
    expect(() => parse({ min_copies: 3, max_copies: 2 })).toThrow(/min_copies must not exceed max_copies/);
  });
});
