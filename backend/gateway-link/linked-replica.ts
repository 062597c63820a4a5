import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import type { InferCall, InferOutcome } from "../replica/replica.ts";

/** What the gateway link needs of a replica: run a request on it, and know its state as it changes. */
export interface LinkedReplica {
  readonly id: string;
  infer(call: InferCall): Promise<InferOutcome>;
  state(): ReplicaState;
  /** The state as sent to the gateway, its timings only what the gateway may not have (ReplicaState.timings). */
  reportState(): ReplicaState;
  onChange(listener: (state: ReplicaState) => void): () => void;
}
