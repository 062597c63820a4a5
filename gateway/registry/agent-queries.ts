import { SwitchyardError } from "../../shared/errors.ts";
import {
  type AnswerFrame,
  QUERY_ANSWERS,
  type Query,
  type QueryAnswer,
  type QueryFrame,
} from "../../shared/protocol/frames.ts";
import type { AgentLink } from "./agent-link.ts";
import { ProtocolViolation } from "./protocol-violation.ts";

/** An agent that takes longer than this to describe a model or count its statistics is passed over. */
export const QUERY_TIMEOUT_MS = 10_000;
/** A load may download the model first. */
export const LOAD_TIMEOUT_MS = 120_000;

interface PendingQuery {
  agentId: string;
  kind: Query["kind"];
  resolve: (value: unknown) => void;
  reject: (error: SwitchyardError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * The registry's questions to agents outside of inference (frames.ts QuerySchema): each query frame gets
 * one answer frame, matched by id and checked against the schema of its kind; a query ends in the answer,
 * the agent's error, a timeout, or the agent leaving, whichever comes first. Nothing here needs to survive
 * hibernation: a pending query keeps the object awake.
 */
export class AgentQueries {
  readonly #pending = new Map<string, PendingQuery>();
  #counter = 0;

  ask<K extends Query["kind"]>(
    link: AgentLink,
    query: Extract<Query, { kind: K }>,
    timeoutMs = QUERY_TIMEOUT_MS,
  ): Promise<QueryAnswer<K>> {
    this.#counter += 1;
    const id = `q-${this.#counter.toString(36)}`;
    const frame: QueryFrame = { type: "query", id, query };
    return new Promise<QueryAnswer<K>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new SwitchyardError(
            "unavailable",
            `agent '${link.record.id}' did not answer a ${query.kind} query within ${timeoutMs / 1000} s`,
            { retryAfterSeconds: 1 },
          ),
        );
      }, timeoutMs);
      this.#pending.set(id, {
        agentId: link.record.id,
        kind: query.kind,
        resolve: resolve as (value: unknown) => void,
        reject,
        timer,
      });
      try {
        link.socket.send(JSON.stringify(frame));
      } catch {
        this.#settle(id, () => new SwitchyardError("unavailable", `agent '${link.record.id}' is gone`));
      }
    });
  }

  /** An answer frame: it settles the query it answers; an answer nobody asked this agent for breaks the protocol. */
  onAnswer(link: AgentLink, frame: AnswerFrame): void {
    const pending = this.#pending.get(frame.id);
    if (pending === undefined) return; // timed out meanwhile
    if (pending.agentId !== link.record.id) {
      throw new ProtocolViolation(`answer to query ${frame.id}, which was asked of another agent`);
    }
    this.#pending.delete(frame.id);
    clearTimeout(pending.timer);
    if (!frame.result.ok) {
      pending.reject(SwitchyardError.fromStatus(frame.result.status, frame.result.message));
      return;
    }
    const parsed = QUERY_ANSWERS[pending.kind].safeParse(frame.result.value);
    if (!parsed.success) {
      pending.reject(
        new SwitchyardError(
          "internal",
          `agent '${link.record.id}' answered a ${pending.kind} query with a malformed value`,
        ),
      );
      throw new ProtocolViolation(`malformed answer to a ${pending.kind} query`);
    }
    pending.resolve(parsed.data);
  }

  /** The agent left: its queries fail at once. */
  agentGone(agentId: string): void {
    for (const [id, pending] of this.#pending) {
      if (pending.agentId === agentId)
        this.#settle(
          id,
          () => new SwitchyardError("unavailable", `agent '${agentId}' left before it answered`),
        );
    }
  }

  get size(): number {
    return this.#pending.size;
  }

  #settle(id: string, error: () => SwitchyardError): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    pending.reject(error());
  }
}
