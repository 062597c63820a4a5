/**
 * The relay anchor's one frame layout, both ways over its websocket (worker.ts <-> anchor-server.ts --relay):
 * [u32 LE id][i32 LE Inference-Header-Content-Length, -1 when the body is all JSON][body]. Nothing else
 * travels: no model name (one socket per model), no timings, no state.
 */
const PREFIX_BYTES = 8;
const NO_HEADER_LENGTH = -1;

export interface AnchorFrame {
  id: number;
  headerLength: number | undefined;
  body: Uint8Array;
}

/** One frame of `parts` written one after another (the answer's JSON, then each binary output). */
export function encodeAnchorFrame(
  id: number,
  headerLength: number | undefined,
  parts: readonly Uint8Array[],
): Uint8Array {
  const frame = new Uint8Array(PREFIX_BYTES + parts.reduce((sum, part) => sum + part.byteLength, 0));
  const view = new DataView(frame.buffer);
  view.setUint32(0, id, true);
  view.setInt32(4, headerLength ?? NO_HEADER_LENGTH, true);
  let offset = PREFIX_BYTES;
  for (const part of parts) {
    frame.set(part, offset);
    offset += part.byteLength;
  }
  return frame;
}

export function decodeAnchorFrame(frame: Uint8Array): AnchorFrame {
  if (frame.byteLength < PREFIX_BYTES) throw new Error("anchor frame shorter than its prefix");
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const headerLength = view.getInt32(4, true);
  return {
    id: view.getUint32(0, true),
    headerLength: headerLength === NO_HEADER_LENGTH ? undefined : headerLength,
    body: frame.subarray(PREFIX_BYTES),
  };
}
