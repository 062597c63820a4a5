import type { Context } from "hono";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { SwitchyardError } from "../../shared/errors.ts";
import { parseModelName, parseModelVersion } from "../../shared/model-names.ts";
import { binaryOutputSelector, decodeInferRequest, encodeInferResponse } from "../../shared/oip/codec.ts";
import { readHint, readTimeoutMs, serverTiming } from "../../shared/oip/request-options.ts";
import { type ModelRef, modelKey } from "../../shared/protocol/replica-state.ts";
import type { ModelRepository } from "../models/repository.ts";
import type { ReplicaPool } from "../pool/replica-pool.ts";
import type { ModelSignature } from "../replica/replica.ts";

export interface StandaloneAppOptions {
  pool: ReplicaPool;
  repository: ModelRepository;
  name: string;
  version: string;
  /** Largest request body accepted, in bytes (413 above). */
  maxBodyBytes: number;
  /** Deadline of a request that sets none (milliseconds). */
  defaultTimeoutMs: number;
  /** Ready once startup (preloads) is done. */
  isReady: () => boolean;
  log: (event: string, fields: Record<string, unknown>) => void;
}

const EXTENSIONS = ["binary_tensor_data", "model_repository", "parameters"];
/** Bodies of the control endpoints (the repository index) are a few bytes of JSON; more is refused (413). */
const MAX_CONTROL_BODY_BYTES = 64 * 1024;

/**
 * The agent's own Open Inference Protocol v2 server (standalone mode): the same endpoints the gateway
 * offers, answered by this host's replicas.
 */
export function createStandaloneApp(options: StandaloneAppOptions): Hono {
  const { pool, repository } = options;
  const signatures = new Map<string, ModelSignature>();
  const app = new Hono();

  app.onError((error, c) => {
    const failure = SwitchyardError.from(error);
    if (failure.status >= 500) options.log("error", { path: c.req.path, error: describe(error) });
    return c.json(failure.toBody(), failure.status, failure.headers());
  });
  app.notFound((c) => c.json({ error: `no route for ${c.req.method} ${c.req.path}` }, 404));

  app.get("/v2/health/live", (c) => c.json({ live: true }));
  app.get("/v2/health/ready", (c) =>
    options.isReady() ? c.json({ ready: true }) : c.json({ error: "the agent is still starting" }, 503),
  );
  app.get("/v2", (c) => c.json({ name: options.name, version: options.version, extensions: EXTENSIONS }));

  const modelRef = async (c: Context): Promise<ModelRef> => {
    const name = parseModelName(c.req.param("model") ?? "");
    const version = c.req.param("version");
    const model = await repository.resolve(
      name,
      version === undefined ? undefined : parseModelVersion(version),
    );
    return { name: model.name, version: model.version };
  };

  const signatureOf = async (ref: ModelRef): Promise<ModelSignature> => {
    const key = modelKey(ref);
    let signature = signatures.get(key);
    if (signature === undefined) {
      // Metadata comes from the ONNX session itself, so a model nobody has used yet is loaded to answer.
      signature = await pool.load(ref.name, ref.version);
      signatures.set(key, signature);
    }
    return signature;
  };

  for (const base of ["/v2/models/:model", "/v2/models/:model/versions/:version"]) {
    app.get(base, async (c) => {
      const ref = await modelRef(c);
      const signature = await signatureOf(ref);
      const versions = (await repository.index())
        .filter((entry) => entry.name === ref.name)
        .map((entry) => entry.version);
      return c.json({
        name: ref.name,
        versions,
        platform: "onnxruntime_onnx",
        inputs: signature.inputs,
        outputs: signature.outputs,
      });
    });

    app.get(`${base}/ready`, async (c) => {
      const ref = await modelRef(c);
      const ready = pool.replicas.some((replica) => replica.isLoaded(ref));
      if (!ready) {
        return c.json(
          {
            error: `model '${ref.name}' version ${ref.version} is not loaded (it loads on its first request)`,
          },
          400,
        );
      }
      return c.json({ name: ref.name, version: ref.version, ready: true });
    });

    app.post(
      `${base}/infer`,
      bodyLimit({
        maxSize: options.maxBodyBytes,
        onError: (c) => c.json({ error: `request body is larger than ${options.maxBodyBytes} bytes` }, 413),
      }),
      async (c) => {
        const started = performance.now();
        const name = parseModelName(c.req.param("model") ?? "");
        const versionParam = c.req.param("version");
        const version = versionParam === undefined ? undefined : parseModelVersion(versionParam);
        const request = decodeInferRequest(new Uint8Array(await c.req.arrayBuffer()), headerLength(c));
        const headers = c.req.raw.headers;
        const hint = readHint(headers);
        const timeoutMs = readTimeoutMs(headers, request.parameters, options.defaultTimeoutMs);
        const outcome = await pool.infer({
          model: name,
          ...(version === undefined ? {} : { version }),
          ...(hint === undefined ? {} : { hint }),
          inputs: request.inputs,
          ...(request.outputs === undefined ? {} : { outputs: request.outputs.map((output) => output.name) }),
          deadline: Date.now() + timeoutMs,
          signal: c.req.raw.signal,
          // The tensors were decoded for this request alone: they may move to the session's thread.
          handOverInputs: true,
        });
        const encoded = encodeInferResponse(
          {
            model_name: outcome.model.name,
            model_version: outcome.model.version,
            ...(request.id === undefined ? {} : { id: request.id }),
            outputs: outcome.outputs,
          },
          binaryOutputSelector(request),
        );
        const requestId = request.id ?? crypto.randomUUID();
        const responseHeaders: Record<string, string> = {
          "Content-Type": encoded.contentType,
          "X-Request-Id": requestId,
          "X-Switchyard-Replica": `${options.name}/${outcome.replica}`,
          "X-Switchyard-Cache": outcome.cache,
          "Server-Timing": serverTiming({
            queue: outcome.timings.poolQueueMs + outcome.timings.queueMs,
            load: outcome.timings.loadMs,
            infer: outcome.timings.inferMs,
            total: performance.now() - started,
          }),
        };
        if (encoded.headerLength !== undefined) {
          responseHeaders["Inference-Header-Content-Length"] = String(encoded.headerLength);
        }
        // The codec allocates a fresh ArrayBuffer for every body, never a SharedArrayBuffer.
        return c.body(encoded.body as Uint8Array<ArrayBuffer>, 200, responseHeaders);
      },
    );
  }

  app.post(
    "/v2/repository/index",
    bodyLimit({
      maxSize: MAX_CONTROL_BODY_BYTES,
      onError: (c) => c.json({ error: `request body is larger than ${MAX_CONTROL_BODY_BYTES} bytes` }, 413),
    }),
    async (c) => {
      const body = await readJson(c);
      const readyOnly = typeof body === "object" && body !== null && "ready" in body && body.ready === true;
      const states = pool.states();
      const entries = (await repository.index()).map((entry) => {
        const loaded = states.some((state) =>
          state.loaded.some((model) => model.name === entry.name && model.version === entry.version),
        );
        const failure = states
          .flatMap((state) => state.failed)
          .find((model) => model.name === entry.name && model.version === entry.version);
        return {
          name: entry.name,
          version: entry.version,
          state: loaded ? "READY" : "UNAVAILABLE",
          reason: loaded ? "" : (failure?.reason ?? "unloaded"),
        };
      });
      return c.json(readyOnly ? entries.filter((entry) => entry.state === "READY") : entries);
    },
  );

  app.post("/v2/repository/models/:model/load", async (c) => {
    const name = parseModelName(c.req.param("model"));
    const signature = await pool.load(name);
    signatures.set(modelKey(signature.ref), signature);
    return c.json({});
  });

  app.post("/v2/repository/models/:model/unload", async (c) => {
    const name = parseModelName(c.req.param("model"));
    await repository.resolve(name);
    await pool.unload(name);
    return c.json({});
  });

  /** Not OIP: what each replica holds and does, for operators (and the gateway's view of this agent). */
  app.get("/v2/agent/replicas", (c) => c.json({ replicas: pool.states(), queued: pool.queueLength }));

  return app;
}

function headerLength(c: Context): number | undefined {
  const value = c.req.header("inference-header-content-length");
  if (value === undefined) return undefined;
  const length = Number(value);
  if (!Number.isInteger(length) || length < 0) {
    throw new SwitchyardError(
      "bad_input",
      `Inference-Header-Content-Length must be a byte count, got '${value}'`,
    );
  }
  return length;
}

async function readJson(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new SwitchyardError("bad_input", "request body is not valid JSON");
  }
}

function describe(error: unknown): string {
  if (error instanceof Error)
    return error.cause === undefined ? error.message : `${error.message} (${describe(error.cause)})`;
  return String(error);
}
