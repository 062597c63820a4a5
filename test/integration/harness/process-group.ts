/**
 * Process groups for the integration tests: the implementation is scripts/lib/process-group.ts, which
 * `npm start` and the benchmarks use too.
 */
export {
  describeProcesses,
  isRunning,
  type ManagedProcess,
  type SpawnGroupOptions,
  spawnGroup,
  tail,
} from "../../../scripts/lib/process-group.ts";
