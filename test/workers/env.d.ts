// Types of `env` and `exports` inside the Workers tests: the gateway's bindings and its main module.
import type { Env as GatewayEnv } from "../../gateway/env.ts";

declare global {
  namespace Cloudflare {
    interface Env extends GatewayEnv {}
    interface GlobalProps {
      mainModule: typeof import("../../gateway/index.ts");
      durableNamespaces: "Registry" | "RateLimiter";
    }
  }
}
