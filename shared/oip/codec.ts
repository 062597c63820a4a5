/**
 * The OIP v2 REST codec: infer requests and responses as JSON, with or without Triton's binary tensor
 * data extension, to and from Tensor. One table (ELEMENT_CODECS) knows, per datatype, how elements look
 * in JSON and on the wire; the four entry points only route tensors through it.
 *
 * Choices a caller should know:
 * - INT64/UINT64 go out as exact JSON numbers, as Triton writes them, even beyond 2^53. On the way in they
 *   may be numbers or decimal strings; numbers beyond 2^53 are read exactly from the JSON source text.
 * - Floats that JSON cannot carry go out as the strings "NaN", "Infinity" and "-Infinity", which are also
 *   accepted on the way in; -0 stays -0. Finite values that overflow their type (1e39 as FP32) are errors.
 * - BYTES in JSON are UTF-8 strings; bytes that are not UTF-8 come out with U+FFFD replacements, so
 *   arbitrary bytes need the binary form.
 * - `binary_data_size` is transport: decoded tensors never carry it; a parameters object left empty
 *   without it is dropped. Likewise `binary_data` moves from a requested output's parameters to `binary`,
 *   `classification` to `classification`, and the shared-memory parameters (shared-memory.ts) to
 *   `sharedMemory`; an input read from shared memory carries none of them.
 * - Every problem with decoded input is a bad_input SwitchyardError that names the tensor and the element;
 *   a Tensor whose data disagrees with its datatype or shape, handed to an encoder, is an internal error.
 */
import { badInput, SwitchyardError } from "../errors.ts";
import { type Datatype, ELEMENT_SIZE, isDatatype, type TensorData, type TypedArrayOf } from "./datatypes.ts";
import { floatToHalfBits, halfBitsToFloat } from "./fp16.ts";
import {
  describeValue,
  type InferInputJson,
  inferRequestSchema,
  inferResponseSchema,
  parseOrBadInput,
} from "./schemas.ts";
import {
  SHARED_MEMORY_BYTE_SIZE,
  SHARED_MEMORY_NOT_OFFERED,
  SHARED_MEMORY_OFFSET,
  SHARED_MEMORY_REGION,
  type SharedMemoryAccess,
  type SharedMemoryRef,
  sharedMemoryRefOf,
} from "./shared-memory.ts";
import type { Tensor } from "./tensor.ts";

/** The HTTP header that carries the JSON header's length in a binary body. */
export const INFERENCE_HEADER_CONTENT_LENGTH = "Inference-Header-Content-Length";

/**
 * Where a body's binary part starts at a multiple of this in its buffer (the widest fixed datatype's size),
 * every typed array can view its tensors in place (DecodeOptions.views): whoever places a body in a buffer
 * (the standalone agent reading it, the gateway's relay framing it for an agent) aligns it so.
 */
export const TENSOR_ALIGNMENT = 8;

/** The bytes to leave before `offset` so that it falls at a multiple of TENSOR_ALIGNMENT. */
export function alignmentPad(offset: number): number {
  return (TENSOR_ALIGNMENT - (offset % TENSOR_ALIGNMENT)) % TENSOR_ALIGNMENT;
}

export interface RequestedOutput {
  name: string;
  /** The output's `parameters.binary_data`, else the request's `parameters.binary_data_output`, else false. */
  binary: boolean;
  /** The output's `parameters.classification`: its top classes instead of its values (classification.ts). */
  classification?: number;
  /** Where the output goes instead of the response: a registered shared memory region (shared-memory.ts). */
  sharedMemory?: SharedMemoryRef;
  parameters: Record<string, unknown>;
}

export interface DecodedInferRequest {
  id?: string;
  parameters: Record<string, unknown>;
  inputs: Tensor[];
  /** Absent when the client asked for every output. */
  outputs?: RequestedOutput[];
}

export interface DecodedInferResponse {
  model_name: string;
  model_version?: string;
  id?: string;
  parameters: Record<string, unknown>;
  outputs: Tensor[];
}

export interface EncodedBody {
  body: Uint8Array;
  /** Send as Inference-Header-Content-Length; set exactly when some tensor is binary. */
  headerLength?: number;
  contentType: string;
}

/**
 * A body as the pieces it is made of, in order: the JSON header, then each binary tensor's bytes (views of
 * the tensors themselves where the host's byte order is the wire's). Written to a socket one after the
 * other, they need no copy into one buffer.
 */
export interface EncodedParts {
  parts: Uint8Array[];
  byteLength: number;
  headerLength?: number;
  contentType: string;
}

export interface DecodeOptions {
  /**
   * Binary tensors become views of `body` where their alignment allows (no copy); they then keep the whole
   * body alive, and whoever owns it may hand it on (to a session's thread) with them. By default each
   * tensor is copied into a buffer of its own.
   */
  views?: boolean;
  /**
   * The server's registered shared memory regions, where inputs may be read from and outputs written to.
   * Without it a request that names a region is refused (SHARED_MEMORY_NOT_OFFERED).
   */
  sharedMemory?: SharedMemoryAccess;
}

export interface InferResponseToEncode {
  model_name: string;
  model_version?: string;
  id?: string;
  parameters?: Record<string, unknown>;
  outputs: Tensor[];
}

export interface InferRequestToEncode {
  id?: string;
  parameters?: Record<string, unknown>;
  inputs: Tensor[];
  outputs?: { name: string; binary?: boolean; parameters?: Record<string, unknown> }[];
}

export interface EncodeRequestOptions {
  /** Send every input as binary tensor data rather than JSON. */
  binaryInputs: boolean;
  /** Ask for binary outputs (request-level `binary_data_output`) unless an output says otherwise. */
  binaryOutputs?: boolean;
}

// ---------------------------------------------------------------------------------------------------------
// Public API

export function decodeInferRequest(
  body: Uint8Array,
  headerLength?: number,
  options: DecodeOptions = {},
): DecodedInferRequest {
  const { header, binary } = splitBody(body, headerLength);
  return decodeRequestDocument(
    parseJsonHeader(header, "request"),
    binary === undefined ? undefined : bodyPart(binary),
    options,
  );
}

/**
 * An infer request that arrived as an object rather than as JSON text (the standalone agent's gRPC endpoint,
 * backend/server/grpc/grpc-infer.ts), checked exactly as a JSON body is. `document` has the JSON request's
 * shape, with integers beyond 2^53 as decimal strings and BYTES elements as strings or bytes; `pieces` holds
 * the data of the inputs that have parameters.binary_data_size, one piece each, in their order.
 */
export function decodeInferRequestObject(
  document: unknown,
  pieces: readonly Uint8Array[],
  options: DecodeOptions = {},
): DecodedInferRequest {
  return decodeRequestDocument(
    { value: document, withExactIntegers: () => document },
    pieces.length === 0 ? undefined : piecesPart(pieces),
    options,
  );
}

function decodeRequestDocument(
  document: JsonHeader,
  binary: BinaryPart | undefined,
  options: DecodeOptions,
): DecodedInferRequest {
  const request = parseOrBadInput(inferRequestSchema, document.value, "request body");
  const inputs = decodeTensors(request.inputs, "inputs", binary, document, options);
  const parameters = request.parameters ?? {};
  const decoded: DecodedInferRequest = { parameters, inputs };
  if (request.id !== undefined) decoded.id = request.id;
  if (request.outputs !== undefined) {
    rejectDuplicateNames(request.outputs, "outputs");
    const binaryByDefault = parameters.binary_data_output ?? false;
    decoded.outputs = request.outputs.map(({ name, parameters: outputParameters }, index) => {
      const fail: Fail = (problem) => {
        throw badInput(`outputs[${index}] (${JSON.stringify(name)}): ${problem}`);
      };
      const {
        binary_data: binary,
        classification,
        [SHARED_MEMORY_REGION]: _region,
        [SHARED_MEMORY_OFFSET]: _offset,
        [SHARED_MEMORY_BYTE_SIZE]: _byteSize,
        ...rest
      } = outputParameters ?? {};
      const output: RequestedOutput = { name, binary: binary ?? binaryByDefault, parameters: rest };
      if (classification !== undefined) output.classification = classification;
      const shared = sharedMemoryRefOf(outputParameters, fail);
      if (shared !== undefined) {
        if (options.sharedMemory === undefined) fail(SHARED_MEMORY_NOT_OFFERED);
        // As tritonclient refuses it: the class strings have no fixed size for a region to be made for.
        if (classification !== undefined) fail("a classification cannot be written to shared memory");
        options.sharedMemory.check(shared, fail);
        output.sharedMemory = shared;
      }
      return output;
    });
  }
  return decoded;
}

/** The outputs a decoded request has written to shared memory: the third argument of encodeInferResponse. */
export function sharedMemoryOutputSelector(request: DecodedInferRequest): (name: string) => boolean {
  const names = new Set(
    request.outputs?.filter((output) => output.sharedMemory !== undefined).map((output) => output.name),
  );
  return (name) => names.has(name);
}

/** Which outputs a decoded request wants binary: the second argument of encodeInferResponse. */
export function binaryOutputSelector(request: DecodedInferRequest): (name: string) => boolean {
  const binaryByDefault = request.parameters.binary_data_output === true;
  const byName = new Map(request.outputs?.map((output) => [output.name, output.binary]));
  return (name) => byName.get(name) ?? binaryByDefault;
}

export function encodeInferResponse(
  response: InferResponseToEncode,
  binaryOutput: (name: string) => boolean,
): EncodedBody {
  return joined(encodeInferResponseParts(response, binaryOutput));
}

/** encodeInferResponse, as the pieces to write one after the other (no copy of the binary outputs). */
export function encodeInferResponseParts(
  response: InferResponseToEncode,
  binaryOutput: (name: string) => boolean,
  /** Outputs already written to shared memory: their name, datatype and shape only, as Triton answers. */
  inSharedMemory: (name: string) => boolean = () => false,
): EncodedParts {
  const fields: JsonField[] = [["model_name", JSON.stringify(response.model_name)]];
  if (response.model_version !== undefined)
    fields.push(["model_version", JSON.stringify(response.model_version)]);
  if (response.id !== undefined) fields.push(["id", JSON.stringify(response.id)]);
  if (response.parameters !== undefined) fields.push(["parameters", JSON.stringify(response.parameters)]);
  const outputs = response.outputs.map(
    (tensor): TensorToEncode => ({
      tensor,
      form: inSharedMemory(tensor.name) ? "elsewhere" : binaryOutput(tensor.name) ? "binary" : "json",
    }),
  );
  return encodeDocument(fields, "outputs", outputs, []);
}

/** The parts in one buffer. */
export function joined(encoded: EncodedParts): EncodedBody {
  const [first] = encoded.parts;
  let body: Uint8Array;
  if (encoded.parts.length === 1 && first !== undefined) body = first;
  else {
    body = new Uint8Array(encoded.byteLength);
    let offset = 0;
    for (const part of encoded.parts) {
      body.set(part, offset);
      offset += part.byteLength;
    }
  }
  return {
    body,
    contentType: encoded.contentType,
    ...(encoded.headerLength === undefined ? {} : { headerLength: encoded.headerLength }),
  };
}

export function encodeInferRequest(
  request: InferRequestToEncode,
  options: EncodeRequestOptions,
): EncodedBody {
  const fields: JsonField[] = [];
  if (request.id !== undefined) fields.push(["id", JSON.stringify(request.id)]);
  const parameters = { ...request.parameters };
  if (options.binaryOutputs !== undefined) parameters.binary_data_output = options.binaryOutputs;
  if (Object.keys(parameters).length > 0) fields.push(["parameters", JSON.stringify(parameters)]);
  const trailing: JsonField[] = [];
  if (request.outputs !== undefined) {
    const outputs = request.outputs.map(({ name, binary, parameters: outputParameters }) => {
      const wireParameters = { ...outputParameters };
      if (binary !== undefined) wireParameters.binary_data = binary;
      return Object.keys(wireParameters).length > 0 ? { name, parameters: wireParameters } : { name };
    });
    trailing.push(["outputs", JSON.stringify(outputs)]);
  }
  const inputs = request.inputs.map(
    (tensor): TensorToEncode => ({ tensor, form: options.binaryInputs ? "binary" : "json" }),
  );
  return joined(encodeDocument(fields, "inputs", inputs, trailing));
}

export function decodeInferResponse(body: Uint8Array, headerLength?: number): DecodedInferResponse {
  const { header, binary } = splitBody(body, headerLength);
  const document = parseJsonHeader(header, "response");
  const response = parseOrBadInput(inferResponseSchema, document.value, "response body");
  const decoded: DecodedInferResponse = {
    model_name: response.model_name,
    parameters: response.parameters ?? {},
    outputs: decodeTensors(
      response.outputs,
      "outputs",
      binary === undefined ? undefined : bodyPart(binary),
      document,
    ),
  };
  if (response.model_version !== undefined) decoded.model_version = response.model_version;
  if (response.id !== undefined) decoded.id = response.id;
  return decoded;
}

/** The tensor in the binary form, as one view of its data where byte order allows (else a copy). */
export function tensorBinary(tensor: Tensor): Uint8Array {
  return checkedCodec(tensor, JSON.stringify(tensor.name)).binaryOf(tensor.data);
}

/** The tensor's size in the binary form: raw bytes, plus a 4-byte length per BYTES element. */
export function tensorByteLength(tensor: Tensor): number {
  return codecOf(tensor.datatype).byteLength(tensor.data);
}

// ---------------------------------------------------------------------------------------------------------
// The per-datatype table

type Fail = (problem: string) => never;

interface Indexable<Element> {
  [index: number]: Element;
  readonly length: number;
}

interface ElementCodec<Data extends TensorData> {
  /** What one JSON element must be, for error messages. */
  readonly expected: string;
  /** Numbers beyond 2^53 lose precision in JSON.parse; these datatypes need them from the source text. */
  readonly needsExactIntegers: boolean;
  isData(data: TensorData): data is Data;
  /** The data, or the index of the first element that does not fit the datatype. */
  fromJson(elements: readonly unknown[]): Data | { badIndex: number };
  /** The data as a flat JSON array. */
  toJson(data: Data): string;
  /** Reads `count` elements that fill `bytes` exactly; callers have checked fixed sizes already. */
  /** With `view`, the result may share `bytes`' memory (where alignment and byte order allow). */
  fromBinary(bytes: Uint8Array, count: number, fail: Fail, view: boolean): Data;
  byteLength(data: Data): number;
  writeBinary(data: Data, target: Uint8Array, offset: number): void;
  /** The data's bytes as they go on the wire: a view of the data itself where byte order allows. */
  binaryOf(data: Data): Uint8Array;
}

type FixedData = Exclude<TensorData, Uint8Array[]>;

interface TypedArrayClass<Data extends FixedData> {
  new (length: number): Data;
  new (buffer: ArrayBuffer, byteOffset: number, length: number): Data;
  readonly BYTES_PER_ELEMENT: number;
}

interface FixedSpec<Data extends FixedData, Element extends number | bigint> {
  ArrayClass: TypedArrayClass<Data>;
  expected: string;
  needsExactIntegers?: boolean;
  /** The element a JSON value stands for, or undefined when it stands for none. */
  parse(value: unknown): Element | undefined;
  format(element: Element): string;
}

const LITTLE_ENDIAN_HOST = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** The wire is little-endian; every host we run on is too, but a big-endian one still gets it right. */
function toLittleEndianInPlace(bytes: Uint8Array, elementSize: number): void {
  if (LITTLE_ENDIAN_HOST || elementSize === 1) return;
  for (let start = 0; start < bytes.length; start += elementSize)
    bytes.subarray(start, start + elementSize).reverse();
}

function fixedCodec<Data extends FixedData & Indexable<Element>, Element extends number | bigint>(
  spec: FixedSpec<Data, Element>,
): ElementCodec<Data> {
  const size = spec.ArrayClass.BYTES_PER_ELEMENT;
  return {
    expected: spec.expected,
    needsExactIntegers: spec.needsExactIntegers ?? false,
    isData: (data): data is Data => data instanceof spec.ArrayClass,
    fromJson(elements) {
      const data = new spec.ArrayClass(elements.length);
      const writable: Indexable<Element> = data;
      for (let index = 0; index < elements.length; index++) {
        const element = spec.parse(elements[index]);
        if (element === undefined) return { badIndex: index };
        writable[index] = element;
      }
      return data;
    },
    toJson(data) {
      const texts = new Array<string>(data.length);
      // In bounds, so never undefined (noUncheckedIndexedAccess cannot know).
      for (let index = 0; index < data.length; index++) texts[index] = spec.format(data[index] as Element);
      return `[${texts.join(",")}]`;
    },
    fromBinary(bytes, count, _fail, view) {
      if (
        view &&
        LITTLE_ENDIAN_HOST &&
        bytes.byteOffset % size === 0 &&
        bytes.buffer instanceof ArrayBuffer
      ) {
        return new spec.ArrayClass(bytes.buffer, bytes.byteOffset, count);
      }
      // A copy: aligned for the typed array, and the tensor does not pin the whole request body.
      const copy = copyBytes(bytes);
      toLittleEndianInPlace(copy, size);
      return new spec.ArrayClass(copy.buffer, 0, count);
    },
    byteLength: (data) => data.length * size,
    writeBinary(data, target, offset) {
      target.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset);
      toLittleEndianInPlace(target.subarray(offset, offset + data.byteLength), size);
    },
    binaryOf(data) {
      if (LITTLE_ENDIAN_HOST || size === 1)
        return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      const copy = new Uint8Array(data.byteLength);
      this.writeBinary(data, copy, 0);
      return copy;
    },
  };
}

function integerCodec<Data extends FixedData & Indexable<number>>(
  ArrayClass: TypedArrayClass<Data>,
  min: number,
  max: number,
): ElementCodec<Data> {
  return fixedCodec<Data, number>({
    ArrayClass,
    expected: `an integer in [${min}, ${max}]`,
    parse: (value) =>
      typeof value === "number" && Number.isInteger(value) && value >= min && value <= max
        ? value
        : undefined,
    format: String,
  });
}

const DECIMAL_INTEGER = /^-?\d{1,20}$/;

function bigIntegerCodec<Data extends FixedData & Indexable<bigint>>(
  ArrayClass: TypedArrayClass<Data>,
  min: bigint,
  max: bigint,
): ElementCodec<Data> {
  const inRange = (value: bigint) => (value >= min && value <= max ? value : undefined);
  return fixedCodec<Data, bigint>({
    ArrayClass,
    expected: `an integer in [${min}, ${max}] (a JSON number or a decimal string)`,
    needsExactIntegers: true,
    parse(value) {
      if (typeof value === "bigint") return inRange(value);
      if (typeof value === "number") return Number.isSafeInteger(value) ? inRange(BigInt(value)) : undefined;
      if (typeof value === "string" && DECIMAL_INTEGER.test(value)) return inRange(BigInt(value));
      return undefined;
    },
    format: String,
  });
}

const NON_FINITE: Record<string, number> = {
  NaN: Number.NaN,
  Infinity: Number.POSITIVE_INFINITY,
  "-Infinity": Number.NEGATIVE_INFINITY,
};

/** A JSON float element as a number: a number, or one of the non-finite names; finite overflow rejected. */
function parseFloatElement(value: unknown, round: (value: number) => number): number | undefined {
  if (typeof value === "string") return Object.hasOwn(NON_FINITE, value) ? NON_FINITE[value] : undefined;
  if (typeof value !== "number") return undefined;
  const rounded = round(value);
  return Number.isFinite(rounded) ? rounded : undefined;
}

function formatFloatElement(value: number): string {
  if (Number.isNaN(value)) return '"NaN"';
  if (!Number.isFinite(value)) return value > 0 ? '"Infinity"' : '"-Infinity"';
  return Object.is(value, -0) ? "-0" : String(value);
}

const floatExpectation = (datatype: string) =>
  `a number within ${datatype} range (or "NaN", "Infinity", "-Infinity")`;

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

const BYTES_CODEC: ElementCodec<Uint8Array[]> = {
  expected: "a string",
  needsExactIntegers: false,
  isData: (data): data is Uint8Array[] =>
    Array.isArray(data) && data.every((element: unknown) => element instanceof Uint8Array),
  fromJson(elements) {
    const data: Uint8Array[] = [];
    for (const [index, element] of elements.entries()) {
      // gRPC's bytes_contents (decodeInferRequestObject; JSON text never has bytes), copied: they are views
      // of the message, which may share memory with the connection's buffers.
      if (element instanceof Uint8Array) data.push(new Uint8Array(element));
      else if (typeof element === "string") data.push(utf8Encoder.encode(element));
      else return { badIndex: index };
    }
    return data;
  },
  toJson: (data) => JSON.stringify(data.map((element) => utf8Decoder.decode(element))),
  fromBinary(bytes, count, fail, asViews) {
    // Each element needs at least its 4-byte length; checking first keeps a huge shape from costing anything.
    if (count > bytes.length / 4) fail(`${bytes.length} bytes cannot hold ${count} BYTES elements`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const data: Uint8Array[] = [];
    let offset = 0;
    for (let index = 0; index < count; index++) {
      if (offset + 4 > bytes.length) fail(`binary data ends before the length of element ${index}`);
      const length = view.getUint32(offset, true);
      offset += 4;
      if (length > bytes.length - offset) {
        fail(`element ${index} is ${length} bytes long but only ${bytes.length - offset} bytes are left`);
      }
      const element = bytes.subarray(offset, offset + length);
      data.push(asViews ? element : copyBytes(element));
      offset += length;
    }
    if (offset !== bytes.length)
      fail(`${bytes.length - offset} bytes are left over after ${plural(count, "element")}`);
    return data;
  },
  byteLength: (data) => data.reduce((total, element) => total + 4 + element.length, 0),
  writeBinary(data, target, offset) {
    const view = new DataView(target.buffer, target.byteOffset, target.byteLength);
    let position = offset;
    for (const element of data) {
      view.setUint32(position, element.length, true);
      target.set(element, position + 4);
      position += 4 + element.length;
    }
  },
  binaryOf(data) {
    const bytes = new Uint8Array(this.byteLength(data));
    this.writeBinary(data, bytes, 0);
    return bytes;
  },
};

const ELEMENT_CODECS: { [D in Datatype]: ElementCodec<TypedArrayOf[D]> } = {
  BOOL: fixedCodec<Uint8Array, number>({
    ArrayClass: Uint8Array,
    expected: "true, false, 0 or 1",
    parse: (value) => (value === true || value === 1 ? 1 : value === false || value === 0 ? 0 : undefined),
    format: (element) => (element === 0 ? "false" : "true"),
  }),
  UINT8: integerCodec(Uint8Array, 0, 0xff),
  UINT16: integerCodec(Uint16Array, 0, 0xffff),
  UINT32: integerCodec(Uint32Array, 0, 0xffff_ffff),
  UINT64: bigIntegerCodec(BigUint64Array, 0n, 2n ** 64n - 1n),
  INT8: integerCodec(Int8Array, -0x80, 0x7f),
  INT16: integerCodec(Int16Array, -0x8000, 0x7fff),
  INT32: integerCodec(Int32Array, -0x8000_0000, 0x7fff_ffff),
  INT64: bigIntegerCodec(BigInt64Array, -(2n ** 63n), 2n ** 63n - 1n),
  FP16: fixedCodec<Uint16Array, number>({
    ArrayClass: Uint16Array,
    expected: floatExpectation("FP16"),
    parse(value) {
      const number = parseFloatElement(value, (finite) => halfBitsToFloat(floatToHalfBits(finite)));
      return number === undefined ? undefined : floatToHalfBits(number);
    },
    format: (bits) => formatFloatElement(halfBitsToFloat(bits)),
  }),
  FP32: fixedCodec<Float32Array, number>({
    ArrayClass: Float32Array,
    expected: floatExpectation("FP32"),
    parse: (value) => parseFloatElement(value, Math.fround),
    format: formatFloatElement,
  }),
  FP64: fixedCodec<Float64Array, number>({
    ArrayClass: Float64Array,
    expected: floatExpectation("FP64"),
    parse: (value) => parseFloatElement(value, (finite) => finite),
    format: formatFloatElement,
  }),
  BYTES: BYTES_CODEC,
};

function codecOf(datatype: Datatype): ElementCodec<TensorData> {
  return ELEMENT_CODECS[datatype];
}

/**
 * Exactly `count` elements of `datatype` from raw bytes laid out as the binary tensor extension lays them out
 * (for BYTES, each element after its 4-byte length), copied out of `bytes`. Throws an Error saying what does
 * not fit when the bytes hold more or less. For data that arrives outside a request (Triton's warm-up files).
 */
export function dataFromBinary(datatype: Datatype, bytes: Uint8Array, count: number): TensorData {
  const fail = (problem: string): never => {
    throw new Error(problem);
  };
  if (datatype !== "BYTES" && bytes.byteLength !== count * ELEMENT_SIZE[datatype])
    fail(
      `${bytes.byteLength} bytes are not ${count} ${datatype} elements (${count * ELEMENT_SIZE[datatype]} bytes)`,
    );
  return codecOf(datatype).fromBinary(bytes, count, fail, false);
}

// ---------------------------------------------------------------------------------------------------------
// Decoding

interface SplitBody {
  header: Uint8Array;
  /** What follows the JSON header; undefined when the body is all JSON (no header length given). */
  binary: Uint8Array | undefined;
}

function splitBody(body: Uint8Array, headerLength: number | undefined): SplitBody {
  if (headerLength === undefined) return { header: body, binary: undefined };
  if (!Number.isSafeInteger(headerLength) || headerLength < 0) {
    throw badInput(`${INFERENCE_HEADER_CONTENT_LENGTH} must be a non-negative integer, got ${headerLength}`);
  }
  if (headerLength > body.length) {
    throw badInput(
      `${INFERENCE_HEADER_CONTENT_LENGTH} is ${headerLength} but the body has only ${body.length} bytes`,
    );
  }
  return { header: body.subarray(0, headerLength), binary: body.subarray(headerLength) };
}

/** The binary data of a request's tensors, taken in their order: each tensor's next `size` bytes. */
interface BinaryPart {
  readonly length: number;
  take(size: number): Uint8Array;
}

/** A body's binary part: the tensors one after the other. */
function bodyPart(bytes: Uint8Array): BinaryPart {
  let offset = 0;
  return {
    length: bytes.length,
    take(size) {
      const piece = bytes.subarray(offset, offset + size);
      offset += size;
      return piece;
    },
  };
}

/** One piece per tensor (gRPC's raw_input_contents): no copy into one buffer first. */
function piecesPart(pieces: readonly Uint8Array[]): BinaryPart {
  let index = 0;
  return {
    length: pieces.reduce((total, piece) => total + piece.length, 0),
    take(size) {
      const piece = pieces[index++];
      // The caller gives each tensor's binary_data_size from its piece: a mismatch is its bug.
      if (piece?.length !== size)
        throw new SwitchyardError("internal", `binary piece ${index - 1} is not the ${size} bytes announced`);
      return piece;
    },
  };
}

interface JsonHeader {
  value: unknown;
  /** The same document with integers beyond 2^53 as exact bigints (parsed again on first use). */
  withExactIntegers(): unknown;
}

const strictUtf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

function parseJsonHeader(header: Uint8Array, what: string): JsonHeader {
  let text: string;
  try {
    text = strictUtf8Decoder.decode(header);
  } catch {
    throw badInput(`the ${what}'s JSON is not valid UTF-8`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw badInput(
      `malformed JSON in the ${what}: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  let exact: { value: unknown } | undefined;
  return {
    value,
    withExactIntegers() {
      exact ??= { value: JSON.parse(text, reviveLargeIntegers) };
      return exact.value;
    },
  };
}

const INTEGER_LITERAL = /^-?\d+$/;

/**
 * JSON.parse reviver: a large integer literal becomes a bigint read from its source text. The source text
 * argument is recent (Node 22+, workerd); without it the number stays a number and is reported as inexact.
 */
function reviveLargeIntegers(_key: string, value: unknown, context?: { source?: string }): unknown {
  const source = context?.source;
  if (typeof value === "number" && !Number.isSafeInteger(value) && source !== undefined) {
    if (INTEGER_LITERAL.test(source)) return BigInt(source);
  }
  return value;
}

type TensorField = "inputs" | "outputs";

interface TensorPlan {
  entry: InferInputJson;
  index: number;
  count: number;
  binarySize: number | undefined;
  /** Where the tensor's bytes are instead of the body (an input in a shared memory region). */
  shared: SharedMemoryRef | undefined;
  fail: Fail;
}

/**
 * Every check that needs only the JSON header (element counts, data vs binary_data_size, the byte sums)
 * runs before any tensor data is allocated, so a hostile shape costs nothing.
 */
function decodeTensors(
  entries: InferInputJson[],
  field: TensorField,
  binary: BinaryPart | undefined,
  header: JsonHeader,
  options: DecodeOptions = {},
): Tensor[] {
  rejectDuplicateNames(entries, field);
  let binaryTotal = 0;
  let sharedTotal = 0;
  const plans = entries.map((entry, index): TensorPlan => {
    const fail: Fail = (problem) => {
      throw badInput(`${field}[${index}] (${JSON.stringify(entry.name)}): ${problem}`);
    };
    const count = checkedElementCount(entry.shape, fail);
    const binarySize = entry.parameters?.binary_data_size;
    const shared = field === "inputs" ? sharedMemoryRefOf(entry.parameters, fail) : undefined;
    if (shared !== undefined) {
      if (options.sharedMemory === undefined) fail(SHARED_MEMORY_NOT_OFFERED);
      if (entry.data !== undefined || binarySize !== undefined)
        fail(
          `has ${entry.data === undefined ? "binary_data_size" : "data"} and a shared memory region; send one of them`,
        );
      if (entry.datatype !== "BYTES") {
        const needed = count * ELEMENT_SIZE[entry.datatype];
        if (shared.byteSize !== needed) {
          fail(
            `shared_memory_byte_size is ${shared.byteSize} bytes but shape ${formatShape(entry.shape)} of ${entry.datatype} needs ${needed}`,
          );
        }
      } else if (shared.byteSize < count * 4) {
        fail(
          `shared_memory_byte_size is ${shared.byteSize} bytes but shape ${formatShape(entry.shape)} of BYTES needs at least ${count * 4} (4 for each element's length)`,
        );
      }
      options.sharedMemory.check(shared, fail);
      sharedTotal += shared.byteSize;
      // Checked before anything is read: the sum, not each alone, is what the request would take.
      if (sharedTotal > options.sharedMemory.maxInputBytes) {
        throw new SwitchyardError(
          "too_large",
          `the ${field} in shared memory add up to more than ${options.sharedMemory.maxInputBytes} bytes, the most a request may bring (--max-body)`,
        );
      }
    } else if (binarySize === undefined) {
      if (entry.data === undefined) fail("has neither data nor parameters.binary_data_size");
    } else {
      if (entry.data !== undefined) fail("has both data and parameters.binary_data_size; send one of them");
      if (binary === undefined) {
        fail(
          `has parameters.binary_data_size but the body has no binary part (no ${INFERENCE_HEADER_CONTENT_LENGTH})`,
        );
      }
      if (entry.datatype !== "BYTES") {
        const needed = count * ELEMENT_SIZE[entry.datatype];
        if (binarySize !== needed) {
          fail(
            `binary_data_size is ${binarySize} bytes but shape ${formatShape(entry.shape)} of ${entry.datatype} needs ${needed}`,
          );
        }
      }
      binaryTotal += binarySize;
    }
    return { entry, index, count, binarySize, shared, fail };
  });
  const binaryLength = binary?.length ?? 0;
  if (binaryTotal !== binaryLength) {
    throw badInput(
      `the ${field}' binary_data_size values add up to ${binaryTotal} bytes but ${binaryLength} bytes follow the JSON header`,
    );
  }
  return plans.map((plan) => {
    let data: TensorData;
    if (plan.shared !== undefined && options.sharedMemory !== undefined) {
      // Copied out of the region into a buffer this request owns, so it may move to the session's thread.
      const bytes = options.sharedMemory.read(plan.shared, plan.fail);
      data = codecOf(plan.entry.datatype).fromBinary(bytes, plan.count, plan.fail, true);
    } else if (plan.binarySize === undefined || binary === undefined) {
      data = tensorDataFromJson(plan, () => exactDataOf(header.withExactIntegers(), field, plan.index));
    } else {
      const bytes = binary.take(plan.binarySize);
      data = codecOf(plan.entry.datatype).fromBinary(bytes, plan.count, plan.fail, options.views === true);
    }
    const tensor: Tensor = {
      name: plan.entry.name,
      datatype: plan.entry.datatype,
      shape: plan.entry.shape,
      data,
    };
    const parameters = withoutKeys(plan.entry.parameters, TRANSPORT_PARAMETERS);
    if (parameters !== undefined) tensor.parameters = parameters;
    return tensor;
  });
}

function tensorDataFromJson(plan: TensorPlan, exactData: () => unknown): TensorData {
  const { entry, count, fail } = plan;
  const codec = codecOf(entry.datatype);
  let elements = flattenData(entry.data, entry.shape, fail);
  if (elements.length !== count) {
    fail(`shape ${formatShape(entry.shape)} needs ${count} elements but data has ${elements.length}`);
  }
  if (codec.needsExactIntegers && elements.some(isInexactInteger)) {
    elements = flattenData(exactData(), entry.shape, fail);
  }
  const result = codec.fromJson(elements);
  if (!("badIndex" in result)) return result;
  const bad = elements[result.badIndex];
  const hint = isInexactInteger(bad)
    ? " (beyond 2^53 a JSON number is inexact here: send a decimal string)"
    : "";
  return fail(
    `element ${result.badIndex} must be ${codec.expected} for ${entry.datatype}, got ${describeValue(bad)}${hint}`,
  );
}

function isInexactInteger(value: unknown): boolean {
  return typeof value === "number" && Number.isInteger(value) && !Number.isSafeInteger(value);
}

function exactDataOf(document: unknown, field: TensorField, index: number): unknown {
  if (!isRecord(document)) return undefined;
  const entries = document[field];
  if (!Array.isArray(entries)) return undefined;
  const entry: unknown = entries[index];
  return isRecord(entry) ? entry.data : undefined;
}

/**
 * The elements of `data` in row-major order. Data is either flat (product(shape) scalars) or nested to
 * exactly the depth of the shape with every level as long as its dimension. Walks level by level rather
 * than recursing, so no nesting depth can overflow the stack.
 */
function flattenData(data: unknown, shape: readonly number[], fail: Fail): unknown[] {
  if (!Array.isArray(data)) return fail(`data must be an array, got ${describeValue(data)}`);
  const nested = shape.length > 1 && data.length > 0 && Array.isArray(data[0]);
  if (!nested) return data;
  let level: unknown[] = [data];
  for (const [depth, dimension] of shape.entries()) {
    const next: unknown[] = [];
    for (const item of level) {
      if (!Array.isArray(item) || item.length !== dimension) {
        const got = Array.isArray(item) ? `an array of ${item.length}` : describeValue(item);
        fail(
          `nested data does not match shape ${formatShape(shape)}: at depth ${depth} expected an array of ${dimension}, got ${got}`,
        );
      }
      for (const element of item) next.push(element);
    }
    level = next;
  }
  return level;
}

/** product(shape), refusing counts that a double cannot hold exactly. */
function checkedElementCount(shape: readonly number[], fail: Fail): number {
  if (shape.includes(0)) return 0;
  let count = 1;
  for (const dimension of shape) {
    count *= dimension;
    if (count > Number.MAX_SAFE_INTEGER) fail(`shape ${formatShape(shape)} has too many elements`);
  }
  return count;
}

function rejectDuplicateNames(entries: readonly { name: string }[], field: TensorField): void {
  const seen = new Set<string>();
  for (const [index, { name }] of entries.entries()) {
    if (seen.has(name)) throw badInput(`${field}[${index}]: duplicate name ${JSON.stringify(name)}`);
    seen.add(name);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Encoding

/** A key and its value already written as JSON text. */
type JsonField = [key: string, valueJson: string];

interface TensorToEncode {
  tensor: Tensor;
  /** In the JSON, after it in the binary part, or elsewhere (shared memory: the header names it only). */
  form: "json" | "binary" | "elsewhere";
}

/**
 * Writes the JSON text by hand around the tensors, so that data arrays (exact 64-bit integers, "NaN")
 * are written by the codec table and never pass through JSON.stringify as JavaScript values.
 */
function encodeDocument(
  leading: JsonField[],
  field: TensorField,
  tensors: TensorToEncode[],
  trailing: JsonField[],
): EncodedParts {
  let binaryLength = 0;
  const tensorJson = tensors.map(({ tensor, form }, index) => {
    const codec = checkedCodec(tensor, `${field}[${index}] (${JSON.stringify(tensor.name)})`);
    const fields: JsonField[] = [
      ["name", JSON.stringify(tensor.name)],
      ["datatype", JSON.stringify(tensor.datatype)],
      ["shape", JSON.stringify(tensor.shape)],
    ];
    const parameters = withoutKeys(tensor.parameters, ["binary_data_size"]) ?? {};
    if (form === "elsewhere") {
      if (Object.keys(parameters).length > 0) fields.push(["parameters", JSON.stringify(parameters)]);
    } else if (form === "binary") {
      const size = codec.byteLength(tensor.data);
      binaryLength += size;
      fields.push(["parameters", JSON.stringify({ ...parameters, binary_data_size: size })]);
    } else {
      if (Object.keys(parameters).length > 0) fields.push(["parameters", JSON.stringify(parameters)]);
      fields.push(["data", codec.toJson(tensor.data)]);
    }
    return objectJson(fields);
  });
  const headerText = objectJson([...leading, [field, `[${tensorJson.join(",")}]`], ...trailing]);
  const header = utf8Encoder.encode(headerText);
  if (!tensors.some((tensor) => tensor.form === "binary")) {
    return { parts: [header], byteLength: header.length, contentType: "application/json" };
  }
  const parts: Uint8Array[] = [header];
  for (const { tensor } of tensors.filter((candidate) => candidate.form === "binary")) {
    parts.push(codecOf(tensor.datatype).binaryOf(tensor.data));
  }
  return {
    parts,
    byteLength: header.length + binaryLength,
    headerLength: header.length,
    contentType: "application/octet-stream",
  };
}

function objectJson(fields: readonly JsonField[]): string {
  return `{${fields.map(([key, value]) => `${JSON.stringify(key)}:${value}`).join(",")}}`;
}

/** The tensor's codec, after checking that its data is what its datatype and shape promise. */
function checkedCodec(tensor: Tensor, where: string): ElementCodec<TensorData> {
  const inconsistent = (problem: string) => new SwitchyardError("internal", `${where}: ${problem}`);
  if (!isDatatype(tensor.datatype)) throw inconsistent(`unknown datatype ${describeValue(tensor.datatype)}`);
  const codec = codecOf(tensor.datatype);
  if (!codec.isData(tensor.data)) throw inconsistent(`data does not hold ${tensor.datatype} elements`);
  const count = tensor.shape.reduce((product, dimension) => product * dimension, 1);
  if (tensor.data.length !== count) {
    throw inconsistent(
      `shape ${formatShape(tensor.shape)} needs ${count} elements but data has ${tensor.data.length}`,
    );
  }
  return codec;
}

// ---------------------------------------------------------------------------------------------------------
// Small helpers

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** An input's parameters that say how its bytes travelled, not what they are. */
const TRANSPORT_PARAMETERS = [
  "binary_data_size",
  SHARED_MEMORY_REGION,
  SHARED_MEMORY_OFFSET,
  SHARED_MEMORY_BYTE_SIZE,
] as const;

/** `parameters` without `keys`; undefined when nothing else is left. */
function withoutKeys(
  parameters: Record<string, unknown> | undefined,
  keys: readonly string[],
): Record<string, unknown> | undefined {
  if (parameters === undefined) return undefined;
  const rest = { ...parameters };
  for (const key of keys) delete rest[key];
  return Object.keys(rest).length > 0 ? rest : undefined;
}

/**
 * A plain Uint8Array copy of `bytes` in its own ArrayBuffer, whatever subclass `bytes` is: a Node Buffer's
 * slice() is a view, and even Uint8Array's slice() builds a Buffer from a Buffer (species).
 */
function copyBytes(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return copy;
}
