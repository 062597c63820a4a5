/**
 * The standalone agent's registered system shared memory regions (Triton's extension; the wire side is
 * shared/oip/shared-memory.ts). A region is a named window `[offset, offset + byte_size)` of a POSIX shared
 * memory object, which a client on this host created with shm_open (tritonclient's
 * `create_shared_memory_region`): on Linux the file /dev/shm/<key>. The agent reads inputs from it and
 * writes outputs to it through the file (Node cannot map memory): one copy each way, no HTTP body.
 *
 * The object is opened for each use rather than held open, so a region costs nothing while unused and an
 * object the client removed is found at its next use, not after a read of stale memory.
 *
 * Every thread that decodes requests (the main thread, or each HTTP intake thread) holds a copy of the table:
 * the main thread's answers register and unregister and hands every change to the others (intake-threads.ts)
 * before it answers, so a request that follows a registration finds it on any thread.
 */
import { closeSync, constants, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { join } from "node:path";
import { notFound, SwitchyardError } from "../../shared/errors.ts";
import {
  notRegisteredMessage,
  type RegionStatus,
  type RegisterRegionRequest,
  type SharedMemoryAccess,
  type SharedMemoryRef,
} from "../../shared/oip/shared-memory.ts";
import type { RegionsControl } from "../../shared/oip/shared-memory-endpoints.ts";
import { requestBuffers } from "../replica/buffer-pool.ts";

/** Where Linux keeps POSIX shared memory objects: shm_open("/name") is the file /dev/shm/name. */
export const SHARED_MEMORY_DIRECTORY = "/dev/shm";

/**
 * Regions registered at once. Each change is copied to every HTTP thread, so the table stays small: a client
 * that registers without unregistering is told to, rather than slowing every registration down.
 */
export const MAX_REGIONS = 1024;

/** Longest object name shm_open takes (NAME_MAX). */
const MAX_KEY_BYTES = 255;

/** A registered region: its object's key, and where in that object it lies. */
export interface Region {
  key: string;
  offset: number;
  byteSize: number;
}

export type RegionTable = [name: string, region: Region][];

type Problem = (message: string) => never;

export interface SharedMemoryRegionsOptions {
  /** Where the objects are (a test's own directory); /dev/shm by default. */
  directory?: string;
  /** The most bytes of shared memory inputs one request may bring (the agent's --max-body). */
  maxInputBytes: number;
}

export class SharedMemoryRegions implements SharedMemoryAccess {
  readonly #regions = new Map<string, Region>();
  readonly #directory: string;
  readonly maxInputBytes: number;
  /** Hands the table to the other threads that decode requests (intake-threads.ts sets it); resolves once they hold it. */
  #publish: (table: RegionTable) => Promise<void> = async () => {};

  constructor(options: SharedMemoryRegionsOptions) {
    this.#directory = options.directory ?? SHARED_MEMORY_DIRECTORY;
    this.maxInputBytes = options.maxInputBytes;
  }

  /** Who hears of every change: set before any thread that decodes requests starts, so none misses one. */
  publishTo(publish: (table: RegionTable) => Promise<void>): void {
    this.#publish = publish;
  }

  /** Resolves once every thread that decodes requests holds the table as it is now. */
  published(): Promise<void> {
    return this.#publish(this.table());
  }

  /**
   * Registers `name` as a window of the object `request.key`, after checking that the object exists, that
   * this process may read and write it, and that it holds the whole window.
   */
  register(name: string, request: RegisterRegionRequest): void {
    if (this.#regions.has(name))
      throw badRegion(`shared memory region '${name}' is already registered: unregister it first`);
    if (this.#regions.size >= MAX_REGIONS)
      throw badRegion(
        `${MAX_REGIONS} shared memory regions are registered, the most at once: unregister some first`,
      );
    const end = request.offset + request.byte_size;
    const size = this.#use(request.key, constants.O_RDWR, (_fd, bytes) => bytes);
    if (end > size) {
      throw badRegion(
        `shared memory object '${request.key}' holds ${size} bytes, but region '${name}' ends at byte ${end} (offset ${request.offset} + byte_size ${request.byte_size})`,
      );
    }
    this.#regions.set(name, { key: request.key, offset: request.offset, byteSize: request.byte_size });
  }

  /** Unregisters `name`, or every region without one; a name not registered is no error, as in Triton. */
  unregister(name?: string): void {
    if (name === undefined) this.#regions.clear();
    else this.#regions.delete(name);
  }

  /** The regions as GET .../status lists them; a name not registered is a 404. */
  status(name?: string): RegionStatus[] {
    const entries =
      name === undefined
        ? [...this.#regions]
        : [
            [
              name,
              this.#registered(name, (message) => {
                throw notFound(message);
              }),
            ] as const,
          ];
    return entries.map(([regionName, region]) => ({
      name: regionName,
      key: region.key,
      offset: region.offset,
      byte_size: region.byteSize,
    }));
  }

  /** The table, for the other threads' copies. */
  table(): RegionTable {
    return [...this.#regions].map(([name, region]) => [name, { ...region }]);
  }

  /** Takes the main thread's table as it is now (on an intake thread). */
  replace(table: RegionTable): void {
    this.#regions.clear();
    for (const [name, region] of table) this.#regions.set(name, region);
  }

  check(ref: SharedMemoryRef, problem: Problem): void {
    const region = this.#registered(ref.region, problem);
    if (ref.offset + ref.byteSize > region.byteSize) {
      problem(
        `shared memory region '${ref.region}' is ${region.byteSize} bytes, too small for ${ref.byteSize} bytes at offset ${ref.offset}`,
      );
    }
  }

  read(ref: SharedMemoryRef, problem: Problem): Uint8Array<ArrayBuffer> {
    this.check(ref, problem);
    const region = this.#registered(ref.region, problem);
    // From the pool the direct route reads bodies into: a fresh multi-megabyte buffer pays a page fault per
    // page, and this one moves to the session's thread and comes back to the pool as a body's would.
    const start = region.offset + ref.offset;
    return this.#use(region.key, constants.O_RDONLY, (fd, size) => {
      if (size < start + ref.byteSize) problem(shrank(region.key, ref.region));
      const into = new Uint8Array(requestBuffers.acquire(ref.byteSize), 0, ref.byteSize);
      if (readFully(fd, into, start) < into.byteLength) problem(shrank(region.key, ref.region));
      return into;
    });
  }

  /**
   * Writes an output's bytes (its parts, one after the other) at `ref`; more bytes than `ref` holds is the
   * client's 400, as Triton words it.
   */
  write(ref: SharedMemoryRef, output: string, parts: readonly Uint8Array[]): void {
    const problem: Problem = (message) => {
      throw new SwitchyardError("bad_input", `output '${output}': ${message}`);
    };
    const region = this.#registered(ref.region, problem);
    const length = parts.reduce((sum, part) => sum + part.byteLength, 0);
    if (length > ref.byteSize) {
      problem(
        `shared memory size specified with the request (${ref.byteSize} bytes) should be at least ${length} bytes to hold the results`,
      );
    }
    this.check(ref, problem);
    this.#use(region.key, constants.O_WRONLY, (fd, size) => {
      let position = region.offset + ref.offset;
      // A write past the object's end would grow it: the client's object is not ours to resize.
      if (size < position + length) problem(shrank(region.key, ref.region));
      for (const part of parts) {
        let done = 0;
        while (done < part.byteLength) {
          done += writeSync(fd, part, done, part.byteLength - done, position + done);
        }
        position += part.byteLength;
      }
    });
  }

  #registered(name: string, problem: Problem): Region {
    const region = this.#regions.get(name);
    if (region === undefined) problem(notRegisteredMessage(name));
    return region;
  }

  /**
   * The object's file: shm_open's rule for portable names (one leading slash, then a name without one),
   * so no key reaches a file outside the directory.
   */
  #pathOf(key: string): string {
    // As glibc's shm_open, which Triton calls: leading slashes name nothing.
    const name = key.replace(/^\/+/, "");
    if (
      name === "" ||
      name === "." ||
      name === ".." ||
      name.includes("/") ||
      name.includes("\0") ||
      Buffer.byteLength(name) > MAX_KEY_BYTES
    ) {
      throw badRegion(
        `'${key}' is not a shared memory key: a name such as /input0 (one leading slash, no other, at most ${MAX_KEY_BYTES} bytes)`,
      );
    }
    return join(this.#directory, name);
  }

  /**
   * Opens the object, runs `use` on it with its size, closes it. Only a regular file is one: a FIFO (opened
   * without O_NONBLOCK, it would block the thread until a writer came) or a directory put in the object's
   * place is refused, and so is a symbolic link. Whatever the file system refuses is the client's 400.
   */
  #use<T>(key: string, flags: number, use: (fd: number, size: number) => T): T {
    const path = this.#pathOf(key);
    let fd: number;
    try {
      fd = openSync(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw badRegion(
        code === "ENOENT"
          ? `shared memory object '${key}' does not exist on the agent's host (create it with shm_open, as tritonclient's create_shared_memory_region does)`
          : `shared memory object '${key}' cannot be opened by the agent (${code ?? "error"}): it must be readable and writable by the agent's user`,
      );
    }
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile())
        throw badRegion(`'${key}' is not a shared memory object (a regular file in ${this.#directory})`);
      return use(fd, stat.size);
    } catch (error) {
      if (error instanceof SwitchyardError) throw error;
      const code = (error as NodeJS.ErrnoException).code;
      throw badRegion(`shared memory object '${key}' could not be read or written (${code ?? "error"})`);
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * The regions as the shared-memory endpoints change them: each change reaches the other threads that decode
 * requests before the call is answered.
 */
export function regionsControl(regions: SharedMemoryRegions): RegionsControl {
  return {
    status: (name) => regions.status(name),
    async register(name, request) {
      regions.register(name, request);
      await regions.published();
    },
    async unregister(name) {
      regions.unregister(name);
      await regions.published();
    },
  };
}

const shrank = (key: string, region: string) =>
  `shared memory object '${key}' ends before region '${region}' does (it shrank after registering)`;

/** Reads into `into` from `position` until it is full or the file ends; returns the bytes read. */
function readFully(fd: number, into: Uint8Array, position: number): number {
  let done = 0;
  while (done < into.byteLength) {
    const read = readSync(fd, into, done, into.byteLength - done, position + done);
    if (read === 0) break;
    done += read;
  }
  return done;
}

const badRegion = (message: string) => new SwitchyardError("bad_input", message);
