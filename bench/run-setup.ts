import { DEFAULT_ROUTING_POLICY } from "../shared/routing/policies.ts";
import type { AgentProcess } from "../test/integration/harness/agents.ts";
import type { GatewayProcess } from "../test/integration/harness/wrangler-dev.ts";

/**
 * What a benchmark's report says about its setup, read from what actually ran: the gateway's configuration as
 * the harness gave it to `wrangler dev` (wrangler.toml's [vars] with the benchmark's own over them, see
 * GatewayProcess.vars) and the flags each agent process was started with. Never a literal in a report.
 */

/** A gateway setting as it ran; a name wrangler.toml does not set runs on the Worker's default. */
export function gatewaySetting(gateway: Pick<GatewayProcess, "vars">, name: string): string {
  const value = gateway.vars[name];
  if (value !== undefined) return value;
  if (name === "ROUTING_POLICY") return DEFAULT_ROUTING_POLICY;
  throw new Error(`${name} is not in the gateway's configuration (wrangler.toml [vars] or the benchmark's)`);
}

/** "`ROUTING_POLICY=switchyard`, `QUEUE_LIMIT=1000`": the named settings as the gateway ran with them. */
export function describeGateway(gateway: Pick<GatewayProcess, "vars">, names: readonly string[]): string {
  return names.map((name) => `\`${name}=${gatewaySetting(gateway, name)}\``).join(", ");
}

/** The value an agent process was given for `flag` (the last one wins, as the agent reads them). */
export function agentFlag(agent: AgentProcess, flag: string): string | undefined {
  const args = agent.process.child.spawnargs;
  const at = args.lastIndexOf(flag);
  return at === -1 ? undefined : args[at + 1];
}

/** The value every one of `agents` was given for `flag`, or each distinct value when they differ. */
export function agentsFlag(agents: readonly AgentProcess[], flag: string): string {
  const values = [...new Set(agents.map((agent) => agentFlag(agent, flag) ?? "(not given)"))];
  return values.join(" / ");
}

/** "three" for 3, up to ten; digits beyond. */
export function countWord(count: number): string {
  const words = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];
  return words[count] ?? String(count);
}
