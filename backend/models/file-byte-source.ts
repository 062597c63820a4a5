import { open } from "node:fs/promises";
import type { OnnxSignature } from "../../shared/onnx/onnx-signature.ts";
import { readOnnxSignature } from "../../shared/onnx/onnx-signature.ts";
import type { ByteSource } from "../../shared/onnx/protobuf-reader.ts";

/** Reads ahead this much per file read: one read covers many small headers, and skips never read. */
const WINDOW_BYTES = 64 * 1024;

/**
 * Describes a model file from its graph's headers (shared/onnx/onnx-signature.ts), reading the file in
 * small windows: a 1 GB model costs a few hundred kilobytes of reads, its weights are never touched.
 */
export async function describeOnnxFile(path: string): Promise<OnnxSignature> {
  const handle = await open(path, "r");
  try {
    const { size } = await handle.stat();
    let window = { offset: 0, bytes: new Uint8Array(0) };
    const source: ByteSource = {
      size,
      async read(offset, length) {
        const end = Math.min(size, offset + length);
        if (offset < window.offset || end > window.offset + window.bytes.byteLength) {
          const wanted = Math.min(size - offset, Math.max(length, WINDOW_BYTES));
          const bytes = new Uint8Array(wanted);
          const { bytesRead } = await handle.read(bytes, 0, wanted, offset);
          window = { offset, bytes: bytes.subarray(0, bytesRead) };
        }
        return window.bytes.subarray(offset - window.offset, end - window.offset);
      },
    };
    return await readOnnxSignature(source);
  } finally {
    await handle.close();
  }
}
