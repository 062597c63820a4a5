import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { onnx as Onnx } from "onnx-proto";
import { describe, expect, test } from "vitest";
import { onnxOpTypes, replansPerShape } from "../../../backend/replica/onnx-op-types.ts";
import { WorkerSession } from "../../../backend/replica/worker-session.ts";
import { node, onnx } from "../../../scripts/lib/onnx-builder.ts";
import { LOADABLE_MODELS, repoModelPath } from "../../fixtures/paths.ts";

// The operator types a model uses, read from its file without decoding its weights: what decides whether
// batch buckets are on by default on CUDA (batch-settings.ts).

/** The same answer from a full decode (onnx-proto): the oracle the walk is held to. */
function decodedOpTypes(bytes: Uint8Array): Set<string> {
  const model = onnx.ModelProto.decode(bytes);
  const types = new Set<string>();
  const visit = (nodes: Onnx.INodeProto[] | null | undefined) => {
    for (const each of nodes ?? []) {
      types.add(each.opType ?? "");
      for (const attribute of each.attribute ?? []) {
        if (attribute.g) visit(attribute.g.node);
        for (const graph of attribute.graphs ?? []) visit(graph.node);
      }
    }
  };
  visit(model.graph?.node);
  for (const fn of model.functions ?? []) visit(fn.node);
  return types;
}

const scratch = () => mkdtempSync(join(tmpdir(), "op-types-"));

describe("the operator types of an ONNX file", () => {
  test("every model of the test repository: the same types as a full decode", () => {
    for (const { name, versions } of LOADABLE_MODELS) {
      for (const version of versions) {
        const path = repoModelPath(name, version);
        expect(onnxOpTypes(path), `${name}/${version}`).toEqual(decodedOpTypes(readFileSync(path)));
      }
    }
  });

  test("PP-OCRv4 detection re-plans per shape (convolutions); an MLP does not", () => {
    const det = onnxOpTypes(repoModelPath("det"));
    expect(det.has("Conv")).toBe(true);
    expect(replansPerShape(det)).toBe(true);
    const mlp = onnxOpTypes(repoModelPath("m000"));
    expect(mlp.has("Conv")).toBe(false);
    expect(replansPerShape(mlp)).toBe(false);
    expect(replansPerShape(new Set(["ConvTranspose"]))).toBe(true);
  });

  test("convolutions inside an If's branches and a local function are found", () => {
    const branch = (opType: string): Onnx.IGraphProto => ({
      name: `branch_${opType}`,
      node: [node(opType, ["x"], ["y"])],
    });
    const model: Onnx.IModelProto = {
      irVersion: 8,
      opsetImport: [{ domain: "", version: 17 }],
      graph: {
        name: "g",
        node: [
          node(
            "If",
            ["c"],
            ["y"],
            [
              { name: "then_branch", type: onnx.AttributeProto.AttributeType.GRAPH, g: branch("Conv") },
              {
                name: "else_branch",
                type: onnx.AttributeProto.AttributeType.GRAPHS,
                graphs: [branch("Relu")],
              },
            ],
          ),
        ],
      },
      functions: [{ name: "f", domain: "local", node: [node("ConvTranspose", ["a"], ["b"])] }],
    };
    const bytes = onnx.ModelProto.encode(model).finish();
    const path = join(scratch(), "nested.onnx");
    writeFileSync(path, bytes);
    const types = onnxOpTypes(path);
    expect(types).toEqual(new Set(["If", "Conv", "Relu", "ConvTranspose"]));
    expect(types).toEqual(decodedOpTypes(bytes));
  });

  test("a file cut short is an error, not a partial answer", () => {
    const bytes = readFileSync(repoModelPath("det"));
    const path = join(scratch(), "cut.onnx");
    writeFileSync(path, bytes.subarray(0, Math.floor(bytes.byteLength / 2)));
    expect(() => onnxOpTypes(path)).toThrow(/ONNX file/);
  });

  test("a session's worker reports its model's types with its specs", async () => {
    const session = await WorkerSession.create(repoModelPath("det"), {});
    try {
      expect(session.opTypes).toEqual(onnxOpTypes(repoModelPath("det")));
    } finally {
      await session.release();
    }
  });
});
