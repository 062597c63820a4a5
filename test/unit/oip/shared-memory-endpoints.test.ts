import { describe, expect, test } from "vitest";
import { SwitchyardError } from "../../../shared/errors.ts";
import type { RegisterRegionRequest } from "../../../shared/oip/shared-memory.ts";
import { SHARED_MEMORY_NOT_OFFERED } from "../../../shared/oip/shared-memory.ts";
import { type RegionsControl, sharedMemoryEndpoints } from "../../../shared/oip/shared-memory-endpoints.ts";

/** The error a call fails with, as its code and message. */
async function failure(call: () => unknown): Promise<[string, string] | "no error"> {
  try {
    await call();
    return "no error";
  } catch (error) {
    if (!(error instanceof SwitchyardError)) throw error;
    return [error.code, error.message];
  }
}

/** Regions kept in a map, as the agent's table keeps them (its file checks are the integration tests'). */
function inMemoryRegions(): RegionsControl & { registered: Map<string, RegisterRegionRequest> } {
  const registered = new Map<string, RegisterRegionRequest>();
  return {
    registered,
    status: (name) =>
      [...registered]
        .filter(([regionName]) => name === undefined || regionName === name)
        .map(([regionName, region]) => ({ name: regionName, ...region })),
    register: async (name, request) => {
      registered.set(name, request);
    },
    unregister: async (name) => {
      if (name === undefined) registered.clear();
      else registered.delete(name);
    },
  };
}

describe("Triton's shared-memory calls, as both protocols answer them", () => {
  test("where none is offered: nothing listed, register refused after its body is checked, clean-up succeeds", async () => {
    const endpoints = sharedMemoryEndpoints(undefined);
    expect(endpoints.systemStatus()).toEqual([]);
    expect(await failure(() => endpoints.systemStatus("in"))).toEqual([
      "not_found",
      "shared memory region 'in' is not registered",
    ]);
    expect(
      await failure(() => endpoints.systemRegister("in", { key: "/in", offset: 0, byte_size: 8 })),
    ).toEqual(["bad_input", SHARED_MEMORY_NOT_OFFERED]);
    // A malformed request says what is wrong with it first, wherever it is sent.
    expect(
      await failure(() => endpoints.systemRegister("in", { key: "/in", offset: -1, byte_size: 8 })),
    ).toEqual(["bad_input", expect.stringContaining("offset")]);
    expect(await failure(() => endpoints.systemUnregister())).toBe("no error");
    expect(await failure(() => endpoints.systemUnregister("in"))).toBe("no error");
  });

  test("where offered: a checked request is registered, listed, and unregistered by name or all at once", async () => {
    const regions = inMemoryRegions();
    const endpoints = sharedMemoryEndpoints(regions);
    await endpoints.systemRegister("a", { key: "/a", offset: 8, byte_size: 64 });
    await endpoints.systemRegister("b", { key: "/b", offset: 0, byte_size: 16 });
    expect(endpoints.systemStatus("a")).toEqual([{ name: "a", key: "/a", offset: 8, byte_size: 64 }]);
    expect(await failure(() => endpoints.systemRegister("", { key: "/c", offset: 0, byte_size: 8 }))).toEqual(
      ["bad_input", "a shared memory region needs a name"],
    );
    expect(await failure(() => endpoints.systemRegister("c", { key: "", offset: 0, byte_size: 8 }))).toEqual([
      "bad_input",
      expect.stringContaining("must name a shared memory object"),
    ]);
    expect(
      await failure(() => endpoints.systemRegister("c", { key: "/c", offset: 0, byte_size: 2 ** 53 + 2 })),
    ).toEqual(["bad_input", expect.stringContaining("must be a whole number of bytes")]);
    expect([...regions.registered.keys()]).toEqual(["a", "b"]);
    await endpoints.systemUnregister("a");
    expect([...regions.registered.keys()]).toEqual(["b"]);
    await endpoints.systemUnregister();
    expect(regions.registered.size).toBe(0);
  });

  test("CUDA shared memory is offered by neither server: register says to use system shared memory", async () => {
    for (const endpoints of [sharedMemoryEndpoints(undefined), sharedMemoryEndpoints(inMemoryRegions())]) {
      expect(endpoints.cudaStatus()).toEqual([]);
      expect(await failure(() => endpoints.cudaStatus("gpu"))).toEqual([
        "not_found",
        "shared memory region 'gpu' is not registered",
      ]);
      expect(await failure(() => endpoints.cudaRegister())).toEqual([
        "bad_input",
        expect.stringContaining("register that as system shared memory"),
      ]);
      expect(await failure(() => endpoints.cudaUnregister())).toBe("no error");
    }
  });
});
