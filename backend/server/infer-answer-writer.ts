import type { IncomingMessage, ServerResponse } from "node:http";
import { serverTiming } from "../../shared/oip/request-options.ts";
import type { InferAnswer } from "./standalone-infer.ts";

/**
 * Writes a served inference: its headers, then its parts corked, so they go out in as few writes as the
 * socket takes. The last stage of a request's time, `send` (from the first byte written to the last one the
 * kernel took), is known only after the body, where no header can carry it: a client that accepts trailers
 * (`TE: trailers`, HTTP/1.1) gets it as a Server-Timing trailer, the place the Server-Timing specification
 * gives to timings known after the body, in a chunked response. Every other client gets the response as
 * before, with its Content-Length.
 */
export function writeInferAnswer(
  request: IncomingMessage,
  response: ServerResponse,
  answer: InferAnswer,
): void {
  const trailer = acceptsTrailers(request);
  if (trailer) {
    // Without a length, Node frames the body in chunks: the only framing that can carry a trailer.
    const headers = Object.fromEntries(
      Object.entries(answer.headers).filter(([name]) => name.toLowerCase() !== "content-length"),
    );
    response.writeHead(200, { ...headers, Trailer: "Server-Timing" });
  } else {
    response.writeHead(200, answer.headers);
  }
  let sendingFrom = performance.now();
  // An answer to a pipelined request waits for the one before it to leave: its send starts with its socket.
  if (trailer && response.socket === null) response.once("socket", () => (sendingFrom = performance.now()));
  response.cork();
  if (!trailer) {
    for (const part of answer.parts) response.write(part);
    response.end();
  } else {
    const finish = () => {
      response.addTrailers({ "Server-Timing": serverTiming({ send: performance.now() - sendingFrom }) });
      response.end();
    };
    const last = answer.parts.at(-1);
    for (const part of answer.parts.slice(0, -1)) response.write(part);
    // Its callback runs once the kernel took the body's last byte (not at all when the client went away).
    if (last === undefined) finish();
    else response.write(last, (error) => (error === null || error === undefined ? finish() : undefined));
  }
  response.uncork();
}

/** Whether the request's TE header lists `trailers` and its HTTP version can carry them (chunked: 1.1). */
function acceptsTrailers(request: IncomingMessage): boolean {
  if (request.httpVersionMajor !== 1 || request.httpVersionMinor < 1) return false;
  const te = request.headers.te;
  if (te === undefined) return false;
  return [te]
    .flat()
    .join(",")
    .split(",")
    .some((entry) => entry.split(";")[0]?.trim().toLowerCase() === "trailers");
}
