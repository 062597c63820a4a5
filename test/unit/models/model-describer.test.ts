import { describe, expect, test } from "vitest";
import { openLocalRepository } from "../../../backend/models/local-repository.ts";
import { ModelDescriber } from "../../../backend/models/model-describer.ts";
import { MULTIPLEX_MODELS, REPO_DIR } from "../../fixtures/paths.ts";

// The signatures an agent knows of its repository's models, read from their ONNX files, and what of them a
// reader (a gateway connection) still lacks.

const model = (index: number) => MULTIPLEX_MODELS[index] ?? "";

describe("ModelDescriber", () => {
  test("knownFrom(n) gives the signatures learned after the first n, in order, each once however often it is learned", async () => {
    const describer = new ModelDescriber(openLocalRepository(REPO_DIR));
    const first = await describer.describe(model(0), "1");
    await describer.describe(model(1), "1");
    expect(describer.knownFrom(0).map((signature) => signature.name)).toEqual([model(0), model(1)]);
    // Described again, or learned again from a loaded session: nothing new for a reader that has both.
    await describer.describe(model(0), "1");
    describer.remember(first);
    expect(describer.knownFrom(2)).toEqual([]);
    await describer.describe(model(2), "1");
    expect(describer.knownFrom(2).map((signature) => signature.name)).toEqual([model(2)]);
    expect(describer.isKnown(model(2), "1")).toBe(true);
    expect(describer.isKnown(model(3), "1")).toBe(false);
  });
});
