/**
 * Resolves when `done` does, or after `graceMs`, whichever comes first: how long a drain waits, or a reader
 * of the statistics for the session threads' reports. The timer does not keep the process alive.
 */
export function withinGrace(done: Promise<unknown>, graceMs: number): Promise<void> {
  const grace = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
  return Promise.race([done.then(() => undefined), grace]);
}
