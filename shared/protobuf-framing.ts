/**
 * Protobuf fields framed by hand: for the bytes a generated encoder cannot produce without holding them
 * whole (a model's weights, streamed; a gRPC answer's tensors, written as they are), and for places where no
 * generated encoder can run (workerd forbids onnx-proto's code generation, so the workers tests build their
 * tiny models with this).
 */

/** Base-128 varint; arithmetic instead of bit operations because lengths may exceed 2^31. */
export function varint(value: number): Uint8Array {
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Uint8Array.from(bytes);
}

export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(parts.reduce((sum, part) => sum + part.byteLength, 0));
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.byteLength;
  }
  return bytes;
}

/** Key and length of a length-delimited field whose `length` payload bytes follow separately. */
export function fieldPrefix(field: number, length: number): Uint8Array {
  return concat(varint(field * 8 + 2), varint(length));
}

/** A length-delimited field with its payload. */
export const lengthDelimited = (field: number, payload: Uint8Array): Uint8Array =>
  concat(fieldPrefix(field, payload.byteLength), payload);

/** A varint field. */
export const varintField = (field: number, value: number): Uint8Array =>
  concat(varint(field * 8), varint(value));
