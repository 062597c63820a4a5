import { SwitchyardError } from "../../shared/errors.ts";
import {
  type AgentTextFrame,
  AgentTextFrameSchema,
  decodeBinaryFrame,
  decodeTextFrame,
  MAX_FRAME_BYTES,
  MAX_TEXT_FRAME_BYTES,
  type ResultHeader,
  ResultHeaderSchema,
} from "../../shared/protocol/frames.ts";
import { HEARTBEAT_PING, HEARTBEAT_PONG } from "../../shared/protocol/heartbeat.ts";
import { CLOSE_TOO_BIG, ProtocolViolation } from "./protocol-violation.ts";

export type AgentMessage =
  | { kind: "ping" }
  | { kind: "pong" }
  | { kind: "text"; frame: AgentTextFrame }
  | { kind: "result"; header: ResultHeader; body: Uint8Array };

/** One websocket message from an agent, checked against the protocol; a ProtocolViolation otherwise. */
export function parseAgentMessage(message: string | ArrayBuffer): AgentMessage {
  if (typeof message === "string") {
    if (message === HEARTBEAT_PING) return { kind: "ping" };
    if (message === HEARTBEAT_PONG) return { kind: "pong" };
    // UTF-16 length is at most the UTF-8 length times one, at least a third of it: cheap and close enough.
    if (message.length > MAX_TEXT_FRAME_BYTES) {
      throw new ProtocolViolation(`text frame over ${MAX_TEXT_FRAME_BYTES} bytes`, CLOSE_TOO_BIG);
    }
    return { kind: "text", frame: asViolation(() => decodeTextFrame(message, AgentTextFrameSchema)) };
  }
  if (message.byteLength > MAX_FRAME_BYTES) {
    throw new ProtocolViolation(`binary frame over ${MAX_FRAME_BYTES} bytes`, CLOSE_TOO_BIG);
  }
  const { header, body } = asViolation(() => decodeBinaryFrame(new Uint8Array(message), ResultHeaderSchema));
  return { kind: "result", header, body };
}

function asViolation<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof SwitchyardError) throw new ProtocolViolation(error.message);
    throw error;
  }
}
