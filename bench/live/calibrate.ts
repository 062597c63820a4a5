import { FEATURES } from "./catalogue.ts";

/**
 * What the live scenario is scaled to: how long a load takes on this machine and how many hits a second
 * the whole setup (gateway, agents, client, all on this machine) sustains. Run on a pool whose agents each
 * preloaded one model, so the hits spread over every replica.
 */
export interface Calibration {
  /** Mean load time, from the gateway's Server-Timing of requests that loaded their model (ms). */
  loadMs: number;
  loads: number;
  /** Requests per second with every slot busy on hits (closed loop). */
  hitOnlyPerSecond: number;
  /** The time one request holds a slot at that rate: slots / throughput (ms). */
  slotMs: number;
  /** How it was measured: requests kept in flight, over this many preloaded models. */
  slots: number;
  hotModels: number;
}

export interface CalibrateOptions {
  gatewayUrl: string;
  apiKey: string;
  /** One preloaded model per agent. */
  hotModels: readonly string[];
  /** Models no agent holds yet, loaded one at a time to time a load. */
  coldModels: readonly string[];
  /** Slots in the pool: the closed loop keeps this many requests in flight. */
  slots: number;
  seconds: number;
}

const BODY = JSON.stringify({
  inputs: [{ name: "x", datatype: "FP32", shape: [1, FEATURES], data: new Array(FEATURES).fill(0.5) }],
});

export async function calibrate(options: CalibrateOptions): Promise<Calibration> {
  const call = async (model: string) => {
    const response = await fetch(`${options.gatewayUrl}/v2/models/${model}/infer`, {
      method: "POST",
      headers: { Authorization: `Bearer ${options.apiKey}`, "Content-Type": "application/json" },
      body: BODY,
    });
    await response.arrayBuffer();
    if (response.status !== 200) throw new Error(`calibration: HTTP ${response.status} for ${model}`);
    return response.headers;
  };
  // Warm every path (JIT, connections) before timing anything.
  for (let round = 0; round < 20; round += 1) await Promise.all(options.hotModels.map(call));

  let completed = 0;
  const until = performance.now() + options.seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: options.slots }, async (_, worker) => {
      const model = options.hotModels[worker % options.hotModels.length] ?? "";
      while (performance.now() < until) {
        await call(model);
        completed += 1;
      }
    }),
  );
  const hitOnlyPerSecond = (completed * 1000) / (performance.now() - started);

  let loadMs = 0;
  let loads = 0;
  for (const model of options.coldModels) {
    const headers = await call(model);
    if (headers.get("X-Switchyard-Cache") !== "miss") continue;
    const load = /(?:^|,)\s*load;dur=([\d.]+)/.exec(headers.get("Server-Timing") ?? "")?.[1];
    if (load === undefined) continue;
    loadMs += Number(load);
    loads += 1;
  }
  if (loads === 0) throw new Error("calibration: no request reported a load");
  return {
    loadMs: loadMs / loads,
    loads,
    hitOnlyPerSecond,
    slotMs: (options.slots * 1000) / hitOnlyPerSecond,
    slots: options.slots,
    hotModels: options.hotModels.length,
  };
}
