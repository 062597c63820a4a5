import { describe, expect, test } from "vitest";
import { type CatalogEntry, mergeCatalogs } from "../../../shared/models/model-catalog.ts";

const entry = (name: string, state: CatalogEntry["state"], reason = ""): CatalogEntry => ({
  name,
  version: "1",
  state,
  reason,
});

describe("mergeCatalogs: a sharded pool's index from its shards'", () => {
  test("a version is as ready as its readiest shard says", () => {
    const merged = mergeCatalogs([
      [entry("a", "UNAVAILABLE", "unloaded"), entry("b", "LOADING", "loading")],
      [entry("a", "READY"), entry("b", "UNAVAILABLE", "unloaded")],
      [entry("c", "UNAVAILABLE", "unloaded")],
    ]);
    expect(merged).toEqual([
      entry("a", "READY"),
      entry("b", "LOADING", "loading"),
      entry("c", "UNAVAILABLE", "unloaded"),
    ]);
  });

  test("an unavailable version keeps the reason its load failed over 'unloaded', whichever shard said it", () => {
    const failed = entry("a", "UNAVAILABLE", "failed to load: bad file");
    expect(mergeCatalogs([[entry("a", "UNAVAILABLE", "unloaded")], [failed]])).toEqual([failed]);
    expect(mergeCatalogs([[failed], [entry("a", "UNAVAILABLE", "unloaded")]])).toEqual([failed]);
  });
});
