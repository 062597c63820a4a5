import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { AgentLink } from "../../gateway/registry/agent-link.ts";
import { Scheduler } from "../../gateway/registry/scheduler.ts";
import { baselinePolicy } from "../../shared/routing/baseline.ts";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { freshPool } from "./support/gateway.ts";
import { registry } from "./support/registry.ts";
import { joinScheduler } from "./support/scheduler-agents.ts";

describe("heartbeats", () => {
  it("are answered by the runtime, which records when, so they need not wake the registry", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { replicas: [replicaState()] });
    agent.socket.send("ping");
    expect(await agent.nextText()).toBe("pong");
    await runInDurableObject(registry(pool), (_instance, state) => {
      const [socket] = state.getWebSockets();
      expect(socket).toBeDefined();
      if (socket !== undefined) expect(state.getWebSocketAutoResponseTimestamp(socket)).toBeInstanceOf(Date);
    });
    agent.close();
  });

  // The registry closes what staleAgents() returns before it routes a request. Workers' clocks only move
  // with I/O and cannot be faked inside the Durable Object, so the rule is tested on the Scheduler with a clock
  // of its own, and real sockets.
  it("take an agent for dead after three missed heartbeats, counting runtime-answered pings and frames", () => {
    let now = 1_000_000;
    const heartbeats = new Map<WebSocket, number>();
    const relay = new Scheduler({
      policy: baselinePolicy,
      maxQueue: 10,
      heartbeatMs: 1000,
      now: () => now,
      onAgentChanged: () => {},
      onAgentGone: () => {},
      lastHeartbeat: (socket) => heartbeats.get(socket),
    });
    const connect = (name: string): AgentLink => joinScheduler(relay, name, [replicaState()]);
    const pinging = connect("pinging");
    const talking = connect("talking");
    const silent = connect("silent");
    const names = () => relay.staleAgents().map((link) => link.record.id);

    now += 3000;
    expect(names()).toEqual([]);
    heartbeats.set(pinging.socket, now);
    relay.touch(talking);
    now += 1;
    expect(names()).toEqual(["silent"]);
    relay.disconnect(silent, "its heartbeats stopped");
    now += 2999;
    expect(names()).toEqual([]);
    now += 1;
    expect(names()).toEqual(["pinging", "talking"]);
  });
});
