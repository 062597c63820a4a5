import { badInput, notFound } from "../errors.ts";
import { parseOrBadInput } from "./schemas.ts";
import {
  notRegisteredMessage,
  type RegionStatus,
  type RegisterRegionRequest,
  registerRegionSchema,
  SHARED_MEMORY_NOT_OFFERED,
} from "./shared-memory.ts";

/** A server's registered regions, as its shared-memory calls change and list them. */
export interface RegionsControl {
  /** Every region, or the one named (a name not registered is a 404). */
  status(name?: string): RegionStatus[];
  /** Resolves once a request that follows would find the region, on whichever thread decodes it. */
  register(name: string, request: RegisterRegionRequest): Promise<void>;
  /** The one named, or all; a name not registered is no error, as in Triton. */
  unregister(name?: string): Promise<void>;
}

/** One entry of a CUDA shared memory status (none is ever registered: see sharedMemoryEndpoints). */
export interface CudaRegionStatus {
  name: string;
  device_id: number;
  byte_size: number;
}

/**
 * Triton's shared-memory calls as both protocols serve them (HTTP's /v2/systemsharedmemory and
 * /v2/cudasharedmemory routes, gRPC's SystemSharedMemory* and CudaSharedMemory* calls): each answer, or the
 * one error type. A name left out (`undefined`) means every region.
 */
export interface SharedMemoryEndpoints {
  systemStatus(name?: string): RegionStatus[];
  /** `request` as the client sent it: checked here, so both protocols refuse the same things alike. */
  systemRegister(name: string, request: unknown): Promise<void>;
  systemUnregister(name?: string): Promise<void>;
  cudaStatus(name?: string): CudaRegionStatus[];
  cudaRegister(): never;
  cudaUnregister(): void;
}

/**
 * With `regions` (the standalone agent started with --allow-client-shm) system shared memory is offered.
 * Without (the gateway, or an agent without the flag) nothing can be registered: status lists nothing,
 * unregister has nothing to do (so a client's clean-up at exit still succeeds), register is refused with
 * where shared memory is offered. CUDA shared memory is offered by neither (a CUDA IPC handle needs the CUDA
 * runtime in the server's own code): the same answers, register's saying to use system shared memory.
 */
export function sharedMemoryEndpoints(regions: RegionsControl | undefined): SharedMemoryEndpoints {
  return {
    systemStatus(name) {
      if (regions !== undefined) return regions.status(name);
      if (name !== undefined) throw notRegistered(name);
      return [];
    },
    async systemRegister(name, request) {
      if (name === "") throw badInput("a shared memory region needs a name");
      const checked = parseOrBadInput(registerRegionSchema, request, "request body");
      if (regions === undefined) throw badInput(SHARED_MEMORY_NOT_OFFERED);
      await regions.register(name, checked);
    },
    async systemUnregister(name) {
      await regions?.unregister(name);
    },
    cudaStatus(name) {
      if (name !== undefined) throw notRegistered(name);
      return [];
    },
    cudaRegister() {
      throw badInput(
        "CUDA shared memory is not offered: copy the tensors to host memory and register that as system shared memory",
      );
    },
    cudaUnregister() {},
  };
}

const notRegistered = (name: string) => notFound(notRegisteredMessage(name));
