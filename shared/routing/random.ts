import { dispatchTo, oldestFirst, unavailable } from "./decisions.ts";
import { pickAtRandom } from "./random-choice.ts";
import { hasFreeSlot, usable } from "./replica-facts.ts";
import type { RoutingPolicy } from "./types.ts";

/**
 * The floor every other policy must beat: any replica with a free slot, uniformly at random, blind to what
 * it holds. When every replica is full the request waits, and the first slot to free takes the oldest.
 */
export const randomPolicy: RoutingPolicy = {
  name: "random",

  route(request, { replicas }, context) {
    const serving = replicas.filter(usable);
    if (serving.length === 0) return unavailable(replicas);
    const target = pickAtRandom(serving.filter(hasFreeSlot), context);
    return target === undefined ? { kind: "queue" } : dispatchTo(target, request);
  },

  pickQueued: (replica, { queue }) => oldestFirst(replica, queue.length),
};
