import { Hono } from "hono";
import { badInput } from "../../shared/errors.ts";
import { ChannelIdSchema, DATA_CHANNEL_PATH } from "../../shared/protocol/data-channel.ts";
import { AGENT_NAME_PARAM, AgentNameSchema } from "../../shared/protocol/frames.ts";
import type { Env } from "../env.ts";
import { relayStub, SHARD_HEADER } from "../object-bindings.ts";
import { poolOf } from "../pool.ts";
import { placeAgent, registryOf } from "../pool-shards.ts";

/**
 * An agent's two websockets (agent token checked by the app; shared/protocol/data-channel.ts says why two):
 * - GET /agent/connect?agent=<name>: the control socket, handed as it is to a registry shard of the pool
 *   (pool-shards.ts: the one with agents of that name, else the one with the fewest); the registry accepts
 *   it and expects a hello frame first, naming the same agent when the URL named one.
 * - GET /agent/data?channel=<id>: the data socket, handed to the relay its channel names, which carries the
 *   agent's requests and results.
 */
export const agentConnectRoutes = new Hono<{ Bindings: Env }>();

agentConnectRoutes.get("/agent/connect", async (c) => {
  const pool = poolOf(c.req.raw);
  // Agents older than the name in the URL connect without it: placed by population alone.
  const given = c.req.query(AGENT_NAME_PARAM);
  const name = given === undefined ? undefined : AgentNameSchema.safeParse(given);
  if (name !== undefined && !name.success)
    throw badInput(`invalid ?${AGENT_NAME_PARAM}= (the agent's name): ${name.error.issues[0]?.message}`);
  const shard = await placeAgent(c.env, pool, name?.data);
  const request = new Request(c.req.raw);
  request.headers.set(SHARD_HEADER, String(shard));
  return registryOf(c.env, pool, shard).fetch(request);
});

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
