import { badInput } from "../../../shared/errors.ts";
import { parseModelVersion } from "../../../shared/model-names.ts";
import {
  type DecodedInferRequest,
  decodeInferRequestObject,
  sharedMemoryOutputSelector,
  tensorBinary,
} from "../../../shared/oip/codec.ts";
import { type Datatype, ELEMENT_SIZE, isDatatype } from "../../../shared/oip/datatypes.ts";
import { SHARED_MEMORY_REGION, type SharedMemoryAccess } from "../../../shared/oip/shared-memory.ts";
import { fieldPrefix } from "../../../shared/protobuf-framing.ts";
import { requestBuffers } from "../../replica/buffer-pool.ts";
import type { Served } from "../standalone-infer.ts";
import type {
  InferInputTensorMessage,
  ModelInferRequestMessage,
  ModelInferResponseMessage,
  ParameterMessage,
  TensorContentsMessage,
} from "./grpc-messages.ts";

/**
 * ModelInfer's messages and the codec's requests and answers, one into the other. A gRPC request is turned
 * into the JSON request's shape and checked by the very code that checks a JSON body
 * (decodeInferRequestObject), so both say the same of the same mistake; what only gRPC can get wrong
 * (raw_input_contents that do not match the inputs) is checked here, in gRPC's words. Every output is
 * answered in raw_output_contents, as Triton does: tritonclient reads nothing else.
 */

/** The repeated field of InferTensorContents that holds each datatype's elements (FP16: raw only). */
const CONTENTS_FIELD: Record<Datatype, keyof TensorContentsMessage | undefined> = {
  BOOL: "bool_contents",
  UINT8: "uint_contents",
  UINT16: "uint_contents",
  UINT32: "uint_contents",
  UINT64: "uint64_contents",
  INT8: "int_contents",
  INT16: "int_contents",
  INT32: "int_contents",
  INT64: "int64_contents",
  FP16: undefined,
  FP32: "fp32_contents",
  FP64: "fp64_contents",
  BYTES: "bytes_contents",
};

/** A 64-bit integer (a decimal string from the loader) as JSON would hold it: a number while exact. */
function integerValue(text: string): number | string {
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : text;
}

/** A parameter's value as the JSON request would hold it; undefined when the message sets none. */
function parameterValue(parameter: ParameterMessage): unknown {
  switch (parameter.parameter_choice) {
    case "int64_param":
    case "uint64_param": {
      const text = parameter[parameter.parameter_choice];
      return text === undefined ? undefined : integerValue(text);
    }
    case undefined:
      return undefined;
    default:
      return parameter[parameter.parameter_choice];
  }
}

/** An empty version field is the protocol's "none named". */
export function optionalVersion(version: string): string | undefined {
  return version === "" ? undefined : parseModelVersion(version);
}

/** A parameters map as the JSON request's `parameters` object. */
export function parametersOf(map: Record<string, ParameterMessage>): Record<string, unknown> {
  const parameters: Record<string, unknown> = {};
  for (const [key, parameter] of Object.entries(map)) {
    const value = parameterValue(parameter);
    if (value !== undefined) parameters[key] = value;
  }
  return parameters;
}

/**
 * A ModelInfer request checked and decoded. Raw tensors are copied out of the message (it may share its
 * memory with the connection's buffers) into buffers of the agent's pool, as a body or a shared memory
 * region is read (buffer-pool.ts): the request's own to hand to the session's thread, and back to the pool
 * after, instead of a fresh multi-megabyte buffer per request for the garbage collector.
 */
export function decodeGrpcInferRequest(
  message: ModelInferRequestMessage,
  sharedMemory: SharedMemoryAccess | undefined,
): DecodedInferRequest {
  const raw = message.raw_input_contents;
  const pieces: Uint8Array[] = [];
  const inputs = message.inputs.map((input, index) => {
    const fail = (problem: string): never => {
      throw badInput(`inputs[${index}] (${JSON.stringify(input.name)}): ${problem}`);
    };
    const parameters = parametersOf(input.parameters);
    const entry: Record<string, unknown> = {
      name: input.name,
      datatype: input.datatype,
      shape: input.shape.map(integerValue),
      parameters,
    };
    // Its data is in a region (the codec reads it there, or refuses it): neither raw bytes nor contents.
    if (SHARED_MEMORY_REGION in parameters) return entry;
    if (raw.length > 0) {
      if (input.contents !== null)
        fail("has contents but the request has raw_input_contents: send every input's data in one of them");
      const piece = raw[pieces.length];
      if (piece === undefined) return fail(`has no raw_input_contents[${pieces.length}]`);
      checkRawSize(input, piece, pieces.length, fail);
      parameters.binary_data_size = piece.length;
      // BYTES elements are copied again on their way to the session's thread: no pooled buffer for them.
      const owned =
        input.datatype === "BYTES"
          ? new Uint8Array(piece.length)
          : new Uint8Array(requestBuffers.acquire(piece.length), 0, piece.length);
      owned.set(piece);
      pieces.push(owned);
    } else if (input.contents !== null) {
      entry.data = contentsData(input, input.contents, fail);
    } else {
      fail("has no data: send it in contents or in raw_input_contents");
    }
    return entry;
  });
  if (pieces.length !== raw.length) {
    throw badInput(
      `raw_input_contents has ${raw.length} entries but ${pieces.length} inputs take their data from it: send one per input, in the order of inputs`,
    );
  }
  const document = {
    ...(message.id === "" ? {} : { id: message.id }),
    parameters: parametersOf(message.parameters),
    inputs,
    ...(message.outputs.length === 0
      ? {}
      : {
          outputs: message.outputs.map((output) => ({
            name: output.name,
            parameters: parametersOf(output.parameters),
          })),
        }),
  };
  return decodeInferRequestObject(document, pieces, {
    views: true,
    ...(sharedMemory === undefined ? {} : { sharedMemory }),
  });
}

/** A fixed-size datatype's raw bytes must be exactly what its shape needs (said in gRPC's terms). */
function checkRawSize(
  input: InferInputTensorMessage,
  piece: Uint8Array,
  index: number,
  fail: (problem: string) => never,
): void {
  if (!isDatatype(input.datatype) || input.datatype === "BYTES") return;
  const dims = input.shape.map(Number);
  // A shape the codec will refuse anyway (negative, not whole): its message says why.
  if (!dims.every((dim) => Number.isSafeInteger(dim) && dim >= 0)) return;
  const needed = dims.reduce((count, dim) => count * dim, 1) * ELEMENT_SIZE[input.datatype];
  if (piece.length !== needed) {
    fail(
      `raw_input_contents[${index}] is ${piece.length} bytes but shape [${input.shape.join(",")}] of ${input.datatype} needs ${needed}`,
    );
  }
}

/** A tensor's typed contents as the JSON request's flat `data` array (the codec checks every element). */
function contentsData(
  input: InferInputTensorMessage,
  contents: TensorContentsMessage,
  fail: (problem: string) => never,
): unknown[] {
  if (!isDatatype(input.datatype)) return []; // the codec names the datatype it does not know
  const field = CONTENTS_FIELD[input.datatype];
  if (field === undefined)
    return fail(`${input.datatype} has no contents field: send it in raw_input_contents`);
  const elements: unknown[] = contents[field];
  if (elements.length === 0) {
    const other = (Object.keys(CONTENTS_FIELD) as Datatype[])
      .map((datatype) => CONTENTS_FIELD[datatype])
      .find((name) => name !== undefined && contents[name].length > 0);
    if (other !== undefined) fail(`has ${other} but ${input.datatype} is read from ${field}`);
  }
  // A float field may hold NaN and the infinities, which JSON writes by name ("NaN", "Infinity").
  if (field === "fp32_contents" || field === "fp64_contents")
    return elements.map((element) => (Number.isFinite(element) ? element : String(element)));
  return elements;
}

/** A served request as ModelInfer's answer: every output's bytes in raw_output_contents, in order. */
export function grpcInferResponse(served: Served, request: DecodedInferRequest): ModelInferResponseMessage {
  const inSharedMemory = sharedMemoryOutputSelector(request);
  return {
    model_name: served.outcome.model.name,
    model_version: served.outcome.model.version,
    id: request.id ?? "",
    outputs: served.outputs.map((output) => ({
      name: output.name,
      datatype: output.datatype,
      shape: output.shape,
    })),
    // An output written to shared memory keeps its place with no bytes, so the others' indexes still match.
    raw_output_contents: served.outputs.map((output) =>
      inSharedMemory(output.name) ? new Uint8Array(0) : tensorBinary(output),
    ),
  };
}

/** ModelInferResponse's raw_output_contents (field 6, repeated bytes). */
const RAW_OUTPUT_CONTENTS = 6;
/** ModelStreamInferResponse's infer_response (field 2). */
const STREAM_INFER_RESPONSE = 2;

/**
 * ModelInferResponse as the pieces of its bytes: the message without its outputs' bytes, serialized by
 * `serialize`, then each output's bytes as one raw_output_contents entry (field 6: its key and length, then
 * the output's own bytes, not copied). A reader takes fields in any order and a repeated field's entries in
 * the order they come, so this is the message `serialize` would write whole.
 */
export function inferResponsePieces(
  message: ModelInferResponseMessage,
  serialize: (message: ModelInferResponseMessage) => Uint8Array,
): Uint8Array[] {
  const pieces = [serialize({ ...message, raw_output_contents: [] })];
  for (const raw of message.raw_output_contents) {
    pieces.push(fieldPrefix(RAW_OUTPUT_CONTENTS, raw.byteLength), raw);
  }
  return pieces;
}

/** ModelStreamInferResponse carrying an answer (no error_message) around its ModelInferResponse's pieces. */
export function streamAnswerPieces(response: readonly Uint8Array[]): Uint8Array[] {
  const length = response.reduce((sum, piece) => sum + piece.byteLength, 0);
  return [fieldPrefix(STREAM_INFER_RESPONSE, length), ...response];
}
