import * as echarts from "echarts";
import type { ScenarioResult } from "./goals.ts";

const WIDTH = 760;
const HEIGHT = 460;

/** Renders an ECharts option to an SVG string, server-side (no DOM, no canvas, no native code). */
function toSvg(option: echarts.EChartsOption): string {
  const chart = echarts.init(null, null, { renderer: "svg", ssr: true, width: WIDTH, height: HEIGHT });
  chart.setOption({ animation: false, backgroundColor: "#ffffff", ...option });
  const svg = chart.renderToSVGString();
  chart.dispose();
  return svg;
}

/** S6: p99 latency against offered load, one line per policy (failures count as the deadline). */
export function p99VersusLoadChart(
  sweep: readonly ScenarioResult[],
  loads: readonly number[],
  policies: readonly string[],
): string {
  return toSvg({
    title: { text: "S6: p99 latency vs offered load", left: "center", textStyle: { fontSize: 14 } },
    legend: { bottom: 0, type: "plain" },
    grid: { left: 70, right: 30, top: 50, bottom: 110 },
    xAxis: {
      type: "value",
      name: "load (% of hit-only capacity)",
      nameLocation: "middle",
      nameGap: 30,
      min: 0,
      max: 120,
    },
    yAxis: { type: "log", name: "p99 (s)", min: 0.01, max: 100, logBase: 10 },
    series: [
      ...policies.map((policy) => ({
        name: policy,
        type: "line" as const,
        symbolSize: 6,
        data: sweep.map((result, index) => [
          Math.round((loads[index] ?? 0) * 100),
          (result.runs.find((run) => run.policy === policy)?.p99 ?? Number.NaN) / 1000,
        ]),
      })),
      {
        name: "no misses (bound)",
        type: "line" as const,
        lineStyle: { type: "dashed" },
        symbol: "none",
        data: sweep.map((result, index) => [
          Math.round((loads[index] ?? 0) * 100),
          result.bounds.noMisses.p99 / 1000,
        ]),
      },
    ],
  });
}

/** Hit rate per policy per scenario, with Belady's bound for each scenario. */
export function hitRateChart(results: readonly ScenarioResult[], policies: readonly string[]): string {
  return toSvg({
    title: { text: "Hit rate per policy vs Belady's bound", left: "center", textStyle: { fontSize: 14 } },
    legend: { bottom: 0 },
    grid: { left: 60, right: 30, top: 50, bottom: 90 },
    xAxis: { type: "category", data: results.map((result) => result.id) },
    yAxis: { type: "value", name: "hit rate", min: 0, max: 1 },
    series: [
      ...policies.map((policy) => ({
        name: policy,
        type: "bar" as const,
        data: results.map((result) => round(result.runs.find((run) => run.policy === policy)?.hitRate)),
      })),
      {
        name: "Belady bound",
        type: "scatter" as const,
        symbol: "rect",
        symbolSize: [44, 3],
        itemStyle: { color: "#000000" },
        data: results.map((result) => round(result.bounds.beladyHitRate)),
      },
    ],
  });
}

const round = (value: number | undefined) =>
  value === undefined ? Number.NaN : Math.round(value * 1000) / 1000;
