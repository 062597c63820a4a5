import { describe, expect, test } from "vitest";
import { VersionMemo } from "../../../backend/replica/version-memo.ts";

describe("VersionMemo", () => {
  test("answers from memory; once stale, still answers while the repository is read again", async () => {
    let now = 0;
    let latest = "1";
    let reads = 0;
    const memo = new VersionMemo(1000, () => now);
    const resolve = async () => {
      reads += 1;
      return { name: "det", version: latest };
    };
    expect(await memo.resolve("det", resolve)).toEqual({ name: "det", version: "1" });
    latest = "2";
    now = 500;
    expect((await memo.resolve("det", resolve)).version).toBe("1");
    expect(reads).toBe(1);
    now = 1600;
    // Stale: this request is not held up, and the next one sees the new version.
    expect((await memo.resolve("det", resolve)).version).toBe("1");
    await Promise.resolve();
    expect((await memo.resolve("det", resolve)).version).toBe("2");
    expect(reads).toBe(2);
  });

  test("a refresh that fails forgets the answer, so the next request meets the failure", async () => {
    let now = 0;
    const memo = new VersionMemo(1000, () => now);
    await memo.resolve("gone", async () => ({ name: "gone", version: "1" }));
    now = 2000;
    const failing = async () => {
      throw new Error('model "gone" not found');
    };
    expect((await memo.resolve("gone", failing)).version).toBe("1");
    await new Promise((resolve) => setImmediate(resolve));
    await expect(memo.resolve("gone", failing)).rejects.toThrow(/not found/);
  });
});
