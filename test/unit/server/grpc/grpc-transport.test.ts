import { type ClientHttp2Session, connect, type IncomingHttpHeaders } from "node:http2";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { messagePrefix } from "../../../../backend/server/grpc/grpc-framing.ts";
import { GrpcStatus } from "../../../../backend/server/grpc/grpc-status.ts";
import {
  type GrpcRoute,
  type GrpcTransport,
  receiveBudgetBytes,
  startGrpcTransport,
} from "../../../../backend/server/grpc/grpc-transport.ts";

// The transport's bound on a request that never finishes arriving, on a real node:http2 server and client
// (the agent's own routes are tested through a real agent in test/integration/standalone-grpc.test.ts). The
// limit is shortened here from its 300 s.

const RECEIVE_MS = 300;
const echo = { decode: (bytes: Buffer) => bytes, handle: async (request: unknown) => [request as Buffer] };
const routes = new Map<string, GrpcRoute>([
  ["/test.Echo/Unary", { kind: "unary", ...echo }],
  ["/test.Echo/Stream", { kind: "ordered-stream", ...echo }],
]);

let transport: GrpcTransport;
let client: ClientHttp2Session;
const internalErrors: unknown[] = [];

/** A transport on a free port with messages of up to 1 MiB, and a client connected to it. */
async function serve(
  served: ReadonlyMap<string, GrpcRoute>,
  limits: { receiveTimeoutMs?: number; receiveBudgetBytes?: number },
): Promise<{ transport: GrpcTransport; client: ClientHttp2Session }> {
  const started = await startGrpcTransport({
    host: "127.0.0.1",
    port: 0,
    routes: served,
    maxMessageBytes: 1024 * 1024,
    ...limits,
    onInternalError: (_path, error) => internalErrors.push(error),
  });
  return { transport: started, client: connect(`http://127.0.0.1:${started.port}`) };
}

beforeAll(async () => {
  ({ transport, client } = await serve(routes, { receiveTimeoutMs: RECEIVE_MS }));
});

afterAll(async () => {
  client.close();
  await transport.close(1000);
  expect(internalErrors).toEqual([]);
});

interface Ended {
  status: string | undefined;
  message: string | undefined;
  /** Messages answered before the end (their bodies). */
  answers: string[];
  afterMs: number;
}

/**
 * Opens a call, hands it to `drive`, and resolves with its status once the server ended its side (the
 * client's may stay open: what it sends after is read and dropped).
 */
function call(
  path: string,
  drive: (write: (bytes: Uint8Array) => void, end: () => void) => void,
  on: ClientHttp2Session = client,
) {
  const started = performance.now();
  const stream = on.request({ ":method": "POST", ":path": path, "content-type": "application/grpc" });
  const received: Buffer[] = [];
  let status: IncomingHttpHeaders = {};
  stream.on("response", (headers) => {
    status = headers;
  });
  stream.on("trailers", (trailers) => {
    status = trailers;
  });
  stream.on("data", (chunk: Buffer) => received.push(chunk));
  const ended = new Promise<Ended>((resolve) =>
    stream.once("end", () => {
      const body = Buffer.concat(received);
      const answers: string[] = [];
      for (let at = 0; at + 5 <= body.length; ) {
        const length = body.readUInt32BE(at + 1);
        answers.push(body.subarray(at + 5, at + 5 + length).toString());
        at += 5 + length;
      }
      resolve({
        status: status["grpc-status"] as string | undefined,
        message: status["grpc-message"] as string | undefined,
        answers,
        afterMs: performance.now() - started,
      });
    }),
  );
  drive(
    (bytes) => stream.write(bytes),
    () => stream.end(),
  );
  return { ended, close: () => stream.close() };
}

/** A whole message: its prefix and its bytes. */
const message = (text: string) => Buffer.concat([messagePrefix(text.length), Buffer.from(text)]);

describe("a request that does not finish arriving", () => {
  test("a unary call whose message stops halfway is cut DEADLINE_EXCEEDED after the limit", async () => {
    const { ended } = call("/test.Echo/Unary", (write) => write(message("hello").subarray(0, 7)));
    const result = await ended;
    expect(result.status).toBe(String(GrpcStatus.DEADLINE_EXCEEDED));
    expect(decodeURIComponent(result.message ?? "")).toBe(
      "the request did not arrive within 0.3 s (the most the agent waits for one)",
    );
    expect(result.afterMs).toBeGreaterThanOrEqual(RECEIVE_MS);
    expect(result.afterMs).toBeLessThan(RECEIVE_MS * 4);
  });

  test("a unary call whose client never ends its side is cut too; one that does is answered", async () => {
    const open = call("/test.Echo/Unary", (write) => write(message("whole")));
    expect((await open.ended).status).toBe(String(GrpcStatus.DEADLINE_EXCEEDED));
    const answered = await call("/test.Echo/Unary", (write, end) => {
      write(message("whole"));
      end();
    }).ended;
    expect(answered).toMatchObject({ status: String(GrpcStatus.OK), answers: ["whole"] });
  });

  test("a stream idle between messages stays open past the limit; one stuck in a message is cut", async () => {
    const idle = call("/test.Echo/Stream", (write) => write(message("first")));
    const stuck = call("/test.Echo/Stream", (write) => {
      write(message("one"));
      write(message("two").subarray(0, 6));
    });
    const cut = await stuck.ended;
    expect(cut).toMatchObject({ status: String(GrpcStatus.DEADLINE_EXCEEDED), answers: ["one"] });
    expect(decodeURIComponent(cut.message ?? "")).toContain("a request message on the stream did not arrive");
    // The idle one, waited on as long again, is still open: it ends when its client ends it.
    await new Promise((resolve) => setTimeout(resolve, RECEIVE_MS * 2));
    const stillOpen = await Promise.race([
      idle.ended.then(() => false),
      new Promise<boolean>((resolve) => setImmediate(() => resolve(true))),
    ]);
    expect(stillOpen).toBe(true);
    idle.close();
  });

  test("a stream's message that arrives slowly but within the limit, in pieces, is answered", async () => {
    const bytes = message("patience");
    const { ended } = call("/test.Echo/Stream", (write, end) => {
      let at = 0;
      const next = () => {
        write(bytes.subarray(at, at + 3));
        at += 3;
        if (at < bytes.length) setTimeout(next, RECEIVE_MS / 8);
        else end();
      };
      next();
    });
    expect(await ended).toMatchObject({ status: String(GrpcStatus.OK), answers: ["patience"] });
  });
});

describe("what one connection's calls may hold of their requests", () => {
  // A budget of 1 MiB and messages of 600 KB: two whole ones are over it. The handler holds each request
  // until the test lets it go, as a model busy with it would.
  const BUDGET = 1024 * 1024;
  const SIZE = 600_000;
  let held: Array<{ bytes: number; answer: () => void }> = [];
  let heldTransport: GrpcTransport;
  let heldClient: ClientHttp2Session;
  const budgetRoutes = new Map<string, GrpcRoute>([
    [
      "/test.Hold/Unary",
      {
        kind: "unary",
        decode: (bytes: Buffer) => bytes,
        handle: (request: unknown) =>
          new Promise((resolve) => {
            const bytes = request as Buffer;
            held.push({ bytes: bytes.length, answer: () => resolve([Buffer.from(String(bytes[0]))]) });
          }),
      },
    ],
    ["/test.Echo/Unary", { kind: "unary", ...echo }],
  ]);

  beforeAll(async () => {
    ({ transport: heldTransport, client: heldClient } = await serve(budgetRoutes, {
      receiveBudgetBytes: BUDGET,
    }));
  });

  afterAll(async () => {
    heldClient.close();
    await heldTransport.close(1000);
  });

  /** A unary call of one whole message of SIZE bytes, each byte `fill`. */
  const sized = (path: string, fill: number) =>
    call(
      path,
      (write, end) => {
        write(Buffer.concat([messagePrefix(SIZE), Buffer.alloc(SIZE, fill)]));
        end();
      },
      heldClient,
    );

  const until = async (what: () => boolean) => {
    for (let waited = 0; !what(); waited += 10) {
      if (waited > 5000) throw new Error("waited 5 s");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };

  test("requests held by their handlers stop the connection's other calls from being read until answered", async () => {
    held = [];
    const calls = [1, 2, 3, 4].map((fill) => sized("/test.Hold/Unary", fill));
    await until(() => held.length >= 1);
    // The first whole request is held and the others are over the budget: none of them reaches a handler.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(held.map((request) => request.bytes)).toEqual([SIZE]);
    // Each answer lets the next one in; all four are answered, each with its own bytes.
    for (let answered = 0; answered < 4; answered += 1) {
      await until(() => held.length > answered);
      held[answered]?.answer();
    }
    const results = await Promise.all(calls.map((one) => one.ended));
    expect(results.map((result) => result.status)).toEqual(["0", "0", "0", "0"]);
    expect(results.map((result) => result.answers[0]).sort()).toEqual(["1", "2", "3", "4"]);
    expect(held.map((request) => request.bytes)).toEqual([SIZE, SIZE, SIZE, SIZE]);
  });

  test("calls whose messages arrive side by side, together over the budget before any is whole, are all answered", async () => {
    // The first halves of four messages are over the budget with none of them whole, so no answer will free
    // anything: the message that began first goes on, and the connection never stops.
    const rests: Array<() => void> = [];
    const calls = [5, 6, 7, 8].map((fill) =>
      call(
        "/test.Echo/Unary",
        (write, end) => {
          const bytes = Buffer.concat([messagePrefix(SIZE), Buffer.alloc(SIZE, fill)]);
          write(bytes.subarray(0, SIZE / 2));
          rests.push(() => {
            write(bytes.subarray(SIZE / 2));
            end();
          });
        },
        heldClient,
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (const rest of rests) rest();
    const results = await Promise.all(calls.map((one) => one.ended));
    expect(results.map((result) => result.status)).toEqual(["0", "0", "0", "0"]);
    expect(results.map((result) => result.answers[0]?.length)).toEqual([SIZE, SIZE, SIZE, SIZE]);
  });

  test("a unary call whose message alone takes it over the budget is answered at its client's end", async () => {
    // Its last bytes take the connection over the budget and its stream is no longer read, but its end still
    // shows (Node ends a paused stream that has nothing left to read), and the answer frees the budget.
    const whole = 1024 * 1024;
    let end = () => {};
    const paused = call(
      "/test.Echo/Unary",
      (write, ending) => {
        write(Buffer.concat([messagePrefix(whole), Buffer.alloc(whole, 11)]));
        end = ending;
      },
      heldClient,
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    end();
    const result = await paused.ended;
    expect(result.status).toBe("0");
    expect(result.answers[0]?.length).toBe(whole);
    // Nothing is left held: the next call is read and answered at once.
    const next = await sized("/test.Echo/Unary", 12).ended;
    expect(next.status).toBe("0");
  });

  test("by default, two of the largest messages and at least 64 MiB", () => {
    expect(receiveBudgetBytes(32 * 1024 * 1024)).toBe(64 * 1024 * 1024);
    expect(receiveBudgetBytes(100 * 1024 * 1024)).toBe(200 * 1024 * 1024);
    expect(receiveBudgetBytes(1024)).toBe(64 * 1024 * 1024);
  });
});
