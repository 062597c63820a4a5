/**
 * Counts what the registry writes, by kind: key-value writes (puts and deletes), alarms set, and socket
 * attachments serialized. Storage writes are what Cloudflare bills and what slows a Durable Object's
 * request path; attachments cost CPU (a structured clone per write) on every result that changes an agent's
 * record. Counted since the object started (a restart starts again from zero, as Prometheus allows of a
 * counter), shown at /metrics and read by `npm run bench:registry` per request.
 */
export interface StorageWrites {
  kv: number;
  alarm: number;
  attachment: number;
}

export class StorageMeter {
  readonly #writes: StorageWrites = { kv: 0, alarm: 0, attachment: 0 };

  count(kind: keyof StorageWrites): void {
    this.#writes[kind] += 1;
  }

  writes(): StorageWrites {
    return { ...this.#writes };
  }

  /** The object's key-value storage, with every put and delete counted. */
  metered(kv: SyncKvStorage): SyncKvStorage {
    return {
      get: <T>(key: string) => kv.get<T>(key),
      list: <T>(options?: SyncKvListOptions) => kv.list<T>(options),
      put: <T>(key: string, value: T) => {
        this.count("kv");
        kv.put(key, value);
      },
      delete: (key: string) => {
        this.count("kv");
        return kv.delete(key);
      },
    };
  }
}
