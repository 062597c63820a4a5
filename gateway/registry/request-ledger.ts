import { Deadline } from "../../shared/deadline.ts";
import { routeOf } from "../../shared/routing/route-request.ts";
import type { RouteRequest } from "../../shared/routing/types.ts";
import type { Grant, SlotAnswer, SlotAsk } from "../pool-calls.ts";

/** A slot the registry granted: the replica it is on (its release resolves a load the dispatcher expected). */
export interface Held {
  ticket: string;
  route: RouteRequest;
  agentId: string;
  replicaId: string;
  address: string;
  /** The ask's deadline (this object's clock): a claimed slot is held until it and the grace after it. */
  deadlineAt: number;
}

/** An ask between its arrival and its answer (a grant, or a failure). */
export interface PendingAsk {
  readonly id: string;
  readonly ask: SlotAsk;
  readonly route: RouteRequest;
  readonly arrivedAt: number;
  readonly deadline: Deadline;
}

export interface RequestLedgerOptions {
  now: () => number;
  /** An ask's deadline passed while it waited. */
  onDeadline: (pending: PendingAsk) => void;
  /** A held slot was never released (its relay failed, or the release was lost): it is freed now. */
  onHeldExpired: (held: Held) => void;
}

/**
 * After its deadline, how long a granted slot may stay taken: a run the client gave up on still runs at the
 * agent until it ends (onnxruntime cannot stop one), and its relay releases the slot when the agent answers.
 */
export const ABANDONED_GRACE_MS = 30_000;
/**
 * How long a granted slot is held before its run must be claimed: a relay that still runs it after
 * RUN_CLAIM_AFTER_MS says so (`claim`), and one released before never needs to. A grant nobody took up (the
 * Worker that asked for it went away with its client) is freed then, not at its deadline.
 */
export const CLAIM_WINDOW_MS = 10_000;
export const RUN_CLAIM_AFTER_MS = 5_000;

interface OpenEntry {
  pending: PendingAsk;
  answer: (answer: SlotAnswer) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * The registry's book of requests: asks waiting for a slot (queued, or waiting for agents) and the slots it
 * granted that have not come back. It owns the ids (a grant's ticket is its ask's id, and the infer frame's
 * id at the agent), the deadline of each ask (a timer), and answers each ask exactly once. A granted slot
 * comes back when the agent's relay releases it; one that never does is freed anyway, so a lost message
 * never leaks a slot: a grant nobody took up (its Worker went away) after CLAIM_WINDOW_MS, a run its relay
 * claimed (still running) when its deadline and the grace after it are over.
 */
export class RequestLedger {
  readonly #options: RequestLedgerOptions;
  readonly #open = new Map<string, OpenEntry>();
  readonly #held = new Map<string, { held: Held; timer: ReturnType<typeof setTimeout> }>();
  /** Ids are "<incarnation>-<counter>": unique across this object's lives (a reset starts a new one). */
  readonly #incarnation = randomHex(4);
  #counter = 0;

  constructor(options: RequestLedgerOptions) {
    this.#options = options;
  }

  /** Whether anything is waiting on agents: asks waiting, or slots held. */
  get busy(): boolean {
    return this.#open.size > 0 || this.#held.size > 0;
  }

  /** Slots granted and not yet released. */
  get heldCount(): number {
    return this.#held.size;
  }

  /** A new ask; its deadline starts now. */
  open(ask: SlotAsk, answer: (answer: SlotAnswer) => void): PendingAsk {
    const now = this.#options.now();
    this.#counter += 1;
    const pending: PendingAsk = {
      id: `${this.#incarnation}-${this.#counter.toString(36)}`,
      ask,
      route: routeOf(ask),
      arrivedAt: now,
      deadline: Deadline.in(ask.timeoutMs, now, ask.budgetMs),
    };
    const timer = setTimeout(() => {
      if (this.isOpen(pending)) this.#options.onDeadline(pending);
    }, ask.timeoutMs);
    this.#open.set(pending.id, { pending, answer, timer });
    return pending;
  }

  isOpen(pending: PendingAsk): boolean {
    return this.#open.get(pending.id)?.pending === pending;
  }

  /** Answers the ask with a failure; false (and nothing happens) when it was answered already. */
  settle(pending: PendingAsk, answer: Exclude<SlotAnswer, { ok: true }>): boolean {
    const entry = this.#close(pending);
    entry?.answer(answer);
    return entry !== undefined;
  }

  /**
   * Answers the ask with a slot on `held`'s replica, held until released, and for CLAIM_WINDOW_MS (or its
   * deadline and grace, when sooner) unless claimed. False when answered already.
   */
  grant(
    pending: PendingAsk,
    held: Omit<Held, "ticket" | "route" | "deadlineAt">,
    channel: string,
    direct = false,
  ): boolean {
    const entry = this.#close(pending);
    if (entry === undefined) return false;
    const taken: Held = {
      ...held,
      ticket: pending.id,
      route: pending.route,
      deadlineAt: pending.deadline.at,
    };
    this.#holdGranted(taken);
    const grant: Grant = {
      ticket: taken.ticket,
      agentId: held.agentId,
      replicaId: held.replicaId,
      replica: held.address,
      channel,
      queuedMs: this.#options.now() - pending.arrivedAt,
      ...(direct ? { direct: true as const } : {}),
    };
    entry.answer({ ok: true, grant });
    return true;
  }

  /**
   * A direct hit its relay took without asking (shared/routing/direct-hits.ts): its slot is held as a
   * granted one, under the relay's ticket, until released. False when that ticket is held already.
   */
  adopt(held: Held): boolean {
    if (this.#held.has(held.ticket)) return false;
    this.#holdGranted(held);
    return true;
  }

  /** A fresh grant's slot: held until released, and for CLAIM_WINDOW_MS (or its deadline and grace, when sooner) unless claimed. */
  #holdGranted(held: Held): void {
    const untilDeadline = Math.max(0, held.deadlineAt - this.#options.now()) + ABANDONED_GRACE_MS;
    this.#hold(held, Math.min(CLAIM_WINDOW_MS, untilDeadline));
  }

  /** Its relay still runs it: the slot is held until its deadline and the grace after it. */
  claim(ticket: string): void {
    const entry = this.#held.get(ticket);
    if (entry === undefined) return;
    clearTimeout(entry.timer);
    this.#hold(entry.held, Math.max(0, entry.held.deadlineAt - this.#options.now()) + ABANDONED_GRACE_MS);
  }

  #hold(held: Held, forMs: number): void {
    const timer = setTimeout(() => {
      this.#held.delete(held.ticket);
      this.#options.onHeldExpired(held);
    }, forMs);
    this.#held.set(held.ticket, { held, timer });
  }

  /** The slot a release names, no longer held; undefined when it is not held (any more). */
  release(ticket: string): Held | undefined {
    const entry = this.#held.get(ticket);
    if (entry === undefined) return undefined;
    clearTimeout(entry.timer);
    this.#held.delete(ticket);
    return entry.held;
  }

  /** The agent is gone: the slots held on its replicas went with them. */
  forgetAgent(agentId: string): void {
    for (const [ticket, entry] of this.#held) {
      if (entry.held.agentId !== agentId) continue;
      clearTimeout(entry.timer);
      this.#held.delete(ticket);
    }
  }

  #close(pending: PendingAsk): OpenEntry | undefined {
    const entry = this.#open.get(pending.id);
    if (entry?.pending !== pending) return undefined;
    this.#open.delete(pending.id);
    clearTimeout(entry.timer);
    return entry;
  }
}

function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((byte) => byte.toString(16).padStart(2, "0"))
    .join("");
}
