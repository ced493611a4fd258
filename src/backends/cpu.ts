/**
 * The CPU op set: each op checks dtypes, shapes and byte lengths in TypeScript, then makes one
 * FFI call. A mismatch throws a ShapeError naming the op and the shapes; nothing malformed ever
 * reaches a kernel.
 */
import { KilnError } from "../errors";
import { kiln, limits, Status } from "../ffi/library";
import { ACT_FORMAT, DTYPE_IDS, DTYPE_LAYOUT, NativeBuffer, ShapeError, Tensor, rowBytes, type DType } from "../tensor";
import type { AttentionOptions, GatedActivation, KvLayout, RopeMode, RopeOptions } from "./backend";

export type { AttentionOptions, GatedActivation, RopeMode, RopeOptions };

// ---- per-op profile ---------------------------------------------------------------------------
// A profiler belongs to whoever runs the ops (a Context): `withProfiler(p, fn)` makes it the one
// that ops report to while fn runs (every op is synchronous, so no other caller's ops can
// interleave). Without one, each op pays one null check before and one after its kernel call.

/** One op's total in a profile: OpProfiler.snapshot(). */
export interface OpTime {
  /** The op's profile category, e.g. "ffn gate+up", "attention". */
  op: string;
  /** Wall time summed over its calls, in ms. */
  ms: number;
  /** Kernel calls counted. */
  calls: number;
}

/** Wall time of every kernel call, summed by op. */
export class OpProfiler {
  readonly #totals = new Map<string, { ms: number; calls: number }>();

  /** Adds the time since `t0` (performance.now()) to `op`; also for work outside this file (sampling). */
  record(op: string, t0: number): void {
    const ms = performance.now() - t0;
    const e = this.#totals.get(op);
    if (e) {
      e.ms += ms;
      e.calls++;
    } else this.#totals.set(op, { ms, calls: 1 });
  }

  /** Forgets every total. */
  reset(): void {
    this.#totals.clear();
  }

  /** Totals since the last reset, largest first. */
  snapshot(): OpTime[] {
    return [...this.#totals].map(([op, e]) => ({ op, ms: e.ms, calls: e.calls })).sort((a, b) => b.ms - a.ms);
  }
}

let profiler: OpProfiler | null = null;

/** Runs fn with `p` receiving the time of every op it calls (null: none); restores the previous one. */
export function withProfiler<T>(p: OpProfiler | null, fn: () => T): T {
  const prev = profiler;
  profiler = p;
  try {
    return fn();
  } finally {
    profiler = prev;
  }
}

/** Profile category of a matmul by its weight's GGUF name. */
function matmulOp(w: Tensor): string {
  const n = w.name;
  if (n === "output.weight" || n === "token_embd.weight") return "output head";
  if (/attn_[qkv]\.weight$/.test(n)) return "matmul attn q/k/v";
  if (n.endsWith("attn_output.weight")) return "matmul attn output";
  if (n.endsWith("ffn_down.weight")) return "matmul ffn down";
  if (/ffn_(gate|up)\.weight$/.test(n)) return "ffn gate+up";
  return "matmul other";
}

function fail(op: string, msg: string): never {
  throw new ShapeError(`${op}: ${msg}`);
}

/** t's dtype is a, b or c (three parameters, not a rest array: every op calls this several times). */
function expectDType(op: string, t: Tensor, a: DType, b?: DType, c?: DType): void {
  const d = t.dtype;
  if (d !== a && d !== b && d !== c) fail(op, `${t} must be ${[a, b, c].filter((x) => x !== undefined).join(" or ")}`);
}

/** t's shape is `want` (a tensor's shape, or dimensions: pass a plain array, not another tensor's frozen `shape`). */
function expectShape(op: string, t: Tensor, want: Tensor | readonly number[]): void {
  if (!t.hasShape(want)) fail(op, `${t} must have shape [${(want instanceof Tensor ? want.shape : want).join(", ")}]`);
}

function check(op: string, status: number): void {
  if (status === Status.ok) return;
  const what = { [Status.badType]: "unsupported type", [Status.badShape]: "bad shape", [Status.badArg]: "bad argument" }[status];
  throw new ShapeError(`${op}: kernel refused the call (${what ?? `status ${status}`})`);
}

/**
 * Bytes of one activation row of k elements prepared for weights of `dtype` (the kernels' answer,
 * asked once per dtype and width: every matmul of a decode step asks it again).
 */
export function actRowBytes(dtype: DType, k: number): number {
  const seen = (actRowBytesSeen[dtype] ??= new Map<number, number>());
  let bytes = seen.get(k);
  if (bytes === undefined) {
    rowBytes(dtype, k, "actRowBytes");
    bytes = kiln().kiln_act_row_bytes(DTYPE_IDS[dtype], k) as number;
    seen.set(k, bytes);
  }
  return bytes;
}
/** actRowBytes' answers by dtype, then width. */
const actRowBytesSeen: Partial<Record<DType, Map<number, number>>> = {};

/** Prepares f32 activation rows x [m, k] in the format `dtype` weights consume. */
export function prepareActivations(dtype: DType, x: Tensor, out: Uint8Array): void {
  const op = "prepareActivations";
  expectDType(op, x, "f32");
  const need = actRowBytes(dtype, x.cols) * x.rows;
  if (out.byteLength < need) fail(op, `output buffer has ${out.byteLength} bytes, ${x} for ${dtype} needs ${need}`);
  const t0 = profiler ? performance.now() : 0;
  check(op, kiln().kiln_quantize_act(DTYPE_IDS[dtype], x.bytes, x.cols, x.rows, x.cols, out));
  if (profiler) profiler.record("quantize activations", t0);
}

/** Scratch a matmul of x [m, k] against `dtype` weights needs. */
export function matmulScratchBytes(dtype: DType, m: number, k: number): number {
  return actRowBytes(dtype, k) * m;
}

/** out [m, n] = x [m, k] · wᵀ, w [n, k] in any supported type, read in place. */
export function matmul(w: Tensor, x: Tensor, out: Tensor, scratch?: Uint8Array): void {
  const op = "matmul";
  if (w.rank !== 2) fail(op, `weight ${w} must be 2-D`);
  expectDType(op, x, "f32");
  expectDType(op, out, "f32");
  const n = w.dim(0);
  const k = w.dim(1);
  if (x.cols !== k) fail(op, `${x} does not match weight ${w}: inner dims ${x.cols} ≠ ${k}`);
  expectShape(op, out, [x.rows, n]);
  const need = matmulScratchBytes(w.dtype, x.rows, k);
  const s = scratch ?? new Uint8Array(need);
  if (s.byteLength < need) fail(op, `scratch has ${s.byteLength} bytes, needs ${need}`);
  prepareActivations(w.dtype, x, s);
  matmulPrepared(w, s, x.rows, out);
}

/** out [m, n] = W · (prepared activations of m rows). */
export function matmulPrepared(w: Tensor, xq: Uint8Array, m: number, out: Tensor): void {
  const op = "matmulPrepared";
  const n = w.dim(0);
  const k = w.dim(1);
  const need = actRowBytes(w.dtype, k) * m;
  if (xq.byteLength < need) fail(op, `prepared activations have ${xq.byteLength} bytes, ${m} rows for ${w} need ${need}`);
  expectDType(op, out, "f32");
  expectShape(op, out, [m, n]);
  const t0 = profiler ? performance.now() : 0;
  const packed = packedCopies.get(w);
  if (packed) check(op, kiln().kiln_matmul_packed(DTYPE_IDS[w.dtype], packed.bytes, n, k, xq, m, out.bytes, n));
  else check(op, kiln().kiln_matmul(DTYPE_IDS[w.dtype], w.bytes, n, k, xq, m, out.bytes, n));
  if (profiler) profiler.record(matmulOp(w), t0);
}

/**
 * out_i [m, n_i] = x · w_iᵀ for three weights of one width (attention's Q, K and V) from the
 * same m prepared activation rows, in one kernel call (one thread-pool dispatch instead of
 * three); each output has the bits matmulPrepared gives it. Either all three are read in place
 * (one dtype) or all three from packed copies (packRows; dtypes whose prepared activations are
 * the same, ACT_FORMAT: Gemma's V is Q8_0 in some layers, its Q and K Q5_0).
 */
export function matmul3Prepared(w0: Tensor, w1: Tensor, w2: Tensor, xq: Uint8Array, m: number, out0: Tensor, out1: Tensor, out2: Tensor): void {
  const op = "matmul3Prepared";
  const ws = [w0, w1, w2] as const;
  const outs = [out0, out1, out2] as const;
  const k = w0.dim(1);
  if (!Number.isSafeInteger(m) || m < 1) fail(op, `m must be a positive integer, got ${m}`);
  const packed = ws.map((w) => packedCopies.get(w));
  const fromCopies = packed[0] !== undefined;
  for (let i = 0; i < 3; i++) {
    const w = ws[i]!;
    if (w.rank !== 2) fail(op, `weight ${w} must be 2-D`);
    if ((packed[i] !== undefined) !== fromCopies) fail(op, `${fromCopies ? w0 : w} is read from a packed copy and ${fromCopies ? w : w0} is not; use matmulPrepared`);
    if (fromCopies ? ACT_FORMAT[w.dtype] !== ACT_FORMAT[w0.dtype] : w.dtype !== w0.dtype) fail(op, `${w0} and ${w} must share a dtype${fromCopies ? " or at least the prepared activations (ACT_FORMAT)" : ""}`);
    if (w.dim(1) !== k) fail(op, `${w0} and ${w} must share a width (${k} ≠ ${w.dim(1)})`);
    expectDType(op, outs[i]!, "f32");
    expectShape(op, outs[i]!, [m, w.dim(0)]);
  }
  const need = actRowBytes(w0.dtype, k) * m;
  if (xq.byteLength < need) fail(op, `prepared activations have ${xq.byteLength} bytes, ${m} rows for ${w0} need ${need}`);
  const t0 = profiler ? performance.now() : 0;
  if (fromCopies) {
    const [p0, p1, p2] = packed.map((c) => c!.bytes);
    check(op, kiln().kiln_matmul3_packed(k, xq, m, DTYPE_IDS[w0.dtype], p0!, w0.dim(0), out0.bytes, DTYPE_IDS[w1.dtype], p1!, w1.dim(0), out1.bytes, DTYPE_IDS[w2.dtype], p2!, w2.dim(0), out2.bytes));
  } else {
    check(op, kiln().kiln_matmul3(DTYPE_IDS[w0.dtype], k, xq, m, w0.bytes, w0.dim(0), out0.bytes, w1.bytes, w1.dim(0), out1.bytes, w2.bytes, w2.dim(0), out2.bytes));
  }
  if (profiler) profiler.record(matmulOp(w0), t0);
}

/**
 * Load-time copies of weights in the 16-row interleaved layout of zig-kernels/packed.zig, which
 * matmuls read instead of the weight's bytes: a CPU-backend detail kept out of Tensor.
 */
interface PackedCopy {
  readonly bytes: Uint8Array;
  /** The buffer freed with the copy; null for a slot of an arena (packArena), freed by its owner. */
  readonly own: NativeBuffer | null;
}
const packedCopies = new WeakMap<Tensor, PackedCopy>();

/**
 * Why `w` cannot be packed by this build, or null when it can: the layout exists for Q8_0, Q4_0,
 * Q4_1, Q5_0, Q5_1 and Q4_K (not Q5_0, Q5_1 or Q4_K where the AMX prefill, which reads them in
 * place, is enabled) on the
 * AVX-512 VNNI library, and Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 on the AVX2 one, for 2-D weights of
 * whole 16-row groups.
 */
export function packUnsupportedReason(w: Tensor): string | null {
  if (w.rank !== 2) return `${w} is not 2-D`;
  if (!kiln().kiln_packed_supported(DTYPE_IDS[w.dtype])) return `this CPU build has no packed layout for ${w.dtype}`;
  const n = w.dim(0);
  const k = w.dim(1);
  if (n % 16 !== 0) return `${w} has ${n} rows, not a multiple of 16`;
  if (k > limits().packedMaxK) return `${w} has ${k} columns, more than ${limits().packedMaxK}`;
  return null;
}

/**
 * Makes a packed copy of w (the same byte size, in native memory) that every later matmul with
 * w reads: one kernel whose per-output arithmetic never depends on the batch size, and batches
 * of rows at interleaved-kernel speed. Returns false (and changes nothing) where this build
 * cannot pack w (see packUnsupportedReason).
 *
 * `fileMapping`: the read-only file mapping w's bytes lie in (MappedFile.bytes). Given, w's
 * pages are dropped from the resident set as they are packed (they stay in the page cache and
 * come back from the file if read again, as embedding lookups of a tied head do), so the copy
 * replaces them in memory instead of adding to them.
 */
export function packRows(w: Tensor, opts: { fileMapping?: Uint8Array; into?: Uint8Array } = {}): boolean {
  const op = "packRows";
  if (packedCopies.has(w)) return true;
  if (packUnsupportedReason(w) !== null) return false;
  const n = w.dim(0);
  const k = w.dim(1);
  const len = w.bytes.byteLength;
  const m = opts.fileMapping;
  if (m && (w.bytes.buffer !== m.buffer || w.bytes.byteOffset < m.byteOffset || w.bytes.byteOffset + len > m.byteOffset + m.byteLength)) {
    fail(op, `${w} does not lie in the file mapping given`);
  }
  const into = opts.into;
  if (into && into.byteLength < len) fail(op, `${w} needs ${len} bytes, the slot given has ${into.byteLength}`);
  if (into && sharesBytes(into, w.bytes)) fail(op, `the slot given overlaps ${w}'s bytes`);
  const own = into ? null : new NativeBuffer(len);
  const bytes = into ? into.subarray(0, len) : own!.bytes;
  const status = kiln().kiln_pack_rows(DTYPE_IDS[w.dtype], w.bytes, n, k, bytes, len, m ? 1 : 0);
  if (status !== Status.ok) {
    own?.free();
    check(op, status);
  }
  packedCopies.set(w, { bytes, own });
  return true;
}

/** Slots for packed copies in one native buffer (packArena). */
export interface PackArena {
  /** The buffer: freed by its owner once every tensor packed into it is unpacked. */
  buffer: NativeBuffer;
  /** One slot per tensor, in the order given: packRows' `into`. */
  slots: Uint8Array[];
}

/** Where packed copies start in an arena: a page boundary, as a copy of its own would. */
const PACK_SLOT_ALIGN = 4096;

/**
 * One native buffer with a slot for the packed copy of each of `ws` (packRows' `into`), or null
 * when `ws` is empty. One large allocation instead of one per tensor: the kernel's allocator
 * backs whole 2 MiB ranges with huge pages (zig-kernels/memory.zig alloc), and TinyLlama's
 * 154 layer copies, each allocated alone, were 55% huge pages (its 2.4 MB and 0.3 MB attention
 * weights none). The caller frees the buffer after unpackRows of every tensor packed into it.
 */
export function packArena(ws: readonly Tensor[]): PackArena | null {
  if (ws.length === 0) return null;
  const offsets: number[] = [];
  let total = 0;
  for (const w of ws) {
    offsets.push(total);
    total += Math.ceil(w.bytes.byteLength / PACK_SLOT_ALIGN) * PACK_SLOT_ALIGN;
  }
  const buffer = new NativeBuffer(total);
  return { buffer, slots: ws.map((w, i) => buffer.bytes.subarray(offsets[i]!, offsets[i]! + w.bytes.byteLength)) };
}

/** Forgets w's packed copy (freeing it unless it is an arena's slot); matmuls read w in place again. */
export function unpackRows(w: Tensor): void {
  packedCopies.get(w)?.own?.free();
  packedCopies.delete(w);
}

/** The bytes of w's packed copy (packRows), or null. */
export function packedCopy(w: Tensor): Uint8Array | null {
  return packedCopies.get(w)?.bytes ?? null;
}

const ACTIVATION_IDS: Record<GatedActivation, number> = { silu: 0, gelu_tanh: 1 };

/** out [m, n_ff] = act(x·Wgᵀ) ⊙ (x·Wuᵀ) in one pass; gate and up share a dtype. */
export function ffnGated(wGate: Tensor, wUp: Tensor, x: Tensor, out: Tensor, activation: GatedActivation, scratch?: Uint8Array): void {
  const op = "ffnGated";
  if (wGate.rank !== 2) fail(op, `gate ${wGate} must be 2-D`);
  expectShape(op, wUp, wGate);
  if (wUp.dtype !== wGate.dtype) fail(op, `gate ${wGate} and up ${wUp} must share a dtype`);
  expectDType(op, x, "f32");
  const nFf = wGate.dim(0);
  const k = wGate.dim(1);
  if (x.cols !== k) fail(op, `${x} does not match ${wGate}: inner dims ${x.cols} ≠ ${k}`);
  expectDType(op, out, "f32");
  expectShape(op, out, [x.rows, nFf]);
  const need = matmulScratchBytes(wGate.dtype, x.rows, k);
  const s = scratch ?? new Uint8Array(need);
  if (s.byteLength < need) fail(op, `scratch has ${s.byteLength} bytes, needs ${need}`);
  prepareActivations(wGate.dtype, x, s);
  ffnGatedPrepared(wGate, wUp, s, x.rows, out, activation);
}

/**
 * The fused gated FFN on activations already prepared for the gate's dtype (m rows). Gate and up
 * are read in place, or both from their packed copies (packRows; bitwise two matmulPrepared and
 * the gated product), never one of each.
 */
export function ffnGatedPrepared(wGate: Tensor, wUp: Tensor, xq: Uint8Array, m: number, out: Tensor, activation: GatedActivation): void {
  const op = "ffnGatedPrepared";
  const nFf = wGate.dim(0);
  const k = wGate.dim(1);
  expectShape(op, wUp, wGate);
  if (wUp.dtype !== wGate.dtype) fail(op, `gate ${wGate} and up ${wUp} must share a dtype`);
  const need = actRowBytes(wGate.dtype, k) * m;
  if (xq.byteLength < need) fail(op, `prepared activations have ${xq.byteLength} bytes, ${m} rows need ${need}`);
  expectDType(op, out, "f32");
  expectShape(op, out, [m, nFf]);
  const [pGate, pUp] = [packedCopies.get(wGate), packedCopies.get(wUp)];
  if (!pGate !== !pUp) fail(op, `${pGate ? wGate : wUp} is read from a packed copy and ${pGate ? wUp : wGate} is not; use matmulPrepared for gate and up`);
  const id = ACTIVATION_IDS[activation];
  if (id === undefined) fail(op, `unknown activation ${activation}`);
  const t0 = profiler ? performance.now() : 0;
  if (pGate && pUp) check(op, kiln().kiln_ffn_gated_packed(DTYPE_IDS[wGate.dtype], pGate.bytes, pUp.bytes, nFf, k, xq, m, out.bytes, nFf, id));
  else check(op, kiln().kiln_ffn_gated(DTYPE_IDS[wGate.dtype], wGate.bytes, wUp.bytes, nFf, k, xq, m, out.bytes, nFf, id));
  if (profiler) profiler.record("ffn gate+up", t0);
}

/** Fusions of rmsNorm. */
export interface RmsNormOptions {
  /** Added into x first (x is the residual stream and is updated in place). */
  residual?: Tensor;
  /** Also write the prepared activations of `out` for weights of this dtype into `actOut`. */
  emitFor?: DType;
  /** Where `emitFor` writes the prepared activations (actRowBytes(emitFor, cols) per row). */
  actOut?: Uint8Array;
}

/** out = x / rms(x) · weight, row by row; optionally fused with the residual add and quantization. */
export function rmsNorm(x: Tensor, weight: Tensor | null, out: Tensor, eps: number, opts: RmsNormOptions = {}): void {
  const op = "rmsNorm";
  expectDType(op, x, "f32");
  expectDType(op, out, "f32");
  expectShape(op, out, x);
  const n = x.cols;
  if (weight) {
    expectDType(op, weight, "f32");
    expectShape(op, weight, [n]);
  }
  if (opts.residual) {
    expectDType(op, opts.residual, "f32");
    expectShape(op, opts.residual, x);
  }
  let actType = -1;
  if (opts.emitFor) {
    const need = actRowBytes(opts.emitFor, n) * x.rows;
    if (!opts.actOut || opts.actOut.byteLength < need) fail(op, `emitting ${opts.emitFor} activations for ${x} needs an actOut of ${need} bytes`);
    actType = DTYPE_IDS[opts.emitFor];
  }
  if (!(eps >= 0) || !Number.isFinite(eps)) fail(op, `eps must be finite and ≥ 0, got ${eps}`);
  const t0 = profiler ? performance.now() : 0;
  check(op, kiln().kiln_rmsnorm(x.bytes, opts.residual?.bytes ?? null, weight?.bytes ?? null, out.bytes, n, x.rows, n, eps, actType, opts.actOut ?? null));
  if (profiler) profiler.record("norm", t0);
}

/** In-place RMSNorm of each head of x [rows, n_head, head_dim] with a shared [head_dim] weight (QK-norm). */
export function rmsNormHeads(x: Tensor, nHead: number, weight: Tensor, eps: number): void {
  const op = "rmsNormHeads";
  expectDType(op, x, "f32");
  expectDType(op, weight, "f32");
  const headDim = weight.numel;
  if (x.cols !== nHead * headDim) fail(op, `${x} rows must be n_head (${nHead}) × head_dim (${headDim})`);
  const t0 = profiler ? performance.now() : 0;
  check(op, kiln().kiln_rmsnorm_heads(x.bytes, x.rows, nHead, headDim, x.cols, weight.bytes, eps));
  if (profiler) profiler.record("norm", t0);
}

function sameF32(op: string, ...ts: Tensor[]): number {
  for (const t of ts) expectDType(op, t, "f32");
  for (const t of ts.slice(1)) expectShape(op, t, ts[0]!);
  return ts[0]!.numel;
}

/** out = silu(gate) ⊙ up, elementwise (f32; out may be gate). */
export function siluMul(gate: Tensor, up: Tensor, out: Tensor): void {
  const n = sameF32("siluMul", gate, up, out);
  const t0 = profiler ? performance.now() : 0;
  kiln().kiln_silu_mul(gate.bytes, up.bytes, out.bytes, n);
  if (profiler) profiler.record("elementwise", t0);
}

/** out = gelu_tanh(gate) ⊙ up, elementwise (f32; out may be gate). */
export function geluTanhMul(gate: Tensor, up: Tensor, out: Tensor): void {
  const n = sameF32("geluTanhMul", gate, up, out);
  const t0 = profiler ? performance.now() : 0;
  kiln().kiln_gelu_tanh_mul(gate.bytes, up.bytes, out.bytes, n);
  if (profiler) profiler.record("elementwise", t0);
}

/** dst += src, elementwise (f32, same element count). */
export function add(dst: Tensor, src: Tensor): void {
  const n = sameF32("add", dst, src);
  const t0 = profiler ? performance.now() : 0;
  kiln().kiln_add(dst.bytes, src.bytes, n);
  if (profiler) profiler.record("elementwise", t0);
}

/** x[r] += bias for every row r of x (projection biases). */
export function addBias(x: Tensor, bias: Tensor): void {
  const op = "addBias";
  expectDType(op, x, "f32");
  expectDType(op, bias, "f32");
  expectShape(op, bias, [x.cols]);
  const rowBytes = x.cols * 4;
  const t0 = profiler ? performance.now() : 0;
  for (let r = 0; r < x.rows; r++) kiln().kiln_add(x.bytes.subarray(r * rowBytes, (r + 1) * rowBytes), bias.bytes, x.cols);
  if (profiler) profiler.record("elementwise", t0);
}

/** dst ⊙= src, elementwise (f32, same element count). */
export function mul(dst: Tensor, src: Tensor): void {
  const n = sameF32("mul", dst, src);
  const t0 = profiler ? performance.now() : 0;
  kiln().kiln_mul(dst.bytes, src.bytes, n);
  if (profiler) profiler.record("elementwise", t0);
}

/** x *= s, in place (f32). */
export function scale(x: Tensor, s: number): void {
  const n = sameF32("scale", x);
  const t0 = profiler ? performance.now() : 0;
  kiln().kiln_scale(x.bytes, n, s);
  if (profiler) profiler.record("elementwise", t0);
}

/** Softmax over the last dimension, in place. */
export function softmax(x: Tensor): void {
  expectDType("softmax", x, "f32");
  const t0 = profiler ? performance.now() : 0;
  check("softmax", kiln().kiln_softmax(x.bytes, x.cols, x.rows, x.cols));
  if (profiler) profiler.record("softmax", t0);
}

/** Largest vector the sampling kernels take: ids are i32. */
const MAX_SAMPLING_ENTRIES = 0x7fffffff;

/** Whether two typed arrays share bytes (the offsets first: a typed array's `buffer` is the slow read). */
export function sharesBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength && a.buffer === b.buffer;
}

/**
 * Index of the largest entry of x (the first of equal ones; NaN never wins); -1 when no entry is
 * above -Infinity (zig-kernels/sampling.zig argmax). The greedy sampler's one call per token.
 */
export function argmaxF32(x: Float32Array): number {
  if (x.length === 0) return -1;
  if (x.length > MAX_SAMPLING_ENTRIES) fail("argmax", `${x.length} entries exceed ${MAX_SAMPLING_ENTRIES}`);
  return kiln().kiln_argmax_f32(x, x.length) as number;
}

/**
 * The k best entries of x (higher value first, equal values by lower index; NaN and -Infinity
 * never) into ids[0..) and vals[0..); returns how many, fewer than k when fewer entries are
 * above -Infinity (zig-kernels/sampling.zig topK). ids and vals hold at least k entries each
 * and share no bytes with x.
 */
export function topKF32(x: Float32Array, k: number, ids: Int32Array, vals: Float32Array): number {
  const op = "topK";
  if (x.length === 0) return 0;
  if (x.length > MAX_SAMPLING_ENTRIES) fail(op, `${x.length} entries exceed ${MAX_SAMPLING_ENTRIES}`);
  if (!Number.isSafeInteger(k) || k < 1) fail(op, `k must be a positive integer, got ${k}`);
  if (ids.length < k || vals.length < k) fail(op, `ids (${ids.length}) and vals (${vals.length}) must hold k = ${k} entries`);
  if (sharesBytes(ids, x) || sharesBytes(vals, x) || sharesBytes(ids, vals)) fail(op, "ids, vals and x must not share bytes");
  const n = kiln().kiln_top_k_f32(x, x.length, k, ids, vals) as number;
  if (n < 0) check(op, n);
  return n;
}

/** Checks a rope call's shape on x (the rules of every rope op). */
function checkRopeShape(op: string, x: Tensor, nHead: number, rows: number, nRot: number): void {
  expectDType(op, x, "f32");
  if (x.cols % nHead !== 0) fail(op, `${x} row length is not a multiple of n_head ${nHead}`);
  const headDim = x.cols / nHead;
  if (nRot > headDim || nRot % 2 !== 0 || nRot <= 0) fail(op, `n_rot ${nRot} must be even and ≤ head_dim ${headDim}`);
  if (rows !== x.rows) fail(op, `${rows} positions for ${x.rows} rows`);
}

function checkRopeFrequencies(op: string, nRot: number, o: RopeOptions): void {
  const max = limits().ropeMaxRot;
  if (nRot <= 0 || nRot % 2 !== 0 || nRot > max) fail(op, `n_rot ${nRot} must be even, in [2, ${max}]`);
  if (o.freqFactors) {
    expectDType(op, o.freqFactors, "f32");
    if (o.freqFactors.numel !== nRot / 2) fail(op, `freq_factors ${o.freqFactors} must have n_rot/2 = ${nRot / 2} elements`);
  }
  if (!(o.freqBase > 0)) fail(op, `freq_base must be > 0, got ${o.freqBase}`);
}

const ropeModeId = (mode: RopeMode): number => (mode === "neox" ? 2 : 0);

/** RoPE in place on x [rows, n_head, head_dim] at the given positions (one per row). */
export function rope(x: Tensor, nHead: number, positions: Int32Array, o: RopeOptions): void {
  const op = "rope";
  const nRot = o.nRot ?? x.cols / nHead;
  checkRopeShape(op, x, nHead, positions.length, nRot);
  checkRopeFrequencies(op, nRot, o);
  const headDim = x.cols / nHead;
  const t0 = profiler ? performance.now() : 0;
  check(op, kiln().kiln_rope(x.bytes, x.rows, nHead, headDim, x.cols, headDim, positions, nRot, ropeModeId(o.mode), o.freqBase, o.freqScale ?? 1, o.freqFactors?.bytes ?? null));
  if (profiler) profiler.record("rope", t0);
}

/** Floats of a rope table for `rows` positions (ropeTable), from the kernels' own layout. */
export function ropeTableFloats(rows: number, nRot: number): number {
  return rows * nRot * limits().ropeTableFloatsPerRot;
}

/**
 * The cos/sin that rope computes for these positions into `table` (ropeTableFloats of them),
 * for ropeApply: a forward pass rotates Q and K of every layer at the same positions, and a
 * table made once gives every call rope's bits without its sin/cos.
 */
export function ropeTable(positions: Int32Array, o: RopeOptions & { nRot: number }, table: Float32Array): void {
  const op = "ropeTable";
  checkRopeFrequencies(op, o.nRot, o);
  const need = ropeTableFloats(positions.length, o.nRot);
  if (table.length < need) fail(op, `table has ${table.length} floats, ${positions.length} positions need ${need}`);
  if (positions.length === 0) return;
  const t0 = profiler ? performance.now() : 0;
  check(op, kiln().kiln_rope_table(positions, positions.length, o.nRot, ropeModeId(o.mode), o.freqBase, o.freqScale ?? 1, o.freqFactors?.bytes ?? null, table, table.length));
  if (profiler) profiler.record("rope", t0);
}

/** rope with a table from ropeTable (made for x's rows' positions with the same nRot and mode). */
export function ropeApply(x: Tensor, nHead: number, table: Float32Array, nRot: number, mode: RopeMode): void {
  const op = "ropeApply";
  checkRopeShape(op, x, nHead, x.rows, nRot);
  const need = ropeTableFloats(x.rows, nRot);
  if (table.length < need) fail(op, `table has ${table.length} floats, ${x.rows} rows of n_rot ${nRot} need ${need}`);
  const headDim = x.cols / nHead;
  const t0 = profiler ? performance.now() : 0;
  check(op, kiln().kiln_rope_apply(x.bytes, x.rows, nHead, headDim, x.cols, headDim, nRot, ropeModeId(mode), table, table.length));
  if (profiler) profiler.record("rope", t0);
}

/**
 * Attention of q [n_q, n_head, head_dim] over the first `nKv` positions of caches k/v (f32, f16
 * or q8_0) into out [n_q, n_head, head_dim]; the caches are [n_ctx, n_kv_head, head_dim]
 * ("position-major") or [n_kv_head, n_ctx, head_dim] ("head-major").
 */
export function flashAttention(q: Tensor, k: Tensor, v: Tensor, nKv: number, out: Tensor, nHead: number, o: AttentionOptions, layout: KvLayout = "position-major"): void {
  attentionCall("flashAttention", q, k, v, nKv, out, nHead, o, null, layout);
}

/** The unfused path: scores [n_q, n_head, n_kv] materialized in `scores`. */
export function attentionNaive(q: Tensor, k: Tensor, v: Tensor, nKv: number, out: Tensor, nHead: number, o: AttentionOptions, scores: Float32Array, layout: KvLayout = "position-major"): void {
  attentionCall("attentionNaive", q, k, v, nKv, out, nHead, o, scores, layout);
}

function attentionCall(op: string, q: Tensor, k: Tensor, v: Tensor, nKv: number, out: Tensor, nHead: number, o: AttentionOptions, scores: Float32Array | null, layout: KvLayout): void {
  expectDType(op, q, "f32");
  expectDType(op, out, "f32");
  expectShape(op, out, q);
  expectDType(op, k, "f32", "f16", "q8_0");
  if (v.dtype !== k.dtype) fail(op, `k ${k} and v ${v} must share a dtype`);
  expectShape(op, v, k);
  if (q.rank !== 3 || k.rank !== 3) fail(op, `q ${q} and k ${k} must be [rows, heads, head_dim]`);
  const nQ = q.dim(0);
  const qHeads = q.dim(1);
  const headDim = q.dim(2);
  const headMajor = layout === "head-major";
  const nCtx = k.dim(headMajor ? 1 : 0);
  const nKvHead = k.dim(headMajor ? 0 : 1);
  const kDim = k.dim(2);
  if (qHeads !== nHead) fail(op, `q ${q} has ${qHeads} heads, expected ${nHead}`);
  if (kDim !== headDim) fail(op, `head_dim of q ${q} ≠ k ${k}`);
  if (nKvHead === 0 || nHead % nKvHead !== 0) fail(op, `n_head ${nHead} is not a multiple of n_kv_head ${nKvHead}`);
  if (headDim > limits().maxHeadDim) fail(op, `head_dim ${headDim} > ${limits().maxHeadDim}`);
  if (!Number.isSafeInteger(nKv) || nKv < 0 || nKv > nCtx) fail(op, `n_kv ${nKv} outside the cache of ${nCtx} positions`);
  const window = o.window ?? 0;
  if (!Number.isSafeInteger(o.qPos0) || o.qPos0 < 0 || !Number.isSafeInteger(window) || window < 0) fail(op, `q_pos0 ${o.qPos0} and window ${window} must be integers ≥ 0`);
  if (!Number.isFinite(o.scale)) fail(op, `scale must be finite`);
  // Strides in elements: position, then KV head. The arguments are written out twice rather than
  // spread from an array: a spread call is a slow path, and this runs once per layer per token.
  const posStride = headMajor ? headDim : nKvHead * headDim;
  const headStride = headMajor ? nCtx * headDim : headDim;
  const kt = DTYPE_IDS[k.dtype];
  const softcap = o.softcap ?? 0;
  if (scores === null) {
    const t0 = profiler ? performance.now() : 0;
    check(op, kiln().kiln_flash_attention(q.bytes, nHead * headDim, headDim, k.bytes, v.bytes, kt, posStride, headStride, out.bytes, nHead * headDim, headDim, nQ, nHead, nKvHead, headDim, nKv, o.qPos0, window, o.scale, softcap));
    if (profiler) profiler.record("attention", t0);
  } else {
    const need = nQ * nHead * nKv;
    if (scores.length < need) fail(op, `scores buffer has ${scores.length} floats, needs ${need}`);
    const t0 = profiler ? performance.now() : 0;
    check(op, kiln().kiln_attention_naive(q.bytes, nHead * headDim, headDim, k.bytes, v.bytes, kt, posStride, headStride, out.bytes, nHead * headDim, headDim, nQ, nHead, nKvHead, headDim, nKv, o.qPos0, window, o.scale, softcap, scores));
    if (profiler) profiler.record("attention", t0);
  }
}

/**
 * Writes src [n, n_kv_head · head_dim] (f32, one row per position) into a KV cache at positions
 * pos0..pos0+n-1 (converted to its dtype): cache [n_ctx, n_kv_head, head_dim] ("position-major")
 * or [n_kv_head, n_ctx, head_dim] ("head-major").
 */
export function storeKV(src: Tensor, cache: Tensor, pos0: number, layout: KvLayout): void {
  const op = "storeKV";
  expectDType(op, src, "f32");
  expectDType(op, cache, "f32", "f16", "q8_0");
  if (src.rank !== 2 || cache.rank !== 3) fail(op, `src ${src} must be [n, n_kv_head · head_dim] and cache ${cache} 3-D`);
  const headMajor = layout === "head-major";
  const nCtx = cache.dim(headMajor ? 1 : 0);
  const nKvHead = cache.dim(headMajor ? 0 : 1);
  const headDim = cache.dim(2);
  const n = src.rows;
  if (src.cols !== nKvHead * headDim) fail(op, `src ${src} rows must hold n_kv_head · head_dim = ${nKvHead * headDim} values for cache ${cache}`);
  if (!Number.isSafeInteger(pos0) || pos0 < 0 || pos0 + n > nCtx) fail(op, `positions [${pos0}, ${pos0 + n}) outside the cache of ${nCtx} positions`);
  if (headDim % DTYPE_LAYOUT[cache.dtype].blockSize !== 0) fail(op, `head_dim ${headDim} is not a multiple of ${cache.dtype}'s block`);
  const posStride = headMajor ? headDim : nKvHead * headDim;
  const headStride = headMajor ? nCtx * headDim : headDim;
  const t0 = profiler ? performance.now() : 0;
  check(op, kiln().kiln_store_kv(DTYPE_IDS[cache.dtype], src.bytes, n, nKvHead, headDim, cache.bytes.subarray(rowBytes(cache.dtype, pos0 * posStride)), posStride, headStride));
  if (profiler) profiler.record("kv store", t0);
}

/** Dequantizes every row of t into out (f32, same shape). */
export function dequantize(t: Tensor, out: Tensor): void {
  const op = "dequantize";
  expectDType(op, out, "f32");
  expectShape(op, out, t);
  check(op, kiln().kiln_dequantize_row(DTYPE_IDS[t.dtype], t.bytes, out.bytes, t.numel));
}

/** Quantizes f32 rows into dtype: every type kiln reads (DTYPE_IDS). */
export function quantize(x: Tensor, dtype: DType): Tensor {
  const op = "quantize";
  expectDType(op, x, "f32");
  const out = Tensor.zeros(dtype, x.shape, x.name);
  check(op, kiln().kiln_quantize_row(DTYPE_IDS[dtype], x.bytes, out.bytes, x.numel));
  return out;
}

/** Converts f32 rows into `out`'s dtype in place (KV cache writes: f32 → f16). */
export function quantizeInto(x: Tensor, out: Tensor): void {
  const op = "quantizeInto";
  expectDType(op, x, "f32");
  if (out.numel !== x.numel || out.cols !== x.cols) fail(op, `${x} does not fit ${out}`);
  const t0 = profiler ? performance.now() : 0;
  check(op, kiln().kiln_quantize_row(DTYPE_IDS[out.dtype], x.bytes, out.bytes, x.numel));
  if (profiler) profiler.record("kv store", t0);
}

/** Embedding lookup: out[i] = dequantize(table[ids[i]]). */
export function getRows(table: Tensor, ids: Int32Array, out: Tensor): void {
  const op = "getRows";
  if (table.rank !== 2) fail(op, `table ${table} must be 2-D`);
  const nRows = table.dim(0);
  const n = table.dim(1);
  expectDType(op, out, "f32");
  expectShape(op, out, [ids.length, n]);
  for (const id of ids) if (!(id >= 0 && id < nRows)) fail(op, `row id ${id} outside [0, ${nRows}) of ${table}`);
  const t0 = profiler ? performance.now() : 0;
  check(op, kiln().kiln_get_rows(DTYPE_IDS[table.dtype], table.bytes, n, ids, ids.length, out.bytes));
  if (profiler) profiler.record("embedding", t0);
}

/**
 * Sets the kernel pool's thread count (the pool is process-wide; contexts call this before each
 * forward call with their own count, so loading a model changes nothing).
 */
export function setThreads(n: number): number {
  if (!Number.isSafeInteger(n) || n < 1 || n > 256) throw new KilnError("BAD_OPTION", `threads must be an integer in [1, 256], got ${n}`);
  requestedThreads = n;
  return kiln().kiln_set_threads(n);
}

/** The kernel pool's thread count now. */
export function getThreads(): number {
  return kiln().kiln_get_threads();
}

let requestedThreads = 0;

/** Makes the pool run `n` threads; resizes it only when another count was asked for last. */
export function useThreads(n: number): void {
  if (n !== requestedThreads) setThreads(n);
}

export { DTYPE_LAYOUT };
