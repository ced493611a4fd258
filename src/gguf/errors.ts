/**
 * Errors thrown by the GGUF layer. Every rejection of a file is a `GGUFError` carrying a stable
 * `code` (what tests and callers switch on), the `field` that was bad, the byte `offset` where
 * that field sits in the file, and the `file` name, all repeated in the message so that a user
 * reading a log line can find the byte with a hex editor.
 */
import { KilnError } from "../errors";

/**
 * Why a GGUF file was rejected, by the section of the hardening checklist it failed (A header,
 * B metadata, C tensor infos, D data and shards), plus the typed-getter and writer codes.
 */
export type GGUFErrorCode =
  // A. header
  | "HEADER_BAD_MAGIC"
  | "HEADER_TRUNCATED"
  | "BAD_VERSION"
  | "ENDIANNESS"
  | "BAD_N_TENSORS"
  | "BAD_N_KV"
  // B. metadata
  | "KV_BAD_KEY_SIZE"
  | "KV_EMPTY_KEY"
  | "KV_KEY_NOT_ASCII"
  | "KV_BAD_TYPE"
  | "KV_NESTED_ARRAY"
  | "KV_DUPLICATE_KEY"
  | "KV_STRING_TOO_LONG"
  | "KV_ARRAY_TOO_LONG"
  | "KV_BAD_BOOL"
  | "METADATA_TOO_LARGE"
  | "KV_WRONG_TYPE_ALIGN"
  | "KV_BAD_ALIGN"
  // C. tensor infos
  | "TENSOR_BAD_NAME"
  | "TENSOR_DUPLICATE_NAME"
  | "TENSOR_BAD_N_DIMS"
  | "TENSOR_BAD_SHAPE"
  | "TENSOR_NE_TOO_BIG"
  | "TENSOR_BAD_TYPE"
  | "TENSOR_UNSUPPORTED_TYPE"
  | "TENSOR_BLOCK_MISALIGNED"
  | "TENSOR_NBYTES_TOO_BIG"
  | "TENSOR_BAD_OFFSET"
  | "TENSOR_OFFSET_MISMATCH"
  // D. data section and shards
  | "DATA_TRUNCATED"
  | "SPLIT_INCONSISTENT"
  // a fixed-size field runs past the end of the file
  | "UNEXPECTED_EOF"
  // typed metadata getters and semantic helpers
  | "KV_MISSING"
  | "KV_WRONG_TYPE"
  | "KV_BAD_VALUE"
  | "TOKENIZER_INVALID"
  // writer misuse (never thrown by the reader)
  | "WRITER_INVALID";

export interface GGUFErrorWhere {
  /** The field that failed, e.g. `header.version`, `kv[3].key`, `tensor "blk.0.attn_q.weight".ne[1]`. */
  field: string;
  /** Byte offset in the file where the field starts; undefined when no single byte is to blame. */
  offset?: number;
  /** File name as given by the caller (`parseGGUF(bytes, { fileName })`). */
  file?: string;
}

/**
 * A rejected GGUF file: a stable `code`, the `field` that was bad, the byte `offset` where it sits,
 * and the `file` name, all repeated in the message.
 */
export class GGUFError extends KilnError {
  /** The class name, as `Error.name` ("GGUFError"). */
  override name = "GGUFError";
  declare readonly code: GGUFErrorCode;
  /**
   * The field that failed, e.g. `header.version`, `kv[3].key`, `tensor "blk.0.attn_q.weight".ne[1]`.
   */
  readonly field: string;
  /** Byte offset in the file where the field starts; undefined when no single byte is to blame. */
  readonly offset: number | undefined;
  /** File name as given by the caller (`parseGGUF(bytes, { fileName })`). */
  readonly file: string | undefined;
  /** The explanation alone, without the code/file/field/offset prefix. */
  readonly detail: string;

  constructor(code: GGUFErrorCode, detail: string, where: GGUFErrorWhere) {
    const at = where.offset === undefined ? "" : ` at offset ${where.offset}`;
    super(code, `${where.file ?? "<gguf buffer>"}: ${code}: ${where.field}${at}: ${detail}`);
    this.field = where.field;
    this.offset = where.offset;
    this.file = where.file;
    this.detail = detail;
  }
}

/**
 * A tensor whose ggml type is well known but has no kiln kernel (Q2_K, IQ*, ...). Kept distinct
 * so a front end can say "re-quantize this model to Q4_K_M" instead of "corrupt file".
 */
export class UnsupportedQuantTypeError extends GGUFError {
  /** The class name, as `Error.name` ("UnsupportedQuantTypeError"). */
  override name = "UnsupportedQuantTypeError";
  /** The tensor's ggml type id. */
  readonly typeId: number;
  /** The ggml type's name, e.g. "Q2_K". */
  readonly typeName: string;
  /** The tensor's name. */
  readonly tensor: string;

  constructor(tensor: string, typeId: number, typeName: string, where: GGUFErrorWhere) {
    super(
      "TENSOR_UNSUPPORTED_TYPE",
      `tensor "${tensor}" has ggml type ${typeName} (${typeId}), which kiln's kernels do not support`,
      where,
    );
    this.typeId = typeId;
    this.typeName = typeName;
    this.tensor = tensor;
  }
}
