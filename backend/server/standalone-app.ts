import type { Context } from "hono";
import { Hono } from "hono";
import { describeError, modelNotReady, noRoute, SwitchyardError } from "../../shared/errors.ts";
import { errorResponse } from "../../shared/http/error-response.ts";
import { readRequestBody } from "../../shared/http/request-body.ts";
import { parseModelName, parseModelVersion } from "../../shared/model-names.ts";
import { joined } from "../../shared/oip/codec.ts";
import { parseInferRequest } from "../../shared/oip/infer-http.ts";
import {
  MAX_CONTROL_BODY_BYTES,
  parseIndexRequest,
  parseLoadRequest,
  parseUnloadRequest,
} from "../../shared/oip/model-control.ts";
import { sharedMemoryRoutes } from "../../shared/oip/shared-memory-routes.ts";
import type { LogSettings } from "../log-settings.ts";
import type { ModelService } from "../models/model-service.ts";
import type { ReplicaPool } from "../pool/replica-pool.ts";
import { loggingRoutes } from "./logging-endpoint.ts";
import { regionsControl, type SharedMemoryRegions } from "./shared-memory-regions.ts";
import { answerInfer } from "./standalone-infer.ts";
import {
  loadModel,
  modelConfig,
  modelMetadata,
  modelStatistics,
  repositoryIndex,
  standaloneExtensions,
  unloadModel,
} from "./standalone-models.ts";

export interface StandaloneAppOptions {
  pool: ReplicaPool;
  models: ModelService;
  name: string;
  version: string;
  /** Largest request body accepted, in bytes (413 above), after decompression. */
  maxBodyBytes: number;
  /** Deadline of a request that sets none (milliseconds). */
  defaultTimeoutMs: number;
  /** Ready once startup (preloads) is done. */
  isReady: () => boolean;
  /** The system shared memory regions, where offered (--allow-client-shm). */
  sharedMemory?: SharedMemoryRegions;
  log: (event: string, fields: Record<string, unknown>) => void;
  /** The log's settings, which Triton's logging extension reads and changes. */
  logSettings: LogSettings;
}

/**
 * The agent's own Open Inference Protocol v2 server (standalone mode): the same endpoints the gateway
 * offers, answered by this host's replicas. Model control (load / unload) needs no key here: the standalone
 * server is meant for a trusted network, as Triton's is.
 */
export function createStandaloneApp(options: StandaloneAppOptions): Hono {
  const { pool, models } = options;
  const regions = options.sharedMemory;
  const extensions = standaloneExtensions(regions !== undefined);
  const answerer = { agentName: options.name, ...(regions === undefined ? {} : { sharedMemory: regions }) };
  const app = new Hono();

  app.onError((error, c) => {
    const failure = SwitchyardError.from(error);
    if (failure.status >= 500) options.log("error", { path: c.req.path, error: describeError(error) });
    return errorResponse(failure);
  });
  app.notFound((c) => errorResponse(noRoute(c.req.method, c.req.path)));

  app.get("/v2/health/live", (c) => c.json({ live: true }));
  app.get("/v2/health/ready", (c) =>
    options.isReady() ? c.json({ ready: true }) : c.json({ error: "the agent is still starting" }, 503),
  );
  app.get("/v2", (c) => c.json({ name: options.name, version: options.version, extensions }));
  app.route("/", sharedMemoryRoutes(regions && regionsControl(regions)));
  app.route("/", loggingRoutes(options.logSettings));

  // Before /v2/models/:model, which would take "stats" for a model name.
  app.get("/v2/models/stats", async (c) => c.json({ model_stats: await modelStatistics(models) }));

  for (const base of ["/v2/models/:model", "/v2/models/:model/versions/:version"]) {
    app.get(base, async (c) => {
      const { name, version } = modelPath(c);
      return c.json(await modelMetadata(models, name, version));
    });

    app.get(`${base}/ready`, async (c) => {
      const { name, version } = modelPath(c);
      const readiness = await models.readiness(name, version);
      if (!readiness.ready) throw modelNotReady(name, readiness.version, readiness.reason);
      return c.json({ name, version: readiness.version, ready: true });
    });

    app.get(`${base}/config`, async (c) => {
      const { name, version } = modelPath(c);
      return c.json(await modelConfig(models, pool, name, version));
    });

    app.get(`${base}/stats`, async (c) => {
      const { name, version } = modelPath(c);
      return c.json({ model_stats: await modelStatistics(models, name, version) });
    });

    // Plain bodies of known length take the direct route (direct-infer-route.ts); these are the others:
    // compressed or chunked bodies, read through the web Request.
    app.post(`${base}/infer`, async (c) => {
      const arrivedAt = performance.now();
      const body = await readRequestBody(c.req.raw, options.maxBodyBytes);
      const received = performance.now();
      const input = parseInferRequest(
        { model: c.req.param("model"), version: c.req.param("version") },
        c.req.raw.headers,
        body,
        options.defaultTimeoutMs,
        regions,
      );
      const arrival = { arrivedAt, receiveMs: received - arrivedAt, decodeMs: performance.now() - received };
      const answer = await answerInfer(
        (call) => pool.infer(call),
        answerer,
        input,
        arrival,
        c.req.raw.signal,
      );
      return new Response(
        joined({ parts: answer.parts, byteLength: answer.byteLength, contentType: "" }).body,
        {
          status: 200,
          headers: answer.headers,
        },
      );
    });
  }

  app.post("/v2/repository/index", async (c) => {
    const { readyOnly } = parseIndexRequest(await readRequestBody(c.req.raw, MAX_CONTROL_BODY_BYTES));
    return c.json(await repositoryIndex(models, pool, readyOnly));
  });

  app.post("/v2/repository/models/:model/load", async (c) => {
    const name = parseModelName(c.req.param("model"));
    await loadModel(models, name, parseLoadRequest(await readRequestBody(c.req.raw, MAX_CONTROL_BODY_BYTES)));
    return c.json({});
  });

  app.post("/v2/repository/models/:model/unload", async (c) => {
    const name = parseModelName(c.req.param("model"));
    parseUnloadRequest(await readRequestBody(c.req.raw, MAX_CONTROL_BODY_BYTES));
    await unloadModel(models, name);
    return c.json({});
  });

  /** Not OIP: what each replica holds and does, for operators (and the gateway's view of this agent). */
  app.get("/v2/agent/replicas", (c) => c.json({ replicas: pool.states(), queued: pool.queueLength }));

  return app;
}

/** The model name and version of the path, validated. */
function modelPath(c: Context): { name: string; version: string | undefined } {
  const name = parseModelName(c.req.param("model") ?? "");
  const version = c.req.param("version");
  return { name, version: version === undefined ? undefined : parseModelVersion(version) };
}
