import { z } from "zod";
import { emptyHistogram, mergeInto, observe } from "./histogram.ts";

/**
 * Every counter and histogram of one pool, as plain JSON-able data: the Registry keeps it in memory,
 * writes it to its storage (pool-metrics.ts), and sends it to the Worker, which renders it. The functions
 * below are the only writers, so each event is counted in exactly one place.
 *
 * Labels are bounded: model names come from clients, so past MAX_MODEL_LABELS distinct names every new one
 * is counted as "_other" (no valid model name starts with "_"), and the stored JSON stays small.
 */
export const MAX_MODEL_LABELS = 200;
export const OTHER_MODELS = "_other";
/** The recent window the dashboard charts: slots of 10 s over the last 15 minutes. */
export const SLOT_MS = 10_000;
export const WINDOW_SLOTS = 90;

const HistogramSchema = z.object({ counts: z.array(z.number()), sum: z.number(), count: z.number() });
const PerModel = z.record(z.string(), z.number());

const SlotSchema = z.object({
  /** Epoch ms where the slot starts (a multiple of SLOT_MS). */
  start: z.number(),
  requests: z.number(),
  /** Answers with a 5xx status: the pool's failures, not the clients' mistakes. */
  errors: z.number(),
  hits: z.number(),
  misses: z.number(),
  /** Total latency of every answered request. */
  latency: HistogramSchema,
});
export type WindowSlot = z.infer<typeof SlotSchema>;

export const PoolCountersSchema = z.object({
  v: z.literal(1),
  /** Epoch ms when counting started; counters only grow from here (Prometheus sees no reset). */
  since: z.number(),
  /** Key `${model} ${status}` (model names have no spaces). */
  requests: PerModel,
  cacheHits: PerModel,
  cacheMisses: PerModel,
  loads: PerModel,
  loadFailures: PerModel,
  unloads: PerModel,
  retries: z.number(),
  /** Asks a registry shard passed on to the model's next shard, by reason (pool-calls.ts PASS_REASONS). */
  passes: PerModel.default({}),
  /** Requests an agent's relay took straight from the Worker (direct hits, shared/routing/direct-hits.ts). */
  directRuns: z.number().default(0),
  agentConnections: z.number(),
  queueSeconds: HistogramSchema,
  loadSeconds: HistogramSchema,
  inferenceSeconds: HistogramSchema,
  requestSeconds: HistogramSchema,
  window: z.array(SlotSchema),
});
export type PoolCounters = z.infer<typeof PoolCountersSchema>;

export function emptyCounters(now: number): PoolCounters {
  return {
    v: 1,
    since: now,
    requests: {},
    cacheHits: {},
    cacheMisses: {},
    loads: {},
    loadFailures: {},
    unloads: {},
    retries: 0,
    passes: {},
    directRuns: 0,
    agentConnections: 0,
    queueSeconds: emptyHistogram(),
    loadSeconds: emptyHistogram(),
    inferenceSeconds: emptyHistogram(),
    requestSeconds: emptyHistogram(),
    window: [],
  };
}

/** What one answered request contributes. Timings in milliseconds; `cache` and phases only on success. */
export interface RequestRecord {
  model: string;
  status: number;
  totalMs: number;
  cache?: "hit" | "miss";
  phases?: { queueMs: number; loadMs: number; inferMs: number };
}

export function countRequest(counters: PoolCounters, request: RequestRecord, now: number): void {
  const model = modelLabel(counters, request.model);
  bump(counters.requests, `${model} ${request.status}`);
  observe(counters.requestSeconds, request.totalMs / 1000);
  if (request.cache === "hit") bump(counters.cacheHits, model);
  if (request.cache === "miss") bump(counters.cacheMisses, model);
  if (request.phases !== undefined) {
    observe(counters.queueSeconds, request.phases.queueMs / 1000);
    observe(counters.inferenceSeconds, request.phases.inferMs / 1000);
    // Only requests that waited for a load say how long loads keep clients waiting.
    if (request.cache === "miss") observe(counters.loadSeconds, request.phases.loadMs / 1000);
  }
  const slot = currentSlot(counters, now);
  slot.requests += 1;
  if (request.status >= 500) slot.errors += 1;
  if (request.cache === "hit") slot.hits += 1;
  if (request.cache === "miss") slot.misses += 1;
  observe(slot.latency, request.totalMs / 1000);
}

export type ModelEvent = "loads" | "loadFailures" | "unloads";

export function countModelEvent(counters: PoolCounters, event: ModelEvent, model: string): void {
  bump(counters[event], modelLabel(counters, model));
}

/**
 * A pool's counters from its registry shards' (each counts what it decided): sums, histograms merged, the
 * window's slots added up by start. Counting starts at the earliest shard's start. One shard's counters come
 * back as they are.
 */
export function mergeCounters(shards: readonly PoolCounters[]): PoolCounters {
  const [first, ...others] = shards;
  if (first === undefined) return emptyCounters(Date.now());
  if (others.length === 0) return first;
  const merged = emptyCounters(Math.min(...shards.map((counters) => counters.since)));
  const slots = new Map<number, WindowSlot>();
  for (const counters of shards) {
    const keyed = [
      "requests",
      "cacheHits",
      "cacheMisses",
      "loads",
      "loadFailures",
      "unloads",
      "passes",
    ] as const;
    for (const key of keyed) {
      for (const [label, count] of Object.entries(counters[key]))
        merged[key][label] = (merged[key][label] ?? 0) + count;
    }
    merged.retries += counters.retries;
    merged.directRuns += counters.directRuns;
    merged.agentConnections += counters.agentConnections;
    for (const key of ["queueSeconds", "loadSeconds", "inferenceSeconds", "requestSeconds"] as const)
      mergeInto(merged[key], counters[key]);
    for (const slot of counters.window) {
      let into = slots.get(slot.start);
      if (into === undefined) {
        into = { start: slot.start, requests: 0, errors: 0, hits: 0, misses: 0, latency: emptyHistogram() };
        slots.set(slot.start, into);
      }
      into.requests += slot.requests;
      into.errors += slot.errors;
      into.hits += slot.hits;
      into.misses += slot.misses;
      mergeInto(into.latency, slot.latency);
    }
  }
  merged.window = [...slots.values()].sort((a, b) => a.start - b.start);
  return merged;
}

/** The recent window's slots, oldest first, without those older than the window. */
export function recentSlots(counters: PoolCounters, now: number): WindowSlot[] {
  const oldest = slotStart(now) - (WINDOW_SLOTS - 1) * SLOT_MS;
  return counters.window.filter((slot) => slot.start >= oldest);
}

/** Splits a `requests` key back into its labels. */
export function requestLabels(key: string): { model: string; status: string } {
  const space = key.lastIndexOf(" ");
  return { model: key.slice(0, space), status: key.slice(space + 1) };
}

const slotStart = (now: number) => Math.floor(now / SLOT_MS) * SLOT_MS;

function currentSlot(counters: PoolCounters, now: number): WindowSlot {
  const start = slotStart(now);
  const last = counters.window[counters.window.length - 1];
  if (last !== undefined && last.start === start) return last;
  const slot: WindowSlot = { start, requests: 0, errors: 0, hits: 0, misses: 0, latency: emptyHistogram() };
  counters.window = [...recentSlots(counters, now), slot];
  return slot;
}

function bump(counter: Record<string, number>, key: string): void {
  counter[key] = (counter[key] ?? 0) + 1;
}

/** Distinct model labels of each counters object, built once from its keys and kept up to date. */
const modelSets = new WeakMap<PoolCounters, Set<string>>();

function modelLabel(counters: PoolCounters, model: string): string {
  let models = modelSets.get(counters);
  if (models === undefined) {
    models = knownModels(counters);
    modelSets.set(counters, models);
  }
  if (models.has(model)) return model;
  if (models.size >= MAX_MODEL_LABELS) return OTHER_MODELS;
  models.add(model);
  return model;
}

function knownModels(counters: PoolCounters): Set<string> {
  const models = new Set<string>();
  for (const key of Object.keys(counters.requests)) models.add(requestLabels(key).model);
  for (const counter of [counters.cacheHits, counters.loads, counters.loadFailures, counters.unloads]) {
    for (const model of Object.keys(counter)) models.add(model);
  }
  models.delete(OTHER_MODELS);
  return models;
}
