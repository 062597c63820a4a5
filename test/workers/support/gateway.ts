import { exports } from "cloudflare:workers";

/** Requests to the gateway Worker under test, as a client, an agent or an admin would send them. */
export const CLIENT_KEY = "local-dev-key";
export const AGENT_TOKEN = "local-agent-token";
export const ADMIN_KEY = "local-admin-key";

const ORIGIN = "https://gateway.test";

export function gatewayFetch(path: string, init: RequestInit = {}): Promise<Response> {
  return exports.default.fetch(new Request(`${ORIGIN}${path}`, init));
}

/** A pool of its own for each test, so registries never share agents or queues between tests. */
export function freshPool(): string {
  return `t${crypto.randomUUID().slice(0, 8)}`;
}

export interface InferOptions {
  pool: string;
  key?: string;
  version?: string;
  headers?: Record<string, string>;
  body?: BodyInit;
}

export const SMALL_REQUEST = JSON.stringify({
  inputs: [{ name: "x", shape: [1], datatype: "FP32", data: [1] }],
});

export function infer(model: string, options: InferOptions): Promise<Response> {
  const path =
    options.version === undefined
      ? `/v2/models/${model}/infer`
      : `/v2/models/${model}/versions/${options.version}/infer`;
  return gatewayFetch(path, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${options.key ?? CLIENT_KEY}`,
      "Content-Type": "application/json",
      "X-Switchyard-Pool": options.pool,
      ...options.headers,
    },
    body: options.body ?? SMALL_REQUEST,
  });
}

/** The message of an OIP error response. */
export async function errorOf(response: Response): Promise<string> {
  const body = (await response.json()) as { error?: unknown };
  if (typeof body.error !== "string") throw new Error(`not an error body: ${JSON.stringify(body)}`);
  return body.error;
}
