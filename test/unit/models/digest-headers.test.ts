import { expect, test } from "vitest";
import { sha256FromHeaders } from "../../../backend/models/digest-headers.ts";
import { sha256Hex } from "./temp-files.ts";

const hex = sha256Hex("model bytes");
const base64 = Buffer.from(hex, "hex").toString("base64");

test("reads sha-256 from each header spelling, ignoring other algorithms and parameters", () => {
  const headers = new Headers({
    "Repr-Digest": `sha-512=:${Buffer.alloc(64).toString("base64")}:, sha-256=:${base64}:;note=1`,
    Digest: `MD5=AAAAAAAAAAAAAAAAAAAAAA==, SHA-256=${base64}`,
    "X-Checksum-Sha256": hex.toUpperCase(),
  });
  expect(sha256FromHeaders(headers)).toEqual([
    { header: "Repr-Digest", sha256: hex },
    { header: "Digest", sha256: hex },
    { header: "X-Checksum-Sha256", sha256: hex },
  ]);
});

test("unreadable digests vouch for nothing", () => {
  const headers = new Headers({
    "Repr-Digest": `sha-256=${base64}`, // not a structured-field byte sequence
    Digest: `sha-256=${Buffer.alloc(16).toString("base64")}`, // too short for SHA-256
    "X-Checksum-Sha256": "not-hex",
  });
  expect(sha256FromHeaders(headers)).toEqual([]);
  expect(sha256FromHeaders(new Headers())).toEqual([]);
});
