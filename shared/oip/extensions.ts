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
