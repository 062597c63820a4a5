/** SHA-256 of a file, streamed so that multi-gigabyte models never sit in memory. */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";

export async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
