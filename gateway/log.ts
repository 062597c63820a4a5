/**
 * One JSON line per event, for `wrangler tail` and Workers Logs. Callers pass facts (ids, counts,
 * reasons), never headers or bodies, so secrets cannot end up here.
 */
export function log(event: string, fields: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ event, ...fields }));
}
