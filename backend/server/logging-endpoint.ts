import { Hono } from "hono";
import { z } from "zod";
import { readRequestBody } from "../../shared/http/request-body.ts";
import { jsonOf, MAX_CONTROL_BODY_BYTES } from "../../shared/oip/model-control.ts";
import { parseOrBadInput } from "../../shared/oip/schemas.ts";
import { LOG_FORMATS, type LogSettings } from "../log-settings.ts";

/**
 * Triton's logging extension on the standalone agent: GET /v2/logging answers the log's settings, POST
 * changes the ones its body names and answers them all (gRPC's LogSettings does both). The settings are the
 * agent's own (log-settings.ts): `log_info`, `log_warning` and `log_error` turn each level's lines on and
 * off; `log_verbose_level` 1 or more writes a line per request (what --log-requests starts with);
 * `log_format` is the agent's (`text` or `json`, as --log-format), not Triton's two layouts; `log_file` is
 * always "" (the agent writes to stderr, which its service manager keeps).
 */
export type LoggingAnswer = Record<string, string | boolean | number>;

/** Each setting a POST may name, checked. */
const settingSchemas = {
  log_file: z
    .literal("", {
      error:
        "the agent writes its log to stderr only, so log_file stays empty (redirect stderr to keep it in a file)",
    })
    .optional(),
  log_info: z.boolean().optional(),
  log_warning: z.boolean().optional(),
  log_error: z.boolean().optional(),
  log_verbose_level: z.int().nonnegative().optional(),
  log_format: z
    .enum(LOG_FORMATS, { error: `must be one of ${LOG_FORMATS.join(", ")} (the agent's --log-format)` })
    .optional(),
};

const loggingUpdateSchema = z.strictObject(settingSchemas, {
  error: (issue) =>
    issue.code === "unrecognized_keys"
      ? `no such setting: ${issue.keys.join(", ")} (the settings are ${Object.keys(settingSchemas).join(", ")})`
      : undefined,
});

/** The settings under the extension's names. */
export function loggingAnswer(settings: LogSettings): LoggingAnswer {
  const { info, warning, error, verboseLevel, format } = settings.state;
  return {
    log_file: "",
    log_info: info,
    log_warning: warning,
    log_error: error,
    log_verbose_level: verboseLevel,
    log_format: format,
  };
}

/** Changes the settings `request` names (a bad one changes none: a 400), and answers them all. */
export function updateLogging(settings: LogSettings, request: unknown): LoggingAnswer {
  const update = parseOrBadInput(loggingUpdateSchema, request, "log settings");
  settings.update({
    ...(update.log_info === undefined ? {} : { info: update.log_info }),
    ...(update.log_warning === undefined ? {} : { warning: update.log_warning }),
    ...(update.log_error === undefined ? {} : { error: update.log_error }),
    ...(update.log_verbose_level === undefined ? {} : { verboseLevel: update.log_verbose_level }),
    ...(update.log_format === undefined ? {} : { format: update.log_format }),
  });
  return loggingAnswer(settings);
}

export function loggingRoutes(settings: LogSettings): Hono {
  const routes = new Hono();
  routes.get("/v2/logging", (c) => c.json(loggingAnswer(settings)));
  routes.post("/v2/logging", async (c) =>
    c.json(updateLogging(settings, jsonOf(await readRequestBody(c.req.raw, MAX_CONTROL_BODY_BYTES)))),
  );
  return routes;
}
