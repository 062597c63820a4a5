import { z } from "zod";
import { SwitchyardError } from "../../shared/errors.ts";
import { modelKey } from "../../shared/model-names.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import { type AgentLink, replicaAddress } from "./agent-link.ts";
import { type AgentQueries, LOAD_TIMEOUT_MS } from "./agent-queries.ts";
import type { AgentReplica, FoundModel, ModelDirectory } from "./model-directory.ts";

const PinSchema = z.object({ name: z.string(), version: z.string(), copies: z.int().positive() });
export type Pin = z.infer<typeof PinSchema>;

const PREFIX = "pin:";

/** The pins model control made (OIP `load`), in the registry's storage: they outlive restarts and agents. */
export class PinStore {
  readonly #kv: SyncKvStorage;

  constructor(kv: SyncKvStorage) {
    this.#kv = kv;
  }

  get(name: string): Pin | undefined {
    const parsed = PinSchema.safeParse(this.#kv.get(`${PREFIX}${name}`));
    return parsed.success ? parsed.data : undefined;
  }

  set(pin: Pin): void {
    this.#kv.put(`${PREFIX}${pin.name}`, pin);
  }

  delete(name: string): void {
    this.#kv.delete(`${PREFIX}${name}`);
  }

  all(): Pin[] {
    const pins: Pin[] = [];
    for (const [, value] of this.#kv.list({ prefix: PREFIX })) {
      const parsed = PinSchema.safeParse(value);
      if (parsed.success) pins.push(parsed.data);
    }
    return pins;
  }
}

export interface ModelPinsOptions {
  store: PinStore;
  directory: ModelDirectory;
  queries: AgentQueries;
  agents: () => AgentLink[];
  /** A replica's state as a load's answer carries it: the copy counts at once, before its state frame. */
  applyState: (link: AgentLink, state: ReplicaState) => void;
  log: (event: string, fields: Record<string, unknown>) => void;
}

/**
 * Model control through the gateway. `load` pins a model version on a number of replicas (copies): they
 * load it now and keep it loaded, never evicted, until `unload`, which unloads every version everywhere.
 * The pin is the registry's, kept in storage: when a holder leaves or drains, or agents join, `reconcile`
 * places copies again elsewhere, and releases pins agents hold that the registry no longer wants (an unload
 * while an agent was away).
 */
export class ModelPins {
  readonly #options: ModelPinsOptions;
  /** Replica addresses a pinned load is on its way to, per model: counted as copies already. */
  readonly #placing = new Map<string, Set<string>>();
  #reconciling: Promise<void> | undefined;
  #again = false;

  constructor(options: ModelPinsOptions) {
    this.#options = options;
  }

  /** Pins `copies` of the version and resolves once they are loaded. */
  async load(model: FoundModel, copies: number): Promise<void> {
    const able = this.#options.directory.replicasFor(model);
    if (able.length === 0) {
      const { reason } = this.#options.directory.readiness(model);
      throw new SwitchyardError(
        "unavailable",
        `'${model.name}' version ${model.version} cannot be loaded now: ${reason}`,
        {
          retryAfterSeconds: 5,
        },
      );
    }
    if (copies > able.length) {
      throw new SwitchyardError(
        "bad_input",
        `${copies} copies of '${model.name}' asked for, but ${able.length} replica(s) can load it`,
      );
    }
    const previous = this.#options.store.get(model.name);
    this.#options.store.set({ name: model.name, version: model.version, copies });
    if (previous !== undefined && previous.version !== model.version)
      await this.#release(previous.name, previous.version);
    try {
      await this.#place(model, copies);
    } catch (error) {
      // Nothing half-done stays pinned: the client hears why, and may try again.
      this.#options.store.delete(model.name);
      await this.#release(model.name, model.version);
      throw error;
    }
    await this.#trimExtra({ name: model.name, version: model.version, copies });
  }

  /** Drops the pin and unloads every version of the model from every agent. */
  async unload(name: string): Promise<void> {
    this.#options.store.delete(name);
    const agents = this.#options.agents();
    await Promise.allSettled(
      agents.map((link) => this.#options.queries.ask(link, { kind: "unload", model: name, evict: true })),
    );
  }

  /** Agents joined, left or started draining: restore every pin's copies (in the background). */
  reconcile(): void {
    if (this.#reconciling !== undefined) {
      this.#again = true;
      return;
    }
    this.#reconciling = this.#reconcileAll()
      .catch((error: unknown) => this.#options.log("pin-reconcile-failed", { error: String(error) }))
      .finally(() => {
        this.#reconciling = undefined;
        if (this.#again) {
          this.#again = false;
          this.reconcile();
        }
      });
  }

  async #reconcileAll(): Promise<void> {
    const pins = this.#options.store.all();
    const wanted = new Map(pins.map((pin) => [pin.name, pin]));
    // Pins an agent holds that no pin of the registry's explains (an unload while it was away).
    for (const link of this.#options.agents()) {
      for (const replica of link.record.replicas) {
        for (const loaded of replica.loaded) {
          if (!loaded.pinned || wanted.get(loaded.name)?.version === loaded.version) continue;
          await this.#options.queries
            .ask(link, { kind: "unload", model: loaded.name, version: loaded.version, evict: false })
            .catch(() => undefined);
        }
      }
    }
    for (const pin of pins) {
      let model: FoundModel;
      try {
        model = await this.#options.directory.find(pin.name, pin.version);
      } catch {
        continue; // the model left the repository; its pin waits for it to come back
      }
      await this.#place(model, pin.copies).catch((error: unknown) =>
        this.#options.log("pin-placement-failed", {
          model: modelKey(pin),
          error: String(error),
        }),
      );
      await this.#trimExtra(pin);
    }
  }

  /** Loads pinned copies on as many more replicas as `copies` needs, holders first, then the emptiest. */
  async #place(model: FoundModel, copies: number): Promise<void> {
    const placing = this.#placing.get(model.name) ?? new Set<string>();
    this.#placing.set(model.name, placing);
    const held = this.#holders(model).map(({ link, replica }) => replicaAddress(link.record.id, replica.id));
    const taken = new Set([...held, ...placing]);
    const missing = copies - taken.size;
    if (missing <= 0) return;
    const candidates = this.#options.directory
      .replicasFor(model)
      .filter(({ link, replica }) => !taken.has(replicaAddress(link.record.id, replica.id)))
      .sort((a, b) => Number(loads(b, model)) - Number(loads(a, model)) || free(b.replica) - free(a.replica))
      .slice(0, missing);
    await Promise.all(
      candidates.map(async ({ link, replica }) => {
        const address = replicaAddress(link.record.id, replica.id);
        placing.add(address);
        try {
          const answer = await this.#options.queries.ask(
            link,
            { kind: "load", replica: replica.id, model: model.name, version: model.version, pin: true },
            LOAD_TIMEOUT_MS,
          );
          this.#options.applyState(link, answer.state);
        } finally {
          placing.delete(address);
        }
      }),
    );
  }

  /** More pinned copies than wanted (a holder came back): the extra ones become ordinary cache entries. */
  async #trimExtra(pin: Pin): Promise<void> {
    const extra = this.#holders(pin).slice(pin.copies);
    await Promise.allSettled(
      extra.map(({ link, replica }) =>
        this.#options.queries.ask(link, {
          kind: "unload",
          model: pin.name,
          version: pin.version,
          evict: false,
          replica: replica.id,
        }),
      ),
    );
  }

  /** Unpins a version everywhere (its copies stay loaded, as ordinary cache entries). */
  async #release(name: string, version: string): Promise<void> {
    await Promise.allSettled(
      this.#options
        .agents()
        .map((link) =>
          this.#options.queries.ask(link, { kind: "unload", model: name, version, evict: false }),
        ),
    );
  }

  /** Replicas of serving agents holding a pinned copy of the version. */
  #holders(model: { name: string; version: string }): AgentReplica[] {
    return this.#options
      .agents()
      .filter((link) => !link.record.draining)
      .flatMap((link) => link.record.replicas.map((replica) => ({ link, replica })))
      .filter(({ replica }) =>
        replica.loaded.some(
          (loaded) => loaded.pinned && loaded.name === model.name && loaded.version === model.version,
        ),
      );
  }
}

const free = (replica: ReplicaState) => replica.memoryBudgetBytes - replica.memoryUsedBytes;
const loads = ({ replica }: AgentReplica, model: { name: string; version: string }) =>
  replica.loaded.some((loaded) => loaded.name === model.name && loaded.version === model.version);
