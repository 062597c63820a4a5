import {
  type DecodedInferResponse,
  decodeInferResponse,
  encodeInferRequest,
  INFERENCE_HEADER_CONTENT_LENGTH,
  type InferRequestToEncode,
} from "./codec.ts";

/**
 * A small OIP v2 client over fetch, for benchmarks, tests and scripts: it speaks JSON or the binary tensor
 * extension and turns error bodies back into SwitchyardErrors with the HTTP status's code.
 */
export interface InferOptions {
  version?: string;
  binaryInputs?: boolean;
  binaryOutputs?: boolean;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export interface InferResult {
  response: DecodedInferResponse;
  headers: Headers;
  status: number;
}

export class OipHttpError extends Error {
  readonly status: number;
  readonly headers: Headers;

  constructor(status: number, message: string, headers: Headers) {
    super(message);
    this.name = "OipHttpError";
    this.status = status;
    this.headers = headers;
  }
}

export async function infer(
  baseUrl: string,
  model: string,
  request: InferRequestToEncode,
  options: InferOptions = {},
): Promise<InferResult> {
  const encoded = encodeInferRequest(request, {
    binaryInputs: options.binaryInputs ?? false,
    binaryOutputs: options.binaryOutputs ?? false,
  });
  const path = options.version === undefined ? model : `${model}/versions/${options.version}`;
  const headers: Record<string, string> = { "Content-Type": encoded.contentType, ...options.headers };
  if (encoded.headerLength !== undefined)
    headers[INFERENCE_HEADER_CONTENT_LENGTH] = String(encoded.headerLength);
  const response = await fetch(`${baseUrl}/v2/models/${path}/infer`, {
    method: "POST",
    headers,
    body: encoded.body as Uint8Array<ArrayBuffer>,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
  return inferResultOf(response);
}

/** An infer response, decoded (JSON or binary tensors); an error response throws an OipHttpError. */
export async function inferResultOf(response: Response): Promise<InferResult> {
  const body = new Uint8Array(await response.arrayBuffer());
  if (!response.ok) {
    throw new OipHttpError(response.status, errorMessage(body, response.status), response.headers);
  }
  const headerLength = response.headers.get(INFERENCE_HEADER_CONTENT_LENGTH);
  return {
    response: decodeInferResponse(body, headerLength === null ? undefined : Number(headerLength)),
    headers: response.headers,
    status: response.status,
  };
}

/** The message of an OIP error body (`{"error": "..."}`), or the bare status when it is not one. */
export function errorMessage(body: Uint8Array, status: number): string {
  try {
    const parsed = JSON.parse(new TextDecoder().decode(body)) as { error?: unknown };
    if (typeof parsed.error === "string") return parsed.error;
  } catch {
    // not an OIP error body: fall through
  }
  return `HTTP ${status}`;
}
