import { badInput, SwitchyardError } from "./errors.ts";
import type { HeaderReader } from "./http/header-reader.ts";

/**
 * A request's deadline: the moment its client stops waiting. It is read once, where the request arrives
 * (`requestDeadline`: the OIP `timeout` parameter or X-Request-Timeout, else the server's default), and
 * travels with the request as the milliseconds it has left (`remainingMs`: the Worker, its registry and the
 * agents run on different machines whose clocks need not agree). Each stage's owner enforces it for its
 * stage:
 *
 *   shared/oip/infer-http.ts        reads it where a request arrives (gateway and standalone agent)
 *   gateway/routes/infer.ts         hands the pool what is left, and the client's budget for messages
 *   gateway/pool-call.ts            asks a restarted registry again, and asks again after a failed run, only within it
 *   gateway/registry/request-ledger.ts   times each ask waiting in the registry (504 there)
 *   gateway/agent-relay/agent-relay.ts   answers 504 at it while the agent runs it, and tells the agent to stop
 *   backend/gateway-link/infer-handler.ts   takes a request out of its replica's line at it
 *   backend/pool/replica-pool.ts    (standalone) answers 504 at it, waiting or running
 *
 * A run that has started cannot be interrupted (onnxruntime has no cancellation): it finishes, its slot
 * stays taken until then, and only its answer is dropped.
 */
export class Deadline {
  /** Epoch milliseconds, on the clock of the process that holds it. */
  readonly at: number;
  /** How long the client gave it, for messages. */
  readonly budgetMs: number;

  private constructor(at: number, budgetMs: number) {
    this.at = at;
    this.budgetMs = budgetMs;
  }

  /**
   * The deadline `ms` from `now`: where a request arrives, or from the milliseconds a hop carried, with the
   * budget the client gave it where the hop carried that too (else what was left is all a message can say).
   */
  static in(ms: number, now = Date.now(), budgetMs = ms): Deadline {
    return new Deadline(now + ms, budgetMs);
  }

  /** Milliseconds left, never negative. */
  remainingMs(now = Date.now()): number {
    return Math.max(0, this.at - now);
  }

  passed(now = Date.now()): boolean {
    return now >= this.at;
  }

  /** The 504 a client gets when the deadline passes `while` something happened ("waiting for a replica"). */
  exceeded(what: string): SwitchyardError {
    return new SwitchyardError("deadline_exceeded", `${what} ${withinBudget(this.budgetMs)}`);
  }

  /**
   * A signal that aborts at the deadline with `exceeded(what)`, for waits to race with, or before it when
   * `follow` aborts (the client went away), with its reason; `stop()` once the work ended first, so that no
   * timer or listener outlives the request. (One plain signal: AbortSignal.any's composite signal made each
   * listener added to it cost several times more, on a path every request takes.)
   */
  watch(
    what: string,
    options: { now?: number; follow?: AbortSignal | undefined } = {},
  ): { signal: AbortSignal; stop: () => void } {
    const controller = new AbortController();
    const { follow } = options;
    if (follow?.aborted) {
      controller.abort(follow.reason);
      return { signal: controller.signal, stop: () => {} };
    }
    const timer = setTimeout(
      () => controller.abort(this.exceeded(what)),
      this.remainingMs(options.now ?? Date.now()),
    );
    // A deadline far away is no reason to keep a process alive.
    (timer as { unref?: () => void }).unref?.();
    const followed = () => {
      clearTimeout(timer);
      controller.abort(follow?.reason);
    };
    follow?.addEventListener("abort", followed, { once: true });
    return {
      signal: controller.signal,
      stop: () => {
        clearTimeout(timer);
        follow?.removeEventListener("abort", followed);
      },
    };
  }
}

/**
 * How a 504's message names the deadline it missed: "within the request's deadline of 1.5 ms", the budget to
 * the microsecond at most, as a client wrote it (X-Request-Timeout: 0.0015) rather than as floating point
 * computed it from seconds (0.0010000000000000002 s read 1.0000000000000002 ms).
 */
export function withinBudget(budgetMs: number): string {
  return `within the request's deadline of ${Number(budgetMs.toFixed(3))} ms`;
}

/** A deadline shorter than this could only ever end in a 504: it is refused as bad input instead. */
export const MIN_TIMEOUT_MS = 1;
/** Longest deadline a request may ask for; timers cannot go much beyond 24 days anyway. */
export const MAX_TIMEOUT_MS = 60 * 60 * 1000;

/**
 * The deadline a request asks for: the OIP `timeout` parameter (microseconds, as Triton reads it) or the
 * X-Request-Timeout header (seconds); the smaller wins; neither: `defaultMs`. At most MAX_TIMEOUT_MS.
 */
export function requestDeadline(
  headers: HeaderReader,
  parameters: Record<string, unknown> | undefined,
  defaultMs: number,
  now = Date.now(),
): Deadline {
  return Deadline.in(Math.min(requestedTimeoutMs(headers, parameters) ?? defaultMs, MAX_TIMEOUT_MS), now);
}

function requestedTimeoutMs(
  headers: HeaderReader,
  parameters: Record<string, unknown> | undefined,
): number | undefined {
  const candidates: number[] = [];
  const header = headers.get("x-request-timeout");
  if (header !== null) {
    const seconds = Number(header);
    if (!Number.isFinite(seconds) || seconds * 1000 < MIN_TIMEOUT_MS) {
      throw badInput(
        `X-Request-Timeout must be a number of seconds, at least 0.001, got '${header.slice(0, 40)}'`,
      );
    }
    candidates.push(seconds * 1000);
  }
  const parameter = parameters?.timeout;
  if (parameter !== undefined) {
    if (typeof parameter !== "number" || !Number.isFinite(parameter) || parameter / 1000 < MIN_TIMEOUT_MS) {
      throw badInput("parameters.timeout must be a number of microseconds, at least 1000");
    }
    candidates.push(parameter / 1000);
  }
  return candidates.length === 0 ? undefined : Math.min(...candidates);
}
