import { z } from "zod";
import { modelKey } from "../../shared/model-names.ts";

const OffersSchema = z.array(z.object({ name: z.string(), version: z.string(), bytes: z.number() }));
export type ModelOffer = z.infer<typeof OffersSchema>[number];

const storageKey = (agentId: string) => `offers:${agentId}`;

/**
 * The model versions each agent with a repository of its own can serve (its hello lists them), so the
 * registry knows which agents can load a model, and how big it is, without asking. Written once per
 * connection to storage, where it survives hibernation, and kept in memory once read.
 */
export class AgentOffers {
  readonly #kv: SyncKvStorage;
  readonly #cache = new Map<string, Map<string, ModelOffer>>();
  readonly #names = new Map<string, ReadonlySet<string>>();

  constructor(kv: SyncKvStorage) {
    this.#kv = kv;
  }

  save(agentId: string, offers: readonly ModelOffer[]): void {
    this.#kv.put(storageKey(agentId), offers);
    this.#cache.set(agentId, new Map(offers.map((offer) => [modelKey(offer), offer])));
    this.#names.delete(agentId);
  }

  /** The agent's offer of one version, if it has one. */
  find(agentId: string, name: string, version: string): ModelOffer | undefined {
    return this.#of(agentId).get(modelKey({ name, version }));
  }

  all(agentId: string): ModelOffer[] {
    return [...this.#of(agentId).values()];
  }

  /** The names of the models the agent offers. */
  names(agentId: string): ReadonlySet<string> {
    let names = this.#names.get(agentId);
    if (names === undefined) {
      names = new Set(this.all(agentId).map((offer) => offer.name));
      this.#names.set(agentId, names);
    }
    return names;
  }

  forget(agentId: string): void {
    this.#kv.delete(storageKey(agentId));
    this.#cache.delete(agentId);
    this.#names.delete(agentId);
  }

  #of(agentId: string): Map<string, ModelOffer> {
    let offers = this.#cache.get(agentId);
    if (offers === undefined) {
      const parsed = OffersSchema.safeParse(this.#kv.get(storageKey(agentId)));
      offers = new Map(parsed.success ? parsed.data.map((offer) => [modelKey(offer), offer]) : []);
      this.#cache.set(agentId, offers);
    }
    return offers;
  }
}
