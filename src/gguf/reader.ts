/**
 * GGUF reader: a pure, validating parser over a byte view (an mmap'd read-only file or a
 * buffer; mapping is another layer's job). It checks every item of sections A–D of
 * /work/shared/notes/gguf-hardening.md with exact arithmetic, and it checks each count in the
 * file against the bytes that remain *before* allocating anything proportional to that count,
 * so a crafted file can neither crash it nor make it allocate more than the file's own size
 * (plus a bounded metadata budget).
 *
 * Tensor data is never copied or touched: the result gives absolute byte ranges, checked to lie
 * inside the file, and the caller views them in place.
 */
import { GGUFError, UnsupportedQuantTypeError, type GGUFErrorCode } from "./errors";
import {
  GGML_TYPES,
  GGUFValueType,
  VALUE_TYPE_SIZE,
  alignUp,
  isValueType,
  valueTypeName,
  type GGUFArray,
  type GGUFValue,
} from "./types";

// ---------------------------------------------------------------------------------------------
// Public shapes
// ---------------------------------------------------------------------------------------------

export interface ParseOptions {
  /** Named in every error message. */
  fileName?: string;
  /** Budget for decoded metadata (B06): encoded bytes plus per-item overheads. Default 64 MiB. */
  maxMetadataBytes?: number;
  /** Longest single string value (B04). Default: the metadata budget. */
  maxStringBytes?: number;
  /** Most elements in one metadata array (B05). Default 2^30, as upstream. */
  maxArrayLength?: number;
  /** Most tensors in one file; each costs a JS object, so cap it. Default 2^20. */
  maxTensors?: number;
  /** Accept known ggml types kiln cannot run (for inspection tools). Default false. */
  allowUnsupportedTypes?: boolean;
}

export interface GGUFTensorInfo {
  name: string;
  /** ggml order: dims[0] is the contiguous (innermost) dimension. */
  dims: number[];
  /** ggml type id. */
  type: number;
  typeName: string;
  /** Absolute file offset of the first data byte. */
  offset: number;
  /** Offset relative to the data section, as stored in the file. */
  relOffset: number;
  nbytes: number;
  nelements: number;
  /** File offset of this tensor's info record (for later error messages). */
  infoOffset: number;
}

export interface GGUFSplitInfo {
  count: number;
  no: number;
  /** Total tensors over all shards, when the file says. */
  tensorsCount: number | undefined;
}

/**
 * A parsed GGUF file: header, metadata and tensor table, validated; tensor data stays in the bytes
 * it was parsed from (each `GGUFTensorInfo` gives its absolute byte range).
 */
export interface GGUFFile {
  /** The name given to `parseGGUF` (used in error messages). */
  fileName: string | undefined;
  /** GGUF version (2 or 3). */
  version: number;
  /** Bytes in the file. */
  fileSize: number;
  /** Key/value metadata, in file order. */
  metadata: GGUFMetadata;
  /** Tensor infos, in file order. */
  tensors: GGUFTensorInfo[];
  /** The same tensor infos by name. */
  tensorsByName: ReadonlyMap<string, GGUFTensorInfo>;
  /** Data alignment (`general.alignment`, default 32). */
  alignment: number;
  /** Absolute offset of the data section (end of tensor infos, aligned). */
  dataOffset: number;
  /** Metadata budget actually used, in the units of `maxMetadataBytes`. */
  metadataBytes: number;
  /** Shard numbering of a split model (`split.*` keys), when the file has them. */
  split: GGUFSplitInfo | undefined;
}

/** Metadata, in file order. A Map that knows its file, so getters can name it in errors. */
export class GGUFMetadata extends Map<string, GGUFValue> {
  constructor(readonly fileName?: string) {
    super();
  }
}

export const DEFAULT_ALIGNMENT = 32;
export const MAX_ALIGNMENT = 1 << 20;
export const DEFAULT_MAX_METADATA_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_ARRAY_LENGTH = 2 ** 30;
export const DEFAULT_MAX_TENSORS = 2 ** 20;
export const MAX_KEY_BYTES = 65535;
/** GGML_MAX_NAME is 64 including the NUL, so names are at most 63 bytes. */
export const MAX_TENSOR_NAME_BYTES = 63;
export const MAX_DIMS = 4;

/** Smallest encodings (A03): key len + 1 key byte + type + 1 value byte. */
const MIN_KV_BYTES = 8 + 1 + 4 + 1;
/** name len + 1 name byte + n_dims + one ne + type + offset. */
const MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8;
/** Budget charged per KV and per string-array element for JS object overhead (B06). */
const KV_OVERHEAD = 64;
const STRING_OVERHEAD = 16;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const INT64_SIGN = 1n << 63n;
const U64_MAX = (1n << 64n) - 1n;

// Typed arrays read the host's byte order; GGUF is little-endian. Every Bun target is LE, but
// say so loudly rather than return byte-swapped metadata.
const HOST_IS_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// ignoreBOM: a token whose text starts with U+FEFF is a different token from the one without it.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

// ---------------------------------------------------------------------------------------------
// Cursor: bounds-checked little-endian reads that throw GGUFError, never RangeError
// ---------------------------------------------------------------------------------------------

class Cursor {
  pos = 0;
  readonly view: DataView;
  readonly size: number;

  constructor(
    readonly bytes: Uint8Array,
    readonly file: string | undefined,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.size = bytes.byteLength;
  }

  get remaining(): number {
    return this.size - this.pos;
  }

  fail(code: GGUFErrorCode, field: string, detail: string, offset: number = this.pos): never {
    throw new GGUFError(code, detail, { field, offset, file: this.file });
  }

  need(n: number, field: string): void {
    if (n > this.remaining) {
      this.fail("UNEXPECTED_EOF", field, `needs ${n} bytes but only ${this.remaining} remain (file is ${this.size} bytes)`);
    }
  }

  u32(field: string): number {
    this.need(4, field);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  u64(field: string): bigint {
    this.need(8, field);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }
}

/** Charges decoded-metadata cost against the budget before the allocation it stands for (B06). */
class Budget {
  used = 0;
  constructor(
    readonly max: number,
    readonly c: Cursor,
  ) {}

  charge(n: number | bigint, field: string, offset: number): void {
    const left = this.max - this.used;
    if (BigInt(n) > BigInt(left)) {
      this.c.fail(
        "METADATA_TOO_LARGE",
        field,
        `metadata needs at least ${BigInt(this.used) + BigInt(n)} bytes, over the budget of ${this.max} (maxMetadataBytes)`,
        offset,
      );
    }
    this.used += Number(n);
  }
}

interface Limits {
  maxStringBytes: number;
  maxArrayLength: number;
}

// ---------------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------------

/**
 * Parses and validates a GGUF file's header, metadata and tensor infos from its bytes (a mapped
 * file or a buffer) without copying tensor data. Every rejection is a GGUFError naming the field
 * and its byte offset; no count in the file makes it allocate more than the file's size plus the
 * metadata budget (`opts`).
 */
export function parseGGUF(bytes: Uint8Array, opts: ParseOptions = {}): GGUFFile {
  const file = opts.fileName;
  if (!HOST_IS_LE) throw new GGUFError("ENDIANNESS", "kiln needs a little-endian host", { field: "host", file });
  const maxMetadataBytes = opts.maxMetadataBytes ?? DEFAULT_MAX_METADATA_BYTES;
  const limits: Limits = {
    maxStringBytes: Math.min(opts.maxStringBytes ?? maxMetadataBytes, maxMetadataBytes),
    maxArrayLength: opts.maxArrayLength ?? DEFAULT_MAX_ARRAY_LENGTH,
  };
  const c = new Cursor(bytes, file);

  const header = readHeader(c, opts.maxTensors ?? DEFAULT_MAX_TENSORS);
  const budget = new Budget(maxMetadataBytes, c);
  const metadata = readMetadata(c, header.nKV, budget, limits);
  const alignment = readAlignment(c, metadata);
  const split = readSplitKeys(c, metadata, header.nTensors);
  const tensors = readTensorInfos(c, header.nTensors, alignment, opts.allowUnsupportedTypes ?? false);
  const dataOffset = alignUp(c.pos, alignment);
  placeTensorData(c, tensors, dataOffset);

  return {
    fileName: file,
    version: header.version,
    fileSize: bytes.byteLength,
    metadata,
    tensors,
    tensorsByName: new Map(tensors.map((t) => [t.name, t])),
    alignment,
    dataOffset,
    metadataBytes: budget.used,
    split,
  };
}

/** The bytes of one tensor, viewed in place (no copy). */
export function tensorData(bytes: Uint8Array, t: GGUFTensorInfo): Uint8Array {
  return bytes.subarray(t.offset, t.offset + t.nbytes);
}

// ---------------------------------------------------------------------------------------------
// A. Header
// ---------------------------------------------------------------------------------------------

const MAGIC = [0x47, 0x47, 0x55, 0x46]; // "GGUF"

function readHeader(c: Cursor, maxTensors: number): { version: number; nTensors: number; nKV: number } {
  const b = c.bytes;
  for (let i = 0; i < 4; i++) {
    if (i >= b.length || b[i] !== MAGIC[i]) {
      const got = Array.from(b.subarray(0, 4), (x) => x.toString(16).padStart(2, "0")).join(" ");
      c.fail("HEADER_BAD_MAGIC", "header.magic", `expected "GGUF" (47 47 55 46), got [${got}] in a ${b.length}-byte file`, 0);
    }
  }
  if (b.length < 24) c.fail("HEADER_TRUNCATED", "header", `file is ${b.length} bytes, shorter than the 24-byte GGUF header`, 0);
  c.pos = 4;

  const version = c.u32("header.version");
  // A byte-swapped small version has its low 16 bits zero (3 reads as 0x03000000).
  if (version !== 0 && (version & 0xffff) === 0) {
    c.fail("ENDIANNESS", "header.version", `version reads as 0x${version.toString(16)}: the file is big-endian or byte-swapped; kiln reads little-endian GGUF only`, 4);
  }
  if (version < 2 || version > 3) {
    const why = version === 1 ? "GGUF v1 (32-bit counts) is not supported" : "kiln reads GGUF versions 2 and 3";
    c.fail("BAD_VERSION", "header.version", `version ${version}: ${why}`, 4);
  }

  const nTensors = c.u64("header.n_tensors");
  const nKV = c.u64("header.n_kv");
  const rest = BigInt(c.remaining);
  // Each item has a minimum encoded size, so a count the remaining bytes cannot hold is a lie;
  // rejecting it here means no array is ever sized from a bogus count (A03).
  if (nTensors >= INT64_SIGN) c.fail("BAD_N_TENSORS", "header.n_tensors", `${nTensors} is negative as int64`, 8);
  if (nTensors * BigInt(MIN_TENSOR_INFO_BYTES) > rest) {
    c.fail("BAD_N_TENSORS", "header.n_tensors", `${nTensors} tensor infos need at least ${nTensors * BigInt(MIN_TENSOR_INFO_BYTES)} bytes but only ${rest} remain`, 8);
  }
  if (nTensors > BigInt(maxTensors)) c.fail("BAD_N_TENSORS", "header.n_tensors", `${nTensors} tensors is over the limit of ${maxTensors} (maxTensors)`, 8);
  if (nKV >= INT64_SIGN) c.fail("BAD_N_KV", "header.n_kv", `${nKV} is negative as int64`, 16);
  const restAfterInfos = rest - nTensors * BigInt(MIN_TENSOR_INFO_BYTES);
  if (nKV * BigInt(MIN_KV_BYTES) > restAfterInfos) {
    c.fail("BAD_N_KV", "header.n_kv", `${nKV} KV pairs need at least ${nKV * BigInt(MIN_KV_BYTES)} bytes but only ${restAfterInfos} remain after the tensor infos' minimum`, 16);
  }
  return { version, nTensors: Number(nTensors), nKV: Number(nKV) };
}

// ---------------------------------------------------------------------------------------------
// B. Metadata
// ---------------------------------------------------------------------------------------------

function readMetadata(c: Cursor, nKV: number, budget: Budget, limits: Limits): GGUFMetadata {
  const meta = new GGUFMetadata(c.file);
  for (let i = 0; i < nKV; i++) {
    const kvOffset = c.pos;
    const key = readKey(c, i);
    if (meta.has(key)) c.fail("KV_DUPLICATE_KEY", `kv[${i}] "${key}"`, `key "${key}" appears twice (first at offset ${meta.get(key)!.offset})`, kvOffset);
    budget.charge(KV_OVERHEAD + (c.pos - kvOffset), `kv[${i}] "${key}"`, kvOffset);

    const field = `kv[${i}] "${key}"`;
    const typeOffset = c.pos;
    const type = c.u32(`${field}.type`);
    if (!isValueType(type)) c.fail("KV_BAD_TYPE", `${field}.type`, `value type ${type} is not a GGUF type (0..12)`, typeOffset);
    const value = type === GGUFValueType.ARRAY ? readArray(c, field, budget, limits) : readScalar(c, type, field, budget, limits);
    meta.set(key, { ...value, offset: kvOffset } as GGUFValue);
  }
  return meta;
}

function readKey(c: Cursor, i: number): string {
  const field = `kv[${i}].key`;
  const at = c.pos;
  const len = c.u64(field);
  if (len === 0n) c.fail("KV_EMPTY_KEY", field, "key is empty", at);
  if (len > BigInt(MAX_KEY_BYTES) || len > BigInt(c.remaining)) {
    c.fail("KV_BAD_KEY_SIZE", field, `key length ${len} is over ${MAX_KEY_BYTES} or runs past the end of the file (${c.remaining} bytes remain)`, at);
  }
  const n = Number(len);
  const b = c.bytes;
  // Keys are identifiers like "llama.block_count": printable ASCII only, so they can be printed
  // in errors and compared without Unicode normalization surprises.
  for (let j = c.pos; j < c.pos + n; j++) {
    if (b[j]! < 0x20 || b[j]! > 0x7e) c.fail("KV_KEY_NOT_ASCII", field, `key byte 0x${b[j]!.toString(16)} at index ${j - c.pos} is not printable ASCII`, j);
  }
  const key = utf8.decode(b.subarray(c.pos, c.pos + n));
  c.pos += n;
  return key;
}

type Unlocated = GGUFValue extends infer V ? (V extends unknown ? Omit<V, "offset"> : never) : never;

function readScalar(c: Cursor, type: number, field: string, budget: Budget, limits: Limits): Unlocated {
  if (type === GGUFValueType.STRING) {
    return { type: GGUFValueType.STRING, value: readString(c, field, budget, limits) };
  }
  const size = VALUE_TYPE_SIZE[type]!;
  c.need(size, `${field}.value`);
  const v = c.view;
  const p = c.pos;
  c.pos += size;
  switch (type) {
    case GGUFValueType.UINT8: return { type, value: v.getUint8(p) };
    case GGUFValueType.INT8: return { type, value: v.getInt8(p) };
    case GGUFValueType.UINT16: return { type, value: v.getUint16(p, true) };
    case GGUFValueType.INT16: return { type, value: v.getInt16(p, true) };
    case GGUFValueType.UINT32: return { type, value: v.getUint32(p, true) };
    case GGUFValueType.INT32: return { type, value: v.getInt32(p, true) };
    case GGUFValueType.FLOAT32: return { type, value: v.getFloat32(p, true) };
    case GGUFValueType.FLOAT64: return { type, value: v.getFloat64(p, true) };
    case GGUFValueType.UINT64: return { type, value: v.getBigUint64(p, true) };
    case GGUFValueType.INT64: return { type, value: v.getBigInt64(p, true) };
    case GGUFValueType.BOOL: return { type, value: readBool(c, v.getUint8(p), `${field}.value`, p) };
  }
  return c.fail("KV_BAD_TYPE", `${field}.type`, `value type ${type} is not a scalar type`);
}

// A bool byte other than 0/1 means the file is not what it claims; be strict, as with any
// field whose invalid values could be read two ways.
function readBool(c: Cursor, b: number, field: string, at: number): boolean {
  if (b > 1) c.fail("KV_BAD_BOOL", field, `bool byte is ${b}, not 0 or 1`, at);
  return b === 1;
}

/** A length-prefixed string value (B04). */
function readString(c: Cursor, field: string, budget: Budget, limits: Limits): string {
  const at = c.pos;
  const len = c.u64(`${field}.length`);
  if (len === U64_MAX) c.fail("KV_STRING_TOO_LONG", `${field}.length`, "string length is 2^64-1 (-1 as int64)", at);
  if (len > BigInt(c.remaining)) c.fail("KV_STRING_TOO_LONG", `${field}.length`, `string length ${len} runs past the end of the file (${c.remaining} bytes remain)`, at);
  if (len > BigInt(limits.maxStringBytes)) c.fail("KV_STRING_TOO_LONG", `${field}.length`, `string length ${len} is over the cap of ${limits.maxStringBytes} (maxStringBytes)`, at);
  const n = Number(len);
  budget.charge(n, field, at);
  const s = utf8.decode(c.bytes.subarray(c.pos, c.pos + n));
  c.pos += n;
  return s;
}

type TypedArrayCtor = new (buffer: ArrayBuffer) => GGUFArray["value"];
const TYPED_ARRAY: Partial<Record<number, TypedArrayCtor>> = {
  [GGUFValueType.UINT8]: Uint8Array,
  [GGUFValueType.INT8]: Int8Array,
  [GGUFValueType.UINT16]: Uint16Array,
  [GGUFValueType.INT16]: Int16Array,
  [GGUFValueType.UINT32]: Uint32Array,
  [GGUFValueType.INT32]: Int32Array,
  [GGUFValueType.FLOAT32]: Float32Array,
  [GGUFValueType.UINT64]: BigUint64Array,
  [GGUFValueType.INT64]: BigInt64Array,
  [GGUFValueType.FLOAT64]: Float64Array,
};

/** An array value (B03, B05): element type and count are checked before any allocation. */
function readArray(c: Cursor, field: string, budget: Budget, limits: Limits): Unlocated {
  const typeAt = c.pos;
  const elemType = c.u32(`${field}.elem_type`);
  if (elemType === GGUFValueType.ARRAY) c.fail("KV_NESTED_ARRAY", `${field}.elem_type`, "arrays of arrays are not allowed", typeAt);
  if (!isValueType(elemType)) c.fail("KV_BAD_TYPE", `${field}.elem_type`, `array element type ${elemType} is not a GGUF type (0..12)`, typeAt);

  const countAt = c.pos;
  const count = c.u64(`${field}.count`);
  const isString = elemType === GGUFValueType.STRING;
  // A string element is at least its 8-byte length, so check count × 8 before anything else.
  const minElem = isString ? 8 : VALUE_TYPE_SIZE[elemType]!;
  if (count > BigInt(limits.maxArrayLength)) {
    c.fail("KV_ARRAY_TOO_LONG", `${field}.count`, `array of ${count} ${valueTypeName(elemType)} is over the cap of ${limits.maxArrayLength} elements`, countAt);
  }
  if (count * BigInt(minElem) > BigInt(c.remaining)) {
    c.fail("KV_ARRAY_TOO_LONG", `${field}.count`, `array of ${count} ${valueTypeName(elemType)} needs at least ${count * BigInt(minElem)} bytes but only ${c.remaining} remain`, countAt);
  }
  const n = Number(count);
  budget.charge(n * (minElem + (isString ? STRING_OVERHEAD : 0)), field, countAt);

  if (isString) return { type: GGUFValueType.ARRAY, elemType, value: readStringArray(c, n, field, budget, limits) };
  if (elemType === GGUFValueType.BOOL) {
    const out = new Array<boolean>(n);
    for (let i = 0; i < n; i++) out[i] = readBool(c, c.bytes[c.pos + i]!, `${field}[${i}]`, c.pos + i);
    c.pos += n;
    return { type: GGUFValueType.ARRAY, elemType, value: out };
  }
  // slice() copies into a fresh, aligned buffer: metadata never aliases the (mapped) file.
  const nbytes = n * minElem;
  const Ctor = TYPED_ARRAY[elemType]!;
  const value = new Ctor(c.bytes.slice(c.pos, c.pos + nbytes).buffer);
  c.pos += nbytes;
  return { type: GGUFValueType.ARRAY, elemType, value } as Unlocated;
}

/**
 * The hot loop for token and merge tables (262k entries in real files): lengths read as two u32
 * halves instead of BigInt, one TextDecoder call per string.
 */
function readStringArray(c: Cursor, n: number, field: string, budget: Budget, limits: Limits): string[] {
  const out = new Array<string>(n);
  const { bytes, view, size } = c;
  let pos = c.pos;
  let textBytes = 0;
  const textBudget = Math.min(budget.max - budget.used, Number.MAX_SAFE_INTEGER);
  for (let i = 0; i < n; i++) {
    if (size - pos < 8) c.fail("UNEXPECTED_EOF", `${field}[${i}].length`, `string length needs 8 bytes but only ${size - pos} remain`, pos);
    const lo = view.getUint32(pos, true);
    const hi = view.getUint32(pos + 4, true);
    if (hi !== 0 || lo > size - pos - 8 || lo > limits.maxStringBytes) {
      const len = (BigInt(hi) << 32n) | BigInt(lo);
      c.fail("KV_STRING_TOO_LONG", `${field}[${i}].length`, `string length ${len} runs past the end of the file or is over the cap of ${limits.maxStringBytes}`, pos);
    }
    textBytes += lo;
    if (textBytes > textBudget) budget.charge(textBytes, `${field}[${i}]`, pos); // throws
    pos += 8;
    out[i] = lo === 0 ? "" : utf8.decode(bytes.subarray(pos, pos + lo));
    pos += lo;
  }
  budget.charge(textBytes, field, c.pos);
  c.pos = pos;
  return out;
}

/** B07: `general.alignment` must be a u32 power of two in [1, 1 MiB]; default 32. */
function readAlignment(c: Cursor, meta: GGUFMetadata): number {
  const v = meta.get("general.alignment");
  if (v === undefined) return DEFAULT_ALIGNMENT;
  const field = 'kv "general.alignment"';
  if (v.type !== GGUFValueType.UINT32) {
    const got = v.type === GGUFValueType.ARRAY ? `array of ${valueTypeName(v.elemType)}` : valueTypeName(v.type);
    c.fail("KV_WRONG_TYPE_ALIGN", field, `general.alignment must be u32, got ${got}`, v.offset);
  }
  const a = v.value;
  if (a === 0 || a > MAX_ALIGNMENT || (a & (a - 1)) !== 0) {
    c.fail("KV_BAD_ALIGN", field, `general.alignment = ${a}: must be a power of two in [1, ${MAX_ALIGNMENT}]`, v.offset);
  }
  return a;
}

/** Integer value of any integer-typed scalar, if it is a safe integer; undefined otherwise. */
export function integerValue(v: GGUFValue | undefined): number | undefined {
  if (v === undefined) return undefined;
  switch (v.type) {
    case GGUFValueType.UINT8: case GGUFValueType.INT8: case GGUFValueType.UINT16:
    case GGUFValueType.INT16: case GGUFValueType.UINT32: case GGUFValueType.INT32:
      return v.value;
    case GGUFValueType.UINT64: case GGUFValueType.INT64:
      return v.value <= MAX_SAFE && v.value >= -MAX_SAFE ? Number(v.value) : undefined;
  }
  return undefined;
}

/**
 * D05, the single-file part: `split.count`, `split.no` and `split.tensors.count` (written by
 * gguf-split as u16, u16, i32; any integer type is accepted) must agree with each other and with
 * this file. `validateSplit` checks a whole set of shards.
 */
function readSplitKeys(c: Cursor, meta: GGUFMetadata, nTensors: number): GGUFSplitInfo | undefined {
  const countV = meta.get("split.count");
  const noV = meta.get("split.no");
  const totalV = meta.get("split.tensors.count");
  if (!countV && !noV && !totalV) return undefined;
  const bad = (field: string, detail: string, v?: GGUFValue): never =>
    c.fail("SPLIT_INCONSISTENT", field, detail, v?.offset);

  if (!countV) return bad('kv "split.count"', "split.no / split.tensors.count present without split.count", noV ?? totalV);
  const count = integerValue(countV);
  if (count === undefined || count < 1 || count > 65535) return bad('kv "split.count"', `split.count must be an integer in [1, 65535], got ${describe(countV)}`, countV);
  if (!noV) return bad('kv "split.no"', "split.count present without split.no", countV);
  const no = integerValue(noV);
  if (no === undefined || no < 0 || no >= count) return bad('kv "split.no"', `split.no must be an integer in [0, ${count}), got ${describe(noV)}`, noV);
  let tensorsCount: number | undefined;
  if (totalV) {
    tensorsCount = integerValue(totalV);
    if (tensorsCount === undefined || tensorsCount < nTensors) {
      return bad('kv "split.tensors.count"', `split.tensors.count must be an integer ≥ this shard's ${nTensors} tensors, got ${describe(totalV)}`, totalV);
    }
    if (count === 1 && tensorsCount !== nTensors) {
      return bad('kv "split.tensors.count"', `a single-shard file has ${nTensors} tensors but split.tensors.count = ${tensorsCount}`, totalV);
    }
  }
  return { count, no, tensorsCount };
}

function describe(v: GGUFValue): string {
  if (v.type === GGUFValueType.ARRAY) return `an array of ${valueTypeName(v.elemType)}`;
  return `${valueTypeName(v.type)} ${String(v.value)}`;
}

// ---------------------------------------------------------------------------------------------
// C. Tensor infos
// ---------------------------------------------------------------------------------------------

function readTensorInfos(c: Cursor, n: number, alignment: number, allowUnsupported: boolean): GGUFTensorInfo[] {
  const out: GGUFTensorInfo[] = [];
  const seen = new Map<string, number>();
  let expected = 0; // D01: the running offset the next tensor must have
  for (let i = 0; i < n; i++) {
    const t = readTensorInfo(c, i, alignment, allowUnsupported, seen);
    const field = `tensor[${i}] "${t.name}".offset`;
    const offsetAt = c.pos - 8;
    if (t.relOffset !== expected) {
      c.fail("TENSOR_OFFSET_MISMATCH", field, `offset ${t.relOffset}, expected ${expected}: tensors must be packed in order, without gaps, overlap or aliasing`, offsetAt);
    }
    // D02: check the padding and the running total before doing them.
    if (t.nbytes > Number.MAX_SAFE_INTEGER - (alignment - 1)) {
      c.fail("TENSOR_NBYTES_TOO_BIG", `tensor[${i}] "${t.name}"`, `${t.nbytes} bytes overflows when padded to ${alignment}`, t.infoOffset);
    }
    const padded = alignUp(t.nbytes, alignment);
    if (expected > Number.MAX_SAFE_INTEGER - padded) {
      c.fail("TENSOR_NBYTES_TOO_BIG", `tensor[${i}] "${t.name}"`, "total tensor data size overflows 2^53-1", t.infoOffset);
    }
    expected += padded;
    seen.set(t.name, t.infoOffset);
    out.push(t);
  }
  return out;
}

function readTensorInfo(c: Cursor, i: number, alignment: number, allowUnsupported: boolean, seen: Map<string, number>): GGUFTensorInfo {
  const infoOffset = c.pos;
  const name = readTensorName(c, i);
  const field = `tensor[${i}] "${name}"`;
  if (seen.has(name)) c.fail("TENSOR_DUPLICATE_NAME", `${field}.name`, `tensor name "${name}" appears twice (first at offset ${seen.get(name)})`, infoOffset);

  const nDimsAt = c.pos;
  const nDims = c.u32(`${field}.n_dims`);
  if (nDims === 0 || nDims > MAX_DIMS) c.fail("TENSOR_BAD_N_DIMS", `${field}.n_dims`, `n_dims = ${nDims}, must be 1..${MAX_DIMS}`, nDimsAt);

  const dims: number[] = [];
  let nelements = 1n;
  for (let d = 0; d < nDims; d++) {
    const at = c.pos;
    const ne = c.u64(`${field}.ne[${d}]`);
    if (ne === 0n || ne >= INT64_SIGN) {
      c.fail("TENSOR_BAD_SHAPE", `${field}.ne[${d}]`, `ne[${d}] = ${BigInt.asIntN(64, ne)}: every dimension must be ≥ 1`, at);
    }
    nelements *= ne; // exact; C04 says never multiply-then-check in fixed width
    if (ne > MAX_SAFE || nelements > MAX_SAFE) {
      c.fail("TENSOR_NE_TOO_BIG", `${field}.ne[${d}]`, `element count ${nelements} (so far) is over 2^53-1`, at);
    }
    dims.push(Number(ne));
  }

  const typeAt = c.pos;
  const type = c.u32(`${field}.type`);
  const info = GGML_TYPES.get(type);
  if (!info || info.blockSize === 0) {
    const why = info ? `${info.name} was removed from ggml` : "unknown ggml type";
    c.fail("TENSOR_BAD_TYPE", `${field}.type`, `type ${type}: ${why}`, typeAt);
  }
  if (!info.supported && !allowUnsupported) {
    throw new UnsupportedQuantTypeError(name, type, info.name, { field: `${field}.type`, offset: typeAt, file: c.file });
  }
  if (dims[0]! % info.blockSize !== 0) {
    c.fail("TENSOR_BLOCK_MISALIGNED", `${field}.ne[0]`, `ne[0] = ${dims[0]} is not a multiple of ${info.name}'s block size ${info.blockSize}`, nDimsAt + 4);
  }
  const nbytes = (nelements / BigInt(info.blockSize)) * BigInt(info.typeSize);
  if (nbytes > MAX_SAFE) c.fail("TENSOR_NBYTES_TOO_BIG", `${field}`, `${nbytes} bytes is over 2^53-1`, nDimsAt + 4);

  const offsetAt = c.pos;
  const rel = c.u64(`${field}.offset`);
  if (rel > MAX_SAFE || rel % BigInt(alignment) !== 0n) {
    c.fail("TENSOR_BAD_OFFSET", `${field}.offset`, `offset ${rel} is not a multiple of the alignment ${alignment} (or is over 2^53-1)`, offsetAt);
  }
  return {
    name,
    dims,
    type,
    typeName: info.name,
    offset: -1, // set by placeTensorData once the data section start is known
    relOffset: Number(rel),
    nbytes: Number(nbytes),
    nelements: Number(nelements),
    infoOffset,
  };
}

/** C01: 1..63 bytes of valid UTF-8 with no control characters. */
function readTensorName(c: Cursor, i: number): string {
  const field = `tensor[${i}].name`;
  const at = c.pos;
  const len = c.u64(field);
  if (len === 0n) c.fail("TENSOR_BAD_NAME", field, "tensor name is empty", at);
  if (len > BigInt(MAX_TENSOR_NAME_BYTES)) c.fail("TENSOR_BAD_NAME", field, `tensor name is ${len} bytes; the limit is ${MAX_TENSOR_NAME_BYTES} (GGML_MAX_NAME 64 with the NUL)`, at);
  const n = Number(len);
  c.need(n, field);
  const raw = c.bytes.subarray(c.pos, c.pos + n);
  for (let j = 0; j < n; j++) {
    if (raw[j]! < 0x20 || raw[j] === 0x7f) c.fail("TENSOR_BAD_NAME", field, `tensor name has control byte 0x${raw[j]!.toString(16)}`, c.pos + j);
  }
  let name: string;
  try {
    name = utf8Strict.decode(raw);
  } catch {
    return c.fail("TENSOR_BAD_NAME", field, "tensor name is not valid UTF-8", c.pos);
  }
  c.pos += n;
  return name;
}

// ---------------------------------------------------------------------------------------------
// D. Data section
// ---------------------------------------------------------------------------------------------

/** D03: every tensor's bytes lie inside the file; fills in absolute offsets. */
function placeTensorData(c: Cursor, tensors: GGUFTensorInfo[], dataOffset: number): void {
  for (const t of tensors) {
    const start = BigInt(dataOffset) + BigInt(t.relOffset);
    const end = start + BigInt(t.nbytes);
    if (end > BigInt(c.size)) {
      c.fail("DATA_TRUNCATED", `tensor "${t.name}".data`, `file truncated: tensor ${t.name} needs bytes [${start}, ${end}) but file has ${c.size}`, Number(start > BigInt(c.size) ? c.size : start));
    }
    t.offset = Number(start);
  }
}

// ---------------------------------------------------------------------------------------------
// D05: a set of shards
// ---------------------------------------------------------------------------------------------

/**
 * Checks that parsed shards form one complete split model: same `split.count` (= number of
 * files), each `split.no` exactly once, the same `split.tensors.count` equal to the sum of the
 * shards' tensors, and no tensor in two shards. Returns the shards in `split.no` order and a
 * name → (shard index, tensor) index.
 */
export function validateSplit(shards: readonly GGUFFile[]): {
  shards: GGUFFile[];
  tensors: Map<string, { shard: number; tensor: GGUFTensorInfo }>;
} {
  function fail(detail: string, f?: GGUFFile, field = "split"): never {
    throw new GGUFError("SPLIT_INCONSISTENT", detail, { field, file: f?.fileName });
  }
  if (shards.length === 0) fail("no shards given");
  if (shards.length === 1 && !shards[0]!.split) return { shards: [shards[0]!], tensors: indexTensors([shards[0]!]) };

  const ordered = new Array<GGUFFile | undefined>(shards.length);
  const total = shards[0]!.split?.tensorsCount;
  for (const f of shards) {
    const s = f.split;
    if (!s) return fail("shard has no split.count / split.no keys", f, "split.count");
    if (s.count !== shards.length) fail(`split.count = ${s.count} but ${shards.length} shards were given`, f, "split.count");
    if (ordered[s.no]) fail(`split.no = ${s.no} appears in two shards`, f, "split.no");
    if (s.tensorsCount !== total) fail(`split.tensors.count = ${s.tensorsCount} differs from the first shard's ${total}`, f, "split.tensors.count");
    ordered[s.no] = f;
  }
  const done = ordered as GGUFFile[];
  const tensors = indexTensors(done);
  if (total !== undefined && tensors.size !== total) fail(`the shards hold ${tensors.size} tensors but split.tensors.count = ${total}`, done[0], "split.tensors.count");
  return { shards: done, tensors };
}

function indexTensors(shards: GGUFFile[]): Map<string, { shard: number; tensor: GGUFTensorInfo }> {
  const index = new Map<string, { shard: number; tensor: GGUFTensorInfo }>();
  shards.forEach((f, shard) => {
    for (const tensor of f.tensors) {
      const prev = index.get(tensor.name);
      if (prev) {
        throw new GGUFError("SPLIT_INCONSISTENT", `tensor "${tensor.name}" is in shard ${prev.shard} and shard ${shard}`, {
          field: `tensor "${tensor.name}"`,
          offset: tensor.infoOffset,
          file: f.fileName,
        });
      }
      index.set(tensor.name, { shard, tensor });
    }
  });
  return index;
}
