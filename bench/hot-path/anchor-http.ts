/**
 * The anchor's HTTP (anchor-server.ts): what its one thread does, and what each of its HTTP threads does in
 * its threaded form (anchor-http-thread.ts). The body gathered and split by hand, the outputs written after
 * a JSON header: nothing an OIP binary client does not need.
 */
import type { RequestListener, ServerResponse } from "node:http";
import type { Tensor } from "../../shared/oip/tensor.ts";

/** One output of a run, as the anchor writes it (FP32). */
export interface AnchorOutput {
  name: string;
  dims: readonly number[];
  data: Float32Array;
}

/** Runs one request's feeds (OIP tensors, FP32, each in a buffer of its own). */
export type AnchorRun = (feeds: Tensor[]) => Promise<AnchorOutput[]>;

interface InputHeader {
  name: string;
  shape: number[];
  datatype: string;
  data?: number[];
  parameters?: { binary_data_size?: number };
}

/**
 * The header the memo anchor (anchor-http-thread.ts) adds to each answer: `hit` when it came from memory,
 * `miss` when from the session; the benchmark checks that its timed answers are hits.
 */
export const MEMO_HEADER = "x-anchor-memo";

/**
 * A node:http listener that decodes each request, runs it, and writes its answer, with the headers
 * `headersFor` gives its outputs, if any.
 */
export function anchorListener(
  run: AnchorRun,
  headersFor?: (outputs: AnchorOutput[]) => Record<string, string>,
): RequestListener {
  return (request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", async () => {
      const body = Buffer.concat(chunks);
      const headerLength = Number(request.headers["inference-header-content-length"] ?? body.length);
      const outputs = await run(readFeeds(body, headerLength));
      writeAnswer(response, outputs, headerLength < body.length, headersFor?.(outputs));
    });
  };
}

/**
 * The request's inputs: its JSON header, then each binary input copied into a buffer of its own. Also what
 * the relay anchor's peer reads of a relayed body (anchor-server.ts --relay).
 */
export function readFeeds(body: Buffer, headerLength: number): Tensor[] {
  const header = JSON.parse(body.subarray(0, headerLength).toString()) as { inputs: InputHeader[] };
  let offset = headerLength;
  const feeds: Tensor[] = [];
  for (const input of header.inputs) {
    const size = input.parameters?.binary_data_size;
    const data =
      size === undefined
        ? Float32Array.from(input.data ?? [])
        : new Float32Array(body.buffer.slice(body.byteOffset + offset, body.byteOffset + offset + size));
    offset += size ?? 0;
    feeds.push({ name: input.name, datatype: "FP32", shape: input.shape, data });
  }
  return feeds;
}

/** An answer as the anchor sends it: a JSON header, then (binary) each output's bytes. */
export interface AnchorAnswerBytes {
  parts: Uint8Array[];
  /** Inference-Header-Content-Length: the JSON header's length when binary outputs follow it. */
  headerLength: number | undefined;
}

/** The answer's bytes, over HTTP here and over the relay anchor's socket (anchor-server.ts --relay). */
export function answerBytes(outputs: AnchorOutput[], binary: boolean): AnchorAnswerBytes {
  const header = outputs.map(({ name, dims, data }) => ({
    name,
    datatype: "FP32",
    shape: dims,
    ...(binary ? { parameters: { binary_data_size: data.byteLength } } : { data: Array.from(data) }),
  }));
  const json = Buffer.from(JSON.stringify({ model_name: "anchor", outputs: header }));
  return {
    parts: [
      json,
      ...(binary
        ? outputs.map(({ data }) => new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
        : []),
    ],
    headerLength: binary ? json.byteLength : undefined,
  };
}

function writeAnswer(
  response: ServerResponse,
  outputs: AnchorOutput[],
  binary: boolean,
  extra: Record<string, string> = {},
): void {
  const { parts, headerLength } = answerBytes(outputs, binary);
  response.writeHead(200, {
    ...extra,
    "Content-Type": headerLength === undefined ? "application/json" : "application/octet-stream",
    "Content-Length": parts.reduce((sum, part) => sum + part.byteLength, 0),
    ...(headerLength === undefined ? {} : { "Inference-Header-Content-Length": headerLength }),
  });
  for (const part of parts) response.write(part);
  response.end();
}

/** A request from an HTTP thread to the thread that runs the session, and its answer. */
export interface AnchorAsk {
  id: number;
  feeds: Tensor[];
}
export interface AnchorAnswer {
  id: number;
  outputs: AnchorOutput[];
}

/** What an HTTP thread is started with. */
export interface AnchorThreadData {
  host: string;
  port: number;
  /** Answer from memory (anchor-server.ts --memo). */
  memo: boolean;
}
