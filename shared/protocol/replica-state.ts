import { z } from "zod";

/**
 * What a replica tells the world about itself: the agent's standalone server shows it, and the agent sends
 * it to the gateway with every result and after every change so the router decides on fresh facts.
 * Timings are running averages measured on this replica (milliseconds).
 */
export const ModelTimingsSchema = z.object({
  /** Average time to load the model into a session on this replica. */
  loadMs: z.number().nonnegative().optional(),
  /** Average time of one inference run. */
  inferMs: z.number().nonnegative().optional(),
  loads: z.number().int().nonnegative(),
  runs: z.number().int().nonnegative(),
});
export type ModelTimings = z.infer<typeof ModelTimingsSchema>;

export const LoadedModelSchema = z.object({
  name: z.string(),
  version: z.string(),
  bytes: z.number().nonnegative(),
  inFlight: z.number().int().nonnegative(),
  /** Milliseconds since the model was last used (relative, so clocks need not agree). */
  idleMs: z.number().nonnegative(),
  /**
   * False when the model's config.json says `"idempotent": false`: a request that may have started running
   * is then never run again elsewhere. Absent means true (added in protocol 1 without a version bump).
   */
  idempotent: z.boolean().optional(),
  /** Kept loaded by model control (an OIP `load`) until an `unload`: never evicted, never expires. */
  pinned: z.boolean(),
});
export type LoadedModel = z.infer<typeof LoadedModelSchema>;

export const ModelRefSchema = z.object({ name: z.string(), version: z.string() });
export type ModelRef = z.infer<typeof ModelRefSchema>;

export const ReplicaStateSchema = z.object({
  /** Stable within the agent: "0", "1", ... */
  id: z.string(),
  /**
   * The snapshot's place in this replica's order (higher is later). States travel on two sockets (a result's
   * on the data socket through the agent's relay, state frames on the control socket), so they can arrive out
   * of order: the registry drops a state older than one it has applied.
   */
  seq: z.number().int().nonnegative(),
  /** "cpu" or "cuda:<device id>". */
  device: z.string(),
  maxConcurrency: z.number().int().positive(),
  inFlight: z.number().int().nonnegative(),
  /** Requests accepted by the replica but waiting for a concurrency slot. */
  queued: z.number().int().nonnegative(),
  maxModels: z.number().positive(),
  memoryBudgetBytes: z.number().positive(),
  memoryUsedBytes: z.number().nonnegative(),
  loaded: z.array(LoadedModelSchema),
  loading: z.array(ModelRefSchema),
  /**
   * Keyed by "name:version". The agent's own reading of a replica (its standalone server, its hello) has every
   * model the replica measured. A state it sends with a result or in a state frame has only the models loaded
   * or loading there and those whose figures changed since its last state frame, so that a frame does not
   * grow with every model the replica ever ran (after 1,000 models each result frame carried about 80 KB of
   * them, which the relay parsed per request); a state frame carries them all again at least once a minute
   * of changes (backend/gateway-link/state-reporter.ts), so that what the gateway lost comes back. The
   * gateway keeps the rest (mergeTimings).
   */
  timings: z.record(z.string(), ModelTimingsSchema),
  /** Models whose last load failed here, with the reason (the router avoids them for a while). */
  failed: z.array(ModelRefSchema.extend({ reason: z.string() })),
});
export type ReplicaState = z.infer<typeof ReplicaStateSchema>;

/**
 * Takes into `known` (a replica's timings as the gateway holds them, updated in place) the entries of a state
 * the replica reported that are newer. A model's load and run counts only grow on one replica, so the entry
 * with more of them is the later, whatever order the states arrived in: they travel on two sockets, and a
 * state dropped as older (ReplicaState.seq) still brings the figures of a model evicted since. True when
 * anything was taken.
 */
export function mergeTimings(
  known: Record<string, ModelTimings>,
  reported: Readonly<Record<string, ModelTimings>>,
): boolean {
  let taken = false;
  for (const [key, timings] of Object.entries(reported)) {
    const held = known[key];
    if (held !== undefined && held.loads + held.runs >= timings.loads + timings.runs) continue;
    known[key] = timings;
    taken = true;
  }
  return taken;
}
