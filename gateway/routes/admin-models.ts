import type { Context } from "hono";
import { Hono } from "hono";
import { badInput, notFound } from "../../shared/errors.ts";
import { parseModelName, parseModelVersion } from "../../shared/model-names.ts";
import { type Env, readConfig } from "../env.ts";
import {
  deleteModelFiles,
  isModelFile,
  listModelVersions,
  MODEL_FILES,
  type ModelFile,
  putModelFile,
} from "../models/model-store.ts";
import { readBody } from "../request-body.ts";

/**
 * The admin API for the gateway's model repository (admin key checked by the app):
 *   PUT    /admin/models/{model}/{version}[?file=config.json]   body = the file's bytes (default model.onnx)
 *   DELETE /admin/models/{model}/{version}[?file=...]            one file, or the whole version
 *   GET    /admin/models                                         every stored version with sizes and digests
 * Versions are immutable for agents (they cache by name and version), so replacing a file of a version
 * that agents already fetched does not reach them; upload a new version instead.
 */
export const adminModelRoutes = new Hono<{ Bindings: Env }>();

adminModelRoutes.get("/admin/models", async (c) => c.json({ models: await listModelVersions(c.env.MODELS) }));

adminModelRoutes.put("/admin/models/:model/:version", async (c) => {
  const requested = target(c);
  const { name, version } = requested;
  const file = requested.file ?? "model.onnx";
  const bytes = await readBody(c.req.raw, readConfig(c.env).MAX_MODEL_BYTES, file);
  if (bytes.length === 0) throw badInput(`${file} is empty`);
  if (file === "config.json") assertJsonObject(bytes);
  const stored = await putModelFile(c.env.MODELS, name, version, file, bytes);
  return c.json({ name, version, file, ...stored }, 201);
});

adminModelRoutes.delete("/admin/models/:model/:version", async (c) => {
  const { name, version, file } = target(c);
  const deleted = await deleteModelFiles(c.env.MODELS, name, version, file);
  if (deleted.length === 0)
    throw notFound(`model '${name}' version ${version} has no ${file ?? "files"} to delete`);
  return c.json({ name, version, deleted });
});

function target(c: Context<{ Bindings: Env }>): {
  name: string;
  version: string;
  file: ModelFile | undefined;
} {
  const name = parseModelName(c.req.param("model") ?? "");
  const version = parseModelVersion(c.req.param("version") ?? "");
  const requested = c.req.query("file");
  if (requested !== undefined && !isModelFile(requested)) {
    throw badInput(`file must be one of ${MODEL_FILES.join(", ")}`);
  }
  return { name, version, file: requested };
}

/** A config.json the agents could not parse would fail every load of the model: refuse it now. */
function assertJsonObject(bytes: Uint8Array): void {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes));
  } catch (error) {
    throw badInput(
      `config.json is not valid UTF-8 JSON: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw badInput("config.json must be a JSON object");
}
