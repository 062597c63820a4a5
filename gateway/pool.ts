import { badInput } from "../shared/errors.ts";
import { DEFAULT_POOL, isPoolName, POOL_NAME_RULE } from "../shared/pool-names.ts";

/**
 * Pools divide the gateway: each has its own registry Durable Objects (pool-shards.ts), its own agents
 * and its own queues. Clients pick one with X-Switchyard-Pool; agents with that header or `?pool=`
 * (websocket clients cannot always set headers). Everything else goes to "default".
 */
export { DEFAULT_POOL, isPoolName };
export const POOL_HEADER = "x-switchyard-pool";

export function poolOf(request: Request): string {
  const named = request.headers.get(POOL_HEADER) ?? new URL(request.url).searchParams.get("pool");
  if (named === null || named.trim() === "") return DEFAULT_POOL;
  const pool = named.trim();
  if (!isPoolName(pool)) throw badInput(`invalid pool name: use ${POOL_NAME_RULE}`);
  return pool;
}
