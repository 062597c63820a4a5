import { PassThrough } from "node:stream";
import { Hono } from "hono";
import { describe, expect, test } from "vitest";
import { createLog } from "../../../backend/log.ts";
import { LogSettings } from "../../../backend/log-settings.ts";
import { loggingRoutes } from "../../../backend/server/logging-endpoint.ts";
import { errorResponse } from "../../../shared/http/error-response.ts";

/** The routes as the agent mounts them (errors as its app answers them), and a log that writes to memory. */
function setup(initial: ConstructorParameters<typeof LogSettings>[0] = {}) {
  const settings = new LogSettings(initial);
  const app = new Hono();
  app.onError((error) => errorResponse(error));
  app.route("/", loggingRoutes(settings));
  const stream = new PassThrough();
  const lines: string[] = [];
  stream.on("data", (chunk: Buffer) => lines.push(...chunk.toString("utf8").split("\n").filter(Boolean)));
  const log = createLog({ settings, stream });
  const post = async (body: unknown) => {
    const response = await app.request("/v2/logging", { method: "POST", body: JSON.stringify(body) });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  return { settings, app, log, lines, post };
}

describe("Triton's logging extension on the agent's log", () => {
  test("GET answers every setting under the extension's names, as the flags set them", async () => {
    const { app } = setup({ format: "json", verboseLevel: 1 });
    expect(await (await app.request("/v2/logging")).json()).toEqual({
      log_file: "",
      log_info: true,
      log_warning: true,
      log_error: true,
      log_verbose_level: 1,
      log_format: "json",
    });
  });

  test("POST changes only what it names, answers them all, and the next line follows", async () => {
    const { log, lines, post, settings } = setup();
    log("model loaded", { model: "m" });
    log("load failed", { model: "m" });
    expect(await post({ log_info: false })).toMatchObject({
      status: 200,
      body: { log_info: false, log_warning: true, log_error: true, log_verbose_level: 0 },
    });
    log("model loaded", { model: "n" });
    log("load failed", { model: "n" });
    expect(await post({ log_error: false, log_info: true, log_format: "json" })).toMatchObject({
      status: 200,
    });
    log("model loaded", { model: "o" });
    log("load failed", { model: "o" });
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/model loaded model=m$/);
    expect(lines[1]).toMatch(/load failed model=m$/);
    // log_info off: the info line of "n" is gone, its error line stays.
    expect(lines[2]).toMatch(/load failed model=n$/);
    // log_error off, JSON on.
    expect(JSON.parse(lines[3] ?? "")).toMatchObject({ level: "info", event: "model loaded", model: "o" });
    expect(settings.requestLines).toBe(false);
  });

  test("a verbose level of 1 or more writes a line per request, as --log-requests does; 0 stops them", async () => {
    const { post, settings } = setup();
    expect(settings.requestLines).toBe(false);
    expect((await post({ log_verbose_level: 2 })).status).toBe(200);
    expect(settings.requestLines).toBe(true);
    // Request lines are info lines: with info off there are none.
    expect((await post({ log_info: false })).status).toBe(200);
    expect(settings.requestLines).toBe(false);
    expect((await post({ log_info: true, log_verbose_level: 0 })).status).toBe(200);
    expect(settings.requestLines).toBe(false);
  });

  test("a setting it cannot take is a 400 that says why, and changes nothing", async () => {
    const { post, settings } = setup();
    const before = settings.state;
    for (const [body, said] of [
      [{ log_verbose_level: -1, log_info: false }, "log_verbose_level"],
      [{ log_verbose_level: 1.5 }, "log_verbose_level"],
      [{ log_info: "no" }, "log_info"],
      [{ log_format: "ISO8601" }, "must be one of text, json"],
      [{ log_file: "/var/log/agent.log" }, "writes its log to stderr only"],
      [{ log_colour: true }, "log_colour"],
      ["verbose", "log settings"],
    ] as const) {
      const answer = await post(body);
      expect(answer.status).toBe(400);
      expect(String(answer.body.error)).toContain(said);
    }
    expect(settings.state).toEqual(before);
    expect((await post({ log_file: "" })).status).toBe(200);
  });
});
