/**
 * What masking costs the agent for each frame it sends the gateway (backend/gateway-link/frame-masking.ts):
 * `ws`'s own framing of a result, masked with a random key as RFC 6455 asks of clients, against the
 * all-zero key the agent uses over TLS and on loopback, on the thread that frames it (the agent's main
 * thread, which also routes every request). Sizes: a small MLP's answer, PP-OCRv4 detection's 1.6 MB output
 * and a 4.9 MB one. Writes bench/results/frame-masking.md.
 *
 *   npm run bench:frame-masking
 */
import { writeFileSync } from "node:fs";
import os from "node:os";
import * as ws from "ws";
import { maskingFor } from "../../backend/gateway-link/frame-masking.ts";
import { summarize } from "../gpu/measure.ts";

interface FrameOptions {
  fin: boolean;
  mask: boolean;
  readOnly: boolean;
  opcode: number;
  rsv1: boolean;
  generateMask?: (mask: Uint8Array) => void;
}
/** ws's framing (lib/sender.js), which it exports at runtime but its type declarations leave out. */
const { Sender } = ws as unknown as {
  Sender: { frame(data: Buffer, options: FrameOptions): unknown };
};

const ROUNDS = 200;
const SIZES = [
  { label: "MLP answer, 200 B", bytes: 200 },
  { label: "det output, 1.6 MB", bytes: 640 * 640 * 4 },
  { label: "4.9 MB", bytes: 3 * 640 * 640 * 4 },
];
const clear = maskingFor("wss://gateway.example.com/agent/connect").generateMask;

/** Median microseconds to frame `payload` as a binary message, as `ws` does for a client's send(). */
function frameTime(payload: Buffer, generateMask: ((mask: Uint8Array) => void) | undefined): number {
  const times: number[] = [];
  for (let round = 0; round < ROUNDS; round += 1) {
    const started = performance.now();
    Sender.frame(payload, {
      fin: true,
      mask: true,
      readOnly: true,
      opcode: 2,
      rsv1: false,
      ...(generateMask === undefined ? {} : { generateMask }),
    });
    times.push((performance.now() - started) * 1000);
  }
  return summarize(times).p50;
}

const rows = SIZES.map(({ label, bytes }) => {
  const payload = Buffer.alloc(bytes, 7);
  // Warm both paths first.
  frameTime(payload, undefined);
  frameTime(payload, clear);
  const masked = frameTime(payload, undefined);
  const unmasked = frameTime(payload, clear);
  const row = `| ${label} | ${masked.toFixed(1)} | ${unmasked.toFixed(1)} |`;
  console.log(row);
  return row;
});

const report = `# Masking the agent's frames

- Machine: ${os.availableParallelism()} cores (${os.cpus()[0]?.model.trim() ?? "unknown"}), Node ${process.version}, ws without its native addon (as the agent ships).
- Command: \`npm run bench:frame-masking\` (bench/gateway/frame-masking.ts), ${new Date().toISOString().slice(0, 10)}; median of ${ROUNDS} framings each.

What \`ws\` spends on the agent's main thread to frame one binary message for the gateway: with a random
mask (RFC 6455's client rule: the payload is copied into a new buffer and XORed with the key), and with the
all-zero key the agent uses over TLS and on loopback (\`ws\` then sends the payload as it is, beside its
header). backend/gateway-link/frame-masking.ts says why the zero key is safe there.

| message | masked (µs) | unmasked (µs) |
|---|---|---|
${rows.join("\n")}
`;
writeFileSync("bench/results/frame-masking.md", report);
console.log("wrote bench/results/frame-masking.md");
