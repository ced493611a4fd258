/**
 * GGUF value types and the ggml tensor-type traits table (block size, bytes per block, name,
 * whether kiln has kernels for it). Values are ggml's (`include/ggml.h`, `src/ggml-common.h`).
 */
import { GGUFError } from "./errors";

// ---------------------------------------------------------------------------------------------
// Metadata value types
// ---------------------------------------------------------------------------------------------

export const GGUFValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GGUFValueType = (typeof GGUFValueType)[keyof typeof GGUFValueType];
type VT = typeof GGUFValueType;

export const GGUF_VALUE_TYPE_NAMES: readonly string[] = [
  "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
];

export const valueTypeName = (t: number): string => GGUF_VALUE_TYPE_NAMES[t] ?? `type#${t}`;

/** Encoded size of a fixed-size value type; 0 for STRING and ARRAY (variable). */
export const VALUE_TYPE_SIZE: readonly number[] = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];

export const isValueType = (t: number): t is GGUFValueType => Number.isInteger(t) && t >= 0 && t <= 12;

type Located = {
  /** File offset of the KV pair (its key length field): where to look when the value is wrong. */
  offset: number;
};

/** A decoded metadata value. It keeps its GGUF type so callers can insist on one. */
export type GGUFScalar =
  | { type: VT["UINT8"] | VT["INT8"] | VT["UINT16"] | VT["INT16"]; value: number }
  | { type: VT["UINT32"] | VT["INT32"] | VT["FLOAT32"] | VT["FLOAT64"]; value: number }
  | { type: VT["UINT64"] | VT["INT64"]; value: bigint }
  | { type: VT["BOOL"]; value: boolean }
  | { type: VT["STRING"]; value: string };

/** Arrays of numbers come back as typed arrays (a copy, never a view of the file). */
export type GGUFArray =
  | { type: VT["ARRAY"]; elemType: VT["UINT8"]; value: Uint8Array }
  | { type: VT["ARRAY"]; elemType: VT["INT8"]; value: Int8Array }
  | { type: VT["ARRAY"]; elemType: VT["UINT16"]; value: Uint16Array }
  | { type: VT["ARRAY"]; elemType: VT["INT16"]; value: Int16Array }
  | { type: VT["ARRAY"]; elemType: VT["UINT32"]; value: Uint32Array }
  | { type: VT["ARRAY"]; elemType: VT["INT32"]; value: Int32Array }
  | { type: VT["ARRAY"]; elemType: VT["FLOAT32"]; value: Float32Array }
  | { type: VT["ARRAY"]; elemType: VT["UINT64"]; value: BigUint64Array }
  | { type: VT["ARRAY"]; elemType: VT["INT64"]; value: BigInt64Array }
  | { type: VT["ARRAY"]; elemType: VT["FLOAT64"]; value: Float64Array }
  | { type: VT["ARRAY"]; elemType: VT["BOOL"]; value: boolean[] }
  | { type: VT["ARRAY"]; elemType: VT["STRING"]; value: string[] };

export type GGUFValue = (GGUFScalar | GGUFArray) & Located;

// ---------------------------------------------------------------------------------------------
// ggml tensor types
// ---------------------------------------------------------------------------------------------

export interface GGMLTypeInfo {
  id: number;
  name: string;
  /** Elements per block; 0 for ids ggml has removed (the file is from a dead format). */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
  /** kiln has kernels for it. */
  supported: boolean;
}

export const GGMLType = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q8_1: 9,
  Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, Q8_K: 15,
  IQ2_XXS: 16, IQ2_XS: 17, IQ3_XXS: 18, IQ1_S: 19, IQ4_NL: 20, IQ3_S: 21, IQ2_S: 22, IQ4_XS: 23,
  I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, IQ1_M: 29, BF16: 30,
  TQ1_0: 34, TQ2_0: 35, MXFP4: 39,
} as const;
export type GGMLTypeName = keyof typeof GGMLType;

/** [id, name, block size, bytes per block, kiln supports it]. */
const TABLE: ReadonlyArray<readonly [number, string, number, number, boolean]> = [
  [0, "F32", 1, 4, true],
  [1, "F16", 1, 2, true],
  [2, "Q4_0", 32, 18, true],
  [3, "Q4_1", 32, 20, true],
  [4, "Q4_2", 0, 0, false], // removed from ggml in 2023
  [5, "Q4_3", 0, 0, false], // removed
  [6, "Q5_0", 32, 22, true],
  [7, "Q5_1", 32, 24, true],
  [8, "Q8_0", 32, 34, true],
  [9, "Q8_1", 32, 36, false],
  [10, "Q2_K", 256, 84, false],
  [11, "Q3_K", 256, 110, false],
  [12, "Q4_K", 256, 144, true],
  [13, "Q5_K", 256, 176, true],
  [14, "Q6_K", 256, 210, true],
  [15, "Q8_K", 256, 292, false],
  [16, "IQ2_XXS", 256, 66, false],
  [17, "IQ2_XS", 256, 74, false],
  [18, "IQ3_XXS", 256, 98, false],
  [19, "IQ1_S", 256, 50, false],
  [20, "IQ4_NL", 32, 18, false],
  [21, "IQ3_S", 256, 110, false],
  [22, "IQ2_S", 256, 82, false],
  [23, "IQ4_XS", 256, 136, false],
  [24, "I8", 1, 1, false],
  [25, "I16", 1, 2, false],
  [26, "I32", 1, 4, false],
  [27, "I64", 1, 8, false],
  [28, "F64", 1, 8, false],
  [29, "IQ1_M", 256, 56, false],
  [30, "BF16", 1, 2, true],
  [31, "Q4_0_4_4", 0, 0, false], // removed (repacked at load time now)
  [32, "Q4_0_4_8", 0, 0, false], // removed
  [33, "Q4_0_8_8", 0, 0, false], // removed
  [34, "TQ1_0", 256, 54, false],
  [35, "TQ2_0", 256, 66, false],
  [36, "IQ4_NL_4_4", 0, 0, false], // removed
  [37, "IQ4_NL_4_8", 0, 0, false], // removed
  [38, "IQ4_NL_8_8", 0, 0, false], // removed
  [39, "MXFP4", 32, 17, false],
];

export const GGML_TYPES: ReadonlyMap<number, GGMLTypeInfo> = new Map(
  TABLE.map(([id, name, blockSize, typeSize, supported]) => [id, { id, name, blockSize, typeSize, supported }]),
);

/** Type ids kiln's kernels run; mirrors `DTYPE_IDS` in src/tensor.ts. */
export const SUPPORTED_GGML_TYPES: readonly number[] = TABLE.filter((r) => r[4]).map((r) => r[0]);

export const ggmlTypeInfo = (id: number): GGMLTypeInfo | undefined => GGML_TYPES.get(id);
export const ggmlTypeName = (id: number): string => GGML_TYPES.get(id)?.name ?? `type#${id}`;

// ---------------------------------------------------------------------------------------------
// Checked size arithmetic
// ---------------------------------------------------------------------------------------------

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * Bytes of a tensor of shape `ne` (ggml order, ne[0] innermost), exactly, as a BigInt, so the
 * caller can compare it with limits without any intermediate rounding. Returns undefined if the
 * type is unknown/removed or ne[0] is not a whole number of blocks.
 */
export function tensorBytesBig(type: number, ne: readonly (number | bigint)[]): bigint | undefined {
  const info = GGML_TYPES.get(type);
  if (!info || info.blockSize === 0 || ne.length === 0) return undefined;
  const ne0 = BigInt(ne[0]!);
  const blk = BigInt(info.blockSize);
  if (ne0 < 0n || ne0 % blk !== 0n) return undefined;
  let n = (ne0 / blk) * BigInt(info.typeSize);
  for (let i = 1; i < ne.length; i++) {
    const d = BigInt(ne[i]!);
    if (d < 0n) return undefined;
    n *= d;
  }
  return n;
}

function safeBytes(what: string, type: number, ne: readonly number[]): number {
  for (const d of ne) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new GGUFError("TENSOR_BAD_SHAPE", `${what}: dimension ${d} is not a non-negative safe integer`, { field: "ne" });
    }
  }
  const n = tensorBytesBig(type, ne);
  if (n === undefined) {
    const info = GGML_TYPES.get(type);
    if (!info || info.blockSize === 0) {
      throw new GGUFError("TENSOR_BAD_TYPE", `${what}: unknown or removed ggml type ${type}`, { field: "type" });
    }
    throw new GGUFError(
      "TENSOR_BLOCK_MISALIGNED",
      `${what}: ne[0] = ${ne[0]} is not a multiple of ${info.name}'s block size ${info.blockSize}`,
      { field: "ne[0]" },
    );
  }
  if (n > MAX_SAFE) {
    throw new GGUFError("TENSOR_NBYTES_TOO_BIG", `${what}: ${n} bytes exceeds 2^53-1`, { field: "ne" });
  }
  return Number(n);
}

/** Bytes of one row of `ne0` elements of `type` (throws GGUFError if not whole blocks). */
export const rowBytes = (type: number, ne0: number): number => safeBytes("rowBytes", type, [ne0]);

/** Bytes of a tensor of shape `ne` (ggml order), with every product checked. */
export const tensorBytes = (type: number, ne: readonly number[]): number => safeBytes("tensorBytes", type, ne);

/** Round `n` up to a multiple of `align` (a power of two); exact for safe integers. */
export function alignUp(n: number, align: number): number {
  const r = n % align;
  return r === 0 ? n : n + (align - r);
}
