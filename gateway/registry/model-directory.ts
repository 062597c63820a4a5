import { SwitchyardError } from "../../shared/errors.ts";
import { declaredBatching, defaultModelConfig } from "../../shared/model-config.ts";
import { type CatalogEntry, catalog, type ModelView, viewModel } from "../../shared/models/model-catalog.ts";
import { replicaFits, whyNotServable } from "../../shared/models/servability.ts";
import { type ModelStatistics, withIdleVersions } from "../../shared/oip/statistics.ts";
import { type TritonModelConfig, tritonModelConfig } from "../../shared/oip/triton-model-config.ts";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";
import type { ModelRef, ReplicaState } from "../../shared/protocol/replica-state.ts";
import type { StoredVersion } from "../models/model-store.ts";
import { getModelConfig, getSignature, listModelVersions, saveSignature } from "../models/model-store.ts";
import type { AgentLink } from "./agent-link.ts";
import type { AgentOffers } from "./agent-offers.ts";
import type { AgentQueries } from "./agent-queries.ts";
import type { SignatureStore } from "./signature-store.ts";

export interface ModelDirectoryOptions {
  bucket: R2Bucket;
  /** Signatures agents reported (in their hellos and state frames, or answering a describe). */
  signatures: SignatureStore;
  offers: AgentOffers;
  /** Every connected agent. */
  agents: () => AgentLink[];
  queries: AgentQueries;
  log: (event: string, fields: Record<string, unknown>) => void;
}

/** A version as the directory found it: the view, and where it lives. */
export interface FoundModel extends ModelView {
  /** The version in the gateway's R2 repository, if it is there. */
  stored: StoredVersion | undefined;
}

/** One replica of a connected agent. */
export interface AgentReplica {
  link: AgentLink;
  replica: ReplicaState;
}

/**
 * What the pool knows about its models, for the OIP endpoints the gateway answers itself: which versions
 * exist, their inputs and outputs, readiness, configuration and statistics. It looks in three places: the
 * gateway's R2 repository, the agents' reports (their own repositories, their replicas, the signatures they
 * sent), and, where neither knows enough, an agent, asked over its websocket.
 *
 * Readiness follows KServe ModelMesh for lazily loaded models: a version is ready when a request for it
 * would be served now, loaded or not: a serving agent can load it (it is in the repository that agent
 * takes its models from), it fits one of that agent's replicas, and its last load there did not fail.
 */
export class ModelDirectory {
  readonly #options: ModelDirectoryOptions;

  constructor(options: ModelDirectoryOptions) {
    this.#options = options;
  }

  async catalog(): Promise<CatalogEntry[]> {
    return (await this.#survey()).entries;
  }

  /** The version asked for (the highest when none is); 404 when nobody knows it. */
  async find(name: string, version: string | undefined): Promise<FoundModel> {
    const { entries, stored } = await this.#survey();
    const view = viewModel(entries, name, version);
    return { ...view, stored: stored.find((entry) => entry.name === name && entry.version === view.version) };
  }

  /**
   * Inputs, outputs and declared batching: as agents reported them, else from R2 (kept at upload), else
   * from an agent asked to describe the model (and kept, in R2 too for a stored version).
   */
  async signature(model: FoundModel): Promise<ModelSignature> {
    const reported = this.#options.signatures.find(model.name, model.version);
    if (reported !== undefined) return reported;
    if (model.stored !== undefined) {
      const graph = await getSignature(this.#options.bucket, model.name, model.version);
      if (graph !== undefined) {
        const config =
          (await getModelConfig(this.#options.bucket, model.name, model.version)) ?? defaultModelConfig();
        return { name: model.name, version: model.version, ...graph, batching: declaredBatching(config) };
      }
    }
    const [asked] = this.loaders(model);
    if (asked === undefined) {
      throw new SwitchyardError(
        "unavailable",
        `the inputs and outputs of '${model.name}' version ${model.version} are not known yet, and no connected agent can describe it`,
        { retryAfterSeconds: 5 },
      );
    }
    const signature = await this.#options.queries.ask(asked, {
      kind: "describe",
      model: model.name,
      version: model.version,
    });
    this.#options.signatures.save([signature]);
    if (model.stored !== undefined)
      await saveSignature(this.#options.bucket, model.name, model.version, signature);
    return signature;
  }

  /** Serving agents (connected, not draining) that can load the version, those holding it first. */
  loaders(model: FoundModel): AgentLink[] {
    const serving = this.#options.agents().filter((link) => !link.record.draining);
    const able = serving.filter((link) => this.#canLoad(link, model) || holds(link.record.replicas, model));
    return able.sort(
      (a, b) => Number(holds(b.record.replicas, model)) - Number(holds(a.record.replicas, model)),
    );
  }

  /** Replicas of the loaders where the version fits (memory and model count). */
  replicasFor(model: FoundModel): AgentReplica[] {
    return this.loaders(model).flatMap((link) => {
      const bytes = this.bytesOf(link, model);
      return link.record.replicas
        .filter((replica) => replicaFits(replica, bytes))
        .map((replica) => ({ link, replica }));
    });
  }

  /** Whether a request for the version would be served now, and if not, why. */
  readiness(model: FoundModel): { ready: boolean; reason: string } {
    const serving = this.#options.agents().filter((link) => !link.record.draining);
    if (serving.some((link) => holds(link.record.replicas, model))) return { ready: true, reason: "" };
    if (serving.length === 0) return { ready: false, reason: "no agent is connected" };
    const loaders = this.loaders(model);
    const [first] = loaders;
    if (first === undefined)
      return {
        ready: false,
        reason: "no connected agent can load it (it is not in the repository they take models from)",
      };
    const why = whyNotServable(
      { ...model, bytes: this.bytesOf(first, model) },
      loaders.flatMap((link) => link.record.replicas),
    );
    return { ready: why === undefined, reason: why ?? "" };
  }

  /** Triton's model configuration; instance_group lists the replicas that can serve it. */
  async config(model: FoundModel): Promise<TritonModelConfig> {
    const signature = await this.signature(model);
    const devices = this.replicasFor(model).map(({ replica }) => replica.device);
    return tritonModelConfig({ ...signature, devices });
  }

  /**
   * The statistics of every serving agent, summed per version (all models, one, or one version), with a
   * zeroed record for each version the pool knows that never ran (as Triton answers). An agent that does not
   * answer in time is left out rather than failing the whole answer.
   */
  async statistics(name?: string, version?: string): Promise<ModelStatistics[]> {
    const known = (await this.catalog()).filter(
      (entry) =>
        (name === undefined || entry.name === name) && (version === undefined || entry.version === version),
    );
    const serving = this.#options.agents().filter((link) => !link.record.draining);
    const answers = await Promise.allSettled(
      serving.map((link) =>
        this.#options.queries.ask(link, {
          kind: "stats",
          ...(name === undefined ? {} : { model: name }),
          ...(version === undefined ? {} : { version }),
        }),
      ),
    );
    const records: ModelStatistics[] = [];
    answers.forEach((answer, index) => {
      if (answer.status === "fulfilled") records.push(...answer.value);
      else
        this.#options.log("statistics-missing", {
          agent: serving[index]?.record.id,
          error: String(answer.reason),
        });
    });
    return withIdleVersions(records, known);
  }

  /** R2's versions, the agents' own repositories and their replicas, as one catalog. */
  async #survey(): Promise<{ entries: CatalogEntry[]; stored: StoredVersion[] }> {
    const stored = (await listModelVersions(this.#options.bucket)).filter(
      (entry) => entry.files["model.onnx"] !== undefined,
    );
    const agents = this.#options.agents();
    const offered: ModelRef[] = agents
      .filter((link) => link.record.models === "own")
      .flatMap((link) => this.#options.offers.all(link.record.id));
    const replicas = agents.flatMap((link) => link.record.replicas);
    return { entries: catalog([...stored, ...offered], replicas), stored };
  }

  #canLoad(link: AgentLink, model: FoundModel): boolean {
    if (link.record.models === "gateway") return model.stored !== undefined;
    return this.#options.offers.find(link.record.id, model.name, model.version) !== undefined;
  }

  /** The size of model.onnx as R2 or the agent's repository knows it. */
  bytesOf(link: AgentLink, model: FoundModel): number | undefined {
    if (link.record.models === "gateway") return model.stored?.files["model.onnx"]?.size;
    return this.#options.offers.find(link.record.id, model.name, model.version)?.bytes;
  }
}

function holds(replicas: readonly ReplicaState[], model: ModelRef): boolean {
  return replicas.some((replica) =>
    replica.loaded.some((loaded) => loaded.name === model.name && loaded.version === model.version),
  );
}
