import type { InferRequestToEncode } from "../oip/codec.ts";
import { encodeInferRequest, INFERENCE_HEADER_CONTENT_LENGTH } from "../oip/codec.ts";
import { errorMessage, type InferResult, inferResultOf, OipHttpError } from "../oip/http-client.ts";
import { DEFAULT_POOL } from "../pool-names.ts";
import {
  type CancelAnswer,
  isFinished,
  type QueueHandles,
  type QueueStatus,
  queueHandles,
} from "./queue-status.ts";

/**
 * A client of Switchyard's managed queue (POST /v2/queue/...), like fal's: submit a request and come back
 * for its result, follow its status as it streams, cancel it; or `subscribe`, which does all of it and
 * returns the result as synchronous infer would have. Requests are OIP infer requests, JSON or with the
 * binary tensor extension (typed arrays in, typed arrays out).
 */
export interface QueueClientOptions {
  /** The gateway, e.g. "https://switchyard.example.com". */
  baseUrl: string;
  /** A client API key. */
  apiKey: string;
  /** The pool (X-Switchyard-Pool); default: the default pool. */
  pool?: string;
}

export interface SubmitOptions {
  version?: string;
  binaryInputs?: boolean;
  binaryOutputs?: boolean;
  /** Seconds it may wait to start (X-Request-Timeout); then it is TIMED_OUT. */
  startWithinSeconds?: number;
  signal?: AbortSignal;
}

export type Submitted = QueueStatus & QueueHandles;

export interface SubscribeOptions extends SubmitOptions {
  /** Called with every status the queue reports, from IN_QUEUE to the last one. */
  onQueueUpdate?: (status: Submitted) => void;
}

export class QueueClient {
  readonly #options: QueueClientOptions;

  constructor(options: QueueClientOptions) {
    this.#options = options;
  }

  /** Submits a request; resolves with its handles and first status (IN_QUEUE, or later already). */
  async submit(
    model: string,
    request: InferRequestToEncode,
    options: SubmitOptions = {},
  ): Promise<Submitted> {
    const encoded = encodeInferRequest(request, {
      binaryInputs: options.binaryInputs ?? false,
      binaryOutputs: options.binaryOutputs ?? false,
    });
    return this.submitBody(model, encoded.body, {
      ...options,
      contentType: encoded.contentType,
      ...(encoded.headerLength === undefined ? {} : { headerLength: encoded.headerLength }),
    });
  }

  /** Submits an OIP request body as it is (a JSON file, say); `headerLength` for the binary extension. */
  async submitBody(
    model: string,
    body: Uint8Array,
    options: SubmitOptions & { contentType?: string; headerLength?: number; webhook?: string } = {},
  ): Promise<Submitted> {
    const path = options.version === undefined ? model : `${model}/versions/${options.version}`;
    const headers: Record<string, string> = {
      ...this.#headers(),
      "Content-Type": options.contentType ?? "application/json",
    };
    if (options.headerLength !== undefined)
      headers[INFERENCE_HEADER_CONTENT_LENGTH] = String(options.headerLength);
    if (options.startWithinSeconds !== undefined)
      headers["X-Request-Timeout"] = String(options.startWithinSeconds);
    const query = options.webhook === undefined ? "" : `?webhook=${encodeURIComponent(options.webhook)}`;
    const response = await fetch(`${this.#options.baseUrl}/v2/queue/models/${path}/infer${query}`, {
      method: "POST",
      headers,
      body: body as Uint8Array<ArrayBuffer>,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    return (await this.#json(response)) as Submitted;
  }

  /** The handles of request `id` for `model` (as its submit answered them), to follow it from elsewhere. */
  handles(model: string, id: string): QueueHandles {
    return queueHandles(this.#options.baseUrl, this.#options.pool ?? DEFAULT_POOL, model, id);
  }

  /** Its result as the gateway answered it: status, headers and body bytes, undecoded; undefined while pending. */
  async rawResult(
    handles: Pick<QueueHandles, "response_url">,
    signal?: AbortSignal,
  ): Promise<Response | undefined> {
    const response = await fetch(handles.response_url, {
      headers: this.#headers(),
      ...(signal ? { signal } : {}),
    });
    if (response.status === 202) {
      await response.arrayBuffer();
      return undefined;
    }
    return response;
  }

  /** Its status now. */
  async status(handles: Pick<QueueHandles, "status_url">, signal?: AbortSignal): Promise<Submitted> {
    const response = await fetch(handles.status_url, {
      headers: this.#headers(),
      ...(signal ? { signal } : {}),
    });
    return (await this.#json(response)) as Submitted;
  }

  /**
   * Follows its status stream (Server-Sent Events) and yields each status, the last one when it finished.
   * A stream that ends early (the gateway closes long ones) is opened again.
   */
  async *statusStream(
    handles: Pick<QueueHandles, "status_url">,
    signal?: AbortSignal,
  ): AsyncGenerator<Submitted> {
    for (;;) {
      const url = new URL(handles.status_url);
      url.pathname += "/stream";
      const response = await fetch(url, {
        headers: { ...this.#headers(), Accept: "text/event-stream" },
        ...(signal ? { signal } : {}),
      });
      if (!response.ok || response.body === null) await this.#json(response);
      let last: Submitted | undefined;
      for await (const data of serverSentData(response.body as ReadableStream<Uint8Array>)) {
        last = JSON.parse(data) as Submitted;
        yield last;
        if (isFinished(last.status)) return;
      }
    }
  }

  /**
   * Its result, decoded, once it has one; undefined while it is queued or running. A result that is an
   * error (the pool answered it with one), a cancelled or timed-out request, throws an OipHttpError.
   */
  async result(
    handles: Pick<QueueHandles, "response_url">,
    signal?: AbortSignal,
  ): Promise<InferResult | undefined> {
    const response = await this.rawResult(handles, signal);
    return response === undefined ? undefined : inferResultOf(response);
  }

  /** Cancels it: CANCELLATION_REQUESTED (also when it already was), or ALREADY_COMPLETED. */
  async cancel(handles: Pick<QueueHandles, "cancel_url">): Promise<CancelAnswer> {
    const response = await fetch(handles.cancel_url, { method: "PUT", headers: this.#headers() });
    const body = (await response.json()) as { status?: CancelAnswer; error?: string };
    if (response.status === 202 || (response.status === 400 && body.status === "ALREADY_COMPLETED")) {
      return body.status as CancelAnswer;
    }
    throw new OipHttpError(response.status, body.error ?? `HTTP ${response.status}`, response.headers);
  }

  /** Submits, follows the status stream, and resolves with the result (fal's `subscribe`). */
  async subscribe(
    model: string,
    request: InferRequestToEncode,
    options: SubscribeOptions = {},
  ): Promise<InferResult> {
    const submitted = await this.submit(model, request, options);
    options.onQueueUpdate?.(submitted);
    if (!isFinished(submitted.status)) {
      for await (const status of this.statusStream(submitted, options.signal))
        options.onQueueUpdate?.(status);
    }
    const result = await this.result(submitted, options.signal);
    if (result === undefined) throw new Error(`request ${submitted.request_id} finished without a result`);
    return result;
  }

  #headers(): Record<string, string> {
    return {
      Authorization: `Bearer ${this.#options.apiKey}`,
      ...(this.#options.pool === undefined ? {} : { "X-Switchyard-Pool": this.#options.pool }),
    };
  }

  async #json(response: Response): Promise<unknown> {
    const text = await response.text();
    if (response.status >= 400) {
      throw new OipHttpError(
        response.status,
        errorMessage(new TextEncoder().encode(text), response.status),
        response.headers,
      );
    }
    return JSON.parse(text) as unknown;
  }
}

/** The `data` of each event of a text/event-stream body (comments and other fields skipped). */
export async function* serverSentData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of body) {
    buffered += decoder.decode(chunk, { stream: true });
    let end = buffered.indexOf("\n\n");
    while (end !== -1) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data !== "") yield data;
      end = buffered.indexOf("\n\n");
    }
  }
}
