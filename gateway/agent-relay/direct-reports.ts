import { DIRECT_PERMIT_MS } from "../../shared/routing/direct-hits.ts";
import type {
  AdoptAnswer,
  Decision,
  DirectEntry,
  DirectRun,
  DirectSettled,
  RunReport,
} from "../pool-calls.ts";

/**
 * How long a running direct hit may go untold to its registry: how late the registry's books may show its
 * slot taken (meanwhile the registry may grant that slot once more, and the agent queues the extra run for
 * at most what is left of the direct hit's run); as old as the agents' coalesced state frames may be
 * (backend/gateway-link/state-reporter.ts).
 */
export const DIRECT_ADOPT_WITHIN_MS = 50;
/**
 * How long a direct hit that already ended may go untold: nothing is held for it any more, so only what the
 * registry counts waits (metrics, demand, the retry budget) and the permit's renewal, which it must reach
 * well within the permit's life.
 */
export const DIRECT_REPORT_WITHIN_MS = 1_000;
/** A batch this long goes at once: the call's size stays small whatever the rate. */
export const DIRECT_REPORT_MAX_ENTRIES = 64;

if (DIRECT_REPORT_WITHIN_MS * 2 > DIRECT_PERMIT_MS) {
  throw new Error("a permit must outlive two report intervals, or steady direct hits would lose it");
}

interface Pending {
  entry: DirectEntry;
  /** When it must have left: its start + DIRECT_ADOPT_WITHIN_MS, or once ended, its end + DIRECT_REPORT_WITHIN_MS. */
  dueAt: number;
  adopted: (answer: AdoptAnswer) => void;
  released?: (decision: Decision) => void;
}

export interface DirectReportsOptions {
  /** One call to the registry; expected to answer every entry, in order, and never to throw. */
  settle: (entries: DirectEntry[]) => Promise<DirectSettled[]>;
  adoptWithinMs?: number;
  reportWithinMs?: number;
  maxEntries?: number;
  now?: () => number;
}

/**
 * What an agent's relay tells one registry about its direct hits, batched: one call (`settleDirect`) carries
 * each hit's adopt, and its release too when it ended well before the call left. A call leaves when a hit
 * still running reaches DIRECT_ADOPT_WITHIN_MS untold, or an ended one DIRECT_REPORT_WITHIN_MS, or the batch
 * is full, whichever comes first; so a model served by short direct hits costs its registry about one event a
 * second per relay, where an adopt and a release each were one per request (at one request at a time on one
 * local workerd, those two calls cost about 2.9 ms of CPU per request, as much as the rest of the gateway).
 * A release whose adopt left already goes on its own (the caller sends it). A failed run's release is not
 * batched: the Worker waits for its decision, so the batch holding its adopt leaves at once (`flush`).
 */
export class DirectReports {
  readonly #settle: DirectReportsOptions["settle"];
  readonly #adoptWithinMs: number;
  readonly #reportWithinMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  #pending: Pending[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Number.POSITIVE_INFINITY;

  constructor(options: DirectReportsOptions) {
    this.#settle = options.settle;
    this.#adoptWithinMs = options.adoptWithinMs ?? DIRECT_ADOPT_WITHIN_MS;
    this.#reportWithinMs = options.reportWithinMs ?? DIRECT_REPORT_WITHIN_MS;
    this.#maxEntries = options.maxEntries ?? DIRECT_REPORT_MAX_ENTRIES;
    this.#now = options.now ?? Date.now;
  }

  /** A direct hit went out: the registry takes its slot within DIRECT_ADOPT_WITHIN_MS; its answer then. */
  adopt(run: DirectRun): Promise<AdoptAnswer> {
    return new Promise((adopted) => {
      this.#pending.push({ entry: { adopt: run }, dueAt: this.#now() + this.#adoptWithinMs, adopted });
      if (this.#pending.length >= this.#maxEntries) this.flush();
      else this.#arm();
    });
  }

  /**
   * A direct hit ended well: its release joins its adopt when that has not left yet, the pair may then wait
   * up to DIRECT_REPORT_WITHIN_MS, and the registry's decision comes with the batch; undefined when the adopt
   * left already (the caller releases it itself).
   */
  release(report: RunReport): Promise<Decision> | undefined {
    const pending = this.#pending.find(({ entry }) => entry.adopt.ticket === report.ticket);
    if (pending === undefined || pending.released !== undefined) return undefined;
    return new Promise((released) => {
      pending.entry.release = report;
      pending.released = released;
      pending.dueAt = this.#now() + this.#reportWithinMs;
      // The timer, armed for its adopt, finds the later time due when it fires.
    });
  }

  /** Sends what is waiting now (a failed run's release needs its adopt in the registry's books first). */
  flush(): void {
    this.#disarm();
    const batch = this.#pending;
    if (batch.length === 0) return;
    this.#pending = [];
    const answered = this.#settle(batch.map(({ entry }) => entry)).catch((): DirectSettled[] => []);
    void answered.then((settled) => {
      // Unanswered (a bug's path): nothing was taken there, and no permit comes of it.
      batch.forEach((pending, index) => {
        const answer = settled[index];
        pending.adopted(answer?.adopt ?? "refused");
        pending.released?.(answer?.decision ?? { again: false, refusal: "the registry did not answer" });
      });
    });
  }

  /** The timer, for the earliest time an entry is due (earlier than one armed already). */
  #arm(): void {
    const dueAt = Math.min(...this.#pending.map((pending) => pending.dueAt));
    if (dueAt >= this.#timerAt) return;
    this.#disarm();
    this.#timerAt = dueAt;
    this.#timer = setTimeout(() => this.#due(), Math.max(0, dueAt - this.#now()));
  }

  #disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
  }

  /** The timer fired: the batch leaves if an entry is due, else the timer waits for the next one. */
  #due(): void {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    if (this.#pending.some((pending) => pending.dueAt <= this.#now())) this.flush();
    else if (this.#pending.length > 0) this.#arm();
  }
}
