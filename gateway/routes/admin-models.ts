import type { Context } from "hono";
import { Hono } from "hono";
import { badInput, notFound } from "../../shared/errors.ts";
import { readRequestBody } from "../../shared/http/request-body.ts";
import { type ModelConfig, parseModelConfig } from "../../shared/model-config.ts";
import { parseModelName, parseModelVersion } from "../../shared/model-names.ts";
import { OnnxFormatError } from "../../shared/onnx/onnx-signature.ts";
import { gatewayConfig } from "../config.ts";
import type { Env } from "../env.ts";
import {
  deleteModelFiles,
  isModelFile,
  listModelVersions,
  MODEL_FILES_HELP,
  type ModelFile,
  putModelFile,
  putSignatureOf,
} from "../models/model-store.ts";

/**
 * The admin API for the gateway's model repository (admin key checked by the app):
 *   PUT    /admin/models/{model}/{version}[?file=config.json]   body = the file's bytes (default model.onnx;
 *                                                                 or a file its config.json names:
 *                                                                 warmup/<input_data_file>,
 *                                                                 labels/<label_filename>)
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
  const bytes = await readRequestBody(c.req.raw, gatewayConfig(c.env).MAX_MODEL_BYTES, file);
  if (bytes.length === 0) throw badInput(`${file} is empty`);
  const config =
    file === "config.json" ? checkedModelConfig(bytes, `${name}/${version}/config.json`) : undefined;
  // A model's inputs and outputs are read from its graph now (its weights are stepped over), so metadata
  // needs no agent, and a file that is not a model is refused here rather than at every agent's load.
  if (file === "model.onnx") await putSignatureOf(c.env.MODELS, name, version, bytes).catch(refuseNonModel);
  const stored = await putModelFile(c.env.MODELS, name, version, file, bytes, config);
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
    throw badInput(`file must be ${MODEL_FILES_HELP}`);
  }
  return { name, version, file: requested };
}

/** A config.json the agents could not parse would fail every load of the model: refuse it now. */
function checkedModelConfig(bytes: Uint8Array, where: string): ModelConfig {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw badInput("config.json is not valid UTF-8");
  }
  try {
    return parseModelConfig(text, where);
  } catch (error) {
    throw badInput(error instanceof Error ? error.message : String(error));
  }
}

function refuseNonModel(error: unknown): never {
  if (error instanceof OnnxFormatError) throw badInput(`model.onnx is ${error.message}`);
  throw error;
}
