// The gateway's one-line JSON events are for `wrangler tail`; in test output they bury what matters. The
// Worker runs in the tests' isolate, so dropping them here silences it. SHOW_EVENTS=1 shows them again.
const show = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env
  ?.SHOW_EVENTS;
if (show !== "1") {
  const original = console.log.bind(console);
  console.log = (...args: unknown[]) => {
    if (typeof args[0] === "string" && args[0].startsWith('{"event":')) return;
    original(...args);
  };
}
