/**
 * SHA-256 digests that a server announces for a response body, in the three spellings seen in the wild:
 *
 *   Repr-Digest: sha-256=:<base64>:     RFC 9530 (a structured-field dictionary; other algorithms ignored)
 *   Digest: SHA-256=<base64>            RFC 3230, its predecessor (algorithm names are case-insensitive)
 *   X-Checksum-Sha256: <hex>            Artifactory, Nexus and friends
 *
 * A header that is present but unreadable is ignored rather than trusted or fatal: it can neither vouch
 * for the file nor prove it wrong. Only meaningful for a response without Content-Encoding, since fetch
 * decodes bodies and these digests cover the encoded bytes.
 */

export interface AnnouncedDigest {
  /** Which header said so, for error messages. */
  header: string;
  sha256: string;
}

export function sha256FromHeaders(headers: Headers): AnnouncedDigest[] {
  const found: AnnouncedDigest[] = [];
  const repr = headers.get("repr-digest");
  const fromRepr = repr === null ? undefined : fromDictionary(repr, /^:([A-Za-z0-9+/]+={0,2}):/);
  if (fromRepr) found.push({ header: "Repr-Digest", sha256: fromRepr });
  const legacy = headers.get("digest");
  const fromLegacy = legacy === null ? undefined : fromDictionary(legacy, /^([A-Za-z0-9+/]+={0,2})$/);
  if (fromLegacy) found.push({ header: "Digest", sha256: fromLegacy });
  const hex = headers.get("x-checksum-sha256")?.trim();
  if (hex !== undefined && /^[0-9a-fA-F]{64}$/.test(hex)) {
    found.push({ header: "X-Checksum-Sha256", sha256: hex.toLowerCase() });
  }
  return found;
}

/** The sha-256 member of a comma-separated `algorithm=value` list, as hex. */
function fromDictionary(header: string, valuePattern: RegExp): string | undefined {
  for (const member of header.split(",")) {
    const equals = member.indexOf("=");
    if (equals < 0) continue;
    if (member.slice(0, equals).trim().toLowerCase() !== "sha-256") continue;
    // Structured-field parameters (";...") follow the value; none of them matter here.
    const value =
      member
        .slice(equals + 1)
        .trim()
        .split(";")[0] ?? "";
    const base64 = valuePattern.exec(value.trim())?.[1];
    if (base64 === undefined) continue;
    const bytes = Buffer.from(base64, "base64");
    if (bytes.length === 32) return bytes.toString("hex");
  }
  return undefined;
}
