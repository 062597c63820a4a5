/**
 * Triton's system shared-memory extension, as the wire sees it: a tensor's `shared_memory_region`,
 * `shared_memory_offset` and `shared_memory_byte_size` parameters, and the register request. A client on
 * the server's host puts an input's bytes in a shared memory object it created (tritonclient's
 * `create_shared_memory_region`), registers a region of it, and names the region instead of sending the
 * bytes; an output named so is written there instead of into the response.
 *
 * Only the standalone agent offers it (started with --allow-client-shm): the codec takes the agent's regions
 * as a SharedMemoryAccess, and without one (the gateway, whose clients are on other hosts) a request that
 * names a region is a 400 rather than an answer the client would read from memory nobody wrote.
 */
import { z } from "zod";
import { describeValue } from "./schemas.ts";

export const SHARED_MEMORY_REGION = "shared_memory_region";
export const SHARED_MEMORY_OFFSET = "shared_memory_offset";
export const SHARED_MEMORY_BYTE_SIZE = "shared_memory_byte_size";

/** A tensor's place in a registered region. */
export interface SharedMemoryRef {
  region: string;
  /** Bytes into the region (not into the object). */
  offset: number;
  byteSize: number;
}

/**
 * The server's registered regions, as the codec reads inputs from them and checks outputs' places; each
 * tells `problem` what is wrong (it throws, naming the tensor).
 */
export interface SharedMemoryAccess {
  /**
   * The most bytes a request's inputs may take from shared memory, as a body may bring (--max-body): a
   * sparse object registers any size and costs nothing until read.
   */
  readonly maxInputBytes: number;
  /** Unless `ref` lies inside a registered region, says so. */
  check(ref: SharedMemoryRef, problem: (message: string) => never): void;
  /** The tensor's bytes, copied out of its region into a buffer of their own. */
  read(ref: SharedMemoryRef, problem: (message: string) => never): Uint8Array<ArrayBuffer>;
}

/** Why a request naming a region is refused where no regions are offered. */
export const SHARED_MEMORY_NOT_OFFERED =
  "system shared memory is only offered by a standalone agent started with --allow-client-shm, to clients on its host; send the tensor in the request instead";

/** What both servers say of a region name that is not registered (a 404 from status, a 400 from infer). */
export const notRegisteredMessage = (name: string) => `shared memory region '${name}' is not registered`;

/**
 * The tensor's shared memory place from its parameters, undefined where it names none. `problem` is told
 * what is wrong (and throws): as in Triton, a region without a byte size, or a size without a region.
 */
export function sharedMemoryRefOf(
  parameters: Record<string, unknown> | undefined,
  problem: (message: string) => never,
): SharedMemoryRef | undefined {
  if (parameters === undefined) return undefined;
  const region = parameters[SHARED_MEMORY_REGION];
  const byteSize = parameters[SHARED_MEMORY_BYTE_SIZE];
  const offset = parameters[SHARED_MEMORY_OFFSET];
  if (region === undefined && byteSize === undefined && offset === undefined) return undefined;
  if (typeof region !== "string" || region === "")
    problem(`parameters.${SHARED_MEMORY_REGION} must name a registered region, got ${describeValue(region)}`);
  return {
    region,
    byteSize: byteCount(byteSize, SHARED_MEMORY_BYTE_SIZE, problem),
    offset: offset === undefined ? 0 : byteCount(offset, SHARED_MEMORY_OFFSET, problem),
  };
}

function byteCount(value: unknown, name: string, problem: (message: string) => never): number {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return value;
  return problem(`parameters.${name} must be a whole number of bytes, got ${describeValue(value)}`);
}

const BYTE_COUNT = "must be a whole number of bytes";

/** POST /v2/systemsharedmemory/region/{name}/register's body. */
export const registerRegionSchema = z.object({
  key: z.string().min(1, "must name a shared memory object, such as /input0"),
  offset: z.int(BYTE_COUNT).nonnegative(BYTE_COUNT),
  byte_size: z.int(BYTE_COUNT).nonnegative(BYTE_COUNT),
});
export type RegisterRegionRequest = z.infer<typeof registerRegionSchema>;

/** One entry of GET /v2/systemsharedmemory[/region/{name}]/status. */
export interface RegionStatus {
  name: string;
  key: string;
  offset: number;
  byte_size: number;
}
