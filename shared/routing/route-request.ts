import type { RouteRequest } from "./types.ts";

/**
 * What the router is asked for a request (its model, version, hint, whether it yields to others and the
 * replicas it failed on), from anything that carries them: an ask, a direct hit's run, a standalone call.
 * Absent fields stay absent (exactOptionalPropertyTypes).
 */
export function routeOf(source: {
  model: string;
  version?: string;
  hint?: string;
  background?: true;
  avoid?: readonly string[];
}): RouteRequest {
  return {
    model: source.model,
    ...(source.version === undefined ? {} : { version: source.version }),
    ...(source.hint === undefined ? {} : { hint: source.hint }),
    ...(source.background === true ? { background: true } : {}),
    ...(source.avoid === undefined || source.avoid.length === 0 ? {} : { avoid: source.avoid }),
  };
}
