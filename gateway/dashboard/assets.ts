// The dashboard's files travel inside the Worker as text modules (the `Text` rule in wrangler.toml), so
// the page needs no build step and no static-asset binding, and ECharts comes from its npm package at
// the pinned version.
import echarts from "echarts/dist/echarts.common.min.js";
import script from "./client/dashboard.client.js";
import styles from "./client/dashboard.css";
import page from "./client/dashboard.html";

export interface Asset {
  body: string;
  type: string;
  /** Cache-Control: ECharts changes only with its pinned version; the page's own files with each deploy. */
  cache: string;
}

export const DASHBOARD_PAGE: Asset = { body: page, type: "text/html; charset=utf-8", cache: "no-cache" };

/** Served under /dashboard/assets/<name>. */
export const DASHBOARD_ASSETS: Readonly<Record<string, Asset>> = {
  "dashboard.js": { body: script, type: "text/javascript; charset=utf-8", cache: "no-cache" },
  "dashboard.css": { body: styles, type: "text/css; charset=utf-8", cache: "no-cache" },
  "echarts.js": { body: echarts, type: "text/javascript; charset=utf-8", cache: "public, max-age=86400" },
};
