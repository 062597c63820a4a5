/**
 * The registry's storage writes, read from the gateway's Prometheus endpoint (GET /metrics?pool=, admin key):
 * `switchyard_gateway_registry_storage_writes_total{pool,kind}`, counted by the registry since it started
 * (gateway/registry/storage-meter.ts). The benchmark takes the difference over its window.
 */
const METRIC = "switchyard_gateway_registry_storage_writes_total";
export const WRITE_KINDS = ["kv", "alarm", "attachment"] as const;
export type WriteKind = (typeof WRITE_KINDS)[number];
export type StorageWrites = Record<WriteKind, number>;

/** The pool's counters now; undefined when the gateway does not export the metric (an older gateway). */
export async function readStorageWrites(
  gatewayUrl: string,
  pool: string,
  adminKey: string,
): Promise<StorageWrites | undefined> {
  const response = await fetch(`${gatewayUrl}/metrics?pool=${encodeURIComponent(pool)}`, {
    headers: { Authorization: `Bearer ${adminKey}` },
  });
  const text = await response.text();
  if (response.status !== 200)
    throw new Error(`GET /metrics: HTTP ${response.status}: ${text.slice(0, 300)}`);
  const writes: Partial<StorageWrites> = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${METRIC}{`)) continue;
    const match = /^\S+\{([^}]*)\}\s+(\S+)/.exec(line);
    if (match?.[1] === undefined || match[2] === undefined) continue;
    const labels = Object.fromEntries(
      [...match[1].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((label) => [label[1], label[2]]),
    );
    const kind = WRITE_KINDS.find((known) => known === labels.kind);
    if (labels.pool === pool && kind !== undefined) writes[kind] = Number(match[2]);
  }
  if (WRITE_KINDS.some((kind) => writes[kind] === undefined)) return undefined;
  return { kv: writes.kv ?? 0, alarm: writes.alarm ?? 0, attachment: writes.attachment ?? 0 };
}

export function writesBetween(
  before: StorageWrites | undefined,
  after: StorageWrites | undefined,
): StorageWrites | undefined {
  if (before === undefined || after === undefined) return undefined;
  return {
    kv: after.kv - before.kv,
    alarm: after.alarm - before.alarm,
    attachment: after.attachment - before.attachment,
  };
}
