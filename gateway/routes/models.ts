import type { Context } from "hono";
import { Hono } from "hono";
import { badInput, notFound, SwitchyardError } from "../../shared/errors.ts";
import { parseModelName, parseModelVersion } from "../../shared/model-names.ts";
import { repositoryIndexRequestSchema } from "../../shared/oip/schemas.ts";
import type { Env } from "../env.ts";
import { catalog, type ModelView, viewModel } from "../models/model-catalog.ts";
import { listModelVersions } from "../models/model-store.ts";
import { poolOf, registryOf } from "../pool.ts";
import { readBody } from "../request-body.ts";

/**
 * OIP v2 model endpoints answered by the gateway itself: model metadata, model readiness and the
 * repository index, from the R2 repository and what the pool's agents report.
 */
export const modelRoutes = new Hono<{ Bindings: Env }>();

/** The repository index request is `{"ready": true}` at most: a few bytes; more is refused (413). */
const MAX_INDEX_BODY_BYTES = 64 * 1024;

for (const base of ["/v2/models/:model", "/v2/models/:model/versions/:version"]) {
  modelRoutes.get(base, async (c) => {
    const model = await lookUp(c);
    if (model.signature === undefined) {
      throw new SwitchyardError(
        "unavailable",
        `the inputs and outputs of '${model.name}' version ${model.version} are not known yet: agents report them once they have loaded the model (its first inference loads it)`,
        { retryAfterSeconds: 5 },
      );
    }
    return c.json({
      name: model.name,
      versions: model.versions,
      platform: "onnxruntime_onnx",
      inputs: model.signature.inputs,
      outputs: model.signature.outputs,
    });
  });

  modelRoutes.get(`${base}/ready`, async (c) => {
    const model = await lookUp(c);
    if (model.entry.state !== "READY") {
      // As Triton and the standalone agent: 400 when the model exists but is not ready.
      throw badInput(
        `model '${model.name}' version ${model.version} is not loaded on any agent (${model.entry.state === "LOADING" ? "it is loading" : "it loads on its first request"})`,
      );
    }
    return c.json({ name: model.name, version: model.version, ready: true });
  });
}

modelRoutes.post("/v2/repository/index", async (c) => {
  const text = new TextDecoder().decode(await readBody(c.req.raw, MAX_INDEX_BODY_BYTES, "request body"));
  let json: unknown = {};
  if (text.trim() !== "") {
    try {
      json = JSON.parse(text);
    } catch {
      throw badInput("request body is not JSON");
    }
  }
  const parsed = repositoryIndexRequestSchema.safeParse(json);
  if (!parsed.success) throw badInput('request body must be {"ready": true|false}');
  const [stored, pool] = await Promise.all([
    listModelVersions(c.env.MODELS),
    registryOf(c.env, poolOf(c.req.raw)).snapshot(),
  ]);
  const entries = catalog(stored, pool);
  return c.json(parsed.data.ready === true ? entries.filter((entry) => entry.state === "READY") : entries);
});

async function lookUp(c: Context<{ Bindings: Env }>): Promise<ModelView> {
  const name = parseModelName(c.req.param("model") ?? "");
  const versionParam = c.req.param("version");
  const version = versionParam === undefined ? undefined : parseModelVersion(versionParam);
  const registry = registryOf(c.env, poolOf(c.req.raw));
  const [stored, pool, signatures] = await Promise.all([
    listModelVersions(c.env.MODELS),
    registry.snapshot(),
    registry.signatures(name),
  ]);
  const model = viewModel(catalog(stored, pool), signatures, name, version);
  if (model === undefined) {
    throw notFound(`model '${name}'${version === undefined ? "" : ` version ${version}`} not found`);
  }
  return model;
}
