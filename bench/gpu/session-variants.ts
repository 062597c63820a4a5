/**
 * onnxruntime session settings the agent can change on a GPU (onnxruntime-node passes the CUDA provider
 * nothing but its device id): each variant loads PP-OCRv4 detection on a fresh replica and reports load
 * time, device memory at each step, and inference time at batch 1 and 8 (the first run at a new shape is
 * reported apart: cuDNN's exhaustive algorithm search runs then).
 */
import type { SessionTuning } from "../../backend/replica/session-options.ts";
import { DET, detInput } from "./bench-models.ts";
import { type BenchContext, benchReplica, deviceMemory } from "./context.ts";
import { MiB, round, summarize } from "./measure.ts";

const VARIANTS: Array<{ name: string; session: Omit<SessionTuning, "intraOpThreads"> }> = [
  { name: "defaults", session: {} },
  {
    name: "initializers outside the arena",
    session: { config: { "session.use_device_allocator_for_initializers": "1" } },
  },
  { name: "memory pattern off", session: { memPattern: false } },
];

export async function sessionVariants(context: BenchContext) {
  const rows = [];
  const runs = context.quick ? 5 : 30;
  for (const variant of VARIANTS) {
    const mib = async (base: number | undefined) => {
      const now = await deviceMemory(context);
      return now === undefined || base === undefined ? null : round((now - base) / MiB, 0);
    };
    const base = await deviceMemory(context);
    const replica = benchReplica(context, context.repoDir, {
      session: variant.session,
      batching: { maxBatchSize: 1 },
    });
    const loadStarted = performance.now();
    await replica.load(DET);
    const loadMs = performance.now() - loadStarted;
    const measuredBytes = replica.state().loaded[0]?.bytes ?? 0;
    const afterLoad = await mib(base);
    const timed = async (rows: number, count: number) => {
      const input = detInput(rows, context.detSize);
      const firstStarted = performance.now();
      await replica.infer({ model: DET, inputs: [input] });
      const firstMs = performance.now() - firstStarted;
      const times: number[] = [];
      for (let run = 0; run < count; run += 1) {
        const outcome = await replica.infer({ model: DET, inputs: [input] });
        times.push(outcome.timings.inferMs);
      }
      return { firstMs: round(firstMs), p50: round(summarize(times).p50) };
    };
    const batch1 = await timed(1, runs);
    const afterBatch1 = await mib(base);
    const batch8 = await timed(8, Math.ceil(runs / 3));
    const afterBatch8 = await mib(base);
    await replica.close();
    const afterRelease = await mib(base);
    const row = {
      variant: variant.name,
      loadMs: round(loadMs, 0),
      measuredMiB: round(measuredBytes / MiB, 1),
      afterLoadMiB: afterLoad,
      batch1,
      afterBatch1MiB: afterBatch1,
      batch8,
      afterBatch8MiB: afterBatch8,
      afterReleaseMiB: afterRelease,
    };
    context.log(`session variant ${JSON.stringify(row)}`);
    rows.push(row);
  }
  return rows;
}
