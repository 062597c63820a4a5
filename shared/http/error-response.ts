import { SwitchyardError } from "../errors.ts";

/** The OIP v2 error response of any failure: `{"error": "..."}`, its status, and Retry-After where due. */
export function errorResponse(error: unknown, extraHeaders: Record<string, string> = {}): Response {
  const failure = SwitchyardError.from(error);
  const headers: Record<string, string> = { ...failure.headers(), ...extraHeaders };
  // RFC 6750: a 401 names the scheme it wants.
  if (failure.status === 401) headers["WWW-Authenticate"] = 'Bearer realm="switchyard"';
  return Response.json(failure.toBody(), { status: failure.status, headers });
}
