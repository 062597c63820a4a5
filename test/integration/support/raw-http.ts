import { request as httpRequest } from "node:http";

export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  trailers: Record<string, string | undefined>;
}

/**
 * One HTTP call through node:http, which (unlike fetch) sends TE and reads a response's trailers, and can
 * take a connection of its own (`fresh`: with several HTTP threads the kernel spreads connections over them).
 */
export function rawRequest(
  url: string,
  call: { method?: string; body?: string; headers?: Record<string, string>; fresh?: boolean } = {},
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      url,
      {
        method: call.method ?? (call.body === undefined ? "GET" : "POST"),
        headers: {
          ...call.headers,
          ...(call.body === undefined ? {} : { "Content-Length": String(Buffer.byteLength(call.body)) }),
        },
        ...(call.fresh === true ? { agent: false } : {}),
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks),
            trailers: response.trailers,
          }),
        );
      },
    );
    request.on("error", reject);
    request.end(call.body);
  });
}
