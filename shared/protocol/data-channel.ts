import { z } from "zod";

/**
 * Each agent holds two websockets to the gateway. The control socket (`/agent/connect`) goes to its pool's
 * registry, the object that decides: hello, state, drain, queries, heartbeats. The data socket
 * (`/agent/data?channel=<id>`) goes to a Durable Object of the agent's own, its relay (gateway/agent-relay),
 * which carries the infer frames, their results and cancels: every payload byte. So the registry never holds
 * a tensor, and the bytes a pool holds in flight grow with its agents instead of being capped by one object.
 *
 * The agent picks its channel id, opens the data socket with it, and only then says hello on the control
 * socket with the same id: by the time the registry routes to it, its relay can reach it. The id is random
 * (122 bits): it names the agent's relay, and only the gateway's own parts learn it (it is left out of
 * dashboards and metrics). A channel carries one connection: its relay refuses a second socket, even after
 * the first one ended, and the registry refuses a hello naming a channel another agent holds.
 */
export const DATA_CHANNEL_PATH = "agent/data";

export const ChannelIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9-]{32,64}$/, "a channel id is 32 to 64 letters, digits or '-' (a random UUID)");

/** A fresh channel id for one agent session. */
export const newChannelId = (): string => crypto.randomUUID();
