/**
 * Heartbeats between agent and gateway: the agent sends the text frame "ping" every `heartbeatMs` (the
 * interval the gateway's welcome names) and the gateway answers "pong", the runtime doing so without waking a
 * hibernating registry. Either side takes the other for dead after MISSED_HEARTBEATS intervals without a
 * word: a connection through NATs and proxies can die without a close ever arriving.
 */
export const HEARTBEAT_PING = "ping";
export const HEARTBEAT_PONG = "pong";

/** Heartbeat intervals in a row without a word from the other side before it is taken for dead. */
export const MISSED_HEARTBEATS = 3;

/** How long a peer may be silent before it is taken for dead. */
export const silenceLimitMs = (heartbeatMs: number) => MISSED_HEARTBEATS * heartbeatMs;
