/**
 * Model swaps on one replica: load and unload time of generated MLPs of 50 MB, 200 MB and 1 GB (written
 * here, on the machine that runs the benchmark), the device memory each takes and gives back, no growth
 * over 100 load/unload cycles, and how many models fit under a budget when the cache counts what each
 * really takes.
 */
import { mlpInput, writeSwapModel } from "./bench-models.ts";
import { type BenchContext, benchReplica, deviceMemory } from "./context.ts";
import { MiB, round, summarize } from "./measure.ts";

/** How many names of the smallest model the budget test loads in turn. */
const NAMES_UNDER_BUDGET = 14;

export async function swaps(context: BenchContext) {
  const sizes = context.quick ? [5, 20] : [50, 200, 1024];
  const repeats = context.quick ? 2 : 3;
  const perSize = [];
  for (const megabytes of sizes) {
    const generated = performance.now();
    const model = writeSwapModel(context.swapDir, megabytes);
    context.log(
      `wrote ${model.name} (${round(model.bytes / MiB, 1)} MiB) in ${round(performance.now() - generated, 0)} ms`,
    );
    const replica = benchReplica(context, context.swapDir, { maxModels: 1 });
    const loads: number[] = [];
    const unloads: number[] = [];
    const firstRuns: number[] = [];
    let measured = 0;
    let takenMiB: number | null = null;
    let afterRunMiB: number | null = null;
    let leftAfterUnloadMiB: number | null = null;
    for (let repeat = 0; repeat < repeats; repeat += 1) {
      const before = await deviceMemory(context);
      let started = performance.now();
      await replica.load(model.name);
      loads.push(performance.now() - started);
      measured = replica.state().loaded[0]?.bytes ?? 0;
      const loaded = await deviceMemory(context);
      started = performance.now();
      await replica.infer({ model: model.name, inputs: [mlpInput(1)] });
      firstRuns.push(performance.now() - started);
      const ran = await deviceMemory(context);
      started = performance.now();
      await replica.unload(model.name);
      unloads.push(performance.now() - started);
      const after = await deviceMemory(context);
      if (before !== undefined && loaded !== undefined && ran !== undefined && after !== undefined) {
        takenMiB = round((loaded - before) / MiB, 0);
        afterRunMiB = round((ran - before) / MiB, 0);
        leftAfterUnloadMiB = round((after - before) / MiB, 0);
      }
    }
    await replica.close();
    const row = {
      model: model.name,
      fileMiB: round(model.bytes / MiB, 1),
      loadMs: round(summarize(loads).p50, 0),
      firstInferMs: round(summarize(firstRuns).p50, 1),
      unloadMs: round(summarize(unloads).p50, 1),
      measuredByLoaderMiB: round(measured / MiB, 1),
      deviceTakenMiB: takenMiB,
      deviceAfterFirstRunMiB: afterRunMiB,
      deviceLeftAfterUnloadMiB: leftAfterUnloadMiB,
    };
    context.log(`swap ${JSON.stringify(row)}`);
    perSize.push(row);
  }

  // 100 load/unload cycles of the smallest model: device memory sampled every 10 cycles.
  const cycleModel = writeSwapModel(context.swapDir, sizes[0] ?? 50);
  const cycles = context.quick ? 10 : 100;
  const replica = benchReplica(context, context.swapDir, { maxModels: 1 });
  const samples: Array<{ cycle: number; usedMiB: number | null }> = [];
  const cycleStarted = performance.now();
  for (let cycle = 0; cycle <= cycles; cycle += 1) {
    if (cycle % 10 === 0) {
      const used = await deviceMemory(context);
      samples.push({ cycle, usedMiB: used === undefined ? null : round(used / MiB, 0) });
    }
    if (cycle === cycles) break;
    await replica.load(cycleModel.name);
    await replica.unload(cycleModel.name);
  }
  const cycleMs = (performance.now() - cycleStarted) / cycles;
  await replica.close();
  const first = samples[0]?.usedMiB;
  const last = samples.at(-1)?.usedMiB;
  const growth =
    first === null || first === undefined || last === null || last === undefined ? null : last - first;
  context.log(`cycles ${cycles}: growth ${growth} MiB, ${round(cycleMs, 1)} ms per cycle`);

  // How many copies of the smallest model fit under a budget, counting what each really takes.
  const budgetBytes = (context.quick ? 64 : 512) * MiB;
  const copies = writeSwapModel(context.swapDir, sizes[0] ?? 50, NAMES_UNDER_BUDGET);
  const fitting = benchReplica(context, context.swapDir, { maxModels: 64, maxModelBytes: budgetBytes });
  for (const name of copies.copies) await fitting.load(name);
  const state = fitting.state();
  await fitting.close();
  const fit = {
    budgetMiB: round(budgetBytes / MiB, 0),
    fileMiB: round(copies.bytes / MiB, 1),
    loadedInTurn: copies.copies.length,
    fitByFileSize: Math.floor(budgetBytes / copies.bytes),
    stillLoaded: state.loaded.length,
    perModelMiB: state.loaded.map((entry) => round(entry.bytes / MiB, 1)),
    usedMiB: round(state.memoryUsedBytes / MiB, 1),
  };
  context.log(`fit ${JSON.stringify(fit)}`);
  return { perSize, cycles: { cycles, msPerCycle: round(cycleMs, 1), samples, growthMiB: growth }, fit };
}
