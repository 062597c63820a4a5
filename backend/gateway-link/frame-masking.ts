/**
 * Whether the agent masks what it sends the gateway. RFC 6455 has a client mask every frame so that a
 * browser script cannot make its bytes look like something else (an HTTP request) to a proxy between it and
 * the server that misreads websocket traffic. Masking costs the agent's main thread a pass over every byte:
 * 1.6 ms per 1.6 MB result and 4.7 ms per 4.9 MB in `ws` without its native addon (a copy and a pass),
 * on the thread that routes every request (bench/results/frame-masking.md).
 * Frames the proxies on the way cannot read have nothing to hide from them: over TLS (wss://) and on the
 * loopback interface the agent sends them unmasked (an all-zero mask, which `ws` then skips applying, and
 * which every server reads as it reads any mask). Over plain ws:// across a network it keeps masking.
 */
import { isIP } from "node:net";

/** The `ws` client options for frames sent to `url`: a zero mask where masking protects nothing. */
export function maskingFor(url: string): { generateMask?: (mask: Uint8Array) => void } {
  return masksNothing(new URL(url)) ? { generateMask: (mask) => mask.fill(0) } : {};
}

function masksNothing(url: URL): boolean {
  if (url.protocol === "wss:") return true;
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}
