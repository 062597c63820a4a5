/**
 * The hot-path benchmark's `grpc` encoding: the standalone agent's gRPC endpoint (--grpc-port), the input in
 * raw_input_contents as tritonclient's grpc module sends it, from @grpc/grpc-js clients on the calling
 * thread: one channel (one HTTP/2 connection), the loop's concurrent calls in flight on it, as a client
 * process with one channel to the server has them; with `channels` above 1, that many channels each on a
 * connection of its own, the calls taking them in turn (the benchmark spreads them over its client threads
 * too: client-threads.ts).
 */
import { type Client, credentials, makeGenericClientConstructor, type ServiceError } from "@grpc/grpc-js";
import type { ModelInferResponseMessage } from "../../backend/server/grpc/grpc-messages.ts";
import { inferenceService } from "../../backend/server/grpc/grpc-proto.ts";
import { tensorBinary } from "../../shared/oip/codec.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";

export interface GrpcRequests {
  /** One ModelInfer call; rejects with the status when it fails. */
  send(): Promise<ModelInferResponseMessage>;
  /** Throws unless an answer's outputs are `expected`, bit for bit. */
  verify(answer: ModelInferResponseMessage): void;
  close(): void;
}

export function grpcRequests(
  address: string,
  model: string,
  input: Tensor,
  expected: ReadonlyArray<{ name: string; bytes: Uint8Array }>,
  channels = 1,
): GrpcRequests {
  const Service = makeGenericClientConstructor(inferenceService(), "GRPCInferenceService");
  const clients = Array.from(
    { length: channels },
    () =>
      new Service(address, credentials.createInsecure(), {
        "grpc.max_receive_message_length": -1,
        "grpc.max_send_message_length": -1,
        // grpc-js channels to one address share one connection unless each keeps its own.
        ...(channels > 1 ? { "grpc.use_local_subchannel_pool": 1 } : {}),
      }) as unknown as Client & {
        ModelInfer(
          request: unknown,
          callback: (error: ServiceError | null, answer: ModelInferResponseMessage) => void,
        ): void;
      },
  );
  let turn = 0;
  const request = {
    model_name: model,
    inputs: [{ name: input.name, datatype: input.datatype, shape: input.shape }],
    raw_input_contents: [Buffer.from(tensorBinary(input))],
  };
  return {
    send: () =>
      new Promise((resolve, reject) => {
        const client = clients[turn % clients.length] as (typeof clients)[number];
        turn += 1;
        client.ModelInfer(request, (error, answer) =>
          error === null ? resolve(answer) : reject(new Error(`ModelInfer: ${error.code} ${error.details}`)),
        );
      }),
    verify(answer) {
      for (const { name, bytes } of expected) {
        const index = answer.outputs.findIndex((output) => output.name === name);
        const got = answer.raw_output_contents[index];
        if (got === undefined || Buffer.compare(Buffer.from(got), Buffer.from(bytes)) !== 0)
          throw new Error(`gRPC: output ${name} differs from a direct run`);
      }
    },
    close: () => {
      for (const client of clients) client.close();
    },
  };
}
