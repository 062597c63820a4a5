/**
 * The agent's overhead on PP-OCRv4 detection at batch 1, against onnxruntime-node's own session.run on the
 * same GPU, model, input and session options, measured side by side in one process: the raw session, the
 * replica with batching on (the default) and off, interleaved round by round so that drift hits all alike.
 * Then the standalone HTTP path: a real agent process, one client, sequential requests.
 */
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { sessionOptions } from "../../backend/replica/session-options.ts";
import { httpInferrer, startAgent } from "./agent-process.ts";
import { DET, detInput } from "./bench-models.ts";
import { type BenchContext, benchReplica } from "./context.ts";
import { round, type Summary, summarize } from "./measure.ts";

const brief = (summary: Summary) => ({
  p50: round(summary.p50, 3),
  p90: round(summary.p90, 3),
  mean: round(summary.mean, 3),
});

export async function overhead(context: BenchContext) {
  const input = detInput(1, context.detSize);
  const session = await ort.InferenceSession.create(
    join(context.repoDir, DET, "1", "model.onnx"),
    sessionOptions(context.device, {}),
  );
  const batched = benchReplica(context, context.repoDir);
  const unbatched = benchReplica(context, context.repoDir, {
    batching: { maxBatchSize: 1 },
    maxConcurrency: 4,
  });
  await batched.load(DET);
  await unbatched.load(DET);

  const series: Record<string, () => Promise<void>> = {
    "onnxruntime session.run": async () => {
      await session.run({ x: new ort.Tensor("float32", input.data as Float32Array, input.shape) });
    },
    "Replica.infer (batching on)": async () => {
      await batched.infer({ model: DET, inputs: [input] });
    },
    "Replica.infer (batching off)": async () => {
      await unbatched.infer({ model: DET, inputs: [input] });
    },
  };
  const names = Object.keys(series);
  const times = new Map<string, number[]>(names.map((name) => [name, []]));
  const rounds = context.quick ? 3 : 15;
  const perRound = context.quick ? 5 : 20;
  for (let round = -1; round < rounds; round += 1) {
    // Each round starts with another series, so none always runs right after another's.
    const order = names.map((_, index) => names[(index + round + names.length) % names.length] as string);
    for (const name of order) {
      const run = series[name] as () => Promise<void>;
      for (let call = 0; call < perRound; call += 1) {
        const started = performance.now();
        await run();
        if (round >= 0) times.get(name)?.push(performance.now() - started);
      }
    }
  }
  await session.release();
  await batched.close();
  await unbatched.close();
  const inProcess = Object.fromEntries(names.map((name) => [name, brief(summarize(times.get(name) ?? []))]));
  const raw = inProcess["onnxruntime session.run"]?.p50 ?? Number.NaN;
  context.log(`overhead in process ${JSON.stringify(inProcess)}`);

  const agent = await startAgent([...context.agentDeviceArgs, "--models", context.repoDir, "--preload", DET]);
  const send = httpInferrer(agent.url, DET, [input]);
  const roundTrips: number[] = [];
  const serverTotal: number[] = [];
  const serverInfer: number[] = [];
  const count = context.quick ? 20 : 200;
  for (let call = -10; call < count; call += 1) {
    const started = performance.now();
    const answer = await send();
    if (call < 0) continue;
    roundTrips.push(performance.now() - started);
    serverTotal.push(answer.timing.total ?? Number.NaN);
    serverInfer.push(answer.timing.infer ?? Number.NaN);
  }
  await agent.stop();
  const http = {
    clientRoundTrip: brief(summarize(roundTrips)),
    agentTotal: brief(summarize(serverTotal)),
    agentInfer: brief(summarize(serverInfer)),
  };
  context.log(`overhead http ${JSON.stringify(http)}`);
  const versus = (p50: number) => ({ ms: round(p50 - raw, 3), percent: round(((p50 - raw) / raw) * 100, 2) });
  return {
    input: input.shape,
    calls: rounds * perRound,
    inProcess,
    http,
    overheadVsRaw: {
      replicaBatchingOn: versus(inProcess["Replica.infer (batching on)"]?.p50 ?? Number.NaN),
      replicaBatchingOff: versus(inProcess["Replica.infer (batching off)"]?.p50 ?? Number.NaN),
      httpRoundTrip: versus(http.clientRoundTrip.p50),
      httpAgentTotal: versus(http.agentTotal.p50),
    },
  };
}
