/**
 * The CPU backend: the ops of src/backends/cpu.ts (one FFI call each into the Zig kernels), plus
 * what makes them fast on a CPU, kept out of the model files:
 *   - prepared activations: the 8-bit (or f32) rows a weight type's dot product consumes, made
 *     once and shared by consecutive projections of the same source (Q, K, V; gate and up), and
 *     written by the RMSNorm that produces the source in the same pass (NormOptions.feeds);
 *   - the naive attention path (scores materialized in a preallocated buffer) when a state asks
 *     for it, one query chunk at a time.
 * Weights are read in place from the mapped file.
 */
import * as cpu from "./cpu";
import { ACT_FORMAT, CPU_DEVICE, NativeBuffer, type DType, type Tensor } from "../tensor";
import { loadedLevel } from "../ffi/library";
import type { AttentionOptions, Backend, BackendMemory, BackendOp, BackendOps, GatedActivation, KvLayout, NormOptions, RopeOptions } from "./backend";
import type { BatchViews, RunState } from "../models/state";

class CpuBackend implements Backend {
  readonly kind = "cpu" as const;
  readonly device = CPU_DEVICE;
  readonly kvLayout: KvLayout = CPU_KV_LAYOUT;
  get description(): string {
    return `cpu (${loadedLevel()})`;
  }
  supports(op: BackendOp, dtype: DType): boolean {
    if (op === "kvCache") return dtype === "f16" || dtype === "f32" || dtype === "q8_0";
    return true; // every DType is a type the CPU kernels run
  }
  allocate(byteLength: number, _label: string): BackendMemory {
    return new NativeBuffer(byteLength);
  }
  placeWeights<W>(weights: W): W {
    return weights;
  }
  createOps(state: RunState): BackendOps {
    return new CpuOps(state);
  }
  dispose(): void {}
}

/**
 * Head-major: the rows a KV head's attention task reads are contiguous. Position-major, a task
 * read 68 bytes of every 272 (TinyLlama shape, Q8_0), a stride the prefetchers follow poorly:
 * decode attention over 16K positions from DRAM took 1.4-1.6x the time (docs/optimization.md).
 */
const CPU_KV_LAYOUT: KvLayout = "head-major";

/** The CPU backend (stateless: one for the process). */
export const CPU_BACKEND: Backend = new CpuBackend();

/** One rope configuration's cos/sin table (cpu.ropeTable) and the positions it was made for. */
interface RopeTable {
  /** The configuration, compared field by field (no key string built per call). */
  opts: RopeOptions & { nRot: number; freqScale: number };
  positions: Int32Array;
  /** Rows the table holds (-1: none valid). */
  n: number;
  table: Float32Array;
}

function samePositions(t: RopeTable, positions: Int32Array): boolean {
  if (t.n !== positions.length) return false;
  for (let i = 0; i < positions.length; i++) if (t.positions[i] !== positions[i]) return false;
  return true;
}

class CpuOps implements BackendOps {
  readonly #state: RunState;
  readonly #scratch: NativeBuffer | null;
  readonly #act: Uint8Array;
  readonly #scores: Float32Array | null = null;
  readonly #scoresBuf: NativeBuffer | null = null;
  /** What #act holds: the rows of #src prepared in #format (null: nothing valid). */
  #src: Tensor | null = null;
  #format: string | null = null;
  /** rope's cos/sin tables, one per configuration seen (at most two per model). */
  readonly #ropeTables: RopeTable[] = [];

  constructor(state: RunState) {
    this.#state = state;
    const plan = state.plan;
    this.#scratch = plan.actBytes > 0 ? new NativeBuffer(plan.actBytes) : null;
    this.#act = this.#scratch?.bytes ?? new Uint8Array(0);
    if (plan.scoresBytes > 0) {
      try {
        this.#scoresBuf = new NativeBuffer(plan.scoresBytes);
      } catch (e) {
        this.#scratch?.free();
        throw e;
      }
      this.#scores = new Float32Array(this.#scoresBuf.bytes.buffer, this.#scoresBuf.bytes.byteOffset, plan.scoresBytes / 4);
    }
  }

  /** An op wrote t: prepared activations of memory it overlaps are stale. */
  #wrote(t: Tensor): void {
    if (this.#src && cpu.sharesBytes(this.#src.bytes, t.bytes)) this.#src = null;
  }

  #prepare(src: Tensor, dtype: DType): void {
    if (this.#src === src && this.#format === ACT_FORMAT[dtype]) return;
    cpu.prepareActivations(dtype, src, this.#act);
    this.#src = src;
    this.#format = ACT_FORMAT[dtype];
  }

  beginForward(_b: BatchViews, _tokens: Int32Array): void {
    this.#src = null;
  }

  getRows(table: Tensor, ids: Int32Array, out: Tensor): void {
    this.#wrote(out);
    cpu.getRows(table, ids, out);
  }

  rmsNorm(x: Tensor, weight: Tensor | null, out: Tensor, eps: number, opts: NormOptions = {}): void {
    this.#wrote(out);
    if (opts.residual) this.#wrote(x);
    const emitFor = opts.feeds?.dtype;
    cpu.rmsNorm(x, weight, out, eps, { residual: opts.residual, emitFor, actOut: emitFor ? this.#act : undefined });
    if (emitFor) {
      this.#src = out;
      this.#format = ACT_FORMAT[emitFor];
    }
  }

  rmsNormHeads(x: Tensor, nHead: number, weight: Tensor, eps: number): void {
    this.#wrote(x);
    cpu.rmsNormHeads(x, nHead, weight, eps);
  }

  linear(w: Tensor, x: Tensor, out: Tensor): void {
    this.#wrote(out);
    this.#prepare(x, w.dtype);
    cpu.matmulPrepared(w, this.#act, x.rows, out);
  }

  /**
   * One kernel call (cpu.matmul3Prepared) where the three weights are read in place in one
   * dtype, or all from packed copies with one activation format: the projections of small
   * models being too small to share out between threads one by one (SmolLM2's Q/K/V decode row:
   * 0.58 → 0.38 ms per token on 2 threads in place, docs/optimization.md; for prefill batches
   * the one call measured within noise of three). Otherwise three linear calls. The same bits
   * either way.
   */
  linear3(w0: Tensor, w1: Tensor, w2: Tensor, x: Tensor, out0: Tensor, out1: Tensor, out2: Tensor): void {
    const c0 = cpu.packedCopy(w0) !== null;
    const c1 = cpu.packedCopy(w1) !== null;
    const c2 = cpu.packedCopy(w2) !== null;
    const oneCall = c0 && c1 && c2 ? ACT_FORMAT[w1.dtype] === ACT_FORMAT[w0.dtype] && ACT_FORMAT[w2.dtype] === ACT_FORMAT[w0.dtype] : !c0 && !c1 && !c2 && w1.dtype === w0.dtype && w2.dtype === w0.dtype;
    if (!oneCall) {
      this.linear(w0, x, out0);
      this.linear(w1, x, out1);
      this.linear(w2, x, out2);
      return;
    }
    this.#wrote(out0);
    this.#wrote(out1);
    this.#wrote(out2);
    this.#prepare(x, w0.dtype);
    cpu.matmul3Prepared(w0, w1, w2, this.#act, x.rows, out0, out1, out2);
  }

  gatedFfn(gate: Tensor, up: Tensor, x: Tensor, out: Tensor, activation: GatedActivation, tmp: Tensor): void {
    this.#wrote(out);
    // Gate and up both in place, or both from packed copies (LoadOptions.packLayers): one fused
    // call. One of each (never from the loader, which packs by type) takes two matmuls and the product.
    if (gate.dtype === up.dtype && !cpu.packedCopy(gate) === !cpu.packedCopy(up)) {
      this.#prepare(x, gate.dtype);
      cpu.ffnGatedPrepared(gate, up, this.#act, x.rows, out, activation);
      return;
    }
    this.linear(gate, x, out);
    this.linear(up, x, tmp);
    (activation === "silu" ? cpu.siluMul : cpu.geluTanhMul)(out, tmp, out);
  }

  /**
   * RoPE through a cos/sin table per configuration (cpu.ropeTable), remade only when the
   * positions change: a forward pass rotates Q and K of every layer at the same positions, and
   * the sin/cos were most of rope's time (SmolLM2 prefill: 60 calls per chunk). rope's bits.
   * Nothing is allocated per call once a configuration has its table.
   */
  rope(x: Tensor, nHead: number, positions: Int32Array, o: RopeOptions): void {
    this.#wrote(x);
    const nRot = o.nRot ?? x.cols / nHead;
    const maxBatch = this.#state.plan.maxBatch;
    if (positions.length !== x.rows || !Number.isInteger(nRot) || positions.length > maxBatch) {
      cpu.rope(x, nHead, positions, o); // its checks name the problem
      return;
    }
    const freqScale = o.freqScale ?? 1;
    let t: RopeTable | undefined;
    for (let i = 0; i < this.#ropeTables.length && !t; i++) {
      const p = this.#ropeTables[i]!.opts;
      if (p.nRot === nRot && p.mode === o.mode && p.freqBase === o.freqBase && p.freqScale === freqScale && p.freqFactors === o.freqFactors) t = this.#ropeTables[i];
    }
    if (!t) {
      // Once per configuration (Gemma 3 has two): room for the largest batch.
      const opts = { nRot, mode: o.mode, freqBase: o.freqBase, freqScale, freqFactors: o.freqFactors };
      t = { opts, positions: new Int32Array(maxBatch), n: -1, table: new Float32Array(cpu.ropeTableFloats(maxBatch, nRot)) };
      this.#ropeTables.push(t);
    }
    if (!samePositions(t, positions)) {
      t.n = -1; // stale until the table is made
      cpu.ropeTable(positions, t.opts, t.table);
      t.positions.set(positions);
      t.n = positions.length;
    }
    cpu.ropeApply(x, nHead, t.table, nRot, o.mode);
  }

  addBias(x: Tensor, bias: Tensor): void {
    this.#wrote(x);
    cpu.addBias(x, bias);
  }

  add(dst: Tensor, src: Tensor): void {
    this.#wrote(dst);
    cpu.add(dst, src);
  }

  scale(x: Tensor, s: number): void {
    this.#wrote(x);
    cpu.scale(x, s);
  }

  storeKV(src: Tensor, cache: Tensor, pos0: number): void {
    cpu.storeKV(src, cache, pos0, CPU_KV_LAYOUT);
  }

  attention(q: Tensor, k: Tensor, v: Tensor, nKv: number, out: Tensor, nHead: number, o: AttentionOptions): void {
    this.#wrote(out);
    const s = this.#state;
    if (s.attention === "flash") {
      cpu.flashAttention(q, k, v, nKv, out, nHead, o, CPU_KV_LAYOUT);
      return;
    }
    // Naive: one query chunk at a time; each chunk reads only the keys its last query sees.
    const n = q.dim(0);
    const chunk = s.naiveQueryChunk;
    for (let i = 0; i < n; i += chunk) {
      const c = Math.min(chunk, n - i);
      const qc = c === n ? q : q.sliceRows(i, c);
      const oc = c === n ? out : out.sliceRows(i, c);
      cpu.attentionNaive(qc, k, v, nKv - (n - i - c), oc, nHead, { ...o, qPos0: o.qPos0 + i }, this.#scores!, CPU_KV_LAYOUT);
    }
  }

  copyRow(t: Tensor, from: number, to: number): void {
    this.#wrote(t);
    const w = t.cols;
    t.f32.copyWithin(to * w, from * w, (from + 1) * w);
  }

  readLogits(logits: Tensor): Tensor {
    return logits;
  }

  dispose(): void {
    this.#scratch?.free();
    this.#scoresBuf?.free();
  }
}
