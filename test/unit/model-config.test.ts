import { posix } from "node:path";
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { SwitchyardError } from "../../shared/errors.ts";
import { isReferencedFileName, parseModelConfig, referencedFiles } from "../../shared/model-config.ts";

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

describe("the files a config.json names beside the model", () => {
  test("warm-up data files, then label files, each once; Triton's empty label_filename names none", () => {
    const config = parse({
      model_warmup: [
        {
          inputs: {
            a: { dims: [1], input_data_file: "a.bin" },
            b: { dims: [1], input_data_file: "b/c.bin" },
          },
        },
        { inputs: { a: { dims: [1], input_data_file: "a.bin" } } },
      ],
      output: [
        { name: "y", label_filename: "labels.txt" },
        { name: "z", label_filename: "" },
        { name: "w", dims: [3] },
      ],
    });
    expect(referencedFiles(config)).toEqual([
      { kind: "warmup", name: "a.bin" },
      { kind: "warmup", name: "b/c.bin" },
      { kind: "labels", name: "labels.txt" },
    ]);
    expect(() => parse({ output: [{ name: "y", label_filename: "../labels.txt" }] })).toThrow(
      "m/1/config.json is malformed: output.0.label_filename: must be a path inside the model's directory",
    );
  });

  test("any name the rule accepts stays inside its directory, wherever it is joined", () => {
    const part = fc.oneof(
      fc.constantFrom(".", "..", "", "...", "a", "..a", "%2e%2e", "\\", "/"),
      fc.string({ maxLength: 6 }),
    );
    fc.assert(
      fc.property(fc.array(part, { minLength: 1, maxLength: 5 }), (parts) => {
        const name = parts.join("/");
        if (!isReferencedFileName(name)) return;
        const dir = "/models/det/warmup";
        const path = posix.join(dir, name);
        expect(path.startsWith(`${dir}/`), name).toBe(true);
        expect(
          new URL(name.split("/").map(encodeURIComponent).join("/"), "https://x/m/1/warmup/").pathname,
        ).toMatch(/^\/m\/1\/warmup\/./);
      }),
    );
    for (const refused of ["", "..", "a/../..", "/etc/passwd", "a//b", "a\\b", `${"é".repeat(128)}`, "x\0"]) {
      expect(isReferencedFileName(refused), refused).toBe(false);
    }
  });
});
