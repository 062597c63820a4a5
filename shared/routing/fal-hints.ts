import { dispatchTo, oldestFirst, unavailable } from "./decisions.ts";
import { pickAtRandom } from "./random-choice.ts";
import { hasFreeSlot, holds, usable } from "./replica-facts.ts";
import type { ReplicaView, RouteRequest, RoutingPolicy } from "./types.ts";

/**
 * fal's runner hints, as fal documents them ("Optimize routing behavior"): the caller's hint
 * (X-Fal-Runner-Hint) is matched exactly against the hints each runner reports; a free matching runner is
 * preferred, and "if no matching runner is available or all matching runners are busy, the request goes to
 * any available runner without waiting". Runners report the models they hold as hints (fal's own example
 * app returns its loaded models from provide_hints()), so a request without a hint matches on its model.
 * Among equals fal treats runners as interchangeable: one at random. With every runner busy the request
 * waits in fal's queue, first in first out.
 */
export const falHintsPolicy: RoutingPolicy = {
  name: "fal-hints",

  route(request, { replicas }, context) {
    const serving = replicas.filter(usable);
    if (serving.length === 0) return unavailable(replicas);
    const free = serving.filter(hasFreeSlot);
    const matching = free.filter((replica) => matchesRunnerHint(replica, request));
    const target = pickAtRandom(matching.length > 0 ? matching : free, context);
    return target === undefined ? { kind: "queue" } : dispatchTo(target, request);
  },

  pickQueued: (replica, { queue }) => oldestFirst(replica, queue.length),
};

function matchesRunnerHint(replica: ReplicaView, request: RouteRequest): boolean {
  const hint = request.hint ?? request.model;
  return replica.hints.includes(hint) || (request.hint === undefined && holds(replica, request));
}
