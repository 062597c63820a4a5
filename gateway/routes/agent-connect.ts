import { Hono } from "hono";
import { badInput } from "../../shared/errors.ts";
import { ChannelIdSchema, DATA_CHANNEL_PATH } from "../../shared/protocol/data-channel.ts";
import type { Env } from "../env.ts";
import { relayStub } from "../object-bindings.ts";
import { poolOf, registryOf } from "../pool.ts";

/**
 * An agent's two websockets (agent token checked by the app; shared/protocol/data-channel.ts says why two):
 * - GET /agent/connect: the control socket, handed to the pool's registry as it is; the registry accepts it
 *   and expects a hello frame first.
 * - GET /agent/data?channel=<id>: the data socket, handed to the relay its channel names, which carries the
 *   agent's requests and results.
 */
export const agentConnectRoutes = new Hono<{ Bindings: Env }>();

agentConnectRoutes.get("/agent/connect", (c) => registryOf(c.env, poolOf(c.req.raw)).fetch(c.req.raw));

agentConnectRoutes.get(`/${DATA_CHANNEL_PATH}`, (c) => {
  const pool = poolOf(c.req.raw);
  const channel = ChannelIdSchema.safeParse(c.req.query("channel"));
  if (!channel.success)
    throw badInput(`/${DATA_CHANNEL_PATH} needs ?channel=: ${channel.error.issues[0]?.message}`);
  // The relay learns its pool and channel from the URL (it keeps them with the socket).
  const url = new URL(c.req.url);
  url.searchParams.set("pool", pool);
  return relayStub(c.env.AGENT_RELAY, channel.data).fetch(new Request(url, c.req.raw));
});
