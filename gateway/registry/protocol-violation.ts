/**
 * An agent broke the wire protocol (a frame that does not parse, a result for a request it does not hold,
 * a second hello...). The registry (or the agent's relay, for its data socket) closes that agent's socket with
 * `closeCode` and fails its requests; nothing else in the pool is touched. This module also owns how the
 * gateway closes an agent's sockets for any reason: the codes, and a reason that fits a close frame.
 */
export const CLOSE_POLICY_VIOLATION = 1008;
export const CLOSE_TOO_BIG = 1009;
/** The other codes the gateway closes an agent's socket with: it left (or was taken out), or a bug here. */
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_INTERNAL = 1011;

export class ProtocolViolation extends Error {
  readonly closeCode: number;

  constructor(message: string, closeCode: number = CLOSE_POLICY_VIOLATION) {
    super(message);
    this.name = "ProtocolViolation";
    this.closeCode = closeCode;
  }
}

const MAX_CLOSE_REASON_BYTES = 123;

/** A websocket close reason is at most 123 bytes of UTF-8; longer ones make close() throw. */
export function closeReason(message: string): string {
  const encoder = new TextEncoder();
  if (encoder.encode(message).length <= MAX_CLOSE_REASON_BYTES) return message;
  let shortened = message.slice(0, MAX_CLOSE_REASON_BYTES);
  while (encoder.encode(`${shortened}…`).length > MAX_CLOSE_REASON_BYTES) shortened = shortened.slice(0, -1);
  return `${shortened}…`;
}

/** Closes an agent's socket (registry or relay), the reason cut to what a close frame carries. */
export function closeSocket(socket: WebSocket, code: number, reason: string): void {
  try {
    socket.close(code, closeReason(reason));
  } catch {
    // Already closed.
  }
}

/** Completes the closing handshake the peer started (1005 and 1006 are reported, never sent). */
export function answerClose(socket: WebSocket, code: number, reason: string): void {
  closeSocket(socket, code === 1005 || code === 1006 ? 1000 : code, reason);
}
