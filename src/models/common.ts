/**
 * Pieces every architecture file shares: weights read in place from the mapped file, the batch
 * bookkeeping (positions, sequence spans), the KV-cache write and attention per span, and the
 * output head. Every op goes through the run state's backend ops (s.ops).
 */
import { KilnError } from "../errors";
import type { AttentionOptions } from "../backends/backend";
import { tensorData, type GGUFFile } from "../gguf";
import { Tensor, dtypeOfId, type DType } from "../tensor";
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

/** Writes this batch's K and V rows into layer l's cache, each span into its sequence's region (f32 → cache dtype). */
export function storeKV(s: RunState, l: number, b: BatchViews): void {
  for (const p of b.spans) {
    const seq = s.seqs[p.seq]!;
    const k = p.n === b.n ? b.k : b.k.sliceRows(p.start, p.n);
    const v = p.n === b.n ? b.v : b.v.sliceRows(p.start, p.n);
    s.ops.storeKV(k, seq.kCache[l]!, p.pos0);
    s.ops.storeKV(v, seq.vCache[l]!, p.pos0);
  }
}

/**
 * This batch's attention over layer l's cache, each span over its own sequence's positions
 * 0..pos0+n-1 (causal; the per-sequence mask is that a span reads only its sequence's region).
 */
export function attend(s: RunState, l: number, b: BatchViews, nHead: number, o: Omit<AttentionOptions, "qPos0">): void {
  for (const p of b.spans) {
    const seq = s.seqs[p.seq]!;
    const q3 = p.n === b.n ? b.q3 : b.q3.sliceRows(p.start, p.n);
    const out3 = p.n === b.n ? b.attn3 : b.attn3.sliceRows(p.start, p.n);
    s.ops.attention(q3, seq.kCache[l]!, seq.vCache[l]!, p.pos0 + p.n, out3, nHead, { ...o, qPos0: p.pos0 });
  }
}

/** A part of a multi-sequence batch: the next `n` tokens of sequence `seq` (continuous batching). */
export interface SeqPart {
  seq: number;
  n: number;
}

/**
 * Checks a batch fits the context and fills its positions and spans. Without `parts` the tokens
 * continue sequence 0; with them, `tokens` is the parts' tokens in order, each continuing its
 * own sequence (a sequence appears at most once).
 */
export function beginBatch(s: RunState, tokens: Int32Array, nVocab: number, parts?: readonly SeqPart[]): BatchViews {
  const n = tokens.length;
  if (n === 0) throw new KilnError("BAD_OPTION", "forward: no tokens");
  for (const t of tokens) if (!(t >= 0 && t < nVocab)) throw new KilnError("BAD_OPTION", `forward: token id ${t} outside the vocabulary [0, ${nVocab})`);
  const b = s.views(n);
  if (!parts) {
    if (s.nPast + n > s.nCtx) {
      throw new ModelError("CONTEXT_FULL", `${s.nPast} tokens in the context + ${n} new ones exceed the context length ${s.nCtx}`);
    }
    b.spans.length = 1;
    const span = b.spans[0]!;
    span.seq = 0;
    span.start = 0;
    span.n = n;
    span.pos0 = s.nPast;
  } else {
    // The views' span objects are reused from call to call (the decode loop allocates nothing).
    const spans = b.spans;
    let start = 0;
    parts.forEach((p, i) => {
      const seq = s.seqs[p.seq];
      if (!seq || parts.findIndex((q) => q.seq === p.seq) !== i) throw new KilnError("BAD_OPTION", `forward: sequence ${p.seq} is outside [0, ${s.seqs.length}) or appears twice in one batch`);
      if (!Number.isSafeInteger(p.n) || p.n < 1) throw new KilnError("BAD_OPTION", `forward: sequence ${p.seq} has ${p.n} tokens in this batch; expected at least 1`);
      if (seq.nPast + p.n > s.nCtx) {
        throw new ModelError("CONTEXT_FULL", `sequence ${p.seq}: ${seq.nPast} tokens in the context + ${p.n} new ones exceed the context length ${s.nCtx}`);
      }
      const span = (spans[i] ??= { seq: 0, start: 0, n: 0, pos0: 0 });
      span.seq = p.seq;
      span.start = start;
      span.n = p.n;
      span.pos0 = seq.nPast;
      start += p.n;
    });
    spans.length = parts.length;
    if (start !== n) throw new KilnError("BAD_OPTION", `forward: the parts hold ${start} tokens but ${n} were given`);
  }
  for (const p of b.spans) for (let i = 0; i < p.n; i++) b.positions[p.start + i] = p.pos0 + i;
  s.ops.beginForward(b, tokens);
  return b;
}

/**
 * A forward pass run to its end: the steps of an architecture's forwardSteps (one per layer)
 * without pausing.
 */
export function runSteps<T>(steps: Generator<void, T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** After the layers: every span's tokens are in its sequence's cache. */
export function endBatch(s: RunState, b: BatchViews): void {
  for (const p of b.spans) s.seqs[p.seq]!.nPast = p.pos0 + p.n;
}

/**
 * Logits: for a plain batch the last `rows` positions; for a multi-sequence batch (parts given)
 * one row per span, its last position, in span order. out = output · normalized rows (+ bias),
 * in host memory.
 */
export function outputLogits(s: RunState, b: BatchViews, output: Tensor, rows: number, multi = false, bias?: Tensor): Tensor {
  let h: Tensor;
  if (multi) {
    rows = b.spans.length;
    if (rows > s.maxLogitRows) throw new KilnError("BAD_OPTION", `forward: ${rows} sequences in one batch; this state returns at most ${s.maxLogitRows} logit rows`);
    // Gather each span's last row into rows 0..spans-1 (a destination row never follows its source).
    b.spans.forEach((p, i) => {
      const src = p.start + p.n - 1;
      if (src !== i) s.ops.copyRow(b.h, src, i);
    });
    h = rows === b.n ? b.h : b.h.sliceRows(0, rows);
  } else {
    if (!Number.isSafeInteger(rows) || rows < 1 || rows > Math.min(b.n, s.maxLogitRows)) {
      throw new KilnError("BAD_OPTION", `forward: ${rows} logit rows requested; this context returns at most ${s.maxLogitRows} (batch of ${b.n})`);
    }
    h = rows === b.n ? b.h : b.h.sliceRows(b.n - rows, rows);
  }
  const logits = rows === s.maxLogitRows ? s.logits : s.logits.sliceRows(0, rows);
  s.ops.linear(output, h, logits);
  if (bias) s.ops.addBias(logits, bias);
  return s.ops.readLogits(logits);
}
