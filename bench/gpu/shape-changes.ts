/**
 * What a batch costs on the GPU depending on how its input arrives: the same shape or a new one, the same
 * buffer or a freshly allocated one. PP-OCRv4 detection, raw onnxruntime-node session and the agent's
 * batcher; each run's time is kept, so a slow first run after a change shows as such.
 */
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { sessionOptions } from "../../backend/replica/session-options.ts";
import { DET, detInput } from "./bench-models.ts";
import { type BenchContext, benchReplica } from "./context.ts";
import { round } from "./measure.ts";

export async function shapeChanges(context: BenchContext) {
  const session = await ort.InferenceSession.create(
    join(context.repoDir, DET, "1", "model.onnx"),
    sessionOptions(context.device, {}),
  );
  const tensorOf = (data: Float32Array, rows: number) =>
    new ort.Tensor("float32", data, [rows, 3, context.detSize, context.detSize]);
  const fixed = new Map<number, Float32Array>();
  const buffer = (rows: number) => {
    let data = fixed.get(rows);
    if (data === undefined) {
      data = detInput(rows, context.detSize).data as Float32Array;
      fixed.set(rows, data);
    }
    return data;
  };
  const fresh = (rows: number) => {
    const data = new Float32Array(buffer(rows).length);
    data.set(buffer(rows));
    return data;
  };
  const time = async (rows: number, data: Float32Array) => {
    const started = performance.now();
    await session.run({ x: tensorOf(data, rows) });
    return round(performance.now() - started, 1);
  };
  const results: Record<string, number[]> = {};
  const scenario = async (name: string, runs: Array<[number, () => Float32Array]>) => {
    const times: number[] = [];
    for (const [rows, data] of runs) times.push(await time(rows, data()));
    results[name] = times;
    context.log(`shapes ${name}: ${times.join(", ")}`);
  };
  const repeat = <T>(count: number, item: T): T[] => Array.from({ length: count }, () => item);
  await scenario(
    "first runs at 1, 7, 8, 32",
    [1, 7, 8, 32].map((rows) => [rows, () => buffer(rows)]),
  );
  await scenario("8 rows, same buffer", repeat(8, [8, () => buffer(8)] as [number, () => Float32Array]));
  await scenario(
    "8 rows, fresh buffer each run",
    repeat(8, [8, () => fresh(8)] as [number, () => Float32Array]),
  );
  await scenario(
    "7 and 8 rows in turn, same buffers",
    Array.from({ length: 6 }, (_, index) => {
      const rows = index % 2 === 0 ? 7 : 8;
      return [rows, () => buffer(rows)] as [number, () => Float32Array];
    }),
  );
  await scenario("32 rows, same buffer", repeat(4, [32, () => buffer(32)] as [number, () => Float32Array]));
  await scenario(
    "32 rows, fresh buffer each run",
    repeat(4, [32, () => fresh(32)] as [number, () => Float32Array]),
  );
  await session.release();

  // The batcher: eight concurrent one-row requests, round after round (a stacked batch of 8 each time).
  const replica = benchReplica(context, context.repoDir, { batching: { maxBatchSize: 8 } });
  await replica.load(DET);
  const single = detInput(1, context.detSize);
  const rounds: number[] = [];
  for (let index = 0; index < 6; index += 1) {
    const started = performance.now();
    await Promise.all(Array.from({ length: 8 }, () => replica.infer({ model: DET, inputs: [single] })));
    rounds.push(round(performance.now() - started, 1));
  }
  results["batcher: 8 concurrent requests per round"] = rounds;
  context.log(`shapes batcher rounds: ${rounds.join(", ")}`);
  await replica.close();
  return results;
}
