import { describe, expect, test } from "vitest";
import { ModelStatisticsBook } from "../../../backend/replica/model-statistics.ts";
import {
  emptyStatistics,
  mergeStatistics,
  statisticsResponseSchema,
} from "../../../shared/oip/statistics.ts";

describe("inference statistics in Triton's form", () => {
  test("a replica's book counts requests, runs and their phases in nanoseconds", () => {
    const book = new ModelStatisticsBook();
    const ref = { name: "m", version: "1" };
    book.executed(ref, 4, { inputMs: 0.5, inferMs: 2, outputMs: 0.25 });
    for (let index = 0; index < 4; index++) book.succeeded(ref, { totalMs: 3, queueMs: 1 }, 1);
    book.failed(ref, 7);
    const [record] = book.snapshot();
    expect(record).toMatchObject({
      name: "m",
      version: "1",
      inference_count: 4,
      execution_count: 1,
      inference_stats: {
        success: { count: 4, ns: 12_000_000 },
        fail: { count: 1, ns: 7_000_000 },
        queue: { count: 4, ns: 4_000_000 },
        compute_input: { count: 1, ns: 500_000 },
        compute_infer: { count: 1, ns: 2_000_000 },
        compute_output: { count: 1, ns: 250_000 },
      },
      batch_stats: [{ batch_size: 4, compute_infer: { count: 1, ns: 2_000_000 } }],
    });
    expect(record?.last_inference).toBeGreaterThan(0);
    expect(statisticsResponseSchema.parse({ model_stats: book.snapshot() })).toBeTruthy();
    expect(book.snapshot("other")).toEqual([]);
    expect(book.snapshot("m", "2")).toEqual([]);
  });

  test("merging sums the same version across replicas and agents, keeps others apart, and orders them", () => {
    const a = emptyStatistics("m", "10");
    a.inference_count = 2;
    a.last_inference = 5;
    a.batch_stats.push({
      batch_size: 2,
      compute_input: { count: 1, ns: 1 },
      compute_infer: { count: 1, ns: 10 },
      compute_output: { count: 1, ns: 1 },
    });
    const b = emptyStatistics("m", "10");
    b.inference_count = 3;
    b.last_inference = 9;
    b.batch_stats.push({
      batch_size: 2,
      compute_input: { count: 2, ns: 2 },
      compute_infer: { count: 2, ns: 20 },
      compute_output: { count: 2, ns: 2 },
    });
    b.batch_stats.push({
      batch_size: 1,
      compute_input: { count: 1, ns: 1 },
      compute_infer: { count: 1, ns: 5 },
      compute_output: { count: 1, ns: 1 },
    });
    const merged = mergeStatistics([a, emptyStatistics("m", "9"), b, emptyStatistics("a", "1")]);
    expect(merged.map((record) => `${record.name}:${record.version}`)).toEqual(["a:1", "m:9", "m:10"]);
    expect(merged[2]).toMatchObject({
      inference_count: 5,
      last_inference: 9,
      batch_stats: [
        { batch_size: 1, compute_infer: { count: 1, ns: 5 } },
        { batch_size: 2, compute_infer: { count: 3, ns: 30 } },
      ],
    });
    // The inputs are left as they were.
    expect(a.inference_count).toBe(2);
  });
});
