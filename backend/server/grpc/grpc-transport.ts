import {
  createServer,
  type Http2Server,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import { SwitchyardError } from "../../../shared/errors.ts";
import { withinGrace } from "../../within-grace.ts";
import {
  encodeGrpcMessage,
  isMessageEncoding,
  MESSAGE_ENCODINGS,
  MessageReader,
  messagePrefix,
  parseGrpcTimeout,
  type ReceivedMessage,
} from "./grpc-framing.ts";
import { GrpcFailure, GrpcStatus } from "./grpc-status.ts";
import { ReceiveBudget } from "./receive-budget.ts";

/**
 * The agent's gRPC server on node:http2 directly. A general gRPC library (@grpc/grpc-js) gathers every
 * message from its HTTP/2 chunks and concatenates it, serializes every answer into a fresh buffer and
 * copies it again to frame it, and leaves HTTP/2's receive window at 64 KiB (a WINDOW_UPDATE round trip per
 * 64 KiB of a tensor): for multi-megabyte tensors its garbage and its waits were most of a call's time
 * (bench/results/hot-path-cpu-grpc.md). Here a message is copied once into a pooled buffer of its length,
 * an answer is written as the pieces it is made of (the outputs' own bytes among them), and the windows are
 * wide.
 */

/** A message to send, as the pieces it is made of (written one after another, not joined). */
export type MessagePieces = readonly Uint8Array[];

/** What a handler knows of its call. */
export interface GrpcCall {
  path: string;
  /** A request metadata entry (an HTTP/2 header), by lower-case name. */
  header(name: string): string | undefined;
  /** When the client's deadline (grpc-timeout) ends, as Date.now() counts; Infinity without one. */
  deadlineAt: number;
  /** Aborts when the call ends before its answer: the client cancelled, went away or ran out of time. */
  signal: AbortSignal;
}

/** A call of one request and one answer. */
export interface UnaryRoute {
  kind: "unary";
  /** Protobuf bytes to the request; what it throws fails the call INTERNAL, as gRPC libraries answer. */
  decode(bytes: Buffer): unknown;
  /** The answer; a GrpcFailure it throws is the call's status (anything else is INTERNAL). */
  handle(request: unknown, call: GrpcCall): Promise<MessagePieces>;
}

/**
 * A stream of requests, each answered by one message in the order it came: the stream ends once the client
 * ended its side and every answer is out, or once the server closes and nothing is in flight.
 */
export interface OrderedStreamRoute {
  kind: "ordered-stream";
  decode(bytes: Buffer): unknown;
  /** One request's answer; it must not reject (a failure is a message of the protocol's own). */
  handle(request: unknown, call: GrpcCall): Promise<MessagePieces>;
}

export type GrpcRoute = UnaryRoute | OrderedStreamRoute;

export interface GrpcTransportOptions {
  host: string;
  /** 0: any free port. */
  port: number;
  /** SO_REUSEPORT: listen beside other threads on the same port (the kernel spreads connections). */
  reusePort?: boolean;
  /** Routes by path (/package.Service/Method). */
  routes: ReadonlyMap<string, GrpcRoute>;
  /** The largest request message, uncompressed (RESOURCE_EXHAUSTED above). */
  maxMessageBytes: number;
  /** How long a request may take to arrive (REQUEST_RECEIVE_MS by default; tests shorten it). */
  receiveTimeoutMs?: number;
  /** What one connection's calls may hold of request messages (receiveBudgetBytes() by default). */
  receiveBudgetBytes?: number;
  /** A failure of the agent's own (not the client's), for the log. */
  onInternalError(path: string, error: unknown): void;
}

export interface GrpcTransport {
  port: number;
  /** Stops taking calls, ends idle streams, waits up to the grace for the rest, then cuts them. */
  close(graceMs: number): Promise<void>;
}

/**
 * HTTP/2 flow control windows: how much a client may send before the agent's WINDOW_UPDATE. A stream's
 * window takes a detection model's 4.9 MB input whole; the connection's several at once.
 */
const STREAM_WINDOW_BYTES = 8 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES = 32 * 1024 * 1024;

/** The longest setTimeout takes. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A unary call's request, or a stream's message once its first bytes came, still arriving after this long
 * is cut (DEADLINE_EXCEEDED), whatever deadline the client set or did not: a client that sends a message
 * slowly or never finishes it would otherwise hold its buffer, up to --max-body, for as long as it likes,
 * on as many calls as it opens. The agent's HTTP keeps Node's requestTimeout for a request body, the same
 * 300 s.
 */
export const REQUEST_RECEIVE_MS = 300_000;

/**
 * What one connection's calls may hold of request messages arriving or not yet answered (receive-budget.ts)
 * unless told otherwise: two of the largest messages, and at least 64 MiB, so that a client's calls of
 * detection-sized tensors (4.9 MB) go on a dozen at a time and a client of many streams cannot make the
 * agent hold more.
 */
export function receiveBudgetBytes(maxMessageBytes: number): number {
  return Math.max(2 * maxMessageBytes, 64 * 1024 * 1024);
}

const RESPONSE_HEADERS = {
  ":status": 200,
  "content-type": "application/grpc+proto",
  "grpc-accept-encoding": MESSAGE_ENCODINGS.join(","),
};

export async function startGrpcTransport(options: GrpcTransportOptions): Promise<GrpcTransport> {
  const server: Http2Server = createServer({
    settings: { initialWindowSize: STREAM_WINDOW_BYTES },
    // A status message of any length reaches the client, rather than the stream being reset (as grpc-js).
    maxSendHeaderBlockLength: Number.MAX_SAFE_INTEGER,
    // Node's default (10 MB a session) would refuse a session its first large tensor: the windows bound it.
    maxSessionMemory: Number.MAX_SAFE_INTEGER,
  });
  const sessions = new Set<Http2Session>();
  const calls = new Set<Call>();
  const budgets = new WeakMap<Http2Session, ReceiveBudget<Call>>();
  const budgetBytes = options.receiveBudgetBytes ?? receiveBudgetBytes(options.maxMessageBytes);
  let closing = false;

  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    session.on("error", () => {});
    session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
  });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    const route = routeOf(stream, headers, options.routes);
    if (route === undefined) return;
    // One budget per connection, made with its first call.
    const session = stream.session as Http2Session;
    let budget = budgets.get(session);
    if (budget === undefined) {
      budget = new ReceiveBudget<Call>(budgetBytes);
      budgets.set(session, budget);
    }
    const call = new Call(stream, headers, route, options, () => closing, budget);
    calls.add(call);
    stream.once("close", () => calls.delete(call));
  });

  const address = await new Promise<{ port: number }>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) =>
      reject(cannotListen(options.host, options.port, error)),
    );
    server.listen({ port: options.port, host: options.host, reusePort: options.reusePort === true }, () =>
      resolve(server.address() as { port: number }),
    );
  });
  server.on("error", (error) => options.onInternalError("(server)", error));
  // Calls still receiving a request are looked at a few times per limit, not each with a timer of its own.
  const receiveTimeoutMs = options.receiveTimeoutMs ?? REQUEST_RECEIVE_MS;
  const sweep = setInterval(
    () => {
      const now = performance.now();
      for (const call of calls) call.cutIfStillReceiving(now, receiveTimeoutMs);
    },
    Math.max(10, Math.min(receiveTimeoutMs / 4, 10_000)),
  );
  sweep.unref();

  return {
    port: address.port,
    async close(graceMs) {
      closing = true;
      clearInterval(sweep);
      for (const call of calls) call.serverClosing();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // GOAWAY: no new calls on open connections; each closes once its calls have.
      for (const session of sessions) session.close();
      await withinGrace(closed, graceMs);
      for (const session of sessions) session.destroy();
    },
  };
}

/** Why the agent cannot serve gRPC where it was asked to, for whoever starts it. */
export function cannotListen(host: string, port: number, error: Error): Error {
  return new Error(`--grpc-port: cannot listen on ${host}:${port} (${error.message}); pick a free port`);
}

/** The route a request names, or undefined once it was answered with why there is none. */
function routeOf(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  routes: ReadonlyMap<string, GrpcRoute>,
): GrpcRoute | undefined {
  const contentType = headers["content-type"] ?? "";
  if (headers[":method"] !== "POST" || !contentType.startsWith("application/grpc")) {
    // Not gRPC at all: an HTTP status, as the protocol says.
    stream.respond({ ":status": 415 }, { endStream: true });
    return undefined;
  }
  const encoding = String(headers["grpc-encoding"] ?? "identity");
  const path = String(headers[":path"] ?? "");
  const route = routes.get(path);
  const refusal = !isMessageEncoding(encoding)
    ? new GrpcFailure(
        GrpcStatus.UNIMPLEMENTED,
        `grpc-encoding ${encoding} is not supported: send ${MESSAGE_ENCODINGS.join(", ")}`,
      )
    : route === undefined
      ? new GrpcFailure(GrpcStatus.UNIMPLEMENTED, `The server does not implement the method ${path}`)
      : undefined;
  if (refusal !== undefined) {
    stream.respond({ ...RESPONSE_HEADERS, ...statusHeaders(refusal) }, { endStream: true });
    return undefined;
  }
  return route;
}

/** grpc-status and grpc-message (and any metadata) for a call's end. */
function statusHeaders(failure: GrpcFailure | undefined): Record<string, string> {
  if (failure === undefined) return { "grpc-status": String(GrpcStatus.OK) };
  return {
    ...failure.trailers,
    "grpc-status": String(failure.code),
    "grpc-message": encodeGrpcMessage(failure.details),
  };
}

/** The status of a call whose deadline passed, in gRPC's own words. */
function deadlineExceeded(): GrpcFailure {
  return new GrpcFailure(GrpcStatus.DEADLINE_EXCEEDED, "Deadline exceeded");
}

/** One gRPC call: its messages in, its answers out, and how it ends. */
class Call {
  readonly #stream: ServerHttp2Stream;
  readonly #route: GrpcRoute;
  readonly #options: GrpcTransportOptions;
  readonly #reader: MessageReader;
  readonly #controller = new AbortController();
  readonly #call: GrpcCall;
  readonly #closing: () => boolean;
  readonly #budget: ReceiveBudget<Call>;
  /** Why the stream is not read now: its client's window for answers is full, or its connection's budget. */
  readonly #pausedFor = new Set<"drain" | "budget">();
  #responded = false;
  #finished = false;
  #deadlineTimer: NodeJS.Timeout | undefined;
  /** When the deadline ends, by performance.now() (to the microsecond, as grpc-timeout counts it). */
  #expiresAt = Number.POSITIVE_INFINITY;
  /** Requests of a stream not yet answered, and the chain that answers them in order. */
  #open = 0;
  #answered: Promise<void> = Promise.resolve();
  /** Reading paused until the client takes in what was written. */
  #awaitingDrain = false;
  #ended = false;
  readonly #received: ReceivedMessage[] = [];
  /**
   * performance.now() since which a request has been arriving: a unary call's from its start to the client's
   * end, a stream's message from its first bytes to its last; undefined while none is.
   */
  #receivingSince: number | undefined;

  constructor(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    route: GrpcRoute,
    options: GrpcTransportOptions,
    closing: () => boolean,
    budget: ReceiveBudget<Call>,
  ) {
    this.#stream = stream;
    this.#route = route;
    this.#options = options;
    this.#closing = closing;
    this.#budget = budget;
    const path = String(headers[":path"]);
    // (routeOf refused any other encoding.)
    const encoding = String(headers["grpc-encoding"] ?? "identity");
    this.#reader = new MessageReader(
      options.maxMessageBytes,
      isMessageEncoding(encoding) ? encoding : "identity",
    );
    let timeoutMs: number | undefined;
    try {
      timeoutMs = parseGrpcTimeout(headers["grpc-timeout"] as string | undefined);
    } catch (error) {
      this.#call = { path, header: () => undefined, deadlineAt: 0, signal: this.#controller.signal };
      this.#finish(error);
      return;
    }
    this.#call = {
      path,
      header: (name) => {
        const value = headers[name];
        return Array.isArray(value) ? value[0] : value;
      },
      deadlineAt: timeoutMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + timeoutMs,
      signal: this.#controller.signal,
    };
    // Past setTimeout's range (24.8 days; grpc-go sends "2592000S" for 30) a deadline is no deadline here.
    if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) {
      this.#expiresAt = performance.now() + timeoutMs;
      this.#deadlineTimer = setTimeout(() => this.#finish(deadlineExceeded()), timeoutMs);
    }
    // The client gone (a cancel, a reset, a closed connection) before the call's end: nobody reads its answer.
    stream.once("close", () => {
      if (this.#finished) return;
      this.#finished = true;
      this.#cleanUp(new SwitchyardError("unavailable", "the client cancelled the call"));
    });
    if (route.kind === "unary") this.#receivingSince = performance.now();
    stream.on("data", (chunk: Buffer) => this.#read(chunk));
    stream.once("end", () => this.#clientEnded());
  }

  /** Ends the call when a request has been arriving for longer than `limitMs` (REQUEST_RECEIVE_MS). */
  cutIfStillReceiving(now: number, limitMs: number): void {
    if (this.#finished || this.#receivingSince === undefined || now - this.#receivingSince < limitMs) return;
    const what = this.#route.kind === "unary" ? "the request" : "a request message on the stream";
    this.#finish(
      new GrpcFailure(
        GrpcStatus.DEADLINE_EXCEEDED,
        `${what} did not arrive within ${limitMs / 1000} s (the most the agent waits for one)`,
      ),
    );
  }

  /** The server closes: an idle stream ends now, a busy one once its answers are out. */
  serverClosing(): void {
    if (this.#route.kind === "ordered-stream") this.#settle();
  }

  #read(chunk: Buffer): void {
    if (this.#finished) return;
    const wasPartial = this.#reader.partial;
    let received: ReceivedMessage[];
    try {
      received = this.#reader.push(chunk);
    } catch (error) {
      this.#finish(error);
      return;
    }
    // Held against the connection's budget until released, as what is still arriving is.
    const messages = received.map((message) => this.#held(message));
    this.#budget.arriving(this, this.#reader.partialBytes, !wasPartial || received.length > 0);
    if (!this.#budget.mayRead(this)) {
      this.#pause("budget");
      this.#budget.wait(this, () => this.#resume("budget"));
    }
    // A stream's message is arriving from its first bytes until it is whole (a unary call's, until its end).
    if (this.#route.kind === "ordered-stream") {
      if (!this.#reader.partial) this.#receivingSince = undefined;
      else if (messages.length > 0 || this.#receivingSince === undefined)
        this.#receivingSince = performance.now();
    }
    for (const message of messages) {
      // Failed by a message before it in the same chunk: the rest is not served.
      if (this.#finished) message.release();
      else if (this.#route.kind === "ordered-stream") this.#answerInOrder(this.#route, message);
      else if (this.#received.length === 0) this.#received.push(message);
      else {
        message.release();
        this.#finish(
          new GrpcFailure(
            GrpcStatus.UNIMPLEMENTED,
            `a second request message on unary call ${this.#call.path}`,
          ),
        );
      }
    }
  }

  /** `message`, whose release also gives its bytes back to the connection's budget. */
  #held(message: ReceivedMessage): ReceivedMessage {
    const giveBack = this.#budget.holdWhole(message.bytes);
    return {
      bytes: message.bytes,
      read: () => message.read(),
      release: () => {
        giveBack();
        message.release();
      },
    };
  }

  #pause(reason: "drain" | "budget"): void {
    this.#pausedFor.add(reason);
    this.#stream.pause();
  }

  #resume(reason: "drain" | "budget"): void {
    this.#pausedFor.delete(reason);
    if (this.#pausedFor.size === 0 && !this.#finished) this.#stream.resume();
  }

  #clientEnded(): void {
    this.#ended = true;
    this.#receivingSince = undefined;
    if (this.#finished) return;
    if (this.#reader.partial) {
      this.#finish(new GrpcFailure(GrpcStatus.INTERNAL, "the call ended in the middle of a message"));
      return;
    }
    if (this.#route.kind === "ordered-stream") {
      this.#settle();
      return;
    }
    const [message] = this.#received.splice(0);
    if (message === undefined) {
      this.#finish(new GrpcFailure(GrpcStatus.INTERNAL, "the unary call ended without its request message"));
      return;
    }
    void this.#answerOnce(this.#route, message);
  }

  /** Never rejects: whatever fails ends the call with its status. */
  async #answerOnce(route: UnaryRoute, message: ReceivedMessage): Promise<void> {
    let outcome: { answer: MessagePieces } | { error: unknown };
    try {
      this.#checkDeadline();
      outcome = { answer: await route.handle(await this.#decode(route, message), this.#call) };
    } catch (error) {
      outcome = { error };
    } finally {
      message.release();
    }
    try {
      if (this.#finished) return;
      if ("answer" in outcome) {
        this.#send(outcome.answer);
        this.#finish(undefined);
      } else {
        this.#finish(outcome.error);
      }
    } catch (error) {
      this.#options.onInternalError(this.#call.path, error);
      this.#stream.destroy();
    }
  }

  #answerInOrder(route: OrderedStreamRoute, message: ReceivedMessage): void {
    this.#open += 1;
    // A message that cannot be read ends the stream (below, in its turn); one that can is answered.
    const answer = this.#decode(route, message).then((request) => {
      this.#checkDeadline();
      return route.handle(request, this.#call);
    });
    // Seen below once the answers before it are out; until then, not an unhandled rejection.
    answer.catch(() => {});
    this.#answered = this.#answered
      .then(() => answer)
      .then(
        (pieces) => {
          this.#open -= 1;
          message.release();
          if (this.#finished) return;
          // A client that stops reading stops being read until it catches up.
          if (!this.#send(pieces) && !this.#awaitingDrain) {
            this.#awaitingDrain = true;
            this.#pause("drain");
            this.#stream.once("drain", () => {
              this.#awaitingDrain = false;
              this.#resume("drain");
            });
          }
          this.#settle();
        },
        (error: unknown) => {
          this.#open -= 1;
          message.release();
          this.#finish(error);
        },
      );
  }

  /**
   * A stream ends once its client ended its side (or the server closes) and nothing is in flight, a
   * message half received included.
   */
  #settle(): void {
    if (this.#finished || !(this.#ended || this.#closing())) return;
    if (this.#open > 0 || this.#reader.partial) return;
    this.#finish(undefined);
  }

  /**
   * A deadline that passed before its request could run fails it: the timer above counts whole milliseconds,
   * and a request served on a lane can be answered within one, past a deadline of a few microseconds.
   */
  #checkDeadline(): void {
    if (performance.now() >= this.#expiresAt) throw deadlineExceeded();
  }

  async #decode(route: GrpcRoute, message: ReceivedMessage): Promise<unknown> {
    const bytes = await message.read();
    try {
      return route.decode(bytes);
    } catch (error) {
      throw new GrpcFailure(
        GrpcStatus.INTERNAL,
        `Error deserializing request: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
  }

  /** Writes one message; false once the client's window is full (wait for 'drain'). */
  #send(pieces: MessagePieces): boolean {
    // Reset by the client an instant ago ('close' is on its way): nobody reads this.
    if (this.#stream.destroyed || this.#stream.closed) return true;
    this.#respond();
    const length = pieces.reduce((sum, piece) => sum + piece.byteLength, 0);
    this.#stream.cork();
    let open = this.#stream.write(messagePrefix(length));
    for (const piece of pieces) if (piece.byteLength > 0) open = this.#stream.write(piece);
    this.#stream.uncork();
    return open;
  }

  #respond(): void {
    if (this.#responded) return;
    this.#responded = true;
    this.#stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
  }

  /** Ends the call: OK (no failure) or the failure's status, in trailers (or headers alone, if nothing was sent). */
  #finish(error: unknown): void {
    if (this.#finished) return;
    this.#finished = true;
    const failure = error === undefined ? undefined : this.#failureOf(error);
    // Work still under way for the call stops: past its deadline, or no longer answered.
    this.#cleanUp(
      failure === undefined
        ? undefined
        : new SwitchyardError(
            failure.code === GrpcStatus.DEADLINE_EXCEEDED ? "deadline_exceeded" : "unavailable",
            failure.details,
          ),
    );
    const stream = this.#stream;
    if (stream.destroyed || stream.closed) return;
    if (!this.#responded) {
      this.#responded = true;
      stream.respond({ ...RESPONSE_HEADERS, ...statusHeaders(failure) }, { endStream: true });
    } else {
      stream.once("wantTrailers", () => stream.sendTrailers(statusHeaders(failure)));
      stream.end();
    }
    // What the client still sends is not read (a unary call failed early, a stream that ended).
    if (!stream.readableEnded) stream.resume();
  }

  #cleanUp(abandoned: SwitchyardError | undefined): void {
    clearTimeout(this.#deadlineTimer);
    this.#reader.discard();
    this.#budget.forget(this);
    for (const message of this.#received.splice(0)) message.release();
    if (abandoned !== undefined) this.#controller.abort(abandoned);
  }

  #failureOf(error: unknown): GrpcFailure {
    if (error instanceof GrpcFailure) return error;
    this.#options.onInternalError(this.#call.path, error);
    return new GrpcFailure(GrpcStatus.INTERNAL, error instanceof Error ? error.message : String(error));
  }
}
