import { shardOrder } from "../../shared/routing/shard-order.ts";
import type { PolicyDefaults } from "../models/model-store.ts";
import type { PolicyReport, ShardPolicy } from "../pool-calls.ts";
import type { AgentLink } from "./agent-link.ts";
import type { AgentQueries } from "./agent-queries.ts";
import type { ModelDirectory } from "./model-directory.ts";
import type { ModelPins } from "./model-pins.ts";
import { ModelPolicies } from "./model-policies.ts";
import { PolicyDefaultsCache } from "./policy-defaults.ts";
import { SerialTask } from "./serial-task.ts";

const SHARD_KEY = "shard";

export interface ServingPoliciesOptions {
  kv: SyncKvStorage;
  pins: ModelPins;
  queries: AgentQueries;
  directory: ModelDirectory;
  agents: () => AgentLink[];
  /** Every model's policy from config.json in the repository (model-store.ts listPolicyDefaults). */
  readDefaults: () => Promise<Map<string, PolicyDefaults>>;
  /** REGISTRY_SHARDS. */
  shards: number;
  log: (event: string, fields: Record<string, unknown>) => void;
}

/**
 * Each model's serving policy in this registry (issue 16's min_copies and max_copies): the admin's overrides
 * and config.json's defaults (model-policies.ts, policy-defaults.ts), max_copies for the scheduler, and the
 * pins that keep min_copies copies loaded (model-pins.ts). An override (the admin API, OIP load and unload)
 * takes effect in the registry that received it; a config.json default is pinned by the model's home shard
 * only (the first in its shard order), so that a sharded pool keeps min_copies copies, not K times as many.
 */
export class ServingPolicies {
  readonly #options: ServingPoliciesOptions;
  readonly #policies: ModelPolicies;
  readonly #defaults: PolicyDefaultsCache;
  /** This registry's shard, as the Worker said when an agent connected (undefined until one did). */
  #shard: number | undefined;
  readonly #applying: SerialTask;

  constructor(options: ServingPoliciesOptions) {
    this.#options = options;
    this.#defaults = new PolicyDefaultsCache({
      kv: options.kv,
      read: options.readDefaults,
      changed: () => this.apply(),
      log: options.log,
    });
    this.#policies = new ModelPolicies(options.kv, (model) => this.#defaults.get(model));
    this.#applying = new SerialTask(
      () => this.#applyAll(),
      (error) => options.log("policy-apply-failed", { error: String(error) }),
    );
    const shard = options.kv.get(SHARD_KEY);
    this.#shard = typeof shard === "number" ? shard : undefined;
  }

  /** The Worker placed an agent here, and said which shard of the pool this registry is. */
  placedIn(shard: number): void {
    if (shard === this.#shard) return;
    this.#shard = shard;
    this.#options.kv.put(SHARD_KEY, shard);
  }

  /** The model's max_copies for the scheduler; reads config.json's defaults again when they are old. */
  maxCopies(model: string, now: number): number | undefined {
    this.#defaults.refreshIfStale(now);
    return this.#policies.maxCopies(model);
  }

  async view(name: string): Promise<ShardPolicy> {
    await this.#options.directory.find(name, undefined);
    await this.#defaults.readOnce();
    const copies = this.#options
      .agents()
      .flatMap((link) => link.record.replicas)
      .filter((replica) => replica.loaded.some((model) => model.name === name)).length;
    const defaults = this.#defaults.get(name);
    return {
      minCopies: this.#options.pins.copiesOf(name),
      maxCopies: this.#policies.maxCopies(name) ?? null,
      copies,
      defaults: { minCopies: defaults?.minCopies ?? null, maxCopies: defaults?.maxCopies ?? null },
      keepAliveS: seconds(this.#policies.keepAliveMs(name)),
    };
  }

  /**
   * Sets how long idle copies of the model stay loaded on every agent here (null: back to its config.json's
   * keep_alive_s or the agent's --keep-alive), and tells the agents now; agents that join later hear it then.
   */
  async setKeepAlive(name: string, keepAliveMs: number | null): Promise<void> {
    await this.#options.directory.find(name, undefined);
    this.#policies.override(name, { keepAliveMs: keepAliveMs ?? undefined });
    await Promise.all(this.#options.agents().map((link) => this.#tellKeepAlive(link, name, keepAliveMs)));
  }

  /** An agent joined: it hears the keep-alives set here, and pins may be due. */
  joined(link: AgentLink): void {
    for (const model of this.#policies.overridden()) {
      const keepAliveMs = this.#policies.keepAliveMs(model);
      if (keepAliveMs !== undefined) void this.#tellKeepAlive(link, model, keepAliveMs);
    }
    this.apply();
  }

  async #tellKeepAlive(link: AgentLink, model: string, keepAliveMs: number | null): Promise<void> {
    try {
      await this.#options.queries.ask(link, { kind: "keep-alive", model, keepAliveMs });
    } catch (error) {
      this.#options.log("keep-alive-not-told", { agent: link.record.id, model, error: String(error) });
    }
  }

  async setMaxCopies(name: string, maxCopies: number | null): Promise<void> {
    await this.#options.directory.find(name, undefined);
    this.#policies.override(name, { maxCopies });
    this.#options.log("model-policy-set", { model: name, maxCopies });
  }

  /**
   * Pins `copies` of the version (the highest unless named), waiting until they are loaded, and keeps that as
   * the model's min_copies here; 0 unpins, leaving the copies loaded. A refused pin changes nothing.
   */
  async setMinCopies(name: string, version: string | undefined, copies: number): Promise<void> {
    // The override first, so that a policy pass meanwhile wants what this call wants.
    const before = this.#policies.minCopies(name);
    this.#policies.override(name, { minCopies: copies });
    try {
      if (copies === 0) await this.#options.pins.unpin(name);
      else await this.#options.pins.load(await this.#options.directory.find(name, version), copies);
    } catch (error) {
      if (before?.overridden === true) this.#policies.override(name, { minCopies: before.copies });
      else this.#policies.forgetMinCopies(name);
      throw error;
    }
  }

  /** OIP unload is about to unpin and unload the model everywhere: keep it so (over config.json's min_copies). */
  unloading(name: string): void {
    this.#policies.override(name, { minCopies: 0 });
  }

  /**
   * Drops the admin's overrides: config.json's policy applies again. Works for a model no longer in the
   * repository too (its overrides must be able to go).
   */
  async clear(name: string): Promise<void> {
    const keptAlive = this.#policies.keepAliveMs(name) !== undefined;
    this.#policies.clear(name);
    if (keptAlive)
      await Promise.all(this.#options.agents().map((link) => this.#tellKeepAlive(link, name, null)));
    // No pin is wanted here any more, unless config.json wants one and this is the model's home shard.
    if (this.#policies.minCopies(name) === undefined || !this.#isHome(name))
      await this.#options.pins.unpin(name);
    this.apply();
  }

  /** Each model with a policy here, for /metrics and the dashboard. */
  reports(): PolicyReport[] {
    const models = new Set([
      ...this.#options.pins.all().map((pin) => pin.name),
      ...this.#policies.overridden(),
      ...this.#defaults.models(),
    ]);
    // min_copies as wanted (an override, or config.json's in the home shard), else the pin as it stands.
    return [...models].map((model) => {
      const wanted = this.#policies.minCopies(model);
      const applies = wanted !== undefined && (wanted.overridden || this.#isHome(model));
      return {
        model,
        minCopies: applies ? wanted.copies : this.#options.pins.copiesOf(model),
        maxCopies: this.#policies.maxCopies(model) ?? null,
      };
    });
  }

  /**
   * Brings the pins in line with the policies (config.json's defaults changed, agents joined, overrides were
   * dropped): a model whose min_copies wants more pinned copies than it has gets them, one whose min_copies is
   * 0 is unpinned. Pins no policy speaks of (made before policies were kept) stay as they are.
   */
  apply(): void {
    this.#applying.run();
  }

  async #applyAll(): Promise<void> {
    const { pins, directory, log } = this.#options;
    if (this.#options.agents().length === 0) return;
    await this.#defaults.readOnce();
    const models = new Set([...this.#policies.overridden(), ...this.#defaults.models()]);
    for (const model of models) {
      const wanted = this.#policies.minCopies(model);
      if (wanted === undefined || (!wanted.overridden && !this.#isHome(model))) continue;
      const pinned = pins.copiesOf(model);
      if (wanted.copies === pinned) continue;
      if (wanted.copies === 0) {
        await pins.unpin(model);
        continue;
      }
      // The pin is set here and placed by the pins' one reconcile, never by two placements at once.
      try {
        pins.want(await directory.find(model, undefined), wanted.copies);
      } catch (error) {
        log("policy-pin-not-placed", { model, copies: wanted.copies, error: String(error) });
      }
    }
  }

  /** Whether config.json's defaults for the model are this registry's to pin: its home shard's. */
  #isHome(model: string): boolean {
    if (this.#options.shards === 1) return true;
    return this.#shard !== undefined && shardOrder(model, this.#options.shards)[0] === this.#shard;
  }
}

const seconds = (ms: number | undefined) => (ms === undefined ? null : ms / 1000);
