import { describe, expect, it } from "vitest";
import type { LoadResult } from "../../../../bench/gpu/measure.ts";
import {
  type Measured,
  mediansOverRounds,
  PROXY_CPU,
  renderHotPathReport,
  WORKERD_CPU,
} from "../../../../bench/hot-path/report.ts";

// The hot-path report with --rounds: the host's drift between two measures minutes apart can exceed what a
// change moves, so each target's ratio is read within a round and the report gives the median of those; a
// ratio of medians taken from different rounds could say "met" or "not met" where no round did.

function load(concurrency: number, throughput: number, p50: number, p99 = p50 * 2): LoadResult {
  return {
    concurrency,
    seconds: 3,
    completed: throughput * 3,
    answered: throughput * 3,
    failed: 0,
    throughput,
    latency: { count: throughput * 3, p50, p90: p50, p99, mean: p50 },
  };
}

function mlp(round: number | undefined, batched: boolean, throughput: number, phases = {}): Measured {
  return {
    model: "mlp",
    target: "agent",
    encoding: "binary",
    batched,
    load: load(32, throughput, 1000 / throughput),
    phases,
    ...(round === undefined ? {} : { round }),
  };
}

const render = (results: Measured[]) =>
  renderHotPathReport({
    device: "cuda",
    machine: "test host",
    command: "npm run bench:hot-path",
    date: "2026-12-04",
    seconds: 1,
    cases: [{ name: "mlp", label: "MLP" }],
    concurrencies: [32],
    results,
    ortVersion: "1.29.0",
  });

const targetLine = (report: string, what: string) =>
  report.split("\n").find((line) => line.startsWith(`| ${what} |`));

describe("the hot-path report over rounds", () => {
  // Per round: 600/100 = 6, 400/200 = 2, 750/150 = 5. Their median is 5 (met); the ratio of the medians,
  // 600/150 = 4, would not be.
  const rounds = [
    mlp(1, false, 100),
    mlp(1, true, 600),
    mlp(2, false, 200),
    mlp(2, true, 400),
    mlp(3, false, 150),
    mlp(3, true, 750),
  ];

  it("reads each target's ratio within a round and gives their median and range", () => {
    expect(targetLine(render(rounds), "MLP over HTTP, 32 clients: batched / unbatched req/s")).toBe(
      "| MLP over HTTP, 32 clients: batched / unbatched req/s | 5 (2–6, 3 rounds) | ≥ 5 | yes |",
    );
  });

  it("shows each figure's median over the rounds in the tables, and says so", () => {
    const report = render(rounds);
    expect(report).toContain("3 rounds, each measuring every path in turn");
    expect(report).toContain("| agent | 150 · 6.67 · 13.33 |");
    expect(report).toContain("| agent (batched) | 600 · 1.67 · 3.33 |");
  });

  it("takes each stage's median over the rounds that sent it", () => {
    const [plain] = mediansOverRounds([
      mlp(1, false, 100, { infer: 1, run: 0.5 }),
      mlp(2, false, 100, { infer: 3 }),
      mlp(3, false, 100, { infer: 2, run: 0.7 }),
    ]);
    expect(plain?.phases).toEqual({ infer: 2, run: 0.6 });
  });

  it("renders one round, or results from before rounds, as it always did", () => {
    const once = [mlp(undefined, false, 100), mlp(undefined, true, 600)];
    const report = render(once);
    expect(targetLine(report, "MLP over HTTP, 32 clients: batched / unbatched req/s")).toBe(
      "| MLP over HTTP, 32 clients: batched / unbatched req/s | 6 | ≥ 5 | yes |",
    );
    expect(report).not.toContain("rounds, each measuring");
    expect(mediansOverRounds(once)).toEqual(once);
  });

  it("leaves a round out of a ratio when it lacks one side", () => {
    const partial = [mlp(1, false, 100), mlp(1, true, 300), mlp(2, false, 100)];
    expect(targetLine(render(partial), "MLP over HTTP, 32 clients: batched / unbatched req/s")).toBe(
      "| MLP over HTTP, 32 clients: batched / unbatched req/s | 3 (1 of 2 rounds) | ≥ 5 | no |",
    );
  });

  it("leaves out a round in which a measure answered nothing within its window, rather than read 0", () => {
    // On a slow host one batch of 32 detection requests can outlast a short window: no answer, no latency.
    const silent: Measured = { ...mlp(2, true, 0), load: { ...load(32, 0, Number.NaN), completed: 0 } };
    const results = [
      mlp(1, false, 100),
      mlp(1, true, 300),
      mlp(2, false, 100),
      silent,
      mlp(3, false, 100),
      mlp(3, true, 500),
    ];
    const report = render(results);
    expect(targetLine(report, "MLP over HTTP, 32 clients: batched / unbatched req/s")).toBe(
      "| MLP over HTTP, 32 clients: batched / unbatched req/s | 4 (3–5, 2 rounds) | ≥ 5 | no |",
    );
    expect(report).toContain("| agent (batched) | 400 · 2.67 · 5.33 |");
  });

  it("gives an encoding no section when nothing was measured with it", () => {
    const json = [mlp(1, false, 100), mlp(1, true, 600)].map((result) => ({
      ...result,
      encoding: "json" as const,
    }));
    const report = render(json);
    expect(report).toContain("## MLP, json bodies");
    expect(report).not.toContain("## MLP, binary bodies");
  });

  it("gives shared memory its section, and its p50 against binary bodies on the same agent, round by round", () => {
    const io = (encoding: "binary" | "shm", p50: number, round: number): Measured => ({
      model: "io",
      target: "agent",
      encoding,
      batched: false,
      load: load(1, 1000 / p50, p50),
      phases: {},
      round,
    });
    const report = renderHotPathReport({
      device: "cpu",
      machine: "test host",
      command: "npm run bench:hot-path -- --encodings binary,shm",
      date: "2026-12-05",
      seconds: 1,
      cases: [{ name: "io", label: "io" }],
      concurrencies: [1],
      results: [io("binary", 10, 1), io("shm", 4, 1), io("binary", 12, 2), io("shm", 6, 2)],
      ortVersion: "1.29.0",
    });
    expect(report).toContain("## io, tensors in system shared memory (the JSON body names the regions)");
    expect(report).toContain("| agent | 208.3 · 5 · 10 |");
    // 4/10 and 6/12: the median of the rounds' ratios, 0.45.
    expect(targetLine(report, "io, 1 client: agent p50 with tensors in shared memory / binary bodies")).toBe(
      "| io, 1 client: agent p50 with tensors in shared memory / binary bodies | 0.45 (0.4–0.5, 2 rounds) | – | – |",
    );
    expect(report).not.toContain("det, 1 client: agent p50 with tensors in shared memory");
  });
});

describe("the relay anchor split at its hops", () => {
  const one = (
    model: string,
    target: string,
    encoding: "binary" | "json",
    p50: number,
    round: number,
  ): Measured => ({
    model,
    target,
    encoding,
    batched: false,
    load: load(1, 1000 / p50, p50),
    phases: {},
    round,
  });
  // det's bytes on the io model: the anchor directly, then the relay anchor stopped at its Worker, at its
  // object, and whole; two rounds.
  const split = [1, 2].flatMap((round) => [
    one("floor", "relay-anchor", "json", 2 + round, round),
    one("io", "anchor", "binary", 4 + round, round),
    one("io", "relay-anchor-worker", "binary", 16 + round, round),
    one("io", "relay-anchor-object", "binary", 22 + 2 * round, round),
    one("io", "relay-anchor", "binary", 40 + 4 * round, round),
  ]);

  it("reads each hop as the difference of two stops within a round, on the io model where it ran", () => {
    const report = render(split);
    expect(
      targetLine(
        report,
        "4.9 MB (io): stopped at the relay anchor's Worker minus its floor (a GET; the bytes through proxy and Worker, ms)",
      ),
    ).toBe(
      "| 4.9 MB (io): stopped at the relay anchor's Worker minus its floor (a GET; the bytes through proxy and Worker, ms) | 14 (14–14, 2 rounds) | – | – |",
    );
    expect(
      targetLine(
        report,
        "4.9 MB (io): stopped at its object minus stopped at its Worker (the RPC both ways, ms)",
      ),
    ).toBe(
      "| 4.9 MB (io): stopped at its object minus stopped at its Worker (the RPC both ways, ms) | 7.5 (7–8, 2 rounds) | – | – |",
    );
    expect(
      targetLine(
        report,
        "4.9 MB (io): the relay anchor minus stopped at its object (the websocket both ways and the peer's work, ms)",
      ),
    ).toBe(
      "| 4.9 MB (io): the relay anchor minus stopped at its object (the websocket both ways and the peer's work, ms) | 21 (20–22, 2 rounds) | – | – |",
    );
    expect(
      targetLine(report, "4.9 MB binary (io) through the relay anchor, p50 minus the anchor's (ms)"),
    ).toBe(
      "| 4.9 MB binary (io) through the relay anchor, p50 minus the anchor's (ms) | 40.5 (39–42, 2 rounds) | – | – |",
    );
  });

  it("lists the stops in the tables, and leaves the split out where they were not measured", () => {
    const report = renderHotPathReport({
      device: "cpu",
      machine: "test host",
      command: "npm run bench:hot-path",
      date: "2026-12-05",
      seconds: 1,
      cases: [{ name: "io", label: "io" }],
      concurrencies: [1],
      results: split,
      ortVersion: "1.29.0",
    });
    expect(report).toContain("| relay-anchor-object | 40.1 · 25 · 50 |");
    expect(report).toContain("| relay-anchor-worker | 57.2 · 17.5 · 35 |");
    expect(render([mlp(1, false, 100), mlp(1, true, 600)])).not.toContain("stopped at");
  });
});

describe("workerd's CPU behind wrangler dev", () => {
  const tiny = (target: string, workerdCpu: number, round: number): Measured => ({
    model: "mlp",
    target,
    encoding: "json",
    batched: false,
    load: load(1, 200, 5),
    phases: { [WORKERD_CPU]: workerdCpu, [PROXY_CPU]: 1.5 },
    round,
  });

  it("reads the gateway's Worker and objects against the relay anchor's within each round", () => {
    const report = render([
      tiny("gateway", 3.4, 1),
      tiny("relay-anchor", 2.6, 1),
      tiny("gateway", 3.5, 2),
      tiny("relay-anchor", 2.5, 2),
    ]);
    const what =
      "tiny JSON: workerd's CPU per answer (the Worker and its Durable Objects), the gateway's minus the relay anchor's (ms)";
    expect(targetLine(report, what)).toBe(`| ${what} | 0.9 (0.8–1, 2 rounds) | – | – |`);
    // Both columns in the table of where the time goes.
    expect(report).toContain(`| path, clients | ${WORKERD_CPU} | ${PROXY_CPU} |`);
    expect(render([tiny("gateway", 3.4, 1)])).toContain(`| ${what} | not measured | – | – |`);
  });
});

describe("wrangler dev's local traces", () => {
  const gateway: Measured = { ...mlp(1, false, 100), target: "gateway", encoding: "json" };
  const withTraces = (localTraces: string | undefined, results: Measured[]) =>
    renderHotPathReport({
      device: "cpu",
      machine: "test host",
      command: "npm run bench:hot-path",
      date: "2026-12-05",
      seconds: 1,
      cases: [{ name: "mlp", label: "MLP" }],
      concurrencies: [32],
      results,
      ortVersion: "1.29.0",
      ...(localTraces === undefined ? {} : { localTraces }),
    });

  it("says whether wrangler stored a trace of each event, where a wrangler dev target ran", () => {
    expect(withTraces("false", [gateway])).toContain(
      "ran with X_LOCAL_OBSERVABILITY=false: wrangler's local trace collector (which stores a trace of every event of the Worker and its objects in SQLite) off",
    );
    expect(withTraces("true", [gateway])).toContain(
      "X_LOCAL_OBSERVABILITY=true: wrangler's local trace collector",
    );
    expect(withTraces("true", [gateway])).toContain("in SQLite) on,");
    // Nothing ran behind wrangler dev, or the results predate the setting: no such line.
    expect(withTraces("false", [mlp(1, false, 100)])).not.toContain("X_LOCAL_OBSERVABILITY");
    expect(withTraces(undefined, [gateway])).not.toContain("X_LOCAL_OBSERVABILITY");
  });
});
