import type { Context } from "hono";
import { Hono } from "hono";
import { modelNotReady } from "../../shared/errors.ts";
import { readRequestBody } from "../../shared/http/request-body.ts";
import { parseModelName, parseModelVersion } from "../../shared/model-names.ts";
import {
  MAX_CONTROL_BODY_BYTES,
  parseIndexRequest,
  parseLoadRequest,
  parseUnloadRequest,
} from "../../shared/oip/model-control.ts";
import type { Env } from "../env.ts";
import { poolOf } from "../pool.ts";
import {
  loadModel,
  modelConfig,
  modelIndex,
  modelMetadata,
  modelReadiness,
  modelStatistics,
  unloadModel,
  unwrap,
} from "../pool-models.ts";

/**
 * The OIP v2 model endpoints the gateway answers itself, from what the pool's registry shards know (its R2
 * repository, its agents, and agents it asks; see registry/model-directory.ts and pool-models.ts): metadata, readiness,
 * Triton's model configuration, the statistics extension, the repository index and model control.
 */
export const modelRoutes = new Hono<{ Bindings: Env }>();

// Before /v2/models/:model, which would take "stats" for a model name (as it does in Triton).
modelRoutes.get("/v2/models/stats", async (c) => {
  const stats = unwrap(await modelStatistics(c.env, poolOf(c.req.raw)));
  return c.json({ model_stats: stats });
});

for (const base of ["/v2/models/:model", "/v2/models/:model/versions/:version"]) {
  modelRoutes.get(base, async (c) => {
    const { name, version } = modelPath(c);
    const { versions, signature } = unwrap(await modelMetadata(c.env, poolOf(c.req.raw), name, version));
    return c.json({
      name,
      versions,
      platform: "onnxruntime_onnx",
      inputs: signature.inputs,
      outputs: signature.outputs,
    });
  });

  modelRoutes.get(`${base}/ready`, async (c) => {
    const { name, version } = modelPath(c);
    const readiness = unwrap(await modelReadiness(c.env, poolOf(c.req.raw), name, version));
    if (!readiness.ready) throw modelNotReady(name, readiness.version, readiness.reason);
    return c.json({ name, version: readiness.version, ready: true });
  });

  modelRoutes.get(`${base}/config`, async (c) => {
    const { name, version } = modelPath(c);
    return c.json(unwrap(await modelConfig(c.env, poolOf(c.req.raw), name, version)));
  });

  modelRoutes.get(`${base}/stats`, async (c) => {
    const { name, version } = modelPath(c);
    return c.json({ model_stats: unwrap(await modelStatistics(c.env, poolOf(c.req.raw), name, version)) });
  });
}

modelRoutes.post("/v2/repository/index", async (c) => {
  const { readyOnly } = parseIndexRequest(await readRequestBody(c.req.raw, MAX_CONTROL_BODY_BYTES));
  const entries = unwrap(await modelIndex(c.env, poolOf(c.req.raw)));
  return c.json(readyOnly ? entries.filter((entry) => entry.state === "READY") : entries);
});

/** Model control takes the admin key (app.ts): it changes what the whole pool keeps loaded. */
modelRoutes.post("/v2/repository/models/:model/load", async (c) => {
  const name = parseModelName(c.req.param("model"));
  const load = parseLoadRequest(await readRequestBody(c.req.raw, MAX_CONTROL_BODY_BYTES));
  unwrap(await loadModel(c.env, poolOf(c.req.raw), name, load.version, load.copies));
  return c.json({});
});

modelRoutes.post("/v2/repository/models/:model/unload", async (c) => {
  const name = parseModelName(c.req.param("model"));
  parseUnloadRequest(await readRequestBody(c.req.raw, MAX_CONTROL_BODY_BYTES));
  unwrap(await unloadModel(c.env, poolOf(c.req.raw), name));
  return c.json({});
});

function modelPath(c: Context): { name: string; version: string | undefined } {
  const name = parseModelName(c.req.param("model") ?? "");
  const version = c.req.param("version");
  return { name, version: version === undefined ? undefined : parseModelVersion(version) };
}
