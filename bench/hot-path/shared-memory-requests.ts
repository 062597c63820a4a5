/**
 * The hot-path benchmark's `shm` encoding: a request whose input and outputs travel through system shared
 * memory (Triton's extension, the standalone agent with --allow-client-shm), as tritonclient's shared-memory
 * examples send it. The input's bytes are put in an object in /dev/shm once and registered as a region; an
 * output region holds every output one after the other. The body is then a few hundred bytes of JSON.
 * Concurrent clients share the regions: the outputs they write are the same bytes (the same input).
 */
import { randomUUID } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SHARED_MEMORY_DIRECTORY } from "../../backend/server/shared-memory-regions.ts";
import { tensorBinary } from "../../shared/oip/codec.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import type { Answer, PreparedRequest } from "./http-load.ts";

export interface SharedMemoryRequest {
  prepared: PreparedRequest;
  /** Throws unless the answer names the outputs and the output region holds `expected`, bit for bit. */
  verify(answer: Answer): void;
  /** Unregisters the regions and removes their objects. */
  release(): Promise<void>;
}

/** Registers regions for `input` and the outputs (their names and bytes as a direct run gives them) at `url`. */
export async function prepareInSharedMemory(
  url: string,
  model: string,
  input: Tensor,
  expected: ReadonlyArray<{ name: string; bytes: Uint8Array }>,
  headers: Record<string, string>,
): Promise<SharedMemoryRequest> {
  const id = randomUUID();
  const inputBytes = tensorBinary(input);
  const outputBytes = expected.reduce((sum, output) => sum + output.bytes.byteLength, 0);
  const objects = { in: `switchyard-bench-in-${id}`, out: `switchyard-bench-out-${id}` };
  writeFileSync(join(SHARED_MEMORY_DIRECTORY, objects.in), inputBytes);
  writeFileSync(join(SHARED_MEMORY_DIRECTORY, objects.out), new Uint8Array(outputBytes));
  const regions = { in: `in-${id}`, out: `out-${id}` };
  const control = async (path: string, body?: unknown) => {
    const response = await fetch(`${url}/v2/systemsharedmemory${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  };
  await control(`/region/${regions.in}/register`, {
    key: `/${objects.in}`,
    offset: 0,
    byte_size: inputBytes.byteLength,
  });
  await control(`/region/${regions.out}/register`, {
    key: `/${objects.out}`,
    offset: 0,
    byte_size: outputBytes,
  });

  let offset = 0;
  const outputs = expected.map((output) => {
    const place = {
      shared_memory_region: regions.out,
      shared_memory_offset: offset,
      shared_memory_byte_size: output.bytes.byteLength,
    };
    offset += output.bytes.byteLength;
    return { name: output.name, parameters: place };
  });
  const body = new TextEncoder().encode(
    JSON.stringify({
      inputs: [
        {
          name: input.name,
          datatype: input.datatype,
          shape: input.shape,
          parameters: { shared_memory_region: regions.in, shared_memory_byte_size: inputBytes.byteLength },
        },
      ],
      outputs,
    }),
  );
  return {
    prepared: {
      path: `/v2/models/${model}/infer`,
      body,
      headers: { ...headers, "content-type": "application/json" },
    },
    verify(answer) {
      const answered = JSON.parse(answer.body.toString("utf8")) as {
        outputs: { name: string; data?: unknown }[];
      };
      const names = answered.outputs.map((output) => output.name);
      if (
        answered.outputs.some((output) => output.data !== undefined) ||
        names.join() !== expected.map((output) => output.name).join()
      )
        throw new Error(
          `the shared-memory answer should name ${expected.map((output) => output.name)} without data`,
        );
      const written = new Uint8Array(readFileSync(join(SHARED_MEMORY_DIRECTORY, objects.out)));
      let at = 0;
      for (const output of expected) {
        const got = written.subarray(at, at + output.bytes.byteLength);
        if (!got.every((byte, index) => byte === output.bytes[index]))
          throw new Error(`shm outputs differ from a direct onnxruntime run (output ${output.name})`);
        at += output.bytes.byteLength;
      }
    },
    async release() {
      for (const region of Object.values(regions))
        await control(`/region/${region}/unregister`).catch(() => undefined);
      for (const name of Object.values(objects)) rmSync(join(SHARED_MEMORY_DIRECTORY, name), { force: true });
    },
  };
}
