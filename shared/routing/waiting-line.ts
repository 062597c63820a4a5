import type { QueuedView } from "./types.ts";

/**
 * The dispatcher's queue: oldest first, and indexed by model so that policies find a model's waiting
 * requests without scanning the whole line (a freed slot asks "anything for the models I hold?" at every
 * answer, and the line holds up to the gateway's QUEUE_LIMIT). Requests marked `background` stand behind
 * all the others (oldest first among themselves), in the order lineOrder gives: wherever a policy takes the
 * oldest first, from this line or by lineOrder across models, a request that yields goes after the others
 * (a policy's affinity, taking a held model's request first, still comes before age).
 */
export class WaitingLine<T extends QueuedView> {
  readonly #items: T[] = [];
  readonly #byModel = new Map<string, T[]>();

  get items(): readonly T[] {
    return this.#items;
  }

  /** Per model, its waiting requests oldest first; models in no particular order. */
  get byModel(): ReadonlyMap<string, readonly T[]> {
    return this.#byModel;
  }

  get length(): number {
    return this.#items.length;
  }

  push(item: T): void {
    insertInOrder(this.#items, item);
    const forModel = this.#byModel.get(item.request.model);
    if (forModel === undefined) this.#byModel.set(item.request.model, [item]);
    else insertInOrder(forModel, item);
  }

  removeAt(index: number): T | undefined {
    // Not Array.splice's meaning of a negative index (from the end): an index that is not one is nothing.
    if (!Number.isInteger(index) || index < 0) return undefined;
    const [item] = this.#items.splice(index, 1);
    if (item === undefined) return undefined;
    const forModel = this.#byModel.get(item.request.model);
    if (forModel !== undefined) {
      const at = forModel.indexOf(item);
      if (at >= 0) forModel.splice(at, 1);
      if (forModel.length === 0) this.#byModel.delete(item.request.model);
    }
    return item;
  }
}

/**
 * The line's order, for policies that compare waiting requests of different models (each model's own are
 * in line order already): one that does not yield before one that does, then the older first.
 */
export function lineOrder(a: QueuedView, b: QueuedView): number {
  const yields = (view: QueuedView) => (view.request.background === true ? 1 : 0);
  return yields(a) - yields(b) || a.enqueuedAt - b.enqueuedAt;
}

/**
 * Puts `item` where lineOrder says, from the end: a new request usually goes last, and one that does not
 * yield steps back past the background requests at the line's end. Ties keep their arrival order.
 */
function insertInOrder<T extends QueuedView>(line: T[], item: T): void {
  let at = line.length;
  while (at > 0 && lineOrder(item, line[at - 1] as T) < 0) at -= 1;
  line.splice(at, 0, item);
}
