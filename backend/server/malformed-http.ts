import type { Socket } from "node:net";

/**
 * What the standalone server answers to a request Node's HTTP parser cannot read (broken chunked framing,
 * a header too large, two Content-Lengths): the one OIP error shape, 400 (or 431/414 where HTTP has a
 * status for it), instead of Node's bare text or a silent close.
 */
export function answerMalformedHttp(error: Error & { code?: string }, socket: Socket): void {
  if (!socket.writable) return;
  const [status, reason, message] =
    error.code === "HPE_HEADER_OVERFLOW"
      ? [431, "Request Header Fields Too Large", "the request's headers are too large"]
      : error.code === "HPE_URI_TOO_LONG"
        ? [414, "URI Too Long", "the request's URL is too long"]
        : [400, "Bad Request", `malformed HTTP request (${error.code ?? "unreadable"})`];
  const body = JSON.stringify({ error: message });
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
