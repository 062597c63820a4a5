import { badInput } from "../../shared/errors.ts";
import { DATA_CHANNEL_PATH } from "../../shared/protocol/data-channel.ts";
import { AGENT_NAME_PARAM } from "../../shared/protocol/frames.ts";

/**
 * The addresses an agent derives from `--gateway`: a ws(s) URL (http(s) is accepted too), possibly with a
 * path prefix when the Worker sits under a route. The websocket and the model repository share it, so the
 * agent needs one flag, not two.
 */
function gatewayBase(gateway: string): URL {
  let url: URL;
  try {
    url = new URL(gateway);
  } catch {
    throw badInput(`--gateway must be a ws:// or wss:// URL, got ${JSON.stringify(gateway)}`);
  }
  const scheme = { "ws:": "ws:", "wss:": "wss:", "http:": "ws:", "https:": "wss:" }[url.protocol];
  if (scheme === undefined) {
    throw badInput(`--gateway must be a ws:// or wss:// URL, got ${JSON.stringify(gateway)}`);
  }
  // Rebuilt from its parts: a scheme change between "special" schemes is not allowed through the setter.
  const base = new URL(`${scheme}//${url.host}${url.pathname.replace(/\/*$/, "/")}`);
  return base;
}

/** The websocket the agent dials: `<gateway>/agent/connect`, with the pool it joins and its name. */
export function agentConnectUrl(gateway: string, pool: string | undefined, name: string): string {
  const url = new URL("agent/connect", gatewayBase(gateway));
  if (pool !== undefined) url.searchParams.set("pool", pool);
  url.searchParams.set(AGENT_NAME_PARAM, name);
  return url.href;
}

/** The agent's data socket (shared/protocol/data-channel.ts): `<gateway>/agent/data`, its pool and channel. */
export function agentDataUrl(gateway: string, pool: string | undefined, channel: string): string {
  const url = new URL(DATA_CHANNEL_PATH, gatewayBase(gateway));
  if (pool !== undefined) url.searchParams.set("pool", pool);
  url.searchParams.set("channel", channel);
  return url.href;
}

/** The gateway's HTTP base (ws → http, wss → https), without a trailing slash. */
export function gatewayHttpBase(gateway: string): string {
  const base = gatewayBase(gateway);
  const scheme = base.protocol === "wss:" ? "https:" : "http:";
  return `${scheme}//${base.host}${base.pathname.replace(/\/$/, "")}`;
}

/** The gateway's model repository (the http repository protocol, behind the agent token). */
export function gatewayModelsUrl(gateway: string): string {
  return `${gatewayHttpBase(gateway)}/agent/models`;
}

/**
 * Whether `url` is on the gateway's own origin: the agent token is sent with model downloads from there and
 * nowhere else, so a --models URL on another host never sees it.
 */
export function isOnGateway(gateway: string, url: string): boolean {
  try {
    return new URL(url).origin === new URL(gatewayHttpBase(gateway)).origin;
  } catch {
    return false;
  }
}
