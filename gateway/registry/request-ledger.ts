import { Deadline } from "../../shared/deadline.ts";
import type { RouteRequest } from "../../shared/routing/types.ts";
import { ProtocolViolation } from "./protocol-violation.ts";
import type { RelayedRequest, RelayOutcome } from "./relay-types.ts";

/** Where a request was sent: the replica it runs on (its end resolves a load the dispatcher expected there). */
export interface Sent {
  route: RouteRequest;
  agentId: string;
  replicaId: string;
  address: string;
  sentAt: number;
}

/** A request between its arrival and its one outcome. */
export interface PendingRequest {
  readonly id: string;
  readonly call: RelayedRequest;
  readonly route: RouteRequest;
  readonly arrivedAt: number;
  readonly deadline: Deadline;
  /** Replicas it was offered to that never started it (a wait for agents is no attempt). */
  attempts: number;
  /** Times it was run again after an agent died while it may have been running. */
  reruns: number;
  sent?: Sent;
}

/** Which request an agent's answer belongs to (see `claim`). */
export type Claim =
  | { kind: "pending"; pending: PendingRequest; sent: Sent }
  | { kind: "abandoned"; sent: Sent }
  /** An answer to a request of this object's previous life (before an eviction): nobody waits for it. */
  | { kind: "stale" };

export interface RequestLedgerOptions {
  now: () => number;
  /** A request's deadline passed while it was open. */
  onDeadline: (pending: PendingRequest) => void;
  /** An abandoned request's agent never answered within the grace: its slot is freed anyway. */
  onAbandonedExpired: (sent: Sent) => void;
}

/** After a deadline, how long the agent gets to answer the cancelled request before its slot is freed anyway. */
export const ABANDONED_GRACE_MS = 30_000;

interface Entry {
  pending: PendingRequest;
  settle: (outcome: RelayOutcome) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * Every request between its arrival and its answer, and the requests whose clients were answered (504) while
 * their agents may still be working on them. The ledger owns request ids, deadlines (a timer per request)
 * and the bytes held, and settles each request exactly once: a second outcome for a settled request is
 * dropped, whoever produces it.
 */
export class RequestLedger {
  readonly #options: RequestLedgerOptions;
  readonly #open = new Map<string, Entry>();
  readonly #abandoned = new Map<string, { sent: Sent; timer: ReturnType<typeof setTimeout> }>();
  #bytes = 0;
  /**
   * Request ids are "<incarnation>-<counter>". A result carrying another incarnation's id answers a request
   * of this object's previous life (before an eviction), which nobody waits for any more: harmless, ignored.
   * Any other unknown id is a protocol violation.
   */
  readonly #incarnation = randomHex(4);
  #counter = 0;

  constructor(options: RequestLedgerOptions) {
    this.#options = options;
  }

  /** Bytes of request bodies held (waiting, queued, in flight). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Whether anything is waiting on agents: open requests, or slots held by abandoned ones. */
  get busy(): boolean {
    return this.#open.size > 0 || this.#abandoned.size > 0;
  }

  /** A new request; its deadline starts now. */
  open(call: RelayedRequest, settle: (outcome: RelayOutcome) => void, reruns: number): PendingRequest {
    const now = this.#options.now();
    this.#counter += 1;
    const pending: PendingRequest = {
      id: `${this.#incarnation}-${this.#counter.toString(36)}`,
      call,
      route: {
        model: call.model,
        ...(call.version === undefined ? {} : { version: call.version }),
        ...(call.hint === undefined ? {} : { hint: call.hint }),
      },
      arrivedAt: now,
      deadline: Deadline.in(call.timeoutMs, now, call.budgetMs),
      attempts: 0,
      reruns,
    };
    const timer = setTimeout(() => {
      if (this.isOpen(pending)) this.#options.onDeadline(pending);
    }, call.timeoutMs);
    this.#open.set(pending.id, { pending, settle, timer });
    this.#bytes += call.body.byteLength;
    return pending;
  }

  isOpen(pending: PendingRequest): boolean {
    return this.#open.get(pending.id)?.pending === pending;
  }

  /** Open requests sent to this agent. */
  sentTo(agentId: string): PendingRequest[] {
    return [...this.#open.values()]
      .map((entry) => entry.pending)
      .filter((pending) => pending.sent?.agentId === agentId);
  }

  /** Ends the request with this outcome; false (and nothing happens) when it had ended already. */
  settle(pending: PendingRequest, outcome: RelayOutcome): boolean {
    const entry = this.#open.get(pending.id);
    if (entry?.pending !== pending) return false;
    this.#open.delete(pending.id);
    this.#bytes -= pending.call.body.byteLength;
    clearTimeout(entry.timer);
    entry.settle(outcome);
    return true;
  }

  /** The client has its answer, but the agent may still run the request: its slot stays taken a while. */
  abandon(id: string, sent: Sent): void {
    const timer = setTimeout(() => {
      this.#abandoned.delete(id);
      this.#options.onAbandonedExpired(sent);
    }, ABANDONED_GRACE_MS);
    this.#abandoned.set(id, { sent, timer });
  }

  /** The agent is gone: its abandoned requests hold no slot any more. */
  forgetAbandonedBy(agentId: string): void {
    for (const [id, abandoned] of this.#abandoned) {
      if (abandoned.sent.agentId !== agentId) continue;
      clearTimeout(abandoned.timer);
      this.#abandoned.delete(id);
    }
  }

  /**
   * Which request a result or error frame answers, checked against who holds it. An answer for a request
   * another agent or replica holds, or for an id this registry never issued, is a protocol violation.
   */
  claim(agentId: string, id: string, replicaId: string): Claim {
    const pending = this.#open.get(id)?.pending;
    const abandoned = this.#abandoned.get(id);
    const sent = pending?.sent ?? abandoned?.sent;
    if (sent === undefined) {
      if (isRequestId(id) && !id.startsWith(`${this.#incarnation}-`)) return { kind: "stale" };
      throw new ProtocolViolation(`answer for unknown request id ${JSON.stringify(id.slice(0, 40))}`);
    }
    if (sent.agentId !== agentId) {
      throw new ProtocolViolation(`answer for request ${id}, which another agent holds`);
    }
    if (sent.replicaId !== replicaId) {
      throw new ProtocolViolation(
        `answer for request ${id} from replica ${replicaId}; it was sent to ${sent.replicaId}`,
      );
    }
    if (pending !== undefined) return { kind: "pending", pending, sent };
    if (abandoned !== undefined) {
      clearTimeout(abandoned.timer);
      this.#abandoned.delete(id);
    }
    return { kind: "abandoned", sent };
  }
}

const isRequestId = (id: string) => /^[0-9a-f]{8}-[0-9a-z]+$/.test(id);

function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((byte) => byte.toString(16).padStart(2, "0"))
    .join("");
}
