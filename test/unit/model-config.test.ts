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
});
