import { badInput } from "../shared/errors.ts";
import type { Env } from "./env.ts";

/**
 * Pools shard the gateway: each has its own Registry Durable Object (`idFromName(pool)`), its own agents
 * and its own queue. Clients pick one with X-Switchyard-Pool; agents with that header or `?pool=`
 * (websocket clients cannot always set headers). Everything else goes to "default".
 */
export const DEFAULT_POOL = "default";
export const POOL_HEADER = "x-switchyard-pool";

const POOL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export const isPoolName = (name: string) => POOL_NAME.test(name);

export function poolOf(request: Request): string {
  const named = request.headers.get(POOL_HEADER) ?? new URL(request.url).searchParams.get("pool");
  if (named === null || named.trim() === "") return DEFAULT_POOL;
  const pool = named.trim();
  if (!POOL_NAME.test(pool)) {
    throw badInput(
      "invalid pool name: use up to 64 letters, digits, '_', '.' and '-', starting with a letter or digit",
    );
  }
  return pool;
}

export function registryOf(env: Env, pool: string) {
  return env.REGISTRY.get(env.REGISTRY.idFromName(pool));
}
