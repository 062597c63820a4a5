import { createServer, type Server } from "node:http";
import type { AgentMetrics } from "./agent-metrics.ts";

export interface MetricsServer {
  url: string;
  close(): Promise<void>;
}

/**
 * `--metrics-port`: a plain HTTP server for Prometheus, apart from the OIP server (which may not run at all
 * when the agent only serves a gateway), answering GET /metrics. Nothing secret is in it, and it takes no
 * input, so it needs no key; --metrics-host keeps it on the loopback unless told otherwise.
 */
export function startMetricsServer(
  metrics: AgentMetrics,
  host: string,
  port: number,
): Promise<MetricsServer> {
  const server: Server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://agent").pathname;
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { Allow: "GET, HEAD" }).end();
      return;
    }
    if (path !== "/metrics") {
      response.writeHead(404, { "Content-Type": "text/plain" }).end("metrics are at /metrics\n");
      return;
    }
    metrics.text().then(
      ({ contentType, body }) => response.writeHead(200, { "Content-Type": contentType }).end(body),
      (error: unknown) => response.writeHead(500, { "Content-Type": "text/plain" }).end(`${String(error)}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      const address = server.address();
      const bound = typeof address === "object" && address !== null ? address.port : port;
      const shown = host.includes(":") ? `[${host}]` : host;
      resolve({
        url: `http://${shown}:${bound}/metrics`,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
  });
}
