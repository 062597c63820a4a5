import type { MiddlewareHandler } from "hono";
import { SwitchyardError } from "../../shared/errors.ts";
import { matchesAny, secretsOf } from "../auth.ts";
import type { Env } from "../env.ts";

/**
 * Who may read metrics and the dashboard's data: the admin key, or METRICS_TOKEN, a read-only secret to
 * hand to Prometheus or to someone who watches the pool but must not upload models. Both are bearer
 * tokens, compared in constant time like every other key.
 */
export function observerSecrets(env: Env): string[] {
  const token = env.METRICS_TOKEN?.trim();
  return [...secretsOf(env, "admin"), ...(token ? [token] : [])];
}

export function requireObserver(): MiddlewareHandler<{ Bindings: Env }> {
  return async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const presented = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header)?.[1];
    if (presented === undefined) {
      throw new SwitchyardError(
        "unauthenticated",
        "missing key: send 'Authorization: Bearer <admin key or METRICS_TOKEN>'",
      );
    }
    const secrets = observerSecrets(c.env);
    if (secrets.length === 0) {
      throw new SwitchyardError(
        "forbidden",
        "this gateway has neither ADMIN_KEY nor METRICS_TOKEN configured",
      );
    }
    if (!(await matchesAny(presented, secrets))) {
      throw new SwitchyardError(
        "forbidden",
        "the key is not valid for metrics: use the admin key or METRICS_TOKEN",
      );
    }
    await next();
  };
}
