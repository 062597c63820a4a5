/**
 * The bodies of the model repository extension's control calls, read the same way by the standalone agent
 * and the gateway:
 *
 *   POST /v2/repository/models/{m}/load     {"parameters": {"copies": 2, "version": "3"}}   (both optional)
 *   POST /v2/repository/models/{m}/unload   {"parameters": {"unload_dependents": false}}     (ignored)
 *   POST /v2/repository/index               {"ready": true}                                  (optional)
 *
 * A load places the model on `copies` replicas now (1 by default; the highest version unless one is named)
 * and keeps it loaded (pinned: never evicted, never expired) until an unload, which unloads every version
 * everywhere. Triton's `config` and `file:` parameters, which load a model from the request itself, are
 * refused: models come from the repository (`switchyard models push`).
 */
import { z } from "zod";
import { badInput } from "../errors.ts";
import { parseModelVersion } from "../model-names.ts";
import { parseOrBadInput } from "./schemas.ts";

/** Control bodies are a few bytes of JSON; more is refused (413). */
export const MAX_CONTROL_BODY_BYTES = 64 * 1024;

/** More copies than this of one model would be a typo, not a plan. */
export const MAX_COPIES = 1024;

const loadRequestSchema = z.object({
  parameters: z
    .looseObject({
      copies: z.int().min(1).max(MAX_COPIES).optional(),
      version: z.string().optional(),
    })
    .optional(),
});

const indexRequestSchema = z.object({ ready: z.boolean().optional() });

export interface LoadRequest {
  copies: number;
  version: string | undefined;
}

export function parseLoadRequest(body: Uint8Array): LoadRequest {
  return loadRequestOf(jsonOf(body));
}

/** A load request already read into an object (the gRPC endpoint's parameters, as JSON would hold them). */
export function loadRequestOf(document: unknown): LoadRequest {
  const parsed = parseOrBadInput(loadRequestSchema, document, "request body");
  const parameters = parsed.parameters ?? {};
  for (const key of Object.keys(parameters)) {
    if (key === "config" || key.startsWith("file:")) {
      throw badInput(
        `a load here cannot override the model's ${key === "config" ? "configuration" : "files"}: push the model to the repository instead`,
      );
    }
  }
  return {
    copies: parameters.copies ?? 1,
    version: parameters.version === undefined ? undefined : parseModelVersion(parameters.version),
  };
}

/** The unload body says nothing Switchyard needs, but a malformed one is still refused. */
export function parseUnloadRequest(body: Uint8Array): void {
  parseOrBadInput(
    z.object({ parameters: z.record(z.string(), z.unknown()).optional() }),
    jsonOf(body),
    "request body",
  );
}

/** Whether the repository index asks for ready models only. */
export function parseIndexRequest(body: Uint8Array): { readyOnly: boolean } {
  const parsed = parseOrBadInput(indexRequestSchema, jsonOf(body), "request body");
  return { readyOnly: parsed.ready === true };
}

/** A control call's JSON body; an empty body is `{}`, as tritonclient sends for the index. */
export function jsonOf(body: Uint8Array): unknown {
  const text = new TextDecoder().decode(body);
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw badInput("request body is not valid JSON");
  }
}
