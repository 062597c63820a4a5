/**
 * The messages of inference.proto as the gRPC server sees them: decoded by @grpc/proto-loader with
 * LOADER_OPTIONS (field names as in the .proto, 64-bit integers as decimal strings, every field present with
 * its default, a oneof's chosen field named in `parameter_choice`, absent sub-messages null), and the shapes
 * it encodes from (optional fields may be left out). Only the fields the agent reads or writes are typed.
 */
export const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
} as const;

/**
 * One parameter value, of an infer call (InferParameter: no bytes) or a repository call
 * (ModelRepositoryParameter: no double, no uint64); `parameter_choice` names the field that is set.
 */
export interface ParameterMessage {
  parameter_choice?:
    | "bool_param"
    | "int64_param"
    | "string_param"
    | "double_param"
    | "uint64_param"
    | "bytes_param";
  bool_param?: boolean;
  int64_param?: string;
  string_param?: string;
  double_param?: number;
  uint64_param?: string;
  bytes_param?: Uint8Array;
}

export interface TensorContentsMessage {
  bool_contents: boolean[];
  int_contents: number[];
  int64_contents: string[];
  uint_contents: number[];
  uint64_contents: string[];
  fp32_contents: number[];
  fp64_contents: number[];
  bytes_contents: Uint8Array[];
}

export interface InferInputTensorMessage {
  name: string;
  datatype: string;
  shape: string[];
  parameters: Record<string, ParameterMessage>;
  contents: TensorContentsMessage | null;
}

export interface ModelInferRequestMessage {
  model_name: string;
  model_version: string;
  id: string;
  parameters: Record<string, ParameterMessage>;
  inputs: InferInputTensorMessage[];
  outputs: { name: string; parameters: Record<string, ParameterMessage> }[];
  raw_input_contents: Uint8Array[];
}

export interface ModelInferResponseMessage {
  model_name: string;
  model_version: string;
  id: string;
  outputs: { name: string; datatype: string; shape: number[] }[];
  raw_output_contents: Uint8Array[];
}

export interface ModelStreamInferResponseMessage {
  error_message: string;
  infer_response?: ModelInferResponseMessage;
}

export interface ModelRequestMessage {
  name: string;
  version: string;
}

export interface RepositoryIndexRequestMessage {
  repository_name: string;
  ready: boolean;
}

export interface RepositoryModelRequestMessage {
  repository_name: string;
  model_name: string;
  parameters: Record<string, ParameterMessage>;
}

/** The status, register and unregister calls of Triton's shared memory extension (system and CUDA). */
export interface SharedMemoryNameMessage {
  name: string;
}

export interface SystemSharedMemoryRegisterMessage {
  name: string;
  key: string;
  offset: string;
  byte_size: string;
}

/** One value of LogSettings' map; `parameter_choice` names the field that is set (none: an empty value). */
export interface LogSettingValueMessage {
  parameter_choice?: "bool_param" | "uint32_param" | "string_param";
  bool_param?: boolean;
  uint32_param?: number;
  string_param?: string;
}

export interface LogSettingsMessage {
  settings: Record<string, LogSettingValueMessage>;
}
