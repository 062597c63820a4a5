import { z } from "zod";
import { SwitchyardError } from "../../shared/errors.ts";
import { modelKey } from "../../shared/model-names.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import { placementOrder } from "../../shared/routing/placement.ts";
import { type AgentLink, replicaAddress } from "./agent-link.ts";
import { type AgentQueries, LOAD_TIMEOUT_MS } from "./agent-queries.ts";
import type { AgentReplica, FoundModel, ModelDirectory } from "./model-directory.ts";
import { SerialTask } from "./serial-task.ts";

const PinSchema = z.object({ name: z.string(), version: z.string(), copies: z.int().positive() });
export type Pin = z.infer<typeof PinSchema>;

const PREFIX = "pin:";
/**
 * A departed holder's pinned copies are placed again elsewhere this long after it left, at most (sooner when
 * AGENT_GRACE_SECONDS is shorter): min_copies promises warm copies within seconds; an agent that comes back
 * later finds its copy extra and unpinned (#trimExtra), one load spent.
 */
export const PIN_REPLACE_AFTER_MS = 5_000;
/** When copies a departed agent held are to be placed again (epoch ms); kept so it outlives eviction. */
const REPLACE_AT = "pins-replace-at";

/**
 * The pins model control made (OIP `load`), in the registry's storage: they outlive restarts and agents.
 * Read once, then kept in memory beside storage: the registry asks for them whenever it arms its alarm,
 * which is on every request, and listing storage each time cost more than routing the request.
 */
export class PinStore {
  readonly #kv: SyncKvStorage;
  readonly #pins = new Map<string, Pin>();
  #replaceAt: number | undefined;

  constructor(kv: SyncKvStorage) {
    this.#kv = kv;
    for (const [, value] of kv.list({ prefix: PREFIX })) {
      const parsed = PinSchema.safeParse(value);
      if (parsed.success) this.#pins.set(parsed.data.name, parsed.data);
    }
    const at = kv.get(REPLACE_AT);
    this.#replaceAt = typeof at === "number" ? at : undefined;
  }

  get(name: string): Pin | undefined {
    const pin = this.#pins.get(name);
    return pin === undefined ? undefined : { ...pin };
  }

  set(pin: Pin): void {
    this.#kv.put(`${PREFIX}${pin.name}`, pin);
    this.#pins.set(pin.name, { ...pin });
  }

  delete(name: string): void {
    this.#kv.delete(`${PREFIX}${name}`);
    this.#pins.delete(name);
  }

  replaceAt(): number | undefined {
    return this.#replaceAt;
  }

  setReplaceAt(at: number | undefined): void {
    if (at === undefined) this.#kv.delete(REPLACE_AT);
    else this.#kv.put(REPLACE_AT, at);
    this.#replaceAt = at;
  }

  get size(): number {
    return this.#pins.size;
  }

  all(): Pin[] {
    return [...this.#pins.values()].map((pin) => ({ ...pin }));
  }
}

export interface ModelPinsOptions {
  store: PinStore;
  directory: ModelDirectory;
  queries: AgentQueries;
  agents: () => AgentLink[];
  /**
   * How long a departed agent has to come back, pins and all, before its copies are placed elsewhere:
   * the agents' grace, at most PIN_REPLACE_AFTER_MS.
   */
  graceMs: number;
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
  readonly #reconciling: SerialTask;

  constructor(options: ModelPinsOptions) {
    this.#options = options;
    this.#reconciling = new SerialTask(
      () => this.#reconcileAll(),
      (error) => options.log("pin-reconcile-failed", { error: String(error) }),
    );
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
    const pin = { name: model.name, version: model.version, copies };
    this.#options.store.set(pin);
    const placed = await this.#place(model, copies);
    if (!samePin(this.#options.store.get(model.name), pin)) {
      // Unloaded (or loaded otherwise) while this load ran: what it placed is not wanted any more.
      await this.#release(placed);
      throw new SwitchyardError("unavailable", `'${model.name}' was unloaded while it was being loaded`);
    }
    if (placed.failure !== undefined) {
      // Nothing half-done stays: the copies this call placed are let go, the pin that was there before stays,
      // and the client hears why.
      if (previous === undefined) this.#options.store.delete(model.name);
      else this.#options.store.set(previous);
      await this.#release(placed);
      throw placed.failure;
    }
    if (previous !== undefined && previous.version !== model.version) await this.#releaseVersion(previous);
    await this.#trimExtra(pin);
  }

  /** Every pin: each model's version and copies. */
  all(): Pin[] {
    return this.#options.store.all();
  }

  /**
   * Sets the copies the model's pin asks for without waiting for them (a serving policy's min_copies): the
   * reconcile places them, as it places every pin, one reconcile at a time.
   */
  want(model: { name: string; version: string }, copies: number): void {
    const pin = { name: model.name, version: model.version, copies };
    if (samePin(this.#options.store.get(model.name), pin)) return;
    this.#options.store.set(pin);
    this.reconcile();
  }

  /** The copies the model's pin asks for (its min_copies); 0 when it has none. */
  copiesOf(name: string): number {
    return this.#options.store.get(name)?.copies ?? 0;
  }

  /** Drops the pin; its copies stay loaded as ordinary cache entries (min_copies set to 0). */
  async unpin(name: string): Promise<boolean> {
    const pin = this.#options.store.get(name);
    if (pin === undefined) return false;
    this.#options.store.delete(name);
    await this.#releaseVersion(pin);
    return true;
  }

  /** Drops the pin and unloads every version of the model from every agent; false when there was nothing. */
  async unload(name: string): Promise<boolean> {
    const pinned = this.#options.store.get(name) !== undefined;
    this.#options.store.delete(name);
    const agents = this.#options.agents();
    const answers = await Promise.allSettled(
      agents.map((link) => this.#options.queries.ask(link, { kind: "unload", model: name, evict: true })),
    );
    return pinned || answers.some((answer) => answer.status === "fulfilled" && answer.value.unloaded);
  }

  /**
   * An agent left. It may be back in a moment (a network blip) with its pinned copies still loaded: placing
   * them elsewhere at once would load them twice and unpin them again. So the copies are placed again when
   * `graceMs` ends (`due`, through the registry's alarm): a few seconds, not the agents' whole grace.
   */
  agentLeft(now: number): void {
    const at = now + this.#options.graceMs;
    const armed = this.#options.store.replaceAt();
    if (armed === undefined || at < armed) this.#options.store.setReplaceAt(at);
  }

  /** When `due` has work (the registry arms its alarm for it). */
  dueAt(): number | undefined {
    return this.#options.store.size === 0 ? undefined : this.#options.store.replaceAt();
  }

  /** The alarm fired: reconcile when a departed agent's grace has ended. */
  due(now: number): void {
    const at = this.#options.store.replaceAt();
    if (at === undefined || at > now) return;
    this.#options.store.setReplaceAt(undefined);
    this.reconcile();
  }

  /** Agents joined or started draining, or a departed one's grace ended: restore every pin's copies. */
  reconcile(): void {
    this.#reconciling.run();
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
      const placed = await this.#place(model, pin.copies);
      if (placed.failure !== undefined)
        this.#options.log("pin-placement-failed", { model: modelKey(pin), error: placed.failure.message });
      await this.#trimExtra(pin);
    }
  }

  /**
   * Loads pinned copies on as many more replicas as `copies` needs (placementOrder: holders first, then the
   * emptiest, only where it fits beside what is pinned there). Every load is waited for: what was placed,
   * and the first failure if any.
   */
  async #place(model: FoundModel, copies: number): Promise<Placed> {
    const placing = this.#placing.get(model.name) ?? new Set<string>();
    this.#placing.set(model.name, placing);
    const held = this.#holders(model).map(({ link, replica }) => replicaAddress(link.record.id, replica.id));
    const taken = new Set([...held, ...placing]);
    const missing = copies - taken.size;
    const placed: Placed = { model, copies: [] };
    if (missing <= 0) return placed;
    const candidates = this.#options.directory
      .replicasFor(model)
      .filter(({ link, replica }) => !taken.has(replicaAddress(link.record.id, replica.id)))
      .map((candidate) => ({
        ...candidate,
        state: candidate.replica,
        bytes: this.#options.directory.bytesOf(candidate.link, model),
      }));
    const chosen = placementOrder(candidates, model).slice(0, missing);
    const loads = await Promise.allSettled(
      chosen.map(async ({ link, replica }) => {
        const address = replicaAddress(link.record.id, replica.id);
        placing.add(address);
        try {
          const answer = await this.#options.queries.ask(
            link,
            { kind: "load", replica: replica.id, model: model.name, version: model.version, pin: true },
            LOAD_TIMEOUT_MS,
          );
          this.#options.applyState(link, answer.state);
          placed.copies.push({ link, replicaId: replica.id });
        } finally {
          placing.delete(address);
        }
      }),
    );
    const failed = loads.find((load) => load.status === "rejected");
    if (failed !== undefined) placed.failure = SwitchyardError.from(failed.reason);
    else if (chosen.length < missing) {
      placed.failure = new SwitchyardError(
        "unavailable",
        `only ${taken.size + chosen.length} of ${copies} copies of '${model.name}' fit beside what is pinned`,
        { retryAfterSeconds: 5 },
      );
    }
    return placed;
  }

  /**
   * More pinned copies than wanted (a holder came back): the extra ones become ordinary cache entries. The
   * pin is read again here: another caller may have changed it while this one placed copies.
   */
  async #trimExtra(placed: Pin): Promise<void> {
    const pin = this.#options.store.get(placed.name);
    if (pin === undefined || pin.version !== placed.version) return;
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
  async #releaseVersion(model: { name: string; version: string }): Promise<void> {
    await Promise.allSettled(
      this.#options.agents().map((link) =>
        this.#options.queries.ask(link, {
          kind: "unload",
          model: model.name,
          version: model.version,
          evict: false,
        }),
      ),
    );
  }

  /** Unpins the copies one placement loaded, and only those (others may belong to a pin still wanted). */
  async #release(placed: Placed): Promise<void> {
    await Promise.allSettled(
      placed.copies.map(({ link, replicaId }) =>
        this.#options.queries.ask(link, {
          kind: "unload",
          model: placed.model.name,
          version: placed.model.version,
          evict: false,
          replica: replicaId,
        }),
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

/** What one placement loaded, and why it fell short when it did. */
interface Placed {
  model: { name: string; version: string };
  copies: Array<{ link: AgentLink; replicaId: string }>;
  failure?: SwitchyardError;
}

const samePin = (a: Pin | undefined, b: Pin) =>
  a !== undefined && a.version === b.version && a.copies === b.copies;
