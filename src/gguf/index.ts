/**
 * kiln's GGUF layer: a validating zero-copy reader, a writer for synthetic models, and the
 * ggml type traits. Nothing here knows about inference.
 */
export { GGUFError, UnsupportedQuantTypeError, type GGUFErrorCode, type GGUFErrorWhere } from "./errors";
export {
  GGMLType,
  GGML_TYPES,
  GGUFValueType,
  GGUF_VALUE_TYPE_NAMES,
  SUPPORTED_GGML_TYPES,
  VALUE_TYPE_SIZE,
  alignUp,
  ggmlTypeInfo,
  ggmlTypeName,
  isValueType,
  rowBytes,
  tensorBytes,
  tensorBytesBig,
  valueTypeName,
  type GGMLTypeInfo,
  type GGMLTypeName,
  type GGUFArray,
  type GGUFScalar,
  type GGUFValue,
} from "./types";
export {
  DEFAULT_ALIGNMENT,
  DEFAULT_MAX_ARRAY_LENGTH,
  DEFAULT_MAX_METADATA_BYTES,
  DEFAULT_MAX_TENSORS,
  GGUFMetadata,
  MAX_ALIGNMENT,
  integerValue,
  parseGGUF,
  tensorData,
  validateSplit,
  type GGUFFile,
  type GGUFSplitInfo,
  type GGUFTensorInfo,
  type ParseOptions,
} from "./reader";
export {
  checkTokenizerMetadata,
  getArray,
  getArrayOpt,
  getBool,
  getF32,
  getF64,
  getFloat,
  getI32,
  getI64,
  getInt,
  getString,
  getU32,
  getU64,
  getU8,
  getValue,
} from "./metadata";
export { GGUFWriter, type KVLayout, type TensorLayout, type WriterLayout, type WriterOptions } from "./writer";
