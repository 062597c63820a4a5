/**
 * The OIP extensions (Triton's names) that the gateway and the standalone agent both implement, as their
 * server metadata (GET /v2) lists them: clients such as tritonclient check this list before using one.
 */
export const OIP_EXTENSIONS: readonly string[] = [
  "binary_tensor_data",
  "model_repository",
  "statistics",
  "parameters",
  "classification",
];

/** Listed besides those only by a standalone agent that offers it (--allow-client-shm; shared-memory.ts). */
export const SYSTEM_SHARED_MEMORY_EXTENSION = "system_shared_memory";

/** Triton's logging extension (GET/POST /v2/logging): the standalone agent's alone (its own log's settings). */
export const LOGGING_EXTENSION = "logging";
