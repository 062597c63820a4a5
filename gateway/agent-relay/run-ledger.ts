import type { Deadline } from "../../shared/deadline.ts";
import type { RunOrder, RunOutcome } from "../pool-calls.ts";
import { ProtocolViolation } from "../registry/protocol-violation.ts";

/** A run the relay sent to its agent, waiting for the answer. */
export interface Run {
  readonly order: RunOrder;
  readonly deadline: Deadline;
  /** When the infer frame left (epoch ms, this object's clock). */
  readonly sentAt: number;
}

/** Which run an agent's answer belongs to (see `claim`). */
export type RunClaim =
  | { kind: "open"; run: Run; answer: (outcome: RunOutcome) => void }
  /** Its client was answered (504) and told the agent to stop; the agent's answer frees its slot. */
  | { kind: "abandoned"; run: Run }
  /** An answer after the abandoned run's grace ran out: its slot was freed already. */
  | { kind: "late" };

export interface RunLedgerOptions {
  /** A run's deadline passed while the agent still had it. */
  onDeadline: (run: Run) => void;
  /** An abandoned run's agent never answered within the grace: its slot is freed anyway. */
  onAbandonedExpired: (run: Run) => void;
  abandonedGraceMs: number;
  /** A run still open this long after it was sent: the registry is told it runs (so it keeps the slot). */
  onStillRunning: (run: Run) => void;
  claimAfterMs: number;
}

/** Ids of runs whose grace ran out, remembered so that their late answers are not protocol violations. */
const MAX_RETIRED = 1_024;

interface OpenRun {
  run: Run;
  answer: (outcome: RunOutcome) => void;
  timer: ReturnType<typeof setTimeout>;
  claimTimer: ReturnType<typeof setTimeout>;
}

/**
 * The runs an agent's relay has out at its agent: each open run until its answer, its deadline, or its
 * agent's end; each abandoned one (its client answered with 504) until the agent answers or the grace runs
 * out. Every run is answered exactly once, and the bytes held are counted. Ids are the registry's tickets.
 */
export class RunLedger {
  readonly #options: RunLedgerOptions;
  readonly #open = new Map<string, OpenRun>();
  readonly #abandoned = new Map<string, { run: Run; timer: ReturnType<typeof setTimeout> }>();
  readonly #retired = new Set<string>();
  #bytes = 0;

  constructor(options: RunLedgerOptions) {
    this.#options = options;
  }

  /** Bytes of request bodies held by open runs. */
  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#open.size + this.#abandoned.size;
  }

  /** The models of the runs out at one replica of the agent, one per run, abandoned ones included (the agent may still run them). */
  modelsAt(replicaId: string): string[] {
    const runs = [...this.#open.values(), ...this.#abandoned.values()].map((entry) => entry.run);
    return runs.filter((run) => run.order.replicaId === replicaId).map((run) => run.order.model);
  }

  has(ticket: string): boolean {
    return this.#open.has(ticket) || this.#abandoned.has(ticket);
  }

  open(run: Run, answer: (outcome: RunOutcome) => void): void {
    const timer = setTimeout(() => {
      if (this.#open.get(run.order.ticket)?.run === run) this.#options.onDeadline(run);
    }, run.deadline.remainingMs(run.sentAt));
    const claimTimer = setTimeout(() => {
      if (this.#open.get(run.order.ticket)?.run === run) this.#options.onStillRunning(run);
    }, this.#options.claimAfterMs);
    this.#open.set(run.order.ticket, { run, answer, timer, claimTimer });
    this.#bytes += run.order.body.byteLength;
  }

  /** Takes an open run out, to be answered by the caller; undefined when it is not open. */
  take(ticket: string): { run: Run; answer: (outcome: RunOutcome) => void } | undefined {
    const entry = this.#open.get(ticket);
    if (entry === undefined) return undefined;
    this.#open.delete(ticket);
    clearTimeout(entry.timer);
    clearTimeout(entry.claimTimer);
    this.#bytes -= entry.run.order.body.byteLength;
    return { run: entry.run, answer: entry.answer };
  }

  /** Every open and abandoned run, taken out (the agent is gone). */
  takeAll(): { open: { run: Run; answer: (outcome: RunOutcome) => void }[]; abandoned: Run[] } {
    const open = [...this.#open.keys()].flatMap((ticket) => this.take(ticket) ?? []);
    const abandoned = [...this.#abandoned.values()].map(({ run, timer }) => {
      clearTimeout(timer);
      return run;
    });
    this.#abandoned.clear();
    return { open, abandoned };
  }

  /**
   * The client has its answer, but the agent may still run it: its slot stays taken a while. Its body is
   * dropped: the agent has it, and what follows (the agent's answer, the slot's release) needs none.
   */
  abandon(answered: Run): void {
    const run: Run = { ...answered, order: { ...answered.order, body: new Uint8Array(0) } };
    const ticket = run.order.ticket;
    const timer = setTimeout(() => {
      this.#abandoned.delete(ticket);
      this.#retire(ticket);
      this.#options.onAbandonedExpired(run);
    }, this.#options.abandonedGraceMs);
    this.#abandoned.set(ticket, { run, timer });
  }

  /**
   * Which run a result or error frame answers, checked against the replica it was sent to. An answer for an
   * id this relay never sent, or from another replica, is a protocol violation; `unknownIsLate` takes an
   * unknown id for a run of an earlier life of the relay instead (it woke from hibernation).
   */
  claim(ticket: string, replicaId: string, unknownIsLate = false): RunClaim {
    const open = this.#open.get(ticket);
    const abandoned = this.#abandoned.get(ticket);
    const run = open?.run ?? abandoned?.run;
    if (run === undefined) {
      if (this.#retired.has(ticket) || unknownIsLate) return { kind: "late" };
      throw new ProtocolViolation(`answer for unknown request id ${JSON.stringify(ticket.slice(0, 40))}`);
    }
    if (run.order.replicaId !== replicaId) {
      throw new ProtocolViolation(
        `answer for request ${ticket} from replica ${replicaId}; it was sent to ${run.order.replicaId}`,
      );
    }
    if (open !== undefined) {
      const taken = this.take(ticket);
      if (taken !== undefined) return { kind: "open", ...taken };
    }
    if (abandoned !== undefined) {
      clearTimeout(abandoned.timer);
      this.#abandoned.delete(ticket);
    }
    return { kind: "abandoned", run };
  }

  #retire(ticket: string): void {
    this.#retired.add(ticket);
    if (this.#retired.size > MAX_RETIRED) {
      const oldest = this.#retired.values().next().value;
      if (oldest !== undefined) this.#retired.delete(oldest);
    }
  }
}
