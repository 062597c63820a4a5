import { Hono } from "hono";
import { notFound } from "../../shared/errors.ts";
import { parseModelName, parseModelVersion } from "../../shared/model-names.ts";
import type { Env } from "../env.ts";
import {
  getModelFile,
  isModelFile,
  listModelVersions,
  MODEL_FILES_HELP,
  reprDigest,
} from "../models/model-store.ts";

/**
 * The HTTP model repository that agents started with --gateway download from (agent token checked by the
 * app), in the protocol of backend/models/http-repository.ts:
 *   GET /agent/models/repository.json                 every version with each file's size and SHA-256
 *   GET /agent/models/{model}/{version}/{file}        model.onnx, config.json, warmup/<input_data_file> or
 *                                                     labels/<label_filename>, with Repr-Digest
 * Versions without a model.onnx are not listed: there is nothing an agent could load.
 */
export const agentModelRoutes = new Hono<{ Bindings: Env }>();

agentModelRoutes.get("/agent/models/repository.json", async (c) => {
  const versions = await listModelVersions(c.env.MODELS);
  const models = versions
    .filter((entry) => entry.files["model.onnx"] !== undefined)
    .map((entry) => ({
      name: entry.name,
      version: entry.version,
      files: Object.fromEntries(
        Object.entries(entry.files).flatMap(([file, info]) =>
          info === undefined
            ? []
            : [[file, { size: info.size, ...(info.sha256 === undefined ? {} : { sha256: info.sha256 }) }]],
        ),
      ),
    }));
  return c.json({ models }, 200, { "Cache-Control": "no-store" });
});

// {file} may span segments: a file config.json names is a path below warmup/ or labels/.
agentModelRoutes.get("/agent/models/:model/:version/:file{.+}", async (c) => {
  const name = parseModelName(c.req.param("model"));
  const version = parseModelVersion(c.req.param("version"));
  const file = c.req.param("file");
  if (!isModelFile(file))
    throw notFound(`no such model file '${file.slice(0, 80)}' (files: ${MODEL_FILES_HELP})`);
  const object = await getModelFile(c.env.MODELS, name, version, file);
  if (object === null) throw notFound(`model '${name}' version ${version} has no ${file}`);
  const headers = new Headers({
    "Content-Type": object.httpMetadata?.contentType ?? "application/octet-stream",
    "Content-Length": String(object.size),
    // Agents keep their own verified disk cache; nothing in between should keep a copy.
    "Cache-Control": "no-store",
  });
  const sha256 = object.customMetadata?.sha256;
  if (sha256 !== undefined) headers.set("Repr-Digest", reprDigest(sha256));
  return new Response(object.body, { status: 200, headers });
});
