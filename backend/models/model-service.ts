import { compareModelVersions, highestModelVersion, modelKey } from "../../shared/model-names.ts";
import { type ModelStatistics, mostRecentStatistics, withIdleVersions } from "../../shared/oip/statistics.ts";
import {
  type AgentRepository,
  MAX_OFFERED_MODELS,
  MAX_STATISTICS_RECORDS,
} from "../../shared/protocol/frames.ts";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import type { Log } from "../log.ts";
import type { ReplicaPool } from "../pool/replica-pool.ts";
import type { ModelDescriber } from "./model-describer.ts";
import type { ModelRepository, RepositoryEntry } from "./repository.ts";

export interface Readiness {
  ready: boolean;
  /** Why not, when not ready. */
  reason: string;
}

/**
 * What the agent offers about its models beyond inference, the same to its standalone server and to the
 * gateway's queries: descriptions (no load), readiness, statistics, and model control (load and pin,
 * unload). One place, so the two fronts cannot answer differently.
 *
 * Readiness, as KServe ModelMesh defines it for lazily loaded models: a version is ready when a request for
 * it would be served now: it is in the repository, it fits some replica, and its last load did not fail on
 * every replica. Being loaded is not required (a request loads it); the repository index shows whether it is.
 */
export class ModelService {
  readonly #pool: ReplicaPool;
  readonly #repository: ModelRepository;
  readonly #describer: ModelDescriber;
  readonly #log: Log;

  constructor(options: {
    pool: ReplicaPool;
    repository: ModelRepository;
    describer: ModelDescriber;
    log: Log;
  }) {
    this.#pool = options.pool;
    this.#repository = options.repository;
    this.#describer = options.describer;
    this.#log = options.log;
  }

  /** Describes every model of a local repository (at start), so metadata needs no load; failures are logged. */
  async describeRepository(): Promise<void> {
    if (!this.#repository.local) return;
    for (const entry of await this.#repository.index()) {
      try {
        await this.#describer.describe(entry.name, entry.version);
      } catch (error) {
        this.#log("model cannot be described", {
          model: modelKey(entry),
          error: error instanceof Error ? error.message : String(error),
        });
      }
    }
  }

  describe(name: string, version?: string): Promise<ModelSignature> {
    return this.#describer.describe(name, version);
  }

  /** Whether the signature of this version is known (described, or loaded). */
  isDescribed(name: string, version: string): boolean {
    return this.#describer.isKnown(name, version);
  }

  /** The signatures known (described, or loaded) after the first `count` learned (ModelDescriber.knownFrom). */
  signaturesFrom(count: number): ModelSignature[] {
    return this.#describer.knownFrom(count);
  }

  /** Every model version the repository offers. */
  index(): Promise<RepositoryEntry[]> {
    return this.#repository.index();
  }

  /** The versions of `name` in the repository, ascending; 404 when there are none. */
  async versions(name: string): Promise<RepositoryEntry[]> {
    const versions = (await this.#repository.index()).filter((entry) => entry.name === name);
    if (versions.length === 0) await this.#repository.resolve(name); // throws the repository's 404
    return versions.sort((a, b) => compareModelVersions(a.version, b.version));
  }

  async readiness(name: string, version?: string): Promise<Readiness & { version: string }> {
    const versions = await this.versions(name);
    const chosen = version ?? highestModelVersion(versions.map((entry) => entry.version)) ?? "";
    const entry = versions.find((candidate) => candidate.version === chosen);
    if (entry === undefined) {
      await this.#repository.resolve(name, chosen); // throws the repository's 404 for the version
      return { version: chosen, ready: false, reason: "it is not in the repository" };
    }
    const loaded = this.#pool
      .states()
      .some((state) => state.loaded.some((model) => model.name === name && model.version === chosen));
    if (loaded) return { version: chosen, ready: true, reason: "" };
    if (this.#repository.local) {
      // A file that is not a model would fail its load: reading its graph's headers says so now.
      const failure = await this.#describer.describe(name, chosen).then(
        () => undefined,
        (error: unknown) => (error instanceof Error ? error.message : String(error)),
      );
      if (failure !== undefined) return { version: chosen, ready: false, reason: failure };
    }
    const why = this.#pool.whyNotServable(entry);
    return { version: chosen, ready: why === undefined, reason: why ?? "" };
  }

  /** Where this agent's models come from, as its hello tells the gateway. */
  async repositoryOffer(fromGateway: boolean): Promise<AgentRepository> {
    if (fromGateway) return { kind: "gateway" };
    const entries = await this.#repository.index();
    if (entries.length > MAX_OFFERED_MODELS) {
      this.#log("warning", {
        message: `the repository has ${entries.length} model versions; the gateway is told of the first ${MAX_OFFERED_MODELS}`,
      });
    }
    return {
      kind: "own",
      models: entries
        .slice(0, MAX_OFFERED_MODELS)
        .map(({ name, version, bytes }) => ({ name, version, bytes: bytes ?? 0 })),
    };
  }

  /**
   * The replicas' statistics (all models, one model, or one version), with a zeroed record for each version of
   * the repository that never ran, at most MAX_STATISTICS_RECORDS of them (the most recently used).
   */
  async statistics(name?: string, version?: string): Promise<ModelStatistics[]> {
    const versions = (await this.index()).filter(
      (entry) =>
        (name === undefined || entry.name === name) && (version === undefined || entry.version === version),
    );
    await this.#pool.lanesReported();
    const records = withIdleVersions(this.#pool.statistics(name, version), versions);
    return mostRecentStatistics(records, MAX_STATISTICS_RECORDS);
  }

  /**
   * Model control's load: `copies` replicas load the model now and keep it loaded (pinned) until an unload.
   * `replica` names the one replica to use (the gateway places copies itself).
   */
  async load(
    name: string,
    version: string | undefined,
    options: { copies?: number; pin: boolean; replica?: string },
  ): Promise<ModelSignature> {
    const signature =
      options.replica === undefined
        ? await this.#pool.load(name, version, { copies: options.copies ?? 1, pin: options.pin })
        : await this.#pool.loadOn(options.replica, name, version, { pin: options.pin });
    this.#describer.remember(signature);
    return signature;
  }

  /** Model control's unload: unpins the model (everywhere, or on one replica), and with `evict` unloads it too. */
  async unload(
    name: string,
    version: string | undefined,
    options: { evict: boolean; replica?: string },
  ): Promise<boolean> {
    if (options.evict) return this.#pool.unload(name, version, options.replica);
    return this.#pool.unpin(name, version, options.replica);
  }

  /** A model's keep-alive as the gateway's serving policy sets it, on every replica (null: its own again). */
  setKeepAlive(name: string, keepAliveMs: number | null): number {
    this.#pool.setKeepAlive(name, keepAliveMs ?? undefined);
    return this.#pool.replicas.length;
  }

  /** One replica's state now; 404 for a replica this agent does not have. */
  replicaState(replicaId: string): ReplicaState {
    return this.#pool.replica(replicaId).state();
  }
}
