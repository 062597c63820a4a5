import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach } from "vitest";
import { openRepository } from "../../../backend/models/open-repository.ts";
import { Replica, type ReplicaOptions } from "../../../backend/replica/replica.ts";
import { REPO_DIR } from "../../fixtures/paths.ts";

/**
 * Real CPU replicas over the generated test repository, each with a cache directory of its own, closed
 * after every test. `defaults` are the file's own settings; each call may override them again. `make`: a
 * subclass of Replica instead (one that counts what its hooks hear).
 */
export function useTestReplicas<R extends Replica = Replica>(
  defaults: Partial<ReplicaOptions> = {},
  make: (options: ReplicaOptions) => R = (options) => new Replica(options) as R,
): (overrides?: Partial<ReplicaOptions>) => R {
  const replicas: R[] = [];
  afterEach(async () => {
    await Promise.all(replicas.splice(0).map((replica) => replica.close()));
  });
  return (overrides = {}) => {
    const replica = make({
      id: "0",
      device: { kind: "cpu" },
      repository: openRepository(REPO_DIR, { cacheDir: mkdtempSync(join(tmpdir(), "switchyard-cache-")) }),
      maxModels: 3,
      maxModelBytes: 2 ** 30,
      keepAliveMs: 0,
      maxConcurrency: 4,
      intraOpThreads: 1,
      ...defaults,
      ...overrides,
    });
    replicas.push(replica);
    return replica;
  };
}
