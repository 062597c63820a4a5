import { dispatchTo, oldestFirst, unavailable } from "./decisions.ts";
import { twoAtRandom } from "./random-choice.ts";
import { hasFreeSlot, usable } from "./replica-facts.ts";
import type { RoutingPolicy } from "./types.ts";

/**
 * Power of two choices (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing"; the default
 * of Ray Serve's router without multiplexing): sample two replicas, send the request to the one with fewer
 * requests in flight. Blind to models. When the lighter of the two is full, so is the other: the request
 * waits, and the first slot to free takes the oldest.
 */
export const leastLoadedPolicy: RoutingPolicy = {
  name: "least-loaded",

  route(request, { replicas }, context) {
    const serving = replicas.filter(usable);
    if (serving.length === 0) return unavailable(replicas);
    const [first, second] = twoAtRandom(serving, context);
    const lighter = second !== undefined && second.inFlight < (first?.inFlight ?? Infinity) ? second : first;
    return lighter !== undefined && hasFreeSlot(lighter) ? dispatchTo(lighter, request) : { kind: "queue" };
  },

  pickQueued: (replica, { queue }) => oldestFirst(replica, queue.length),
};
