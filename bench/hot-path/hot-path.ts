/**
 * The hot-path benchmark (issue 13): what a request costs between the client and onnxruntime, side by side
 * in one run on one host, with the same session options everywhere:
 *
 *   raw      session.run in this process (onnxruntime-node, no server)
 *   anchor   the smallest node:http server around one session (anchor-server.ts): the floor of any Node server
 *   anchor-threads  the same with its HTTP on threads of its own (as many as the agent's intake threads, at
 *            least 2), the session on its main thread: the floor of a server with a hop each way (the MLP only)
 *   http-floor  anchor-threads answering a repeated request from memory (anchor-server.ts --memo): what HTTP
 *            alone costs here with as many threads beside this client (the MLP only)
 *   grpc-anchor  the anchor serving ModelInfer over gRPC (anchor-server.ts --grpc): the floor of a Node gRPC
 *            server around the session, for --encodings grpc
 *   agent-main  switchyard-agent --standalone --http-threads 0 (HTTP on the agent's main thread)
 *   agent    switchyard-agent --standalone (HTTP on its intake threads: --http-threads' default)
 *   gateway  the agent behind `wrangler dev` (on a GPU host without npm: scripts/pack-gpu-wrangler.ts)
 *   relay-anchor  the smallest Worker and Durable Object that relay a request to a process that dialed in,
 *            in `wrangler dev`, with an anchor server per model behind it (relay-anchor/worker.ts): the floor
 *            of any gateway of the gateway's shape on the same workerd (unbatched); at one client also
 *            stopped at its Worker (relay-anchor-worker) and at its object (relay-anchor-object), the same
 *            bytes in and out, so that the relay's time splits into proxy, RPC and websocket
 *
 * for PP-OCRv4 detection (1x3x640x640 FP32 in, 1.6 MB out) and a small MLP, JSON and binary bodies (and, asked
 * with --encodings shm, the standalone agent's system shared memory: shared-memory-requests.ts; with
 * --encodings grpc, its gRPC endpoint: grpc-requests.ts), 1, 8 and 32
 * concurrent clients; batching on (models whose config.json declares it) against off. Every answer's outputs
 * are checked bit for bit against a direct run. Each round (--rounds) measures raw and then every target in
 * turn, the servers all up (idle but for the one measured); the report reads each ratio within a round.
 *
 *   npm run bench:hot-path [-- --device cuda --gpu 0] [--quick] [--seconds 5] [--targets raw,anchor,anchor-threads,http-floor,grpc-anchor,agent-main,agent,gateway,relay-anchor]
 *     [--models det,mlp,io] [--encodings binary,json,shm,grpc] [--concurrency 1,8,32] ["--agent-args=--max-concurrency 8"]
 *     ["--agent-node-args=--cpu-prof --cpu-prof-dir=prof"]   (with "=": a value that starts with -- is taken
 *     for a flag of the bench's own otherwise)
 *     [--client-threads 4] [--grpc-channels 8] [--send-stage] [--rounds 3]
 *   node dist/hot-path.mjs --device cuda --out $OUT       on a GPU host, with the bundle (npm run build:bundles)
 *
 * Results: bench/results/hot-path-<device>.md (and .json), with the machine and the command.
 */
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { httpThreads as defaultHttpThreads } from "../../backend/cli/flag-specs.ts";
import { sessionOptions } from "../../backend/replica/session-options.ts";
import { modelPath, writeFileIfChanged } from "../../scripts/lib/model-repository.ts";
import {
  DataType,
  encodeMlp,
  encodeModel,
  intAttribute,
  mlpForBytes,
  modelHeader,
  node,
  onnx,
  tensorValue,
  toBytes,
} from "../../scripts/lib/onnx-builder.ts";
import { LOCAL_TRACES } from "../../scripts/lib/wrangler-dev.ts";
import { decodeInferResponse, encodeInferRequest } from "../../shared/oip/codec.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { machineLabel } from "../gpu/machine.ts";
import { closedLoop, type LoadResult, round } from "../gpu/measure.ts";
import { readStat, readThreadStat, readTreeCpu } from "../registry/process-cpu.ts";
import { MEMO_HEADER } from "./anchor-http.ts";
import { batchedConfig } from "./batched-config.ts";
import { threadedLoad } from "./client-threads.ts";
import { grpcRequests } from "./grpc-requests.ts";
import { type Answer, HttpLoad, type PreparedRequest, requestHeaders } from "./http-load.ts";
import {
  type Encoding,
  MAIN_THREAD_CPU,
  type Measured,
  PROCESS_CPU,
  PROXY_CPU,
  renderHotPathReport,
  WORKERD_CPU,
} from "./report.ts";
import { prepareInSharedMemory, type SharedMemoryRequest } from "./shared-memory-requests.ts";
import {
  startAgentTarget,
  startAnchorTarget,
  startGatewayTarget,
  startRelayAnchorTarget,
  type Target,
} from "./targets.ts";

const { values } = parseArgs({
  options: {
    device: { type: "string", default: "cpu" },
    gpu: { type: "string", default: "0" },
    out: { type: "string", default: "bench/results" },
    seconds: { type: "string" },
    quick: { type: "boolean", default: false },
    targets: {
      type: "string",
      default: "raw,anchor,anchor-threads,http-floor,agent-main,agent,gateway,relay-anchor",
    },
    concurrency: { type: "string", default: "1,8,32" },
    models: { type: "string", default: "det,mlp,io" },
    encodings: { type: "string", default: "binary,json" },
    "det-model": { type: "string" },
    /** Node's own flags for the agent, e.g. "--cpu-prof --cpu-prof-dir=prof" (space-separated). */
    "agent-node-args": { type: "string", default: "" },
    /** Agent flags added to the bench's own (e.g. "--max-concurrency 8"). */
    "agent-args": { type: "string", default: "" },
    /** Threads the HTTP clients are spread over (default: 4 on hosts of 8 cores or more, else 1). */
    "client-threads": { type: "string" },
    /**
     * Channels (each its own HTTP/2 connection) the gRPC calls are spread over, and over the client threads,
     * as from that many client processes; 1: one channel on this thread, as one client process has.
     */
    "grpc-channels": { type: "string", default: "1" },
    /**
     * Ask for the standalone agent's `send` stage (TE: trailers: its answers then go chunked, with the stage
     * in a Server-Timing trailer); the other targets ignore it.
     */
    "send-stage": { type: "boolean", default: false },
    /**
     * Times every path is measured, in turn (raw, then each target, then again): the report shows each
     * figure's median and reads each target's ratio within a round, since the host's drift between two
     * measures minutes apart can exceed what a change moves.
     */
    rounds: { type: "string", default: "1" },
  },
});

const device =
  values.device === "cuda"
    ? { kind: "cuda" as const, deviceId: Number(values.gpu) }
    : { kind: "cpu" as const };
const targets = new Set(values.targets.split(","));
const concurrencies = values.concurrency.split(",").map(Number);
const encodings = (["binary", "json", "shm", "grpc"] as const).filter((encoding) =>
  values.encodings.split(",").includes(encoding),
);
const seconds = Number(values.seconds ?? (values.quick ? 1 : 4));
const clientThreads = Number(values["client-threads"] ?? (cpus().length >= 8 ? 4 : 1));
const grpcChannels = Number(values["grpc-channels"]);
if (!Number.isInteger(grpcChannels) || grpcChannels < 1)
  throw new Error(`--grpc-channels must be a whole number from 1, not ${values["grpc-channels"]}`);
const warmupSeconds = values.quick ? 0.5 : 1.5;
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1)
  throw new Error(`--rounds must be a whole number from 1, not ${values.rounds}`);
/** The log's prefix for a measure of round `pass`, when there are several. */
const roundLabel = (pass: number) => (rounds > 1 ? `round ${pass}/${rounds}: ` : "");

/** ReduceMean over the channels of a [n, 3, h, w] image: det's input and output sizes, almost no work. */
function channelMean(): Uint8Array {
  const ints = onnx.AttributeProto.AttributeType.INTS;
  return toBytes(
    encodeModel(
      modelHeader("hot-path io: mean over channels"),
      {
        name: "io",
        node: [
          node(
            "ReduceMean",
            ["x"],
            ["y"],
            [{ name: "axes", type: ints, ints: [1] }, intAttribute("keepdims", 1)],
          ),
        ],
        input: [tensorValue("x", DataType.FLOAT, ["n", 3, "h", "w"])],
        output: [tensorValue("y", DataType.FLOAT, ["n", 1, "h", "w"])],
      },
      [],
    ),
  );
}

export interface ModelCase {
  /** The name served; `<name>_batched` is the same model with batching declared in its config.json. */
  name: string;
  label: string;
  input: Tensor;
  /** max_batch_size for its batched twin. */
  maxBatchSize: number;
  preferred: number[];
  /**
   * The anchor batches it too (anchor-server.ts --max-batch): the floor of batching over HTTP. Not for a
   * convolutional model: the anchor's one session would re-plan every Conv at each new batch size on CUDA.
   */
  anchorBatches: boolean;
}

const DET_SIZE = 640;
const CASES: ModelCase[] = [
  {
    name: "det",
    label: `PP-OCRv4 det 1x3x${DET_SIZE}x${DET_SIZE}`,
    input: detInput(DET_SIZE),
    maxBatchSize: 8,
    preferred: [1, 2, 4, 8],
    anchorBatches: false,
  },
  {
    name: "mlp",
    label: "MLP 16->8 (256 KB)",
    input: mlpInput(),
    maxBatchSize: 32,
    preferred: [],
    anchorBatches: true,
  },
  {
    // det's bytes in and out with next to no compute: what the path costs around a run, on any device.
    name: "io",
    label: `channel mean 1x3x${DET_SIZE}x${DET_SIZE} -> 1x1x${DET_SIZE}x${DET_SIZE} (det's bytes, no compute)`,
    input: detInput(DET_SIZE),
    maxBatchSize: 8,
    preferred: [1, 2, 4, 8],
    anchorBatches: false,
  },
].filter((entry) => values.models.split(",").includes(entry.name));

function detInput(size: number): Tensor {
  const data = new Float32Array(3 * size * size);
  for (let index = 0; index < data.length; index += 1) data[index] = Math.sin(index / 977) * 0.8;
  return { name: "x", datatype: "FP32", shape: [1, 3, size, size], data };
}

function mlpInput(): Tensor {
  return {
    name: "x",
    datatype: "FP32",
    shape: [1, 16],
    data: Float32Array.from({ length: 16 }, (_, i) => Math.cos(i)),
  };
}

/** det and the MLP, each also as `<name>_batched` with batching declared. */
function writeRepository(dir: string, detPath: string): void {
  const mlp = encodeMlp(mlpForBytes({ targetBytes: 256 * 1024, seed: 7, name: "mlp" }));
  for (const entry of CASES) {
    for (const batched of [false, true]) {
      const name = batched ? `${entry.name}_batched` : entry.name;
      const path = modelPath(dir, name);
      mkdirSync(join(dir, name, "1"), { recursive: true });
      if (entry.name === "det") symlinkSync(resolve(detPath), path);
      else writeFileIfChanged(path, entry.name === "io" ? channelMean() : mlp);
      if (batched) {
        writeFileSync(
          join(dir, name, "config.json"),
          JSON.stringify(batchedConfig(entry.maxBatchSize, entry.preferred, entry.input)),
        );
      }
    }
  }
}

async function main(): Promise<void> {
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const startedAt = Date.now();
  const repo = mkdtempSync(join(tmpdir(), "switchyard-hot-path-"));
  // A GPU host has no node_modules to find the model in: it gets the file and --det-model.
  const detPath = values["det-model"] ?? (await import("../../scripts/lib/ppocr-model.ts")).PPOCR_DET_PATH;
  writeRepository(repo, detPath);
  const threads = device.kind === "cpu" ? Math.max(1, Math.floor(cpus().length / 2)) : undefined;
  const options = sessionOptions(device, threads === undefined ? {} : { intraOpThreads: threads });
  const results: Measured[] = [];

  // The reference outputs from a session of our own per model, which also serves the raw path (in each round).
  const references = new Map<string, Float32Array[]>();
  /** The same outputs by name, as bytes (what the shm encoding's output region must hold). */
  const referenceBytes = new Map<string, { name: string; bytes: Uint8Array }[]>();
  const rawSessions = new Map<string, { session: ort.InferenceSession; feeds: Record<string, ort.Tensor> }>();
  for (const entry of CASES) {
    const session = await ort.InferenceSession.create(modelPath(repo, entry.name), options);
    const feeds = {
      [entry.input.name]: new ort.Tensor("float32", entry.input.data as Float32Array, entry.input.shape),
    };
    const first = await session.run(feeds);
    references.set(
      entry.name,
      Object.values(first).map((tensor) => tensor.data as Float32Array),
    );
    referenceBytes.set(
      entry.name,
      Object.entries(first).map(([name, tensor]) => {
        const data = tensor.data as Float32Array;
        return { name, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice() };
      }),
    );
    if (targets.has("raw")) rawSessions.set(entry.name, { session, feeds });
    else await session.release();
  }
  /** The raw path: session.run in this process, closed loops at each concurrency. */
  const measureRaw = async (pass: number) => {
    for (const [model, { session, feeds }] of rawSessions) {
      for (const concurrency of concurrencies) {
        const load = await closedLoop(concurrency, warmupSeconds, seconds, async () => {
          await session.run(feeds);
          return undefined;
        });
        results.push({
          model,
          target: "raw",
          encoding: "binary",
          batched: false,
          load,
          phases: {},
          round: pass,
        });
        log(`${roundLabel(pass)}raw ${model} c=${concurrency}: ${summary(load)}`);
      }
    }
  };

  /**
   * One timed load against a target (`label` the model as asked, batched twin included), recorded and logged
   * with the CPU the target's process, and its main thread, spent per answer around it.
   */
  const timedLoad = async (
    target: Target,
    measure: { pass: number; model: string; label: string; encoding: Encoding; batched: boolean },
    run: () => Promise<{ load: LoadResult; phases: Record<string, number> }>,
  ) => {
    const mainBefore = mainThreadCpuMs(target);
    const allBefore = processCpuMs(target);
    const workerdBefore = workerdCpuMs(target);
    const { load, phases } = await run();
    const mainAfter = mainThreadCpuMs(target);
    const allAfter = processCpuMs(target);
    const workerdAfter = workerdCpuMs(target);
    if (mainBefore !== undefined && mainAfter !== undefined && load.answered > 0) {
      // The agent's main thread, which routes every request: its CPU per answer (warm-up included on both
      // sides). /proc counts in ticks of 10 ms, a few in a window of seconds.
      phases[MAIN_THREAD_CPU] = round((mainAfter - mainBefore) / load.answered, 3);
    }
    if (allBefore !== undefined && allAfter !== undefined && load.answered > 0) {
      phases[PROCESS_CPU] = round((allAfter - allBefore) / load.answered, 3);
    }
    if (workerdBefore !== undefined && workerdAfter !== undefined && load.answered > 0) {
      phases[WORKERD_CPU] = round((workerdAfter.worker - workerdBefore.worker) / load.answered, 3);
      phases[PROXY_CPU] = round((workerdAfter.proxy - workerdBefore.proxy) / load.answered, 3);
    }
    const { pass, model, label, encoding, batched } = measure;
    results.push({ model, target: target.kind, encoding, batched, load, phases, round: pass });
    const cpu =
      (phases[PROCESS_CPU] === undefined ? "" : `, ${phases[PROCESS_CPU]} ms cpu/answer`) +
      (phases[WORKERD_CPU] === undefined ? "" : `, workerd ${phases[WORKERD_CPU]} ms cpu/answer`);
    log(
      `${roundLabel(pass)}${target.kind} ${label} ${encoding} c=${load.concurrency}: ${summary(load)}${cpu}`,
    );
  };

  /**
   * The agent's gRPC endpoint for one model in one round: a grpc-js client on this thread (grpc-requests.ts),
   * each concurrency's calls in flight on its channel, or on --grpc-channels over the client threads; its
   * answer checked bit for bit first.
   */
  const measureGrpc = async (
    target: Target,
    pass: number,
    entry: (typeof CASES)[number],
    model: string,
    batched: boolean,
  ) => {
    const address = target.grpcAddress;
    if (address === undefined) throw new Error(`${target.kind} serves no gRPC`);
    const requests = grpcRequests(
      address,
      model,
      entry.input,
      referenceBytes.get(entry.name) ?? [],
      grpcChannels,
    );
    try {
      requests.verify(await requests.send());
      for (const concurrency of concurrencies) {
        if (batched && concurrency === 1 && entry.name === "mlp") continue;
        await timedLoad(
          target,
          { pass, model: entry.name, label: model, encoding: "grpc", batched },
          async () =>
            // One channel is one client process's: its calls from this thread. Several are spread over the
            // client threads, as from several processes (one grpc-js thread would be what is measured).
            grpcChannels === 1
              ? {
                  load: await closedLoop(concurrency, warmupSeconds, seconds, async () => {
                    await requests.send();
                    return undefined;
                  }),
                  phases: {},
                }
              : threadedLoad({
                  work: { kind: "grpc", address, model, input: entry.input, channels: grpcChannels },
                  concurrency,
                  threads: clientThreads,
                  warmupS: warmupSeconds,
                  seconds,
                }),
        );
      }
    } finally {
      requests.close();
    }
  };

  /** One path in one round: its floor (a route that does no work) or each of its models, encodings and loads. */
  const measureTarget = async (target: Target, pass: number) => {
    if (target.model === undefined) {
      // The floor of the path: a route that does no work (for the gateway, wrangler dev's own proxy).
      const client = new HttpLoad(target.url, 1);
      const load = await closedLoop(1, warmupSeconds, seconds, async () => {
        await client.send({ path: "/v2/health/live", headers: target.headers });
        return undefined;
      });
      client.close();
      results.push({
        model: "floor",
        target: target.kind,
        encoding: "json",
        batched: false,
        load,
        phases: {},
        round: pass,
      });
      log(`${roundLabel(pass)}${target.kind} floor: ${summary(load)}`);
    }
    for (const entry of CASES) {
      if (target.model !== undefined && target.model !== entry.name) continue;
      for (const encoding of encodings) {
        // Shared memory is the standalone agent's alone (the others have no regions); gRPC its and the gRPC
        // anchor's, which serves nothing else.
        const agent = target.kind === "agent" || target.kind === "agent-main";
        if (encoding === "shm" && !agent) continue;
        if (encoding === "grpc" ? !agent && target.kind !== "grpc-anchor" : target.kind === "grpc-anchor")
          continue;
        const twins =
          target.model !== undefined
            ? [target.batched === true]
            : target.unbatchedOnly === true
              ? [false]
              : [false, true];
        for (const batched of twins) {
          const model = batched ? `${entry.name}_batched` : entry.name;
          if (encoding === "grpc") {
            await measureGrpc(target, pass, entry, model, batched);
            continue;
          }
          const headers = { ...target.headers, ...(values["send-stage"] ? { TE: "trailers" } : {}) };
          const expected = references.get(entry.name) ?? [];
          let prepared: PreparedRequest;
          let check: (answer: Answer) => void;
          let shared: SharedMemoryRequest | undefined;
          if (encoding === "shm") {
            const outputs = referenceBytes.get(entry.name) ?? [];
            shared = await prepareInSharedMemory(target.url, model, entry.input, outputs, headers);
            prepared = shared.prepared;
            check = shared.verify;
          } else {
            prepared = prepare(model, entry.input, encoding, headers);
            check = (answer) => verify(answer, encoding, expected);
          }
          // One check of the outputs; the timed loops run on client threads of their own (client-threads.ts).
          const client = new HttpLoad(target.url, 1);
          try {
            const answer = await client.send(prepared);
            check(answer);
            if (target.kind === "http-floor") {
              // Its timed answers come from memory: the same request again, on the same connection (so the
              // same HTTP thread), must be one, and right too.
              const again = await client.send(prepared);
              if (again.headers[MEMO_HEADER] !== "hit")
                throw new Error("the HTTP floor did not answer a repeated request from memory");
              check(again);
            }
            for (const concurrency of concurrencies) {
              // Batching only changes anything with company; one client measures the unbatched path.
              if (batched && concurrency === 1 && entry.name === "mlp") continue;
              await timedLoad(target, { pass, model: entry.name, label: model, encoding, batched }, () =>
                threadedLoad({
                  work: { kind: "http", url: target.url, prepared },
                  concurrency,
                  threads: clientThreads,
                  warmupS: warmupSeconds,
                  seconds,
                }),
              );
            }
            if (target.kind === "relay-anchor" && concurrencies.includes(1)) {
              await measureRelayStops(
                target,
                pass,
                entry.name,
                encoding,
                prepared,
                answer.body.byteLength,
                client,
              );
            }
          } finally {
            client.close();
            await shared?.release();
          }
        }
      }
    }
  };

  /**
   * Where the relay anchor's time goes, one client: the same request's bytes stopped at its Worker (read whole,
   * as many bytes answered as the real answer had: wrangler dev's proxy and a Worker for these bytes alone),
   * then at its object (handed over by RPC and back: the relay without its websocket and peer).
   */
  const measureRelayStops = async (
    target: Target,
    pass: number,
    model: string,
    encoding: Encoding,
    prepared: PreparedRequest,
    answerBytes: number,
    client: HttpLoad,
  ) => {
    for (const stop of ["worker", "object"] as const) {
      const at = { ...prepared, path: `/stop-at/${stop}/${answerBytes}` };
      const check = await client.send(at);
      if (
        check.headers["x-received-bytes"] !== String(prepared.body?.byteLength ?? 0) ||
        check.body.byteLength !== answerBytes
      ) {
        throw new Error(
          `the relay anchor's stop at its ${stop} did not take the whole request or answer in full`,
        );
      }
      const { load } = await threadedLoad({
        work: { kind: "http", url: target.url, prepared: at },
        concurrency: 1,
        threads: clientThreads,
        warmupS: warmupSeconds,
        seconds,
      });
      const kind = `relay-anchor-${stop}`;
      results.push({ model, target: kind, encoding, batched: false, load, phases: {}, round: pass });
      log(`${roundLabel(pass)}${kind} ${model} ${encoding} c=1: ${summary(load)}`);
    }
  };

  const started: Target[] = [];
  try {
    // The anchors: one per model, a batching one for the MLP, and both again with HTTP threads (as many as the
    // agent's intake threads, and at least two, so that it has threads here too); for the MLP the HTTP floor
    // (the threaded one answering from memory).
    const httpThreads = Math.max(2, defaultHttpThreads(cpus().length));
    const anchors = CASES.flatMap((entry) => [
      ...(targets.has("anchor") ? [{ entry, maxBatch: undefined, httpThreads: 0 }] : []),
      ...(targets.has("anchor") && entry.anchorBatches
        ? [{ entry, maxBatch: entry.maxBatchSize, httpThreads: 0 }]
        : []),
      ...(targets.has("anchor-threads") && entry.anchorBatches
        ? [
            { entry, maxBatch: undefined, httpThreads },
            { entry, maxBatch: entry.maxBatchSize, httpThreads },
          ]
        : []),
      ...(targets.has("http-floor") && entry.anchorBatches
        ? [{ entry, maxBatch: undefined, httpThreads, memo: true }]
        : []),
      ...(targets.has("grpc-anchor") ? [{ entry, maxBatch: undefined, httpThreads: 0, grpc: true }] : []),
    ]);
    for (const { entry, ...shape } of anchors) {
      started.push(await startAnchorTarget(entry.name, modelPath(repo, entry.name), device, threads, shape));
    }
    const agentArgs = [
      "--models",
      repo,
      ...(device.kind === "cuda"
        ? ["--device", "cuda", "--gpus", String(device.deviceId)]
        : ["--threads", String(threads)]),
      "--max-models",
      "8",
      "--max-concurrency",
      "64",
      ...(encodings.includes("shm") ? ["--allow-client-shm"] : []),
      ...(encodings.includes("grpc") ? ["--grpc-port", "0"] : []),
    ];
    const words = (line: string) => line.split(" ").filter((word) => word !== "");
    agentArgs.push(...words(values["agent-args"]));
    if (targets.has("agent-main")) {
      started.push(
        await startAgentTarget(
          [...agentArgs, "--http-threads", "0"],
          words(values["agent-node-args"]),
          "agent-main",
        ),
      );
    }
    if (targets.has("agent"))
      started.push(await startAgentTarget(agentArgs, words(values["agent-node-args"])));
    // The targets that need wrangler: where it cannot run (a GPU host without scripts/pack-gpu-wrangler.ts's
    // pack), the rest is measured without them.
    const unlessWranglerFails = async (what: string, start: () => Promise<Target>) => {
      try {
        started.push(await start());
      } catch (error) {
        log(`${what}: not measured (${error instanceof Error ? error.message : String(error)})`);
      }
    };
    if (targets.has("gateway"))
      await unlessWranglerFails("gateway", () =>
        startGatewayTarget(agentArgs, words(values["agent-node-args"])),
      );
    if (targets.has("relay-anchor")) {
      const models = CASES.map((entry) => ({ name: entry.name, path: modelPath(repo, entry.name) }));
      await unlessWranglerFails("relay anchor", () => startRelayAnchorTarget(models, device, threads));
    }

    for (let pass = 1; pass <= rounds; pass += 1) {
      await measureRaw(pass);
      for (const target of started) await measureTarget(target, pass);
    }
  } finally {
    for (const target of started) await target.stop();
    for (const { session } of rawSessions.values()) await session.release();
  }

  const machine = machineLabel(device.kind === "cuda" ? device.deviceId : undefined);
  const command = `npm run bench:hot-path -- ${process.argv.slice(2).join(" ")}`.trim();
  const outDir = resolve(values.out);
  mkdirSync(outDir, { recursive: true });
  const report = renderHotPathReport({
    device: device.kind,
    machine,
    command,
    date: new Date().toISOString().slice(0, 10),
    seconds: (Date.now() - startedAt) / 1000,
    cases: CASES.map(({ name, label }) => ({ name, label })),
    concurrencies,
    results,
    ortVersion: ort.env.versions.common,
    grpcChannels,
    localTraces: LOCAL_TRACES,
  });
  writeFileSync(join(outDir, `hot-path-${device.kind}.md`), report);
  writeFileSync(
    join(outDir, `hot-path-${device.kind}.json`),
    JSON.stringify({ machine, command, localTraces: LOCAL_TRACES, results }, null, 1),
  );
  log(`wrote ${join(outDir, `hot-path-${device.kind}.md`)}`);
}

function prepare(
  model: string,
  input: Tensor,
  encoding: "binary" | "json",
  extra: Record<string, string>,
): PreparedRequest {
  const encoded = encodeInferRequest(
    { inputs: [input] },
    { binaryInputs: encoding === "binary", binaryOutputs: encoding === "binary" },
  );
  return {
    path: `/v2/models/${model}/infer`,
    body: encoded.body,
    headers: requestHeaders(encoded.headerLength, extra),
  };
}

/** The outputs equal a direct run's, bit for bit. */
function verify(
  answer: { body: Buffer; headers: Record<string, unknown> },
  encoding: string,
  expected: Float32Array[],
): void {
  const headerLength = answer.headers["inference-header-content-length"];
  const decoded = decodeInferResponse(
    new Uint8Array(answer.body.buffer, answer.body.byteOffset, answer.body.byteLength),
    headerLength === undefined ? undefined : Number(headerLength),
  );
  decoded.outputs.forEach((output, index) => {
    const want = expected[index];
    const got = output.data as Float32Array;
    if (
      want === undefined ||
      got.length !== want.length ||
      got.some((value, at) => !Object.is(value, want[at]))
    ) {
      throw new Error(`${encoding} outputs differ from a direct onnxruntime run (output ${output.name})`);
    }
  });
}

/** The CPU the target's main thread has spent so far (ms; behind the gateway, its agent's); undefined without a pid. */
function mainThreadCpuMs(target: Target): number | undefined {
  return target.pid === undefined ? undefined : readThreadStat(target.pid, target.pid)?.cpuMs;
}

/** Every thread of the target's process (behind the gateway, its agent's: workerd's is not counted). */
function processCpuMs(target: Target): number | undefined {
  return target.pid === undefined ? undefined : readStat(target.pid)?.cpuMs;
}

/**
 * Behind `wrangler dev`: the CPU its workerd processes have spent so far (ms), the one running the Worker and
 * its Durable Objects and the dev proxy apart; undefined for other targets.
 */
function workerdCpuMs(target: Target): { worker: number; proxy: number } | undefined {
  if (target.wrangler === undefined) return undefined;
  const spent = { worker: 0, proxy: 0 };
  for (const { role, ms } of readTreeCpu(target.wrangler.pid, target.wrangler.port).cpuMs.values())
    if (role !== "node") spent[role] += ms;
  return spent;
}

function summary(load: LoadResult): string {
  return `${round(load.throughput, 1)} req/s, p50 ${round(load.latency.p50)} ms, p99 ${round(load.latency.p99)} ms${load.failed > 0 ? `, ${load.failed} failed (${load.firstError})` : ""}`;
}

await main();
