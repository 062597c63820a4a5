import { afterAll, afterEach } from "vitest";
import type { AgentProcess } from "./agents.ts";
import { describeProcesses } from "./process-group.ts";
import type { GatewayProcess } from "./wrangler-dev.ts";

/** The real processes a test file started (read when its hooks run: files start them in beforeAll). */
export interface ProcessesUnderTest {
  gateways: ReadonlyArray<GatewayProcess | undefined>;
  agents: Iterable<AgentProcess | undefined>;
}

/**
 * The hooks every integration file needs around its real processes: when a test fails, what each of them
 * printed (the only view into a gateway or an agent that misbehaved); after the file, its agents stopped
 * with `agentSignal` (SIGKILL: nothing left to drain) and its gateways stopped, their local state deleted.
 */
export function watchProcesses(
  processes: () => ProcessesUnderTest,
  agentSignal: NodeJS.Signals = "SIGKILL",
): void {
  const listed = () => {
    const { gateways, agents } = processes();
    return {
      gateways: gateways.filter((gateway) => gateway !== undefined),
      agents: [...agents].filter((agent) => agent !== undefined),
    };
  };
  afterEach((context) => {
    if (context.task.result?.state !== "fail") return;
    const { gateways, agents } = listed();
    console.log(describeProcesses([...gateways, ...agents].map((each) => each.process)));
  });
  afterAll(async () => {
    const { gateways, agents } = listed();
    await Promise.all(agents.map((agent) => agent.stop(agentSignal)));
    await Promise.all(gateways.map((gateway) => gateway.stop()));
  });
}
