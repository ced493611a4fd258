/**
 * Launchers of the weight kernels: cuda/matvec.cu (decode, m ≤ MATVEC_MAX_ROWS activation rows,
 * plain and gate/up fused), cuda/matmul.cu (prefill on the tensor cores) and cuda/embed.cu
 * (embedding rows). Weights are device
 * copies of the GGUF bytes: row-major [n rows][k elements], each row a whole number of its
 * type's blocks; activations and outputs are f32.
 *
 * Every size is checked against the buffers before a launch; a bad one throws a KilnError
 * (ShapeError for a k that is not a whole number of blocks) naming the op and the buffer.
 * Weight buffers must start 16-byte aligned (the kernels read q4_k/q5_k blocks and float rows
 * as 16-byte words); x and out 4-byte aligned.
 *
 * Precision: the mat-vec multiplies the exactly dequantized weights by x in f32; the tensor-core
 * matmul rounds x and the dequantized weights to f16 and sums in f32 (see cuda/matmul.cu).
 */
import { KilnError } from "../../../errors";
import { DTYPE_IDS, rowBytes, type DType } from "../../../tensor";
import type { GatedActivation } from "../../backend";
import { KernelArgs, expectBytes, expectInt, type DeviceBuffer, type DeviceRuntime } from "../runtime";
import { geluTanhMul, siluMul } from "./activations";

/** The most activation rows the mat-vec kernels take; linear() uses the tensor-core matmul above it. */
export const MATVEC_MAX_ROWS = 8;

/** Output rows per mat-vec block (one warp each): cuda/matvec.cu KMV_WARPS. */
const MATVEC_ROWS_PER_BLOCK = 8;
/** Output tile of a matmul block (cuda/matmul.cu KMM_BM × KMM_BN) and its threads. */
const MATMUL_TILE_M = 64;
const MATMUL_TILE_N = 64;
const MATMUL_THREADS = 128;
/** Elements one get_rows thread writes. */
const GET_ROWS_PIECE = 16;

/** Largest grid y / z (CUDA). */
const MAX_GRID_Y = 65535;

/** The weight types these kernels read (every dtype kiln reads). */
export const WEIGHT_DTYPES: readonly DType[] = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k"];

function fail(op: string, msg: string): never {
  throw new KilnError("SHAPE", `${op}: ${msg}`);
}

function expectDType(op: string, dtype: DType): void {
  if (!WEIGHT_DTYPES.includes(dtype)) throw new KilnError("UNSUPPORTED_TENSOR_TYPE", `${op}: no CUDA kernel reads ${String(dtype)} weights`);
}

function expectAligned(op: string, what: string, b: DeviceBuffer, align: number): void {
  if (b.ptr % align !== 0) fail(op, `${what} (${b.label}) must start ${align}-byte aligned (address ${b.ptr})`);
}

/** Checks a weight matrix [n][k] of dtype in w; returns its row bytes. */
function checkWeight(op: string, what: string, dtype: DType, w: DeviceBuffer, n: number, k: number): number {
  expectDType(op, dtype);
  expectInt(op, "n", n, 1);
  expectInt(op, "k", k, 1);
  const rb = rowBytes(dtype, k, op);
  expectBytes(op, `${what} (${n} rows of ${k} ${dtype})`, w, n * rb);
  expectAligned(op, what, w, 16);
  return rb;
}

/** Checks x [m][k] (row stride ldx) and out [m][n] (row stride ldo), f32. */
function checkActs(op: string, x: DeviceBuffer, out: DeviceBuffer, n: number, k: number, m: number, ldx: number, ldo: number): void {
  expectInt(op, "m", m, 1);
  expectInt(op, "ldx", ldx, k);
  expectInt(op, "ldo", ldo, n);
  expectBytes(op, `x (${m} rows of ${k} f32, stride ${ldx})`, x, ((m - 1) * ldx + k) * 4);
  expectBytes(op, `out (${m} rows of ${n} f32, stride ${ldo})`, out, ((m - 1) * ldo + n) * 4);
  expectAligned(op, "x", x, 4);
  expectAligned(op, "out", out, 4);
}

function actId(op: string, act: GatedActivation | number): number {
  if (act === "silu" || act === 0) return 0;
  if (act === "gelu_tanh" || act === 1) return 1;
  fail(op, `unknown activation ${String(act)} (silu or gelu_tanh, 0 or 1)`);
}

/**
 * out[r·ldo + j] = W[j, :] · x[r·ldx + :] for j < n, r < m ≤ MATVEC_MAX_ROWS (decode): one warp
 * per output row reads the weights once for all m rows.
 */
export function matvec(rt: DeviceRuntime, dtype: DType, w: DeviceBuffer, x: DeviceBuffer, out: DeviceBuffer, n: number, k: number, m: number, ldx = k, ldo = n): void {
  const op = "matvec";
  checkWeight(op, "w", dtype, w, n, k);
  checkActs(op, x, out, n, k, m, ldx, ldo);
  if (m > MATVEC_MAX_ROWS) fail(op, `m = ${m} rows exceeds the mat-vec's ${MATVEC_MAX_ROWS} (use matmul)`);
  const args = new KernelArgs().ptr(w).ptr(x).ptr(out).i32(n).i32(k).i32(m).i32(ldx).i32(ldo).bytes();
  rt.launch(`kiln_matvec_${dtype}`, [Math.ceil(n / MATVEC_ROWS_PER_BLOCK), 1, 1], [32 * MATVEC_ROWS_PER_BLOCK, 1, 1], 0, args);
}

/**
 * out[r·n + j] = act(gate[j]·x_r) · (up[j]·x_r) for m ≤ MATVEC_MAX_ROWS rows in one pass over
 * both weights (act: "silu"/0 or "gelu_tanh"/1). x rows are k apart, out rows n apart.
 */
export function matvecGated(rt: DeviceRuntime, dtype: DType, gate: DeviceBuffer, up: DeviceBuffer, x: DeviceBuffer, out: DeviceBuffer, n: number, k: number, m: number, act: GatedActivation | number): void {
  const op = "matvecGated";
  checkWeight(op, "gate", dtype, gate, n, k);
  checkWeight(op, "up", dtype, up, n, k);
  checkActs(op, x, out, n, k, m, k, n);
  if (m > MATVEC_MAX_ROWS) fail(op, `m = ${m} rows exceeds the mat-vec's ${MATVEC_MAX_ROWS}`);
  const a = actId(op, act);
  const args = new KernelArgs().ptr(gate).ptr(up).ptr(x).ptr(out).i32(n).i32(k).i32(m).i32(k).i32(n).i32(a).bytes();
  rt.launch(`kiln_matvec_gated_${dtype}`, [Math.ceil(n / MATVEC_ROWS_PER_BLOCK), 1, 1], [32 * MATVEC_ROWS_PER_BLOCK, 1, 1], 0, args);
}

/**
 * out[r·ldo + j] = W[j, :] · x[r·ldx + :] on the tensor cores (x and the dequantized weights
 * rounded to f16, f32 sums): any m ≥ 1, meant for m > MATVEC_MAX_ROWS.
 */
export function matmul(rt: DeviceRuntime, dtype: DType, w: DeviceBuffer, x: DeviceBuffer, out: DeviceBuffer, n: number, k: number, m: number, ldx = k, ldo = n): void {
  const op = "matmul";
  checkWeight(op, "w", dtype, w, n, k);
  checkActs(op, x, out, n, k, m, ldx, ldo);
  const gy = Math.ceil(m / MATMUL_TILE_M);
  if (gy > MAX_GRID_Y) fail(op, `m = ${m} rows exceeds ${MAX_GRID_Y * MATMUL_TILE_M}`);
  const args = new KernelArgs().ptr(w).ptr(x).ptr(out).i32(n).i32(k).i32(m).i32(ldx).i32(ldo).bytes();
  rt.launch(`kiln_matmul_${dtype}`, [Math.ceil(n / MATMUL_TILE_N), gy, 1], [MATMUL_THREADS, 1, 1], 0, args);
}

/** out [m][n] = x [m][k] · Wᵀ: the mat-vec for m ≤ MATVEC_MAX_ROWS, the tensor-core matmul above. */
export function linear(rt: DeviceRuntime, dtype: DType, w: DeviceBuffer, x: DeviceBuffer, out: DeviceBuffer, n: number, k: number, m: number): void {
  if (m <= MATVEC_MAX_ROWS) matvec(rt, dtype, w, x, out, n, k, m);
  else matmul(rt, dtype, w, x, out, n, k, m);
}

/**
 * The gated FFN's first half, out [m][n] = act(x·gateᵀ) ⊙ (x·upᵀ): one fused mat-vec for
 * m ≤ MATVEC_MAX_ROWS; above, two tensor-core matmuls (gate into out, up into tmp, which needs
 * m·n f32) and the activation (activations.ts siluMul / geluTanhMul).
 */
export function gatedFfn(rt: DeviceRuntime, dtype: DType, gate: DeviceBuffer, up: DeviceBuffer, x: DeviceBuffer, out: DeviceBuffer, n: number, k: number, m: number, act: GatedActivation | number, tmp?: DeviceBuffer | null): void {
  const op = "gatedFfn";
  if (m <= MATVEC_MAX_ROWS) {
    matvecGated(rt, dtype, gate, up, x, out, n, k, m, act);
    return;
  }
  const a = actId(op, act);
  if (!tmp) fail(op, `${m} rows need a tmp buffer of ${m * n} f32`);
  expectBytes(op, `tmp (${m} rows of ${n} f32)`, tmp, m * n * 4);
  matmul(rt, dtype, gate, x, out, n, k, m);
  matmul(rt, dtype, up, x, tmp, n, k, m);
  (a === 0 ? siluMul : geluTanhMul)(rt, out, tmp, out, m * n);
}

/**
 * out[i, :] = dequantize(table[ids[i], :]) for i < nIds (f32 rows of `cols`), bit-identical to
 * the CPU's dequantization. ids (i32) must be in [0, nRows): the caller checks them on the host
 * (they are device data here).
 */
export function getRows(rt: DeviceRuntime, dtype: DType, table: DeviceBuffer, ids: DeviceBuffer, out: DeviceBuffer, nIds: number, cols: number, nRows: number): void {
  const op = "getRows";
  const rb = checkWeight(op, "table", dtype, table, nRows, cols);
  expectInt(op, "nIds", nIds, 1);
  expectInt(op, "row bytes", rb, 1);
  expectBytes(op, `ids (${nIds} i32)`, ids, nIds * 4);
  expectBytes(op, `out (${nIds} rows of ${cols} f32)`, out, nIds * cols * 4);
  expectAligned(op, "ids", ids, 4);
  expectAligned(op, "out", out, 4);
  const pieces = Math.ceil(cols / GET_ROWS_PIECE);
  const threads = Math.min(128, Math.ceil(pieces / 32) * 32);
  const gy = Math.ceil(pieces / threads);
  if (gy > MAX_GRID_Y) fail(op, `rows of ${cols} elements are too long`);
  const args = new KernelArgs().ptr(table).ptr(ids).ptr(out).i32(nIds).i32(cols).i32(DTYPE_IDS[dtype]).i32(rb).bytes();
  rt.launch("kiln_get_rows", [nIds, gy, 1], [threads, 1, 1], 0, args);
}
