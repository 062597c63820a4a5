/**
 * The bucket bounds (seconds) of every latency histogram, the gateway's and the agent's alike, so their
 * figures line up in one Grafana panel: 1-2-5 steps from a millisecond to a minute, fine enough that the
 * quantiles read from them (linear inside a bucket, as histogram_quantile does) are close to the truth.
 */
export const LATENCY_BUCKETS_SECONDS = [
  0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 60,
] as const;
