// The dashboard page's script (served as is, no build step). It asks for the admin key or METRICS_TOKEN,
// keeps it in this tab's sessionStorage, and polls /dashboard/api/pool every POLL_MS with it as a bearer
// header. Everything agents report (names, hints, model names, failure reasons) is put on the page as text
// nodes, never as HTML: an agent is not trusted to write markup into the operator's page.

const POLL_MS = 2000;
const KEY_STORAGE = "switchyard.dashboard.key";

const $ = (id) => document.getElementById(id);

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) ?? "",
  pool: new URLSearchParams(location.search).get("pool") || "default",
  timer: undefined,
  lastOk: 0,
  charts: undefined,
  generation: 0,
};

/** A DOM element with attributes and children (strings become text nodes). */
function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    // Through the CSSOM: the page's Content-Security-Policy forbids style attributes.
    else if (name === "style") element.style.cssText = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return element;
}

function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes <= 0) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  const power = Math.min(units.length - 1, Math.floor(Math.log(bytes) / Math.log(1024)));
  const value = bytes / 1024 ** power;
  return `${value >= 100 || power === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[power]}`;
}

function formatMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms >= 1000) return `${(ms / 1000).toFixed(ms >= 10_000 ? 0 : 1)} s`;
  return `${ms >= 100 ? ms.toFixed(0) : ms.toFixed(1)} ms`;
}

function formatDuration(ms) {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  return hours < 48 ? `${hours}h ${minutes % 60}m` : `${Math.floor(hours / 24)}d`;
}

function setTile(id, value, sub) {
  const tile = $(id);
  tile.querySelector(".value").textContent = value;
  tile.querySelector(".sub").textContent = sub ?? "";
}

// ---- sign in and out ----

function showSignIn(message) {
  stopPolling();
  $("board").hidden = true;
  $("status").hidden = true;
  $("pool-form").hidden = true;
  $("pool-name").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-pool").value = state.pool === "default" ? "" : state.pool;
  const error = $("sign-in-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  $("key-input").focus();
}

function showBoard() {
  $("sign-in").hidden = true;
  $("board").hidden = false;
  $("status").hidden = false;
  $("pool-form").hidden = false;
  $("pool-name").hidden = false;
  $("pool-name").textContent = `pool ${state.pool}`;
  $("pool-input").value = state.pool;
  ensureCharts();
  startPolling();
}

function setPool(pool) {
  state.pool = pool.trim() || "default";
  const url = new URL(location.href);
  if (state.pool === "default") url.searchParams.delete("pool");
  else url.searchParams.set("pool", state.pool);
  history.replaceState(null, "", url);
}

// ---- polling ----

function stopPolling() {
  clearTimeout(state.timer);
  state.timer = undefined;
  state.generation += 1;
}

function startPolling() {
  stopPolling();
  const generation = state.generation;
  const tick = async () => {
    await poll(generation);
    if (generation === state.generation) state.timer = setTimeout(tick, POLL_MS);
  };
  void tick();
}

async function poll(generation) {
  let response;
  try {
    response = await fetch(`/dashboard/api/pool?pool=${encodeURIComponent(state.pool)}`, {
      headers: { Authorization: `Bearer ${state.key}` },
      cache: "no-store",
    });
  } catch {
    if (generation === state.generation) setStatus("stale", "gateway unreachable, retrying");
    return;
  }
  if (generation !== state.generation) return;
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = "";
    showSignIn(await errorOf(response, "the key was not accepted"));
    return;
  }
  if (!response.ok) {
    setStatus("stale", `the gateway answered ${response.status}: ${await errorOf(response, "")}`);
    return;
  }
  const view = await response.json();
  state.lastOk = Date.now();
  render(view);
  setStatus("live", `live · updated ${new Date(view.at).toLocaleTimeString()}`);
}

async function errorOf(response, fallback) {
  try {
    const body = await response.json();
    return typeof body.error === "string" ? body.error : fallback;
  } catch {
    return fallback;
  }
}

function setStatus(kind, text) {
  $("status-dot").className = `dot ${kind}`;
  $("status-text").textContent = text;
}

// ---- rendering ----

function render(view) {
  const agents = view.agents;
  const replicas = agents.flatMap((agent) => agent.replicas);
  const draining = agents.filter((agent) => agent.draining).length;
  const gpus = replicas.filter((replica) => replica.device.startsWith("cuda")).length;
  const slots = replicas.reduce((sum, replica) => sum + replica.maxConcurrency, 0);
  const agentQueued = replicas.reduce((sum, replica) => sum + replica.queued, 0);
  const recent = view.recent;

  setTile("tile-agents", agents.length, draining > 0 ? `${draining} draining` : "all serving");
  setTile("tile-replicas", replicas.length, `${gpus} GPU · ${replicas.length - gpus} CPU`);
  setTile("tile-inflight", view.inFlight, `of ${slots} slots`);
  setTile("tile-queued", view.queued, `+${agentQueued} inside replicas`);
  setTile(
    "tile-rate",
    recent.ratePerSecond.toFixed(recent.ratePerSecond >= 10 ? 0 : 2),
    `${recent.requests} in ${recent.minutes} min · ${recent.errors} errors`,
  );
  setTile(
    "tile-hits",
    recent.hitRate === null ? "–" : `${(recent.hitRate * 100).toFixed(recent.hitRate === 1 ? 0 : 1)}%`,
    `${recent.hits} hits · ${recent.misses} misses`,
  );
  setTile("tile-p50", formatMs(recent.p50Ms), `last ${recent.minutes} min`);
  setTile("tile-p99", formatMs(recent.p99Ms), `last ${recent.minutes} min`);

  renderCharts(view);
  renderPolicies(view);
  renderAsyncQueue(view);
  renderAgents(view);
}

function renderAsyncQueue(view) {
  const { waiting, running, events } = view.asyncQueue;
  $("async-section").hidden = events.submitted === 0;
  const total = waiting.reduce((sum, row) => sum + row.requests, 0);
  $("async-summary").textContent =
    `${total} waiting · ${running} running · ${events.completed} completed · ${events.failed} failed · ` +
    `${events.cancelled} cancelled · ${events.timed_out} timed out`;
  $("async-waiting").replaceChildren(
    ...(waiting.length === 0
      ? [h("tr", {}, h("td", { colspan: "2" }, "nothing waiting"))]
      : waiting.map((row) =>
          h("tr", { "data-model": row.model }, h("td", {}, row.model), h("td", {}, String(row.requests))),
        )),
  );
}

function renderPolicies(view) {
  $("policies-section").hidden = view.policies.length === 0;
  $("policies").replaceChildren(
    ...view.policies.map((policy) =>
      h(
        "tr",
        { "data-model": policy.model },
        h("td", {}, policy.model),
        h("td", {}, String(policy.minCopies)),
        h("td", {}, policy.maxCopies === null ? "no cap" : String(policy.maxCopies)),
        h("td", {}, String(policy.copies)),
      ),
    ),
  );
}

function renderAgents(view) {
  $("agents-count").textContent = view.agents.length === 0 ? "" : `${view.agents.length} connected`;
  $("no-agents").hidden = view.agents.length > 0;
  const list = $("agents");
  list.replaceChildren(
    ...view.agents.map((agent) =>
      h(
        "article",
        { class: "card agent", "data-agent": agent.id },
        h(
          "div",
          { class: "agent-head" },
          h("span", { class: "agent-name" }, agent.name),
          agent.id === agent.name ? null : h("span", { class: "muted" }, agent.id),
          view.shards > 1 ? h("span", { class: "muted" }, `shard ${agent.shard}`) : null,
          h(
            "span",
            { class: `badge${agent.draining ? " draining" : ""}` },
            agent.draining ? "draining" : "serving",
          ),
          h(
            "span",
            { class: "muted" },
            `v${agent.version} · connected ${formatDuration(view.at - agent.connectedAt)} ago`,
          ),
          agent.hints.length === 0 ? null : h("span", { class: "muted" }, `hints: ${agent.hints.join(", ")}`),
        ),
        h(
          "table",
          { class: "replicas" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              h("th", {}, "Replica"),
              h("th", {}, "Requests"),
              h("th", {}, "Model memory"),
              h("th", {}, "Models"),
            ),
          ),
          h(
            "tbody",
            {},
            agent.replicas.map((replica) => replicaRow(replica)),
          ),
        ),
      ),
    ),
  );
}

function replicaRow(replica) {
  const busy = Math.min(1, replica.inFlight / Math.max(1, replica.maxConcurrency));
  const memory = Math.min(1, replica.memoryUsedBytes / Math.max(1, replica.memoryBudgetBytes));
  const loaded = replica.loaded.map((model) =>
    h(
      "span",
      {
        class: `chip model${model.inFlight > 0 ? " busy" : ""}`,
        "data-model": model.name,
        title: `${model.name} version ${model.version}: ${formatBytes(model.bytes)}, idle ${formatDuration(model.idleMs)}`,
      },
      `${model.name}:${model.version}`,
      h("span", { class: "size" }, formatBytes(model.bytes)),
      model.inFlight > 0 ? h("span", { class: "busy-count" }, `▶ ${model.inFlight}`) : null,
    ),
  );
  const loading = replica.loading.map((model) =>
    h(
      "span",
      { class: "chip loading", "data-model": model.name, title: "loading" },
      `${model.name}:${model.version} loading…`,
    ),
  );
  const failed = replica.failed.map((model) =>
    h("span", { class: "chip failed", title: model.reason }, `${model.name}:${model.version} failed`),
  );
  const chips = [...loaded, ...loading, ...failed];
  return h(
    "tr",
    { "data-replica": replica.id },
    h(
      "td",
      { class: "replica-id" },
      h("strong", {}, `#${replica.id} `),
      h("span", { class: "badge device" }, replica.device),
    ),
    h(
      "td",
      { class: "gauge-cell" },
      h(
        "div",
        { class: "gauge" },
        h("div", { class: "bar" }, h("span", { style: `width:${(busy * 100).toFixed(1)}%` })),
        `${replica.inFlight} / ${replica.maxConcurrency} running${replica.queued > 0 ? ` · ${replica.queued} queued` : ""}`,
      ),
    ),
    h(
      "td",
      { class: "gauge-cell" },
      h(
        "div",
        { class: "gauge" },
        h("div", { class: "bar memory" }, h("span", { style: `width:${(memory * 100).toFixed(1)}%` })),
        `${formatBytes(replica.memoryUsedBytes)} / ${formatBytes(replica.memoryBudgetBytes)}`,
      ),
    ),
    h(
      "td",
      {},
      chips.length === 0
        ? h("span", { class: "none" }, "no model loaded")
        : h("div", { class: "chips" }, chips),
    ),
  );
}

// ---- charts (ECharts) ----

function ensureCharts() {
  if (state.charts !== undefined || globalThis.echarts === undefined) return;
  const traffic = globalThis.echarts.init($("chart-traffic"), null, { renderer: "canvas" });
  const latency = globalThis.echarts.init($("chart-latency"), null, { renderer: "canvas" });
  const base = {
    animation: false,
    grid: { left: 48, right: 16, top: 30, bottom: 28 },
    tooltip: { trigger: "axis" },
    legend: {
      top: 0,
      right: 0,
      icon: "roundRect",
      itemWidth: 10,
      itemHeight: 10,
      textStyle: { color: "#6a7282" },
    },
    xAxis: {
      type: "time",
      axisLine: { lineStyle: { color: "#d5d9e0" } },
      axisLabel: { color: "#6a7282", hideOverlap: true },
      splitLine: { show: false },
    },
    yAxis: {
      type: "value",
      min: 0,
      axisLabel: { color: "#6a7282" },
      splitLine: { lineStyle: { color: "#eef0f3" } },
    },
  };
  traffic.setOption({
    ...base,
    color: ["#3b6ef5", "#f0a020", "#d23b3b"],
    series: [
      {
        name: "hits",
        type: "line",
        stack: "served",
        areaStyle: { opacity: 0.35 },
        showSymbol: false,
        data: [],
      },
      {
        name: "misses",
        type: "line",
        stack: "served",
        areaStyle: { opacity: 0.35 },
        showSymbol: false,
        data: [],
      },
      { name: "5xx", type: "line", showSymbol: false, lineStyle: { type: "dashed" }, data: [] },
    ],
  });
  latency.setOption({
    ...base,
    color: ["#35a98a", "#7c4dff"],
    series: [
      // Symbols too: a slot with traffic between two idle ones is a lone point, which a bare line hides.
      { name: "p50", type: "line", symbol: "circle", symbolSize: 5, connectNulls: false, data: [] },
      { name: "p99", type: "line", symbol: "circle", symbolSize: 5, connectNulls: false, data: [] },
    ],
  });
  state.charts = { traffic, latency };
  addEventListener("resize", () => {
    traffic.resize();
    latency.resize();
  });
}

function renderCharts(view) {
  ensureCharts();
  if (state.charts === undefined) return;
  const series = view.series;
  state.charts.traffic.setOption({
    series: [
      { data: series.map((point) => [point.t, point.hits]) },
      { data: series.map((point) => [point.t, point.misses]) },
      // Drawn only where there were any: a flat line of zeros would hide the axis and the traffic on it.
      { data: series.map((point) => [point.t, point.errors > 0 ? point.errors : null]) },
    ],
  });
  state.charts.latency.setOption({
    series: [
      { data: series.map((point) => [point.t, point.p50Ms]) },
      { data: series.map((point) => [point.t, point.p99Ms]) },
    ],
  });
}

// ---- wiring ----

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("key-input").value.trim();
    sessionStorage.setItem(KEY_STORAGE, state.key);
    $("key-input").value = "";
    setPool($("sign-in-pool").value);
    showBoard();
  });
  $("pool-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setPool($("pool-input").value);
    $("pool-name").textContent = `pool ${state.pool}`;
    startPolling();
  });
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = "";
    showSignIn();
  });
  if (state.key === "") showSignIn();
  else showBoard();
});
