/**
 * The operator types an ONNX file's graph uses, read from the file's protobuf without decoding it:
 * onnxruntime-node does not tell, and decoding the whole model (onnx-proto) would copy every weight. The
 * walk reads only the messages that can hold nodes (the graph, its nodes, their subgraph attributes, the
 * model's local functions) through a small window onto the file, and jumps over everything else
 * (initializers, doc strings) by its length, so a model of gigabytes costs a few reads per node.
 *
 * It runs on a session's worker thread (session-worker.ts), once onnxruntime has loaded the same file: its
 * reads are synchronous there on purpose, off the agent's main thread.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";

/** Field numbers in onnx.proto that lead to nodes, and the node's operator type. */
const MODEL_GRAPH = 7;
const MODEL_FUNCTIONS = 25;
const GRAPH_NODE = 1;
const FUNCTION_NODE = 7;
const NODE_OP_TYPE = 4;
const NODE_ATTRIBUTE = 5;
const ATTRIBUTE_GRAPH = 6;
const ATTRIBUTE_GRAPHS = 11;

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH = 2;
const WIRE_FIXED32 = 5;

const WINDOW_BYTES = 64 * 1024;

/** Reads a file at any position through one window: nearby reads share one system call. */
class FileWindow {
  readonly size: number;
  readonly #fd: number;
  readonly #window = Buffer.alloc(WINDOW_BYTES);
  #start = 0;
  #end = 0;

  constructor(fd: number) {
    this.#fd = fd;
    this.size = fstatSync(fd).size;
  }

  byteAt(position: number): number {
    if (position < this.#start || position >= this.#end) this.#fill(position);
    return this.#window[position - this.#start] as number;
  }

  text(position: number, length: number): string {
    if (length > WINDOW_BYTES) throw new Error("an operator type longer than the read window");
    if (position < this.#start || position + length > this.#end) this.#fill(position);
    return this.#window.toString("utf8", position - this.#start, position - this.#start + length);
  }

  #fill(position: number): void {
    if (position >= this.size) throw new Error("the ONNX file ends inside a message");
    const read = readSync(this.#fd, this.#window, 0, WINDOW_BYTES, position);
    this.#start = position;
    this.#end = position + read;
  }
}

/** One field of a message: its number, and where its value lies (a length-delimited one's bytes). */
interface Field {
  number: number;
  wire: number;
  start: number;
  end: number;
}

/** Reads a varint at `position`: its value, and where the next byte is. */
function varint(file: FileWindow, position: number): { value: number; next: number } {
  let value = 0;
  let scale = 1;
  for (let at = position; at < position + 10; at += 1) {
    const byte = file.byteAt(at);
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return { value, next: at + 1 };
    scale *= 128;
  }
  throw new Error("a malformed varint in the ONNX file");
}

/** Each field of the message that lies in [start, end). */
function* fields(file: FileWindow, start: number, end: number): Generator<Field> {
  let at = start;
  while (at < end) {
    const tag = varint(file, at);
    const number = Math.floor(tag.value / 8);
    const wire = tag.value % 8;
    let valueStart = tag.next;
    let valueEnd: number;
    if (wire === WIRE_VARINT) valueEnd = varint(file, valueStart).next;
    else if (wire === WIRE_FIXED64) valueEnd = valueStart + 8;
    else if (wire === WIRE_FIXED32) valueEnd = valueStart + 4;
    else if (wire === WIRE_LENGTH) {
      const length = varint(file, valueStart);
      valueStart = length.next;
      valueEnd = valueStart + length.value;
    } else throw new Error(`a field of wire type ${wire} in the ONNX file`);
    if (valueEnd > end) throw new Error("a field runs past the end of its message in the ONNX file");
    yield { number, wire, start: valueStart, end: valueEnd };
    at = valueEnd;
  }
}

/** The fields numbered `number` that hold a message. */
function* messages(file: FileWindow, start: number, end: number, number: number): Generator<Field> {
  for (const field of fields(file, start, end)) {
    if (field.number === number && field.wire === WIRE_LENGTH) yield field;
  }
}

function collectNodes(file: FileWindow, nodes: Iterable<Field>, into: Set<string>): void {
  for (const node of nodes) {
    for (const field of fields(file, node.start, node.end)) {
      if (field.wire !== WIRE_LENGTH) continue;
      if (field.number === NODE_OP_TYPE) into.add(file.text(field.start, field.end - field.start));
      else if (field.number === NODE_ATTRIBUTE) {
        // If, Loop and Scan carry their bodies as graph attributes.
        for (const attribute of fields(file, field.start, field.end)) {
          if (
            attribute.wire === WIRE_LENGTH &&
            (attribute.number === ATTRIBUTE_GRAPH || attribute.number === ATTRIBUTE_GRAPHS)
          ) {
            collectNodes(file, messages(file, attribute.start, attribute.end, GRAPH_NODE), into);
          }
        }
      }
    }
  }
}

/** Every operator type the model at `path` uses: its graph's, its subgraphs' and its local functions'. */
export function onnxOpTypes(path: string): Set<string> {
  const fd = openSync(path, "r");
  try {
    const file = new FileWindow(fd);
    const types = new Set<string>();
    for (const field of fields(file, 0, file.size)) {
      if (field.wire !== WIRE_LENGTH) continue;
      if (field.number === MODEL_GRAPH)
        collectNodes(file, messages(file, field.start, field.end, GRAPH_NODE), types);
      else if (field.number === MODEL_FUNCTIONS)
        collectNodes(file, messages(file, field.start, field.end, FUNCTION_NODE), types);
    }
    return types;
  } finally {
    closeSync(fd);
  }
}

/**
 * Operators whose CUDA kernels pick a cuDNN algorithm per input shape, and search for it again whenever the
 * shape changes (batch-buckets.ts): onnxruntime's convolutions, plain, transposed, quantized and fused.
 */
const SHAPE_PLANNED = new Set([
  "Conv",
  "ConvTranspose",
  "ConvInteger",
  "QLinearConv",
  "FusedConv",
  "NhwcConv",
]);

/** Whether a model with these operators re-plans on CUDA when its batch size changes. */
export function replansPerShape(opTypes: ReadonlySet<string>): boolean {
  for (const type of opTypes) if (SHAPE_PLANNED.has(type)) return true;
  return false;
}
