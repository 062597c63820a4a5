/**
 * Just enough of the protobuf wire format to walk an ONNX file's messages without decoding them: a field's
 * number, its wire type and where its bytes lie. Length-delimited fields (an initializer's weights, say) are
 * stepped over by their length and never read, so describing a model costs its small headers, not its size.
 * Reads go through a ByteSource, so the same walk runs over bytes in memory (the Worker, an upload) and over
 * a file read piece by piece (the agent).
 */

/** Random access to a model's bytes. */
export interface ByteSource {
  readonly size: number;
  /** `length` bytes at `offset` (fewer only at the end); the view may share memory with the source. */
  read(offset: number, length: number): Promise<Uint8Array>;
}

export class ProtobufError extends Error {
  override name = "ProtobufError";
}

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_LENGTH_DELIMITED = 2;
export const WIRE_FIXED32 = 5;

export interface FieldHeader {
  field: number;
  wireType: number;
  /** Where the field's payload starts. */
  start: number;
  /** Varint fields: the value (as a number; ONNX's int64 dims and enums fit). */
  value?: number;
  /** Length-delimited fields: the payload's length. */
  length?: number;
  /** Where the next field starts. */
  end: number;
}

/** A source over bytes already in memory (subarray views, no copies). */
export function memorySource(bytes: Uint8Array): ByteSource {
  return {
    size: bytes.byteLength,
    read: async (offset, length) => bytes.subarray(offset, Math.min(bytes.byteLength, offset + length)),
  };
}

/** Longest varint: ten bytes carry 64 bits. */
const MAX_VARINT_BYTES = 10;

/**
 * The fields of the message that spans [start, end) of `source`, one header at a time. Each header costs
 * one small read (a tag and a length); payloads are read only by callers that want them.
 */
export async function* fields(source: ByteSource, start: number, end: number): AsyncGenerator<FieldHeader> {
  let offset = start;
  while (offset < end) {
    const head = await source.read(offset, Math.min(2 * MAX_VARINT_BYTES, end - offset));
    const tag = readVarint(head, 0);
    const field = Math.floor(tag.value / 8);
    const wireType = tag.value % 8;
    if (field === 0) throw new ProtobufError(`field number 0 at byte ${offset}`);
    const payload = offset + tag.bytes;
    let header: FieldHeader;
    switch (wireType) {
      case WIRE_VARINT: {
        const value = readVarint(head, tag.bytes);
        header = { field, wireType, start: payload, value: value.value, end: payload + value.bytes };
        break;
      }
      case WIRE_FIXED64:
        header = { field, wireType, start: payload, end: payload + 8 };
        break;
      case WIRE_FIXED32:
        header = { field, wireType, start: payload, end: payload + 4 };
        break;
      case WIRE_LENGTH_DELIMITED: {
        const length = readVarint(head, tag.bytes);
        const from = payload + length.bytes;
        header = { field, wireType, start: from, length: length.value, end: from + length.value };
        break;
      }
      default:
        throw new ProtobufError(`unsupported wire type ${wireType} at byte ${offset}`);
    }
    if (header.end > end) throw new ProtobufError(`field ${field} at byte ${offset} runs past its message`);
    yield header;
    offset = header.end;
  }
}

/** The payload of a length-delimited field as UTF-8 text. */
export async function readString(source: ByteSource, header: FieldHeader): Promise<string> {
  const bytes = await source.read(header.start, header.end - header.start);
  return new TextDecoder().decode(bytes);
}

/**
 * A varint at `offset` of `bytes`. Values above 2^53 lose precision, which no ONNX enum or sensible
 * dimension reaches; negative int64s (ten bytes) come back as large positive numbers, and callers treat
 * them as unknown.
 */
function readVarint(bytes: Uint8Array, offset: number): { value: number; bytes: number } {
  let value = 0;
  let scale = 1;
  for (let index = 0; index < MAX_VARINT_BYTES; index++) {
    const byte = bytes[offset + index];
    if (byte === undefined) throw new ProtobufError("a varint runs past the end of its message");
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return { value, bytes: index + 1 };
    scale *= 128;
  }
  throw new ProtobufError("a varint longer than ten bytes");
}
