interface Scheduled {
  at: number;
  /** Ties in time run in scheduling order, so a run never depends on the heap's internals. */
  seq: number;
  run: () => void;
}

/** The simulator's agenda: a binary min-heap of callbacks by virtual time. */
export class EventQueue {
  readonly #heap: Scheduled[] = [];
  #seq = 0;

  get size(): number {
    return this.#heap.length;
  }

  schedule(at: number, run: () => void): void {
    const item = { at, seq: this.#seq++, run };
    const heap = this.#heap;
    heap.push(item);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      const above = heap[parent] as Scheduled;
      if (!before(item, above)) break;
      heap[index] = above;
      index = parent;
    }
    heap[index] = item;
  }

  /** Takes the earliest event out. */
  pop(): Scheduled | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    let index = 0;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child =
        right < heap.length && before(heap[right] as Scheduled, heap[left] as Scheduled) ? right : left;
      const smaller = heap[child] as Scheduled;
      if (!before(smaller, last)) break;
      heap[index] = smaller;
      index = child;
    }
    heap[index] = last;
    return top;
  }
}

const before = (a: Scheduled, b: Scheduled) => a.at < b.at || (a.at === b.at && a.seq < b.seq);
