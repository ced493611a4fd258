/**
 * Pieces every architecture file shares: weights read in place from the mapped file, prepared
 * activations reused across projections that consume the same format, and the KV-cache write.
 */
import { KilnError } from "../errors";
import * as cpu from "../backends/cpu";
import { tensorData, type GGUFFile } from "../gguf";
import { ACT_FORMAT, Tensor, dtypeOfId, type DType } from "../tensor";
import { ModelError, expectTensor } from "./hparams";
import type { BatchViews, RunState } from "./state";

/**
 * A weight as a Tensor over the mapped file's bytes (no copy). `dims` are GGUF's, innermost
 * first; the Tensor's shape is row-major (reversed). `allowed` restricts the dtype (norms: F32).
 */
export function weight(file: GGUFFile, bytes: Uint8Array, name: string, dims: readonly number[], allowed?: readonly DType[]): Tensor {
  const info = expectTensor(file, name, dims)!;
  return toTensor(file, bytes, info.name, allowed);
}

export function optionalWeight(file: GGUFFile, bytes: Uint8Array, name: string, dims: readonly number[], allowed?: readonly DType[]): Tensor | undefined {
  return expectTensor(file, name, dims, true) ? toTensor(file, bytes, name, allowed) : undefined;
}

function toTensor(file: GGUFFile, bytes: Uint8Array, name: string, allowed?: readonly DType[]): Tensor {
  const info = file.tensorsByName.get(name)!;
  const dtype = dtypeOfId(info.type);
  if (!dtype) throw new ModelError("UNSUPPORTED_TENSOR_TYPE", `tensor ${name} has type ${info.typeName}, which kiln's kernels do not run`, file.fileName);
  if (allowed && !allowed.includes(dtype)) throw new ModelError("BAD_TENSOR_TYPE", `tensor ${name} is ${info.typeName}; expected ${allowed.join(" or ")}`, file.fileName);
  return new Tensor(dtype, [...info.dims].reverse(), tensorData(bytes, info), name);
}

export const F32_ONLY: readonly DType[] = ["f32"];

/**
 * The scratch holding activations prepared for a matmul. When consecutive projections read the
 * same source rows in the same format (Q, K and V; gate and up), they are prepared once.
 */
export class PreparedActivations {
  #src: Tensor | null = null;
  #format: string | null = null;
  constructor(readonly buf: Uint8Array) {}

  /** Records that `buf` already holds `src` prepared for `dtype` (written by a fused norm). */
  mark(src: Tensor, dtype: DType): void {
    this.#src = src;
    this.#format = ACT_FORMAT[dtype];
  }

  /** Makes sure `buf` holds `src` prepared for weights of `dtype`. */
  prepare(src: Tensor, dtype: DType): void {
    if (this.#src === src && this.#format === ACT_FORMAT[dtype]) return;
    cpu.prepareActivations(dtype, src, this.buf);
    this.mark(src, dtype);
  }

  /** out = src · wᵀ */
  matmul(w: Tensor, src: Tensor, out: Tensor): void {
    this.prepare(src, w.dtype);
    cpu.matmulPrepared(w, this.buf, src.rows, out);
  }

  /** out = act(src · gateᵀ) ⊙ (src · upᵀ), fused when gate and up share a dtype. */
  gatedFfn(gate: Tensor, up: Tensor, src: Tensor, out: Tensor, activation: cpu.GatedActivation, tmp: Tensor): void {
    if (gate.dtype === up.dtype) {
      this.prepare(src, gate.dtype);
      cpu.ffnGatedPrepared(gate, up, this.buf, src.rows, out, activation);
      return;
    }
    this.matmul(gate, src, out);
    this.matmul(up, src, tmp);
    (activation === "silu" ? cpu.siluMul : cpu.geluTanhMul)(out, tmp, out);
  }

  /** The source changed (written in place): forget what was prepared. */
  invalidate(): void {
    this.#src = null;
  }
}

/** Writes this batch's K and V rows into layer l's cache at positions pos0.. (f32 → cache dtype). */
export function storeKV(s: RunState, l: number, b: BatchViews, pos0: number): void {
  const n = b.n;
  cpu.quantizeInto(b.k, s.kCache[l]!.sliceRows(pos0, n).reshape([n, b.k.cols]));
  cpu.quantizeInto(b.v, s.vCache[l]!.sliceRows(pos0, n).reshape([n, b.v.cols]));
}

/**
 * This batch's attention over layer l's cache (positions 0..pos0+n-1, causal), by the state's
 * path: fused flash attention, or the naive kernel over the preallocated scores buffer, one
 * query chunk at a time (each chunk reads only the keys its last query sees).
 */
export function attend(s: RunState, l: number, b: BatchViews, pos0: number, nHead: number, o: Omit<cpu.AttentionOptions, "qPos0">): void {
  const k = s.kCache[l]!;
  const v = s.vCache[l]!;
  if (s.attention === "flash") {
    cpu.flashAttention(b.q3, k, v, pos0 + b.n, b.attn3, nHead, { ...o, qPos0: pos0 });
    return;
  }
  const chunk = s.naiveQueryChunk;
  for (let i = 0; i < b.n; i += chunk) {
    const c = Math.min(chunk, b.n - i);
    const q = c === b.n ? b.q3 : b.q3.sliceRows(i, c);
    const out = c === b.n ? b.attn3 : b.attn3.sliceRows(i, c);
    cpu.attentionNaive(q, k, v, pos0 + i + c, out, nHead, { ...o, qPos0: pos0 + i }, s.scores!);
  }
}

/** Checks a batch fits the context and fills its positions; returns the first position. */
export function beginBatch(s: RunState, tokens: Int32Array, nVocab: number): BatchViews {
  const n = tokens.length;
  if (n === 0) throw new KilnError("BAD_OPTION", "forward: no tokens");
  if (s.nPast + n > s.nCtx) {
    throw new ModelError("CONTEXT_FULL", `${s.nPast} tokens in the context + ${n} new ones exceed the context length ${s.nCtx}`);
  }
  for (const t of tokens) if (!(t >= 0 && t < nVocab)) throw new KilnError("BAD_OPTION", `forward: token id ${t} outside the vocabulary [0, ${nVocab})`);
  const b = s.views(n);
  for (let i = 0; i < n; i++) b.positions[i] = s.nPast + i;
  return b;
}

/** Logits for the last `rows` positions of the batch: out = output · normalized rows. */
export function outputLogits(s: RunState, b: BatchViews, output: Tensor, rows: number, act: PreparedActivations): Tensor {
  if (!Number.isSafeInteger(rows) || rows < 1 || rows > Math.min(b.n, s.maxLogitRows)) {
    throw new KilnError("BAD_OPTION", `forward: ${rows} logit rows requested; this context returns at most ${s.maxLogitRows} (batch of ${b.n})`);
  }
  const h = rows === b.n ? b.h : b.h.sliceRows(b.n - rows, rows);
  const logits = rows === s.maxLogitRows ? s.logits : s.logits.sliceRows(0, rows);
  act.matmul(output, h, logits);
  return logits;
}
