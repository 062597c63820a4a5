import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, test } from "vitest";
import { listen, standaloneServer } from "../../../backend/server/standalone-server.ts";
import { SwitchyardError } from "../../../shared/errors.ts";
import { utilizationOver } from "../../support/event-loop-utilization.ts";

// The standalone server on this thread, as the main thread or an intake thread runs it.

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

async function serve(spinMs: number): Promise<string> {
  const server = standaloneServer(
    (_request, response) => {
      response.writeHead(200, { "content-type": "text/plain" });
      response.end("ready");
    },
    {
      spinMs,
      agentName: "test-agent",
      maxBodyBytes: 1024,
      defaultTimeoutMs: 1000,
      infer: () => Promise.reject(new SwitchyardError("unavailable", "no replicas here")),
      log: () => undefined,
    },
  );
  await listen(server, "127.0.0.1", 0);
  closers.push(
    () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe("spinning (--spin-ms)", () => {
  test("after a request the thread keeps polling for the window, then sleeps again", async () => {
    const url = await serve(300);
    expect(await (await fetch(`${url}/v2/health/ready`)).text()).toBe("ready");
    expect(await utilizationOver(150)).toBeGreaterThan(0.7);
    await sleep(250);
    expect(await utilizationOver(150)).toBeLessThan(0.3);
  });

  test("with a window of 0 it sleeps between requests", async () => {
    const url = await serve(0);
    expect(await (await fetch(`${url}/v2/health/ready`)).text()).toBe("ready");
    expect(await utilizationOver(150)).toBeLessThan(0.3);
  });
});
