import { createServer, type RequestListener, type Server } from "node:http";
import { type DirectInferOptions, directInferRoute } from "./direct-infer-route.ts";
import { answerMalformedHttp } from "./malformed-http.ts";

/**
 * The standalone server: plain infer requests on the direct route (direct-infer-route.ts), everything else
 * through the Hono app (`throughApp`: the app itself on the main thread, a message to it from an intake
 * thread); HTTP that Node cannot parse gets an OIP error (malformed-http.ts).
 */
export function standaloneServer(throughApp: RequestListener, direct: DirectInferOptions): Server {
  const inferDirectly = directInferRoute(direct);
  const server = createServer((request, response) => {
    if (!inferDirectly(request, response)) void throughApp(request, response);
  });
  server.on("clientError", answerMalformedHttp);
  // A client that half-closes after its request (some load generators, netcat) still gets its answer: by
  // default Node ends such a socket at once, before a request that takes a few ticks is answered.
  (server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  return server;
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
