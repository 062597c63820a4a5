import { Hono } from "hono";
import { z } from "zod";
import { badInput } from "../../shared/errors.ts";
import { readRequestBody } from "../../shared/http/request-body.ts";
import { parseModelName } from "../../shared/model-names.ts";
import { MAX_CONTROL_BODY_BYTES } from "../../shared/oip/model-control.ts";
import type { Env } from "../env.ts";
import { poolOf } from "../pool.ts";
import { clearModelPolicy, modelPolicy, setModelPolicy, unwrap } from "../pool-models.ts";

/**
 * A model's serving policy in a pool (admin key, checked by the app; the pool by X-Switchyard-Pool):
 *
 *   GET    /admin/models/{model}/policy   {"model", "pool", "min_copies", "max_copies", "keep_alive_s", "copies",
 *                                         "config"}
 *   PUT    /admin/models/{model}/policy   {"min_copies"?: n >= 0, "max_copies"?: n >= 1 | null,
 *                                         "keep_alive_s"?: s >= 0 | null}
 *   DELETE /admin/models/{model}/policy   the overrides go: the model's config.json policy applies again
 *
 * min_copies is the model's pin, the same one OIP `load` sets with its copies: that many replicas keep it
 * loaded with no traffic, never evicted, placed again when a holder leaves (PUT waits until they are loaded,
 * and is refused when they cannot fit). max_copies caps the replicas that may hold it at once: beyond it its
 * requests wait for those that do (null: no cap, whatever config.json says). Both take effect at once, without
 * a restart, and outlive restarts. keep_alive_s is how long an idle copy stays loaded on the agents (0: until
 * evicted), over the model's config.json keep_alive_s and the agents' --keep-alive (null: theirs again); the
 * agents hear it at once, and those that join later when they do. Keys not named are left as they are. The model's config.json may set both
 * (`config` in the answer): the pool's defaults, which these override.
 */
export const adminPolicyRoutes = new Hono<{ Bindings: Env }>();

/** A keep-alive is a duration a timer can hold (setTimeout takes at most 2^31 - 1 ms). */
const MAX_KEEP_ALIVE_S = 2_000_000;

const PolicyBodySchema = z.strictObject({
  min_copies: z.int().nonnegative().optional(),
  max_copies: z.int().positive().nullable().optional(),
  keep_alive_s: z.number().nonnegative().max(MAX_KEEP_ALIVE_S).nullable().optional(),
});

adminPolicyRoutes.get("/admin/models/:model/policy", async (c) => {
  const model = parseModelName(c.req.param("model"));
  const pool = poolOf(c.req.raw);
  return c.json({ model, pool, ...unwrap(await modelPolicy(c.env, pool, model)) });
});

adminPolicyRoutes.put("/admin/models/:model/policy", async (c) => {
  const model = parseModelName(c.req.param("model"));
  const pool = poolOf(c.req.raw);
  const text = new TextDecoder().decode(await readRequestBody(c.req.raw, MAX_CONTROL_BODY_BYTES));
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw badInput("the policy must be a JSON object");
  }
  const parsed = PolicyBodySchema.safeParse(json);
  if (!parsed.success)
    throw badInput(`invalid policy: ${z.prettifyError(parsed.error).replaceAll("\n", " ")}`);
  const current = unwrap(await modelPolicy(c.env, pool, model));
  const maxCopies = parsed.data.max_copies === undefined ? current.max_copies : parsed.data.max_copies;
  const minCopies = parsed.data.min_copies ?? current.min_copies;
  if (maxCopies !== null && minCopies > maxCopies)
    throw badInput(`min_copies ${minCopies} exceeds the model's max_copies ${maxCopies}`);
  unwrap(await setModelPolicy(c.env, pool, model, parsed.data));
  return c.json({ model, pool, ...unwrap(await modelPolicy(c.env, pool, model)) });
});

adminPolicyRoutes.delete("/admin/models/:model/policy", async (c) => {
  const model = parseModelName(c.req.param("model"));
  const pool = poolOf(c.req.raw);
  unwrap(await clearModelPolicy(c.env, pool, model));
  return c.json({ model, pool, ...unwrap(await modelPolicy(c.env, pool, model)) });
});
