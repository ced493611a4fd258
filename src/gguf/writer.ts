/**
 * GGUF v3 writer, for synthetic test models and crafted files. Each KV is encoded once when it
 * is added; tensor data is kept by reference and copied exactly once, into the output buffer
 * (`toBytes`) or straight to the file (`write`), so hundreds of MB cost one pass.
 *
 * By default it refuses to produce a file the reader would reject. `{ unchecked: true }` turns
 * the semantic checks off (duplicate keys, empty or long names, odd alignment types, data of the
 * wrong length) so test/gguf/crafted.ts can build malformed files; `layout()` says where each
 * field landed, for byte patching.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { GGUFError } from "./errors";
import {
  GGML_TYPES,
  GGUFValueType,
  VALUE_TYPE_SIZE,
  alignUp,
  isValueType,
  tensorBytesBig,
  valueTypeName,
} from "./types";

export interface WriterOptions {
  /** Data alignment; written as `general.alignment` (u32) when given. Default 32. */
  alignment?: number;
  /** Header version field. Default 3. */
  version?: number;
  /** Skip semantic checks, to craft invalid files. */
  unchecked?: boolean;
}

/** Values addKV accepts: numbers, bigints (64-bit ints), booleans, strings or raw string bytes. */
export type WriterScalar = number | bigint | boolean | string | Uint8Array;
export type WriterArray = ArrayLike<number | bigint | boolean | string> | ArrayBufferView;

export interface KVLayout {
  key: string;
  /** Offset of the key's length field. */
  offset: number;
  typeOffset: number;
  /** Offset of the value (for arrays: the element type field). */
  valueOffset: number;
  end: number;
}

export interface TensorLayout {
  name: string;
  infoOffset: number;
  nDimsOffset: number;
  neOffset: number;
  typeOffset: number;
  offsetOffset: number;
  /** Absolute offset of the data. */
  dataOffset: number;
  nbytes: number;
}

export interface WriterLayout {
  kvs: KVLayout[];
  tensors: TensorLayout[];
  infosOffset: number;
  /** Start of the data section. */
  dataOffset: number;
  totalSize: number;
}

interface PendingKV {
  key: string;
  /** key length + key + type + value, little-endian, ready to copy. */
  bytes: Uint8Array;
  keyBytes: number;
}

interface PendingTensor {
  name: Uint8Array;
  nameStr: string;
  dims: (number | bigint)[];
  type: number;
  data: Uint8Array;
}

const utf8 = new TextEncoder();

/**
 * Writes GGUF v3 files (synthetic models for tests, crafted files): add metadata with `addKV` /
 * `addArray` and tensors with `addTensor`, then `toBytes()` or `write(path)`. By default it refuses
 * to produce a file the reader would reject (`unchecked: true` allows it).
 */
export class GGUFWriter {
  /** Data alignment in bytes (a power of two; default 32). */
  readonly alignment: number;
  /** The header's version field (default 3). */
  readonly version: number;
  /** Whether the semantic checks are off (to craft invalid files). */
  readonly unchecked: boolean;
  private kvs: PendingKV[] = [];
  private keys = new Set<string>();
  private tensors: PendingTensor[] = [];
  private names = new Set<string>();

  constructor(opts: WriterOptions = {}) {
    this.alignment = opts.alignment ?? 32;
    this.version = opts.version ?? 3;
    this.unchecked = opts.unchecked ?? false;
    const a = this.alignment;
    if (!Number.isInteger(a) || a < 1 || a > 1 << 20 || (a & (a - 1)) !== 0) {
      throw invalid(`alignment ${a} must be a power of two in [1, 2^20]`, "alignment");
    }
    if (opts.alignment !== undefined) this.addKV("general.alignment", GGUFValueType.UINT32, a);
  }

  /** Adds a KV pair. For ARRAY, pass `elemType` and an array-like (typed arrays are fastest). */
  addKV(key: string, type: GGUFValueType, value: WriterScalar | WriterArray, elemType?: GGUFValueType): this {
    if (!this.unchecked) this.checkKey(key, type, value);
    const keyBytes = utf8.encode(key);
    const enc = new Encoder(keyBytes.length + 64);
    enc.u64(keyBytes.length);
    enc.bytes(keyBytes);
    enc.u32(type);
    if (type === GGUFValueType.ARRAY) {
      if (elemType === undefined) throw invalid("an ARRAY value needs elemType", key);
      encodeArray(enc, elemType, value as WriterArray, key);
    } else {
      encodeScalar(enc, type, value as WriterScalar, key);
    }
    this.kvs.push({ key, bytes: enc.finish(), keyBytes: keyBytes.length });
    this.keys.add(key);
    return this;
  }

  /** Adds an ARRAY KV pair of `elemType` elements (addKV with type ARRAY). */
  addArray(key: string, elemType: GGUFValueType, values: WriterArray): this {
    return this.addKV(key, GGUFValueType.ARRAY, values, elemType);
  }

  /** Adds a tensor; `dims` in ggml order (dims[0] innermost). The data is not copied here. */
  addTensor(name: string, dims: readonly (number | bigint)[], type: number, data: ArrayBufferView): this {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (!this.unchecked) this.checkTensor(name, dims, type, bytes);
    this.tensors.push({ name: utf8.encode(name), nameStr: name, dims: [...dims], type, data: bytes });
    this.names.add(name);
    return this;
  }

  /** Where every field goes; the same plan drives toBytes() and write(). */
  layout(): WriterLayout {
    let pos = 24;
    const kvs: KVLayout[] = this.kvs.map((kv) => {
      const offset = pos;
      pos += kv.bytes.length;
      const typeOffset = offset + 8 + kv.keyBytes;
      return { key: kv.key, offset, typeOffset, valueOffset: typeOffset + 4, end: pos };
    });
    const infosOffset = pos;
    const infos = this.tensors.map((t) => {
      const infoOffset = pos;
      const nDimsOffset = infoOffset + 8 + t.name.length;
      const neOffset = nDimsOffset + 4;
      const typeOffset = neOffset + 8 * t.dims.length;
      const offsetOffset = typeOffset + 4;
      pos = offsetOffset + 8;
      return { name: t.nameStr, infoOffset, nDimsOffset, neOffset, typeOffset, offsetOffset, nbytes: t.data.length };
    });
    const dataOffset = alignUp(pos, this.alignment);
    let rel = 0;
    const tensors: TensorLayout[] = infos.map((t) => {
      const out = { ...t, dataOffset: dataOffset + rel };
      rel += alignUp(t.nbytes, this.alignment);
      return out;
    });
    return { kvs, tensors, infosOffset, dataOffset, totalSize: dataOffset + rel };
  }

  /** The whole file in one buffer. */
  toBytes(): Uint8Array {
    const plan = this.layout();
    const out = new Uint8Array(plan.totalSize); // zeroed: padding needs no writes
    this.writeHeaderInto(out, plan);
    plan.tensors.forEach((t, i) => out.set(this.tensors[i]!.data, t.dataOffset));
    return out;
  }

  /** Streams the file to `path` without building it in memory; returns its size in bytes. */
  write(path: string): number {
    const plan = this.layout();
    const head = new Uint8Array(plan.dataOffset);
    this.writeHeaderInto(head, plan);
    const zeros = new Uint8Array(this.alignment);
    const fd = openSync(path, "w");
    try {
      writeAll(fd, head);
      plan.tensors.forEach((t, i) => {
        writeAll(fd, this.tensors[i]!.data);
        writeAll(fd, zeros.subarray(0, alignUp(t.nbytes, this.alignment) - t.nbytes));
      });
    } finally {
      closeSync(fd);
    }
    return plan.totalSize;
  }

  /** Header, KVs and tensor infos (plus zero padding) into `out[0, plan.dataOffset)`. */
  private writeHeaderInto(out: Uint8Array, plan: WriterLayout): void {
    const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
    out.set([0x47, 0x47, 0x55, 0x46], 0); // "GGUF"
    v.setUint32(4, this.version, true);
    v.setBigUint64(8, BigInt(this.tensors.length), true);
    v.setBigUint64(16, BigInt(this.kvs.length), true);
    this.kvs.forEach((kv, i) => out.set(kv.bytes, plan.kvs[i]!.offset));
    plan.tensors.forEach((l, i) => {
      const t = this.tensors[i]!;
      v.setBigUint64(l.infoOffset, BigInt(t.name.length), true);
      out.set(t.name, l.infoOffset + 8);
      v.setUint32(l.nDimsOffset, t.dims.length, true);
      t.dims.forEach((d, j) => v.setBigUint64(l.neOffset + 8 * j, BigInt.asUintN(64, BigInt(d)), true));
      v.setUint32(l.typeOffset, t.type, true);
      v.setBigUint64(l.offsetOffset, BigInt(l.dataOffset - plan.dataOffset), true);
    });
  }

  private checkKey(key: string, type: number, value: unknown): void {
    if (key.length === 0 || key.length > 65535 || !/^[\x20-\x7e]+$/.test(key)) {
      throw invalid("key must be 1..65535 printable ASCII characters", key);
    }
    if (this.keys.has(key)) throw invalid("duplicate key", key);
    if (!isValueType(type)) throw invalid(`bad value type ${type}`, key);
    if (key === "general.alignment") {
      if (type !== GGUFValueType.UINT32 || value !== this.alignment) {
        throw invalid(`general.alignment must be u32 ${this.alignment} (set it with the alignment option)`, key);
      }
    }
  }

  private checkTensor(name: string, dims: readonly (number | bigint)[], type: number, data: Uint8Array): void {
    const nameBytes = utf8.encode(name).length;
    if (nameBytes < 1 || nameBytes > 63) throw invalid("tensor name must be 1..63 bytes", name);
    if (this.names.has(name)) throw invalid("duplicate tensor name", name);
    if (dims.length < 1 || dims.length > 4) throw invalid(`${dims.length} dims; must be 1..4`, name);
    const info = GGML_TYPES.get(type);
    if (!info || info.blockSize === 0) throw invalid(`unknown or removed ggml type ${type}`, name);
    for (const d of dims) if (BigInt(d) < 1n) throw invalid(`dims [${dims.join(", ")}] must all be ≥ 1`, name);
    const want = tensorBytesBig(type, dims);
    if (want === undefined) throw invalid(`ne[0] = ${dims[0]} is not a multiple of ${info.name}'s block size ${info.blockSize}`, name);
    if (want !== BigInt(data.length)) throw invalid(`data is ${data.length} bytes; ${info.name} [${dims.join(", ")}] needs ${want}`, name);
  }
}

function invalid(detail: string, field: string): GGUFError {
  return new GGUFError("WRITER_INVALID", detail, { field });
}

function writeAll(fd: number, b: Uint8Array): void {
  let done = 0;
  while (done < b.length) done += writeSync(fd, b, done, b.length - done);
}

// ---------------------------------------------------------------------------------------------
// Value encoding
// ---------------------------------------------------------------------------------------------

/** A growable little-endian byte sink (amortized doubling; one finish() copy). */
class Encoder {
  buf: Uint8Array;
  view: DataView;
  pos = 0;

  constructor(capacity: number) {
    this.buf = new Uint8Array(capacity);
    this.view = new DataView(this.buf.buffer);
  }

  reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u32(v: number): void {
    this.reserve(4);
    this.view.setUint32(this.pos, v, true);
    this.pos += 4;
  }

  u64(v: number | bigint): void {
    this.reserve(8);
    this.view.setBigUint64(this.pos, BigInt.asUintN(64, BigInt(v)), true);
    this.pos += 8;
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** A GGUF string: u64 byte length, then UTF-8 (or the raw bytes given). */
  string(s: string | Uint8Array): void {
    if (typeof s !== "string") {
      this.u64(s.length);
      this.bytes(s);
      return;
    }
    this.reserve(8 + s.length * 3); // UTF-8 needs at most 3 bytes per UTF-16 unit
    const { written } = utf8.encodeInto(s, this.buf.subarray(this.pos + 8));
    this.view.setBigUint64(this.pos, BigInt(written), true);
    this.pos += 8 + written;
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

const INT_RANGE: Partial<Record<number, [number, number]>> = {
  [GGUFValueType.UINT8]: [0, 0xff],
  [GGUFValueType.INT8]: [-0x80, 0x7f],
  [GGUFValueType.UINT16]: [0, 0xffff],
  [GGUFValueType.INT16]: [-0x8000, 0x7fff],
  [GGUFValueType.UINT32]: [0, 0xffffffff],
  [GGUFValueType.INT32]: [-0x80000000, 0x7fffffff],
};

function encodeScalar(enc: Encoder, type: number, value: WriterScalar, field: string): void {
  const wrong = () => invalid(`${String(value)} is not a valid ${valueTypeName(type)}`, field);
  const range = INT_RANGE[type];
  if (range) {
    if (typeof value !== "number" || !Number.isInteger(value) || value < range[0] || value > range[1]) throw wrong();
  }
  enc.reserve(8);
  const v = enc.view;
  const p = enc.pos;
  switch (type) {
    case GGUFValueType.UINT8: v.setUint8(p, value as number); break;
    case GGUFValueType.INT8: v.setInt8(p, value as number); break;
    case GGUFValueType.UINT16: v.setUint16(p, value as number, true); break;
    case GGUFValueType.INT16: v.setInt16(p, value as number, true); break;
    case GGUFValueType.UINT32: v.setUint32(p, value as number, true); break;
    case GGUFValueType.INT32: v.setInt32(p, value as number, true); break;
    case GGUFValueType.FLOAT32:
    case GGUFValueType.FLOAT64:
      if (typeof value !== "number") throw wrong();
      if (type === GGUFValueType.FLOAT32) v.setFloat32(p, value, true);
      else v.setFloat64(p, value, true);
      break;
    case GGUFValueType.BOOL:
      if (typeof value !== "boolean") throw wrong();
      v.setUint8(p, value ? 1 : 0);
      break;
    case GGUFValueType.UINT64:
    case GGUFValueType.INT64: {
      if (typeof value !== "bigint" && !(typeof value === "number" && Number.isSafeInteger(value))) throw wrong();
      const b = BigInt(value as number | bigint);
      const ok = type === GGUFValueType.UINT64 ? BigInt.asUintN(64, b) === b : BigInt.asIntN(64, b) === b;
      if (!ok) throw wrong();
      v.setBigUint64(p, BigInt.asUintN(64, b), true);
      break;
    }
    case GGUFValueType.STRING:
      if (typeof value !== "string" && !(value instanceof Uint8Array)) throw wrong();
      enc.string(value);
      return;
    default:
      throw invalid(`value type ${type} is not a scalar type`, field);
  }
  enc.pos += VALUE_TYPE_SIZE[type]!;
}

/** Typed-array constructors whose bytes are already the GGUF encoding of an element type. */
const NATIVE: Partial<Record<number, Function>> = {
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

function encodeArray(enc: Encoder, elemType: number, values: WriterArray, field: string): void {
  if (elemType === GGUFValueType.ARRAY || !isValueType(elemType)) throw invalid(`bad array element type ${elemType}`, field);
  const arr = values as ArrayLike<WriterScalar>;
  enc.u32(elemType);
  enc.u64(arr.length);
  // Fast path: a typed array of the matching element type is copied as bytes.
  if (ArrayBuffer.isView(values) && NATIVE[elemType] && values.constructor === NATIVE[elemType]) {
    enc.bytes(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    return;
  }
  if (elemType === GGUFValueType.STRING) {
    for (let i = 0; i < arr.length; i++) {
      const s = arr[i];
      if (typeof s !== "string" && !(s instanceof Uint8Array)) throw invalid(`element ${i} is not a string`, field);
      enc.string(s);
    }
    return;
  }
  enc.reserve(arr.length * VALUE_TYPE_SIZE[elemType]!);
  for (let i = 0; i < arr.length; i++) encodeScalar(enc, elemType, arr[i]!, `${field}[${i}]`);
}
