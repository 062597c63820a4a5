/** A run whose first input starts with this value makes crashing-session-worker.ts exit its thread. */
export const CRASH_VALUE = 7777;
export const CRASH_EXIT_CODE = 70;
