import { createServer, type RequestListener, type Server } from "node:http";
import { getRequestListener } from "@hono/node-server";
import type { Hono } from "hono";
import { SwitchyardError } from "../../shared/errors.ts";
import { errorResponse } from "../../shared/http/error-response.ts";
import { HotLoop } from "../replica/hot-loop.ts";
import { type DirectInferOptions, directInferRoute } from "./direct-infer-route.ts";
import { answerMalformedHttp } from "./malformed-http.ts";

/**
 * The standalone server: plain infer requests on the direct route (direct-infer-route.ts), everything else
 * through the Hono app (`throughApp`: the app itself on the main thread, a message to it from an intake
 * thread); HTTP that Node cannot parse gets an OIP error (malformed-http.ts).
 */
export function standaloneServer(
  throughApp: RequestListener,
  options: DirectInferOptions & {
    /** How long the thread keeps turning after a request arrives (hot-loop.ts spinWindowMs); 0: never. */
    spinMs: number;
  },
): Server {
  const { spinMs, ...direct } = options;
  const inferDirectly = directInferRoute(direct);
  const hot = new HotLoop(spinMs);
  const server = createServer((request, response) => {
    hot.touch();
    // While the server closes (a drain), a connection whose answer is out is closed at once instead of
    // kept for the keep-alive timeout, so the agent exits as soon as its last answer is written.
    response.once("finish", () => {
      if (!server.listening) setImmediate(() => server.closeIdleConnections());
    });
    if (!inferDirectly(request, response)) void throughApp(request, response);
  });
  server.on("clientError", answerMalformedHttp);
  // A client that half-closes after its request (some load generators, netcat) still gets its answer: by
  // default Node ends such a socket at once, before a request that takes a few ticks is answered.
  (server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  return server;
}

/**
 * The Hono app as a node:http listener on the main thread. A request it cannot even turn into a web Request
 * (a URL or Host header no URL parser takes) gets the OIP error shape too, not an empty 400.
 */
export function appListener(app: Hono): RequestListener {
  return getRequestListener(app.fetch, {
    errorHandler: (error) =>
      errorResponse(
        error instanceof Error && error.name === "RequestError"
          ? new SwitchyardError("bad_input", `the request cannot be read: ${error.message}`)
          : SwitchyardError.from(error),
      ),
  });
}

/** `reusePort`: several servers (one per intake thread) share the port, the kernel spreading connections. */
export function listen(server: Server, host: string, port: number, reusePort = false): Promise<Server> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, host, reusePort }, () => {
      server.off("error", reject);
      resolve(server);
    });
  });
}
