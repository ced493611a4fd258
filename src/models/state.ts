/**
 * The run state of one context: the KV cache and every activation buffer a forward pass uses,
 * allocated once (page-aligned, owned by libkiln) and sized from explicit maxima. The decode
 * loop allocates nothing: views for a given batch size are made once and reused.
 */
import { KilnError } from "../errors";
import { DTYPE_LAYOUT, Tensor, type DType } from "../tensor";
import { actRowBytes } from "../backends/cpu";
import type { Backend, BackendMemory, BackendOps } from "../backends/backend";
import { CPU_BACKEND } from "../backends/cpu-backend";
import { ModelError, type HParams } from "./hparams";

export interface StateOptions {
  /** Context length (KV cache positions). */
  nCtx: number;
  /** Most tokens one forward call processes (prefill chunk, speculative verification). */
  maxBatch: number;
  /** Most rows of logits one call returns (1 for generation, n for parity/verification). */
  maxLogitRows: number;
  kvType: KvType;
  /** dtypes of the model's weights, to size the prepared-activation scratch. */
  weightTypes: readonly DType[];
  /**
   * Attention path: "flash" (fused, default) or "naive" (scores materialized; a scores buffer
   * is preallocated here, and a batch is processed in query chunks that fit it).
   */
  attention?: AttentionPath;
  /** Most bytes the KV cache and buffers may take (default: DEFAULT_MEMORY_BUDGET). */
  memoryBudget?: number;
  /** Naive attention: largest scores buffer before a batch is split into query chunks (default 256 MiB). */
  naiveScoresBytes?: number;
  /**
   * Sequences sharing this state (default 1): the KV cache holds `nSeq` regions of `nCtx`
   * positions each, and one forward call may carry rows of several sequences (continuous
   * batching, src/runtime/batch.ts). Activation buffers are shared: `maxBatch` rows in all.
   */
  nSeq?: number;
}

export type AttentionPath = "flash" | "naive";

/** KV cache element types: the attention kernels read each directly (zig-kernels/attention.zig KvType). */
export const KV_TYPES = ["f16", "f32", "q8_0"] as const;
/** KV cache element type: "f16" (default), "f32", or "q8_0" (34 bytes per 32 values). */
export type KvType = (typeof KV_TYPES)[number];

/** A documented environment override, read once when this module loads. */
function envBytes(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new KilnError("BAD_OPTION", `${name}=${v}: must be a positive integer number of bytes`);
  return n;
}

/** Default memory budget of one context's state: 32 GiB, or KILN_MAX_STATE_BYTES (read once). */
export const DEFAULT_MEMORY_BUDGET = envBytes("KILN_MAX_STATE_BYTES") ?? 32 * 2 ** 30;
/** Default naive-attention scores buffer: 256 MiB, or KILN_NAIVE_SCORES_BYTES (read once). */
export const DEFAULT_NAIVE_SCORES_BYTES = envBytes("KILN_NAIVE_SCORES_BYTES") ?? 256 * 2 ** 20;

/** What a context's state costs, computed before anything is allocated. */
export interface StatePlan {
  nCtx: number;
  nSeq: number;
  maxBatch: number;
  maxLogitRows: number;
  /** K and V of every layer. */
  kvBytes: number;
  /** Activations, prepared-activation scratch, logits and (naive attention) scores. */
  bufferBytes: number;
  totalBytes: number;
  /** The budget it was checked against. */
  budgetBytes: number;
  naiveQueryChunk: number;
  layout: Record<string, [number, number]>;
  activationBytes: number;
  actBytes: number;
  logitBytes: number;
  scoresBytes: number;
}

/** Sizes every buffer of a state for `hp` and `o`, and checks the budget; allocates nothing. */
export function planState(hp: HParams, o: StateOptions): StatePlan {
  for (const [k, v] of [["nCtx", o.nCtx], ["maxBatch", o.maxBatch], ["maxLogitRows", o.maxLogitRows], ["nSeq", o.nSeq ?? 1]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new KilnError("BAD_OPTION", `${k} must be a positive integer, got ${v}`);
  }
  if (!KV_TYPES.includes(o.kvType)) throw new KilnError("BAD_OPTION", `kvType must be ${KV_TYPES.map((t) => `"${t}"`).join(", ")}, got ${JSON.stringify(o.kvType)}`);
  const kvBlock = DTYPE_LAYOUT[o.kvType].blockSize;
  if (hp.headDim % kvBlock !== 0) throw new KilnError("BAD_OPTION", `kvType "${o.kvType}" stores blocks of ${kvBlock} values; this model's head_dim ${hp.headDim} is not a multiple`);
  const attention = o.attention ?? "flash";
  if (attention !== "flash" && attention !== "naive") throw new KilnError("BAD_OPTION", `attention must be "flash" or "naive", got ${JSON.stringify(o.attention)}`);
  const maxBatch = Math.min(o.maxBatch, o.nCtx);
  const maxLogitRows = Math.min(o.maxLogitRows, maxBatch);
  const kvRow = hp.nKvHead * hp.headDim;
  const nSeq = o.nSeq ?? 1;
  const kvLayerBytes = nSeq * o.nCtx * (kvRow / kvBlock) * DTYPE_LAYOUT[o.kvType].typeSize;
  const B = maxBatch;
  const widths = { x: hp.nEmbd, h: hp.nEmbd, o: hp.nEmbd, q: hp.nHead * hp.headDim, k: kvRow, v: kvRow, attn: hp.nHead * hp.headDim, ff: hp.nFf, ff2: hp.nFf };
  const layout: Record<string, [number, number]> = {};
  let offset = 0;
  for (const [name, w] of Object.entries(widths)) {
    layout[name] = [offset, w];
    offset += align(B * w * 4);
  }
  const maxWidth = Math.max(hp.nEmbd, hp.nFf, hp.nHead * hp.headDim);
  const actBytes = B * Math.max(...o.weightTypes.map((t) => actRowBytesPadded(t, maxWidth)));
  const logitBytes = maxLogitRows * hp.nVocab * 4;
  let scoresBytes = 0;
  let naiveQueryChunk = 0;
  if (attention === "naive") {
    const perQuery = hp.nHead * o.nCtx * 4;
    naiveQueryChunk = Math.max(1, Math.min(B, Math.floor((o.naiveScoresBytes ?? DEFAULT_NAIVE_SCORES_BYTES) / perQuery)));
    scoresBytes = align(naiveQueryChunk * perQuery);
  }
  const kvBytes = 2 * hp.nLayer * kvLayerBytes;
  const bufferBytes = offset + align(actBytes) + logitBytes + scoresBytes;
  const budgetBytes = o.memoryBudget ?? DEFAULT_MEMORY_BUDGET;
  const totalBytes = kvBytes + bufferBytes;
  if (totalBytes > budgetBytes) {
    throw new ModelError("CONTEXT_TOO_LARGE", `${nSeq > 1 ? `${nSeq} sequences of ` : "a "}${o.nCtx}-token context${nSeq > 1 ? "s" : ""} need${nSeq > 1 ? "" : "s"} ${(totalBytes / 2 ** 30).toFixed(2)} GiB of KV cache and buffers, over the ${(budgetBytes / 2 ** 30).toFixed(2)} GiB budget (memoryBudget, KILN_MAX_STATE_BYTES); use a smaller context`);
  }
  return { nCtx: o.nCtx, nSeq, maxBatch, maxLogitRows, kvBytes, bufferBytes, totalBytes, budgetBytes, naiveQueryChunk, layout, activationBytes: offset, actBytes, logitBytes, scoresBytes };
}

/** Per-batch-size views over the activation buffers (shapes in the comments). */
export interface BatchViews {
  n: number;
  x: Tensor; // (n, n_embd) residual stream
  h: Tensor; // (n, n_embd) normalized input of the next projection
  o: Tensor; // (n, n_embd) block output before the residual add
  q: Tensor; // (n, n_head * head_dim)
  k: Tensor; // (n, n_kv_head * head_dim)
  v: Tensor; // (n, n_kv_head * head_dim)
  q3: Tensor; // q as (n, n_head, head_dim)
  attn: Tensor; // (n, n_head * head_dim) attention output
  attn3: Tensor; // attn as (n, n_head, head_dim)
  ff: Tensor; // (n, n_ff) gated FFN activations
  ff2: Tensor; // (n, n_ff) the up projection, when gate and up differ in dtype (unfused)
  positions: Int32Array; // (n)
  /**
   * Which rows belong to which sequence, in row order: rows [start, start + n) of sequence `seq`
   * sit at its positions pos0.. . One span (sequence 0) for a plain forward call.
   */
  spans: SeqSpan[];
}

/** Rows [start, start + n) of a batch: sequence `seq`'s tokens at positions pos0 .. pos0 + n - 1. */
export interface SeqSpan {
  seq: number;
  start: number;
  n: number;
  pos0: number;
}

/** One sequence's region of the KV cache: per layer in the backend's kvLayout ((n_ctx, n_kv_head, head_dim) or (n_kv_head, n_ctx, head_dim)), and how much of it is filled. */
export interface SeqKV {
  kCache: Tensor[];
  vCache: Tensor[];
  /** Tokens whose K/V are in the cache, positions 0..nPast-1. */
  nPast: number;
}

const align = (n: number) => Math.ceil(n / 64) * 64;

export class RunState {
  readonly nCtx: number;
  readonly maxBatch: number;
  readonly maxLogitRows: number;
  readonly hp: HParams;
  /** Sequence 0's KV cache, per layer, in the backend's kvLayout. */
  readonly kCache: Tensor[];
  readonly vCache: Tensor[];
  /** Every sequence's region of the KV cache (one unless StateOptions.nSeq). */
  readonly seqs: SeqKV[];
  /** (maxLogitRows, n_vocab), in the backend's memory. */
  readonly logits: Tensor;
  readonly attention: AttentionPath;
  /** Naive attention only: query rows per kernel call (the whole batch when it fits). */
  readonly naiveQueryChunk: number;
  /** The backend this state's memory belongs to. */
  readonly backend: Backend;
  /** The ops a forward pass over this state calls (the backend's, with this state's scratch). */
  readonly ops: BackendOps;
  readonly #buffers: BackendMemory[] = [];
  readonly #views = new Map<number, BatchViews>();
  readonly #activations: BackendMemory;
  readonly #layout: Record<string, [number, number]>;
  /** What this state costs (computed before allocating). */
  readonly plan: StatePlan;

  constructor(hp: HParams, o: StateOptions, backend: Backend = CPU_BACKEND) {
    const plan = planState(hp, o);
    this.backend = backend;
    if (!backend.supports("kvCache", o.kvType)) throw new KilnError("BAD_OPTION", `kvType "${o.kvType}" is not supported by the ${backend.description} backend`);
    this.plan = plan;
    this.hp = hp;
    this.nCtx = o.nCtx;
    this.maxBatch = plan.maxBatch;
    this.maxLogitRows = plan.maxLogitRows;
    this.attention = o.attention ?? "flash";
    this.naiveQueryChunk = plan.naiveQueryChunk;
    this.#layout = plan.layout;
    const kvLayerBytes = plan.kvBytes / (2 * hp.nLayer);
    this.seqs = Array.from({ length: plan.nSeq }, () => ({ kCache: [], vCache: [], nPast: 0 }));
    this.kCache = this.seqs[0]!.kCache;
    this.vCache = this.seqs[0]!.vCache;
    try {
      for (let l = 0; l < hp.nLayer; l++) {
        for (const kind of ["k", "v"] as const) {
          const buf = backend.allocate(kvLayerBytes, `cache_${kind}_l${l}`);
          this.#buffers.push(buf);
          // Each sequence's region is one block of the backend's kvLayout.
          const headMajor = backend.kvLayout === "head-major";
          const outer = headMajor ? hp.nKvHead : o.nCtx;
          const shape = headMajor ? [plan.nSeq * hp.nKvHead, o.nCtx, hp.headDim] : [plan.nSeq * o.nCtx, hp.nKvHead, hp.headDim];
          const all = buf.tensor(o.kvType, shape, 0, `cache_${kind}_l${l}`);
          for (const [i, seq] of this.seqs.entries()) (kind === "k" ? seq.kCache : seq.vCache).push(plan.nSeq === 1 ? all : all.sliceRows(i * outer, outer));
        }
      }
      const offset = plan.activationBytes;
      this.#activations = backend.allocate(offset + plan.logitBytes, "activations");
      this.#buffers.push(this.#activations);
      this.logits = this.#activations.tensor("f32", [this.maxLogitRows, hp.nVocab], offset, "logits");
      this.ops = backend.createOps(this);
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  /** Views for a batch of n tokens (cached: the decode loop reuses the n = 1 set). */
  views(n: number): BatchViews {
    if (!Number.isSafeInteger(n) || n < 1 || n > this.maxBatch) throw new KilnError("BAD_OPTION", `RunState: batch of ${n} tokens outside [1, ${this.maxBatch}]`);
    let v = this.#views.get(n);
    if (!v) {
      const t = (name: string, shape: number[]) => {
        const [off] = this.#layout[name]!;
        return this.#activations.tensor("f32", shape, off, name);
      };
      const hp = this.hp;
      const q = t("q", [n, hp.nHead * hp.headDim]);
      const attn = t("attn", [n, hp.nHead * hp.headDim]);
      v = {
        n,
        x: t("x", [n, hp.nEmbd]),
        h: t("h", [n, hp.nEmbd]),
        o: t("o", [n, hp.nEmbd]),
        q,
        k: t("k", [n, hp.nKvHead * hp.headDim]),
        v: t("v", [n, hp.nKvHead * hp.headDim]),
        q3: q.reshape([n, hp.nHead, hp.headDim]),
        attn,
        attn3: attn.reshape([n, hp.nHead, hp.headDim]),
        ff: t("ff", [n, hp.nFf]),
        ff2: t("ff2", [n, hp.nFf]),
        positions: new Int32Array(n),
        spans: [{ seq: 0, start: 0, n, pos0: 0 }],
      };
      this.#views.set(n, v);
    }
    return v;
  }

  /** Tokens in sequence 0's cache, positions 0..nPast-1. */
  get nPast(): number {
    return this.seqs[0]!.nPast;
  }

  set nPast(n: number) {
    this.seqs[0]!.nPast = n;
  }

  /** Forgets every position of sequence `seq` from `n` on (KV rollback): later writes overwrite them. */
  truncate(n: number, seq = 0): void {
    const s = this.seqs[seq];
    if (!s) throw new KilnError("BAD_OPTION", `RunState.truncate: sequence ${seq} outside [0, ${this.seqs.length})`);
    if (!Number.isSafeInteger(n) || n < 0 || n > s.nPast) throw new KilnError("BAD_OPTION", `RunState.truncate(${n}) outside [0, ${s.nPast}]`);
    s.nPast = n;
  }

  dispose(): void {
    this.ops?.dispose();
    for (const b of this.#buffers) b.free();
    this.#buffers.length = 0;
    this.#views.clear();
  }
}

function actRowBytesPadded(t: DType, width: number): number {
  // Widths that are not a multiple of the block size never meet this weight type; the largest
  // multiple below is a safe upper bound on what one row of its activations can take.
  const bs = DTYPE_LAYOUT[t].blockSize;
  const n = Math.max(bs, Math.floor(width / bs) * bs);
  return actRowBytes(t, n);
}
