/**
 * The backend seam: the only ops a model's forward pass uses, and the memory it runs in. A model
 * file (src/models/*.ts) reads top to bottom as calls on `s.ops`, the BackendOps of its run
 * state; what a backend does to make an op fast (the CPU's 8-bit activations, its packed output
 * head; CUDA's device tensors and graphs) stays inside the backend.
 *
 *   Backend     one per loaded model and device: places the weights, allocates state memory,
 *               makes the per-state ops (cpu-backend.ts; cuda/backend.ts).
 *   BackendOps  one per run state (a context or a batch): the ops, with whatever scratch they
 *               keep between calls (prepared activations, attention partials, device positions).
 */
import type { Tensor, Device, DType } from "../tensor";
import type { BatchViews, RunState } from "../models/state";

/** The activation of a gated FFN: SiLU (Llama, Qwen2) or tanh-approximated GELU (Gemma). */
export type GatedActivation = "silu" | "gelu_tanh";

/** RoPE pairing: "normal" (adjacent pairs, llama) or "neox" (halves, qwen2 / gemma3). */
export type RopeMode = "normal" | "neox";

/** Options of rope (llama.cpp's rope parameters). */
export interface RopeOptions {
  /** Dimensions of each head to rotate (default: all of head_dim; even). */
  nRot?: number;
  /** Which dimensions pair up (RopeMode). */
  mode: RopeMode;
  /** The frequency base θ (rope.freq_base: 10000 for Llama 2, 500000 for Llama 3). */
  freqBase: number;
  /** Position scale (1 / linear scaling factor; default 1). */
  freqScale?: number;
  /** Per-pair frequency divisors (rope_freqs.weight, Llama 3.1+), [nRot / 2] f32. */
  freqFactors?: Tensor;
}

/** Options of attention. */
export interface AttentionOptions {
  /** Position of the first query row; query i attends to keys 0..qPos0+i. */
  qPos0: number;
  /** Sliding window (0 = none): key p is visible to a query at q only if q − p < window. */
  window?: number;
  /** Score scale, usually 1 / √head_dim. */
  scale: number;
  /** Logit soft-capping: scores become softcap · tanh(score / softcap) (0 or absent: none). */
  softcap?: number;
}

export interface NormOptions {
  /** Added into x first (x is the residual stream and is updated in place). */
  residual?: Tensor;
  /**
   * The weight that reads `out` next. A backend may prepare `out` for it in the same pass (the
   * CPU quantizes it to the weight's 8-bit activation format); ignoring it is always correct.
   */
  feeds?: Tensor;
}

/** Ops a backend runs, and the dtypes it runs them for. */
export type BackendOp = "linear" | "getRows" | "kvCache";

/** The ops of one run state. Tensors are the state's (backend memory) or the model's weights. */
export interface BackendOps {
  /** A forward call begins: its token ids and positions (b.positions) are final. */
  beginForward(b: BatchViews, tokens: Int32Array): void;
  /** out[i] = dequantize(table[ids[i]]) (ids are b's tokens). */
  getRows(table: Tensor, ids: Int32Array, out: Tensor): void;
  /** out = x / rms(x) · weight row by row, after x += residual when given. */
  rmsNorm(x: Tensor, weight: Tensor | null, out: Tensor, eps: number, opts?: NormOptions): void;
  /** In-place RMSNorm of each head of x [rows, n_head · head_dim] with a [head_dim] weight. */
  rmsNormHeads(x: Tensor, nHead: number, weight: Tensor, eps: number): void;
  /** out [m, n] = x [m, k] · wᵀ, w [n, k] in any weight dtype. */
  linear(w: Tensor, x: Tensor, out: Tensor): void;
  /**
   * out0 = x · w0ᵀ, out1 = x · w1ᵀ, out2 = x · w2ᵀ: three projections of one input (attention's
   * Q, K and V), each exactly what `linear` gives; a backend may run them as one call.
   */
  linear3(w0: Tensor, w1: Tensor, w2: Tensor, x: Tensor, out0: Tensor, out1: Tensor, out2: Tensor): void;
  /** out = act(x · gateᵀ) ⊙ (x · upᵀ); `tmp` ([m, n_ff] f32) for backends that need it. */
  gatedFfn(gate: Tensor, up: Tensor, x: Tensor, out: Tensor, activation: GatedActivation, tmp: Tensor): void;
  /** Rotates x [rows, nHead · head_dim] in place; row r at position positions[r]. */
  rope(x: Tensor, nHead: number, positions: Int32Array, o: RopeOptions): void;
  /** x[r] += bias. */
  addBias(x: Tensor, bias: Tensor): void;
  /** dst += src. */
  add(dst: Tensor, src: Tensor): void;
  /** x *= s. */
  scale(x: Tensor, s: number): void;
  /**
   * Writes src [n, n_kv_head · head_dim] (f32, one row per position) into the cache at positions
   * pos0..pos0+n-1, converting to the cache's dtype, in the backend's kvLayout.
   */
  storeKV(src: Tensor, cache: Tensor, pos0: number): void;
  /**
   * Attention of q [n_q, n_head, head_dim] over the first nKv positions of the caches k/v (the
   * backend's kvLayout) into out [n_q, n_head, head_dim]; causal from o.qPos0.
   */
  attention(q: Tensor, k: Tensor, v: Tensor, nKv: number, out: Tensor, nHead: number, o: AttentionOptions): void;
  /** Copies row `from` of t over row `to` (f32 rows; to < from). */
  copyRow(t: Tensor, from: number, to: number): void;
  /** The logits as host memory (the CPU's are; a GPU's are copied back). */
  readLogits(logits: Tensor): Tensor;
  dispose(): void;
}

/** Memory a backend allocated: tensors over it, freed together. */
export interface BackendMemory {
  readonly byteLength: number;
  /** A tensor over byteOffset.. (throws ShapeError when it does not fit). */
  tensor(dtype: DType, shape: readonly number[], byteOffset?: number, name?: string): Tensor;
  free(): void;
}

/**
 * How a backend lays out one layer's KV cache: "position-major" [n_ctx, n_kv_head, head_dim]
 * (llama.cpp's), or "head-major" [n_kv_head, n_ctx, head_dim], where the rows one KV head's
 * attention reads are contiguous (the CPU's: decode attention over 16K positions read it in
 * 0.64-0.72x the time, docs/optimization.md).
 */
export type KvLayout = "position-major" | "head-major";

export interface Backend {
  readonly kind: "cpu" | "cuda";
  /** The layout of the KV caches its run states allocate. */
  readonly kvLayout: KvLayout;
  /** The device its tensors live on. */
  readonly device: Device;
  /** E.g. "cpu (x86_64-v4)", "cuda:0 NVIDIA H200 (sm_90)". */
  readonly description: string;
  /** Whether `op` runs for tensors of `dtype` (weights for linear/getRows, the cache for kvCache). */
  supports(op: BackendOp, dtype: DType): boolean;
  /** Memory for a run state (KV cache, activations, logits). */
  allocate(byteLength: number, label: string): BackendMemory;
  /**
   * The model's weights as this backend reads them: the CPU reads the mapped file in place; a GPU
   * backend uploads each tensor once (a tied tensor once) and returns the same structure with
   * device tensors.
   */
  placeWeights<W>(weights: W): W;
  /**
   * Optional: does placeWeights' work for these tensors in steps, yielding between them (a GPU
   * backend uploads a few hundred MiB per step), so a load never holds the event loop for long;
   * placeWeights then finds them done.
   */
  stageWeights?(tensors: readonly Tensor[]): Iterable<void>;
  /** The ops of a run state (its scratch is allocated here, once). */
  createOps(state: RunState): BackendOps;
  /** Frees what placeWeights uploaded. */
  dispose(): void;
}

/** A copy of `w` (plain objects and arrays) with every Tensor replaced by f(tensor); shared tensors map once. */
export function mapTensors<W>(w: W, f: (t: Tensor) => Tensor, isTensor: (v: unknown) => v is Tensor): W {
  const seen = new Map<Tensor, Tensor>();
  const walk = (v: unknown): unknown => {
    if (isTensor(v)) {
      let m = seen.get(v);
      if (!m) seen.set(v, (m = f(v)));
      return m;
    }
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(w) as W;
}
