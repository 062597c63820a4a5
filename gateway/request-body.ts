import { SwitchyardError } from "../shared/errors.ts";

/**
 * A request body as bytes, refused with 413 once it passes `maxBytes`: by its Content-Length before
 * anything is read, else while streaming, so an oversized body is never held in memory whole.
 */
export async function readBody(request: Request, maxBytes: number, what: string): Promise<Uint8Array> {
  const tooLarge = () =>
    new SwitchyardError("too_large", `${what} is larger than the limit of ${maxBytes} bytes`);
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge();
  if (request.body === null) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let length = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    length += value.byteLength;
    if (length > maxBytes) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  if (chunks.length === 1 && chunks[0] !== undefined) return chunks[0];
  const body = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}
