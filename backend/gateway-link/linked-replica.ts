import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import type { InferCall, InferOutcome } from "../replica/replica.ts";

/** What the gateway link needs of a replica: run a request on it, and know its state as it changes. */
export interface LinkedReplica {
  readonly id: string;
  infer(call: InferCall): Promise<InferOutcome>;
  state(): ReplicaState;
  /** The state a result or error frame carries, its timings only what the gateway may lack (ReplicaState.timings). */
  resultState(): ReplicaState;
  /** The state a state frame carries (`whole`: with every model's timings). */
  frameState(whole: boolean): ReplicaState;
  onChange(listener: (state: ReplicaState) => void): () => void;
}
