/**
 * An agent broke the wire protocol (a frame that does not parse, a result for a request it does not hold,
 * a second hello...). The registry closes that agent's socket with `closeCode` and fails its requests;
 * nothing else in the pool is touched.
 */
export const CLOSE_POLICY_VIOLATION = 1008;
export const CLOSE_TOO_BIG = 1009;

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
