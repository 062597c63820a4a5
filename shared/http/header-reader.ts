/**
 * What reading a request's options needs of its headers: a value by name, case-insensitive, null when absent.
 * WHATWG Headers is one; the standalone agent's direct route reads node:http's parsed headers through a view
 * of its own instead of copying them into a Headers per request (backend/server/direct-infer-route.ts).
 */
export type HeaderReader = Pick<Headers, "get">;
