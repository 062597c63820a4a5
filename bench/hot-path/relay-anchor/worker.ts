/**
 * The relay anchor of the hot-path benchmark: the smallest Worker and Durable Object that relay an OIP
 * request to a process that dialed in over a websocket, as the gateway does (gateway/agent-relay). The
 * Worker hands the body to the model's object by RPC; the object sends it on the socket its peer (the
 * anchor server, anchor-server.ts --relay) opened, and answers the RPC with the frame that comes back. No
 * authentication, no validation, no routing, no registry, no state: the floor of any gateway of this shape
 * on the same workerd, against which the gateway's own cost is read.
 *
 *   POST /v2/models/<model>/infer    relayed to <model>'s peer
 *   GET  /v2/health/live             answered here (the floor: wrangler dev's proxy and the Worker alone)
 *   GET  /connect/<model>            the peer's websocket
 *   POST /stop-at/worker/<bytes>     the body read as a relay reads it, <bytes> zero bytes answered: what
 *                                    wrangler dev's proxy and a Worker cost for a request's bytes alone
 *   POST /stop-at/object/<bytes>     the same, the body handed to the object by RPC and the answer back: the
 *                                    relay without its websocket and its peer
 * Both stops answer the body's length in x-received-bytes, so that a reader can tell they read it whole.
 */
import { DurableObject } from "cloudflare:workers";
import { decodeAnchorFrame, encodeAnchorFrame } from "./anchor-frames.ts";

interface Env {
  RELAY: DurableObjectNamespace<RelayAnchor>;
}

interface Answer {
  headerLength: number | undefined;
  body: Uint8Array;
}

export class RelayAnchor extends DurableObject<Env> {
  readonly #waiting = new Map<number, (answer: Answer) => void>();
  #nextId = 0;

  override async fetch(): Promise<Response> {
    const pair = new WebSocketPair();
    // Hibernatable, as the gateway's relay accepts its agent's data socket.
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  async run(body: ArrayBuffer, headerLength: number | undefined): Promise<Answer> {
    const socket = this.ctx.getWebSockets()[0];
    if (socket === undefined) throw new Error("no peer connected");
    const id = this.#nextId;
    this.#nextId = (this.#nextId + 1) >>> 0;
    const answered = new Promise<Answer>((resolve) => this.#waiting.set(id, resolve));
    socket.send(encodeAnchorFrame(id, headerLength, [new Uint8Array(body)]));
    return answered;
  }

  /** The relay's RPC without its socket: the body in, `bytes` zero bytes out. */
  async stopHere(body: ArrayBuffer, bytes: number): Promise<{ received: number; body: Uint8Array }> {
    return { received: body.byteLength, body: new Uint8Array(bytes) };
  }

  override async webSocketMessage(_socket: WebSocket, message: string | ArrayBuffer): Promise<void> {
    if (typeof message === "string") return;
    const { id, headerLength, body } = decodeAnchorFrame(new Uint8Array(message));
    const resolve = this.#waiting.get(id);
    this.#waiting.delete(id);
    resolve?.({ headerLength, body });
  }
}

const INFER = /^\/v2\/models\/([^/]+)\/infer$/;
const STOP_AT = /^\/stop-at\/(worker|object)\/(\d+)$/;

/** The answer of a stop: as many bytes as asked, with what was received, as a binary answer is sent. */
function stopped(received: number, body: Uint8Array): Response {
  return new Response(body, {
    headers: { "content-type": "application/octet-stream", "x-received-bytes": String(received) },
  });
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname === "/v2/health/live") return Response.json({ live: true });
    const peer = /^\/connect\/([^/]+)$/.exec(pathname)?.[1];
    if (peer !== undefined) return env.RELAY.get(env.RELAY.idFromName(peer)).fetch(request);
    const stop = STOP_AT.exec(pathname);
    if (stop !== null && request.method === "POST") {
      const bytes = Number(stop[2]);
      const body = await request.arrayBuffer();
      if (stop[1] === "worker") return stopped(body.byteLength, new Uint8Array(bytes));
      const answer = await env.RELAY.get(env.RELAY.idFromName("stop-at")).stopHere(body, bytes);
      return stopped(answer.received, answer.body);
    }
    const model = INFER.exec(pathname)?.[1];
    if (model === undefined || request.method !== "POST") return new Response(null, { status: 404 });
    const length = request.headers.get("inference-header-content-length");
    const answer = await env.RELAY.get(env.RELAY.idFromName(model)).run(
      await request.arrayBuffer(),
      length === null ? undefined : Number(length),
    );
    return new Response(answer.body, {
      headers:
        answer.headerLength === undefined
          ? { "content-type": "application/json" }
          : {
              "content-type": "application/octet-stream",
              "inference-header-content-length": String(answer.headerLength),
            },
    });
  },
};
