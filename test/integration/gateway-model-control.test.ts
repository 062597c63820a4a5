import { createReadStream, mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join, normalize } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { describeOnnxFile } from "../../backend/models/file-byte-source.ts";
import { MULTIPLEX_MODELS, REPO_DIR, repoModelPath } from "../fixtures/paths.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import { copyOf, temporaryRepository } from "./harness/behaviour-models.ts";
import { call, clientAuthorization, eventually, mlpRequest, waitForAgents } from "./harness/oip-client.ts";
import { watchProcesses } from "./harness/processes-under-test.ts";
import { type GatewayProcess, SECRETS, startGateway } from "./harness/wrangler-dev.ts";

// What the gateway knows of models beyond its R2 repository, and model control across agents, with real
// wrangler dev and real agent processes: metadata an agent describes on demand, and pinned copies that
// outlive LRU pressure and their holder's death.

const [PINNED = "m000", ...OTHERS] = MULTIPLEX_MODELS;
let gateway: GatewayProcess;
let repositoryServer: Server;
let repositoryUrl = "";
const agents: AgentProcess[] = [];

beforeAll(async () => {
  // The fixture repository over plain HTTP, as an agent's own remote repository, listed by repository.json.
  const listing = JSON.stringify({ models: MULTIPLEX_MODELS.map((name) => ({ name, version: "1" })) });
  repositoryServer = createServer((request, response) => {
    if (request.url === "/repository.json") {
      response.writeHead(200, { "Content-Type": "application/json" }).end(listing);
      return;
    }
    const path = normalize(
      join(REPO_DIR, decodeURIComponent(new URL(request.url ?? "/", "http://x").pathname)),
    );
    try {
      if (!path.startsWith(REPO_DIR) || !statSync(path).isFile()) throw new Error("not a file");
    } catch {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "Content-Length": statSync(path).size });
    createReadStream(path).pipe(response);
  });
  await new Promise<void>((resolve) => repositoryServer.listen(0, "127.0.0.1", resolve));
  const address = repositoryServer.address();
  repositoryUrl = `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}/`;
  // A departed holder's pinned copies move once its grace ends: a short one keeps the test quick.
  gateway = await startGateway({ vars: { AGENT_GRACE_SECONDS: "2" } });
});

afterAll(() => {
  repositoryServer?.close();
});

// Registered after the cleanup above, so it runs first: processes stop before their files go.
watchProcesses(() => ({ gateways: [gateway], agents }));

const asClient = (pool: string) => ({ ...clientAuthorization, "X-Switchyard-Pool": pool });
const asAdmin = (pool: string) => ({
  Authorization: `Bearer ${SECRETS.adminKey}`,
  "X-Switchyard-Pool": pool,
});

test("an agent with a remote repository of its own describes a model when the gateway asks, without loading it", async () => {
  const pool = "remote";
  const agent = await startAgent({ gateway: gateway.wsUrl, name: "remote", pool, models: repositoryUrl });
  agents.push(agent);
  await waitForAgents(gateway.url, 1, pool);
  const response = await fetch(`${gateway.url}/v2/models/${PINNED}`, { headers: asClient(pool) });
  expect(response.status).toBe(200);
  expect(await response.json()).toEqual({
    name: PINNED,
    versions: ["1"],
    platform: "onnxruntime_onnx",
    ...(await describeOnnxFile(repoModelPath(PINNED))),
  });
  const replicas = (await (
    await fetch(`${gateway.url}/dashboard/api/pool?pool=${pool}`, { headers: asAdmin(pool) })
  ).json()) as {
    agents: Array<{ replicas: Array<{ loaded: unknown[] }> }>;
  };
  expect(replicas.agents[0]?.replicas[0]?.loaded).toEqual([]);
  await agent.stop("SIGKILL");
});

describe("model control across agents", () => {
  const pool = "pinning";
  const holderOf = async (model: string) => {
    const view = (await (
      await fetch(`${gateway.url}/dashboard/api/pool?pool=${pool}`, { headers: asAdmin(pool) })
    ).json()) as {
      agents: Array<{ name: string; replicas: Array<{ loaded: Array<{ name: string; pinned: boolean }> }> }>;
    };
    return view.agents
      .filter((agent) =>
        agent.replicas.some((replica) =>
          replica.loaded.some((loaded) => loaded.name === model && loaded.pinned),
        ),
      )
      .map((agent) => agent.name);
  };

  beforeAll(async () => {
    for (const name of ["pin-a", "pin-b"]) {
      agents.push(await startAgent({ gateway: gateway.wsUrl, name, pool, args: ["--max-models", "2"] }));
    }
    await waitForAgents(gateway.url, 2, pool);
  });

  test("a loaded model stays pinned under LRU pressure, and moves to another agent when its holder dies", async () => {
    const load = await fetch(`${gateway.url}/v2/repository/models/${PINNED}/load`, {
      method: "POST",
      headers: asAdmin(pool),
      body: JSON.stringify({ parameters: { copies: 1 } }),
    });
    expect(`${load.status} ${await load.text()}`).toBe("200 {}");
    const [holder] = await holderOf(PINNED);
    expect(holder).toBeDefined();
    // Every other model, twice over: each agent's two slots churn, the pinned model stays.
    for (const model of [...OTHERS, ...OTHERS]) {
      const outcome = await call(gateway.url, model, mlpRequest(1), { pool });
      expect(outcome.ok ? 200 : `${outcome.status} ${outcome.message}`).toBe(200);
    }
    expect(await holderOf(PINNED)).toEqual([holder]);

    await agents.find((agent) => agent.name === holder)?.stop("SIGKILL");
    await eventually("the pin moved to the other agent", async () => {
      const holders = await holderOf(PINNED);
      return holders.length === 1 && holders[0] !== holder;
    });
    const served = await call(gateway.url, PINNED, mlpRequest(1), { pool });
    expect(served.ok && served.result.headers.get("x-switchyard-cache")).toBe("hit");
  });

  test("asking for more copies than replicas that can hold the model is refused, and unload evicts it everywhere", async () => {
    const tooMany = await fetch(`${gateway.url}/v2/repository/models/${PINNED}/load`, {
      method: "POST",
      headers: asAdmin(pool),
      body: JSON.stringify({ parameters: { copies: 5 } }),
    });
    expect(tooMany.status).toBe(400);
    expect(((await tooMany.json()) as { error: string }).error).toBe(
      `5 copies of '${PINNED}' asked for, but 1 replica(s) can load it`,
    );
    const unload = await fetch(`${gateway.url}/v2/repository/models/${PINNED}/unload`, {
      method: "POST",
      headers: asAdmin(pool),
      body: "{}",
    });
    expect(unload.status).toBe(200);
    await eventually("unloaded everywhere", async () => {
      const index = (await (
        await fetch(`${gateway.url}/v2/repository/index`, {
          method: "POST",
          headers: asClient(pool),
          body: "",
        })
      ).json()) as Array<{ name: string; state: string }>;
      return index.find((entry) => entry.name === PINNED)?.state === "UNAVAILABLE";
    });
  });
});

test("a model's keep_alive_s (its config.json) unloads it when idle that long, whatever the agent's --keep-alive", async () => {
  const pool = "keepalive";
  const [BRIEF_SOURCE = "m001", LASTING_SOURCE = "m002"] = OTHERS;
  const repository = temporaryRepository("keep-alive", [
    copyOf(BRIEF_SOURCE, "brief", { keep_alive_s: 1 }),
    copyOf(LASTING_SOURCE, "lasting"),
  ]);
  try {
    // The agent's own keep-alive is 0 (never): only the model's config.json can unload it.
    const agent = await startAgent({ gateway: gateway.wsUrl, name: "keeper", pool, models: repository });
    agents.push(agent);
    await waitForAgents(gateway.url, 1, pool);
    // Brief last: its one second idle must not be spent on lasting's load before the first look.
    expect((await call(gateway.url, "lasting", mlpRequest(1), { pool })).ok, "lasting").toBe(true);
    const sentAt = Date.now();
    expect((await call(gateway.url, "brief", mlpRequest(1), { pool })).ok, "brief").toBe(true);
    const loaded = async () => {
      const view = (await (
        await fetch(`${gateway.url}/dashboard/api/pool?pool=${pool}`, { headers: asAdmin(pool) })
      ).json()) as { agents: Array<{ replicas: Array<{ loaded: Array<{ name: string }> }> }> };
      return (view.agents[0]?.replicas[0]?.loaded ?? []).map((model) => model.name).sort();
    };
    expect(await loaded()).toEqual(["brief", "lasting"]);
    await eventually("brief unloaded", async () => (await loaded()).join() === "lasting", 10_000);
    // Not before its second was up (counted from before its request was sent: its idle time starts later).
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(1_000);
  } finally {
    rmSync(repository, { recursive: true, force: true });
  }
});

test("a model's model_warmup (its config.json) runs at load: a sample that fits serves, one onnxruntime refuses or whose data file is missing fails the load in its words", async () => {
  const pool = "warmup";
  const [FITTING_SOURCE = "m003", MISFIT_SOURCE = "m004"] = OTHERS.slice(2);
  const fromFile = [
    { name: "pair", batch_size: 2, inputs: { x: { dims: [16], input_data_file: "row.bin" } }, count: 2 },
  ];
  const repository = temporaryRepository("warmup", [
    copyOf(FITTING_SOURCE, "warmed", { model_warmup: fromFile }),
    copyOf(MISFIT_SOURCE, "misfit", { model_warmup: [{ name: "wide", inputs: { x: { dims: [17] } } }] }),
    copyOf(FITTING_SOURCE, "unfiled", { model_warmup: fromFile }),
  ]);
  mkdirSync(join(repository, "warmed", "warmup"));
  writeFileSync(
    join(repository, "warmed", "warmup", "row.bin"),
    new Uint8Array(new Float32Array(16).fill(0.5).buffer),
  );
  try {
    const agent = await startAgent({ gateway: gateway.wsUrl, name: "warmer", pool, models: repository });
    agents.push(agent);
    await waitForAgents(gateway.url, 1, pool);
    const warmed = await call(gateway.url, "warmed", mlpRequest(1), { pool });
    expect(warmed.ok && warmed.result.response.outputs[0]?.shape).toEqual([1, 8]);
    const misfit = await call(gateway.url, "misfit", mlpRequest(1), { pool });
    expect(misfit.status).toBe(500);
    expect(misfit.ok ? "" : misfit.message).toMatch(
      /failed to load: warming misfit\/1 up failed: model_warmup sample 'wide': .*invalid dimensions.*Expected: 16/s,
    );
    const unfiled = await call(gateway.url, "unfiled", mlpRequest(1), { pool });
    expect(unfiled.status).toBe(500);
    expect(unfiled.ok ? "" : unfiled.message).toContain(
      "warming unfiled/1 up failed: model_warmup sample 'pair': input 'x': input_data_file 'row.bin' is not in the model's warmup/ directory",
    );
  } finally {
    rmSync(repository, { recursive: true, force: true });
  }
});
