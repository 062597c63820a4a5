import type { InferHandler } from "../../../backend/gateway-link/infer-handler.ts";
import type { LinkedReplica } from "../../../backend/gateway-link/linked-replica.ts";
import type { InferCall } from "../../../backend/replica/replica.ts";
import type { OutputClasses } from "../../../shared/oip/classification.ts";
import type { ReplicaState } from "../../../shared/protocol/replica-state.ts";
import { replicaState } from "../../support/replica-state.ts";

/**
 * The agent's gateway-link tests' replica "0": an identity model that returns its inputs as its outputs, so
 * whatever a frame decodes comes back in its result frame. `seen` hears each call.
 */
export function identityReplica(
  options: { state?: ReplicaState; classes?: OutputClasses; seen?: (call: InferCall) => void } = {},
): LinkedReplica {
  const state = options.state ?? replicaState({ maxConcurrency: 1 });
  return {
    id: "0",
    infer: async (call) => {
      options.seen?.(call);
      return {
        model: { name: call.model, version: "1" },
        outputs: call.inputs,
        cache: "hit",
        timings: { queueMs: 0, loadMs: 0, inferMs: 0, sessionMs: 0 },
        classes: options.classes ?? { batched: false, labels: new Map() },
      };
    },
    state: () => state,
    resultState: () => state,
    frameState: () => state,
    onChange: () => () => {},
  };
}

/** The handler's options around `replica`: what it sends goes to `sent`, its log nowhere. */
export function handlerOptions(replica: LinkedReplica, sent: (Uint8Array | string)[]) {
  return {
    replicas: new Map([["0", replica]]),
    send: (out: Uint8Array | string) => sent.push(out),
    log: () => {},
  } satisfies ConstructorParameters<typeof InferHandler>[0];
}
