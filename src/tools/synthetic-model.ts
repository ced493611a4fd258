/**
 * Synthetic GGUF models: seeded random weights at real shapes, with every metadata key and tensor
 * llama.cpp's loader expects for `llama`, `qwen2` and `gemma3` (see notes/model-facts.md §1–§2),
 * plus a vocabulary-shaped tokenizer (./synthetic-vocab.ts). Tests use the small shapes; the
 * benchmarks use TinyLlama-1.1B / Llama-2-7B shapes so kiln and llama.cpp run identical files.
 *
 * Weights. Each tensor has its own stream, seeded from (seed, tensor name), so the tensor order,
 * the chunking and the quant type never change the underlying f32 values: the q4_0 and the f32
 * file of one seed are the same model at two precisions. 2-D weights are ~N(0, 1/fan_in)
 * (an Irwin–Hall sum of four uniform bytes: bell-shaped, bounded at ±3.45σ); norm weights are
 * 1 ± 0.1 (Gemma's already include the +1, as its converter writes them; its post-attention and
 * post-FFN norms are scaled up, see planSyntheticModel); qwen2's q/k/v biases
 * are ~N(0, 0.05²). Logits then have a standard deviation of about 1.
 *
 * Quantization. Every type goes through kiln's Zig quantizers (kiln_quantize_row; the 32-block
 * types round as ggml's reference quantizers do, byte for byte). Generation and quantization run
 * in chunks of rows, so no f32 copy of a whole large tensor is ever held.
 *
 * Types per tensor: 1-D tensors stay F32. With a plain type T every 2-D weight is T, falling back
 * as llama-quantize does when its row length is not a whole number of T's blocks (Q4_K→Q5_0,
 * Q5_K→Q5_1, Q6_K→Q8_0, then F16). "q4_k_m" mimics llama-quantize's Q4_K_M rules.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import * as cpu from "../backends/cpu";
import { GGUFValueType as V } from "../gguf/types";
import { GGUFWriter } from "../gguf/writer";
import { DTYPE_IDS, DTYPE_LAYOUT, Tensor, isDType, type DType } from "../tensor";
import { addTokenizerKVs, makeSyntheticVocab, type SyntheticVocab } from "./synthetic-vocab";

export type SyntheticArch = "llama" | "qwen2" | "gemma3";
export type SyntheticType = DType | "q4_k_m";
export type SyntheticShapeName = "tiny" | "tinyllama" | "llama2-7b";

export interface SyntheticHParams {
  nVocab: number;
  nCtx: number;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  nFf: number;
  /** Per-head dimension (key_length = value_length); default nEmbd / nHead. */
  headDim: number;
  rmsEps: number;
  ropeBase: number;
  /** gemma3 only: `attention.sliding_window` (local layers are il % 6 < 5). */
  slidingWindow: number;
}

export interface SyntheticModelOptions {
  arch: SyntheticArch;
  type: SyntheticType;
  /** A named shape, or hyperparameters (nEmbd, nLayer, nHead, nFf, nVocab required). */
  shape: SyntheticShapeName | (Partial<SyntheticHParams> & Pick<SyntheticHParams, "nEmbd" | "nLayer" | "nHead" | "nFf" | "nVocab">);
  /** Weight seed (default 0). The tokenizer does not depend on it. */
  seed?: number;
  /** Omit `output.weight` (the LM head reuses token_embd). gemma3 is always tied; default false otherwise. */
  tiedOutput?: boolean;
  /** `general.name`; default `synthetic-{arch}-{shape}-{type}`. */
  name?: string;
}

/** One tensor of the plan: its GGUF name, ggml dims (innermost first), type, and data generator. */
export interface SyntheticTensor {
  name: string;
  dims: number[];
  type: DType;
  nbytes: number;
  generate(): Uint8Array;
}

export interface SyntheticPlan {
  arch: SyntheticArch;
  hparams: SyntheticHParams;
  vocab: SyntheticVocab;
  tied: boolean;
  fileType: number;
  /** A writer holding every KV but no tensors yet. */
  kvs: GGUFWriter;
  tensors: SyntheticTensor[];
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

const ARCH_DEFAULTS: Record<SyntheticArch, { rmsEps: number; ropeBase: number }> = {
  llama: { rmsEps: 1e-5, ropeBase: 10000 },
  qwen2: { rmsEps: 1e-6, ropeBase: 1000000 },
  gemma3: { rmsEps: 1e-6, ropeBase: 1000000 },
};

/** Named shapes. `tiny` has n_embd 256 so k-quants are exercised, and an FFN width (640) that forces the fallbacks. */
export function resolveHParams(arch: SyntheticArch, shape: SyntheticModelOptions["shape"]): SyntheticHParams {
  const d = ARCH_DEFAULTS[arch];
  let hp: SyntheticHParams;
  if (typeof shape === "object") {
    hp = {
      nCtx: 256,
      nHeadKv: shape.nHead,
      headDim: shape.nEmbd / shape.nHead,
      slidingWindow: 0,
      ...d,
      ...shape,
    } as SyntheticHParams;
    if (arch === "gemma3" && !shape.slidingWindow) hp.slidingWindow = 16;
  } else if (shape === "tiny") {
    hp = arch === "gemma3"
      ? { nVocab: 600, nCtx: 256, nEmbd: 256, nLayer: 6, nHead: 4, nHeadKv: 2, nFf: 640, headDim: 32, slidingWindow: 16, ...d }
      : { nVocab: 600, nCtx: 256, nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 640, headDim: 64, slidingWindow: 0, ...d };
  } else if (shape === "tinyllama") {
    hp = { nVocab: 32000, nCtx: 2048, nEmbd: 2048, nLayer: 22, nHead: 32, nHeadKv: 4, nFf: 5632, headDim: 64, slidingWindow: 0, ...d };
    if (arch === "gemma3") hp.slidingWindow = 512;
  } else if (shape === "llama2-7b") {
    hp = { nVocab: 32000, nCtx: 4096, nEmbd: 4096, nLayer: 32, nHead: 32, nHeadKv: 32, nFf: 11008, headDim: 128, slidingWindow: 0, ...d };
    if (arch === "gemma3") hp.slidingWindow = 1024;
  } else {
    throw new Error(`synthetic model: unknown shape ${JSON.stringify(shape)} (tiny | tinyllama | llama2-7b | hparams object)`);
  }
  if (arch !== "gemma3") hp.slidingWindow = 0;
  for (const k of ["nVocab", "nCtx", "nEmbd", "nLayer", "nHead", "nHeadKv", "nFf", "headDim"] as const) {
    if (!Number.isInteger(hp[k]) || hp[k] < 1) throw new Error(`synthetic model: ${k} = ${hp[k]} must be a positive integer`);
  }
  if (hp.nHead % hp.nHeadKv !== 0) throw new Error(`synthetic model: nHead ${hp.nHead} is not a multiple of nHeadKv ${hp.nHeadKv}`);
  if (hp.headDim % 2 !== 0) throw new Error(`synthetic model: headDim ${hp.headDim} must be even (RoPE)`);
  return hp;
}

// ---------------------------------------------------------------------------------------------
// Tensor types
// ---------------------------------------------------------------------------------------------

/** llama.cpp's LLAMA_FTYPE for each file type. */
export const FILE_TYPE: Record<SyntheticType, number> = {
  f32: 0, f16: 1, q4_0: 2, q4_1: 3, q8_0: 7, q5_0: 8, q5_1: 9,
  q4_k: 14 /* Q4_K_S */, q4_k_m: 15, q5_k: 16 /* Q5_K_S */, q6_k: 18, bf16: 32,
};

/** llama-quantize's `use_more_bits(i, n)`. */
export const useMoreBits = (i: number, n: number): boolean =>
  i < Math.floor(n / 8) || i >= Math.floor((7 * n) / 8) || (i - Math.floor(n / 8)) % 3 === 2;

/** llama-quantize's fallback when ne0 is not a whole number of `t`'s blocks. */
export function fallbackType(t: DType, ne0: number): DType {
  if (ne0 % DTYPE_LAYOUT[t].blockSize === 0) return t;
  const alt: DType = t === "q4_k" ? "q5_0" : t === "q5_k" ? "q5_1" : t === "q6_k" ? "q8_0" : "f16";
  return ne0 % DTYPE_LAYOUT[alt].blockSize === 0 ? alt : "f16";
}

/**
 * The type a 2-D weight gets. `kind` is the tensor name without `blk.N.`; `tied` says whether
 * token_embd doubles as the output (then it is treated as the output under q4_k_m).
 */
export function weightType(type: SyntheticType, kind: string, ne0: number, layer: number, nLayer: number, tied: boolean): DType {
  if (type !== "q4_k_m") return fallbackType(type, ne0);
  let t: DType = "q4_k";
  if (kind === "output.weight" || (tied && kind === "token_embd.weight")) t = "q6_k";
  else if ((kind === "attn_v.weight" || kind === "ffn_down.weight") && useMoreBits(layer, nLayer)) t = "q6_k";
  return fallbackType(t, ne0);
}

// ---------------------------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------------------------

/** FNV-1a of the name mixed with the seed: the start of a tensor's counter stream. */
function streamSeed(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 4294967296) >>> 0;
  h = Math.imul(h ^ lo, 0x9e3779b1) ^ Math.imul(hi + 0x7f4a7c15, 0x85ebca6b);
  return h >>> 0;
}

/** A counter-based splitmix32 stream: u32 outputs, resumable across chunks. */
class Stream {
  constructor(private c: number) {}
  u32(): number {
    this.c = (this.c + 0x9e3779b9) | 0;
    let z = this.c;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }
  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }
  /** Fills `out` with ~N(0, std²): (sum of 4 uniform bytes − 510) / 147.80. */
  normal(out: Float32Array, std: number): void {
    const k = std / 147.7993;
    let c = this.c;
    for (let i = 0; i < out.length; i++) {
      c = (c + 0x9e3779b9) | 0;
      let z = c;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      z ^= z >>> 16;
      out[i] = ((z & 255) + ((z >>> 8) & 255) + ((z >>> 16) & 255) + ((z >>> 24) & 255) - 510) * k;
    }
    this.c = c;
  }
}

/** Quantizes `rows × cols` f32 values (row-major) into `out` (exactly the GGUF bytes), with kiln's kernels. */
function quantizeRows(t: DType, x: Float32Array, rows: number, cols: number, out: Uint8Array): void {
  cpu.quantizeInto(Tensor.fromF32(x, [rows, cols]), new Tensor(t, [rows, cols], out));
}

// ---------------------------------------------------------------------------------------------
// Tensor generators
// ---------------------------------------------------------------------------------------------

/** f32 elements generated per chunk (16 MiB). */
const CHUNK = 1 << 22;

function bytesOf(t: DType, dims: number[]): number {
  const { blockSize, typeSize } = DTYPE_LAYOUT[t];
  return (dims[0]! / blockSize) * typeSize * dims.slice(1).reduce((a, b) => a * b, 1);
}

function weightTensor(name: string, cols: number, rows: number, t: DType, std: number, seed: number): SyntheticTensor {
  const dims = [cols, rows];
  return {
    name, dims, type: t, nbytes: bytesOf(t, dims),
    generate() {
      const rb = bytesOf(t, [cols]);
      const out = new Uint8Array(rb * rows);
      const s = new Stream(streamSeed(seed, name));
      const chunkRows = Math.max(1, Math.min(rows, Math.floor(CHUNK / cols)));
      if (t === "f32") {
        s.normal(new Float32Array(out.buffer, 0, rows * cols), std);
        return out;
      }
      const scratch = new Float32Array(chunkRows * cols);
      for (let r0 = 0; r0 < rows; r0 += chunkRows) {
        const r = Math.min(chunkRows, rows - r0);
        const x = scratch.subarray(0, r * cols);
        s.normal(x, std);
        quantizeRows(t, x, r, cols, out.subarray(r0 * rb, (r0 + r) * rb));
      }
      return out;
    },
  };
}

function vectorTensor(name: string, n: number, seed: number, fill: (s: Stream, out: Float32Array) => void): SyntheticTensor {
  return {
    name, dims: [n], type: "f32", nbytes: 4 * n,
    generate() {
      const x = new Float32Array(n);
      fill(new Stream(streamSeed(seed, name)), x);
      return new Uint8Array(x.buffer);
    },
  };
}

const scaledNormFill = (c: number) => (s: Stream, x: Float32Array) => {
  for (let i = 0; i < x.length; i++) x[i] = c * (0.9 + 0.2 * s.float());
};
const normFill = scaledNormFill(1);
const biasFill = (s: Stream, x: Float32Array) => s.normal(x, 0.05);

// ---------------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------------

function shapeLabel(shape: SyntheticModelOptions["shape"]): string {
  return typeof shape === "string" ? shape : `custom-${shape.nEmbd}x${shape.nLayer}`;
}

/** Everything the file will contain, with tensor data still ungenerated. */
export function planSyntheticModel(opts: SyntheticModelOptions): SyntheticPlan {
  const { arch, type } = opts;
  if (arch !== "llama" && arch !== "qwen2" && arch !== "gemma3") throw new Error(`synthetic model: unknown arch ${arch}`);
  if (type !== "q4_k_m" && !isDType(type)) throw new Error(`synthetic model: unknown type ${type}`);
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`synthetic model: seed must be a non-negative safe integer`);
  const hp = resolveHParams(arch, opts.shape);
  const tied = arch === "gemma3" ? true : (opts.tiedOutput ?? false);
  const vocab = makeSyntheticVocab(arch, hp.nVocab);
  const fileType = FILE_TYPE[type];

  const w = new GGUFWriter();
  const a = arch;
  w.addKV("general.architecture", V.STRING, arch);
  w.addKV("general.name", V.STRING, opts.name ?? `synthetic-${arch}-${shapeLabel(opts.shape)}-${type}`);
  w.addKV("general.file_type", V.UINT32, fileType);
  if (type !== "f32" && type !== "f16" && type !== "bf16") w.addKV("general.quantization_version", V.UINT32, 2);
  w.addKV(`${a}.context_length`, V.UINT32, hp.nCtx);
  w.addKV(`${a}.embedding_length`, V.UINT32, hp.nEmbd);
  w.addKV(`${a}.block_count`, V.UINT32, hp.nLayer);
  w.addKV(`${a}.feed_forward_length`, V.UINT32, hp.nFf);
  w.addKV(`${a}.attention.head_count`, V.UINT32, hp.nHead);
  w.addKV(`${a}.attention.head_count_kv`, V.UINT32, hp.nHeadKv);
  w.addKV(`${a}.attention.layer_norm_rms_epsilon`, V.FLOAT32, hp.rmsEps);
  w.addKV(`${a}.rope.freq_base`, V.FLOAT32, hp.ropeBase);
  if (arch === "gemma3" || hp.headDim !== hp.nEmbd / hp.nHead) {
    w.addKV(`${a}.attention.key_length`, V.UINT32, hp.headDim);
    w.addKV(`${a}.attention.value_length`, V.UINT32, hp.headDim);
  }
  if (arch === "gemma3") w.addKV(`${a}.attention.sliding_window`, V.UINT32, hp.slidingWindow);
  else w.addKV(`${a}.rope.dimension_count`, V.UINT32, hp.headDim);
  addTokenizerKVs(w, vocab);

  const { nEmbd, nFf, nLayer, nVocab, headDim } = hp;
  const qDim = hp.nHead * headDim, kvDim = hp.nHeadKv * headDim;
  const tensors: SyntheticTensor[] = [];
  const weight = (name: string, kind: string, layer: number, cols: number, rows: number) =>
    tensors.push(weightTensor(name, cols, rows, weightType(type, kind, cols, layer, nLayer, tied), 1 / Math.sqrt(cols), seed));
  const norm = (name: string, n: number) => tensors.push(vectorTensor(name, n, seed, normFill));
  // Gemma's tied head sees the input embedding (scaled by √n_embd, so unit RMS) in the residual:
  // with unit-size sublayer outputs every token would predict itself. Post-norm weights of
  // √(2·n_embd/n_layer) make the residual's RMS ≈ 2√n_embd, so the self logit is ~0.5σ, not ~√n σ.
  const postNormFill = scaledNormFill(Math.sqrt((2 * hp.nEmbd) / hp.nLayer));
  const postNorm = (name: string) => tensors.push(vectorTensor(name, hp.nEmbd, seed, postNormFill));

  weight("token_embd.weight", "token_embd.weight", -1, nEmbd, nVocab);
  norm("output_norm.weight", nEmbd);
  if (!tied) weight("output.weight", "output.weight", -1, nEmbd, nVocab);
  for (let il = 0; il < nLayer; il++) {
    const p = `blk.${il}.`;
    norm(p + "attn_norm.weight", nEmbd);
    weight(p + "attn_q.weight", "attn_q.weight", il, nEmbd, qDim);
    weight(p + "attn_k.weight", "attn_k.weight", il, nEmbd, kvDim);
    weight(p + "attn_v.weight", "attn_v.weight", il, nEmbd, kvDim);
    if (arch === "qwen2") {
      tensors.push(vectorTensor(p + "attn_q.bias", qDim, seed, biasFill));
      tensors.push(vectorTensor(p + "attn_k.bias", kvDim, seed, biasFill));
      tensors.push(vectorTensor(p + "attn_v.bias", kvDim, seed, biasFill));
    }
    if (arch === "gemma3") {
      norm(p + "attn_q_norm.weight", headDim);
      norm(p + "attn_k_norm.weight", headDim);
    }
    weight(p + "attn_output.weight", "attn_output.weight", il, qDim, nEmbd);
    if (arch === "gemma3") postNorm(p + "post_attention_norm.weight");
    norm(p + "ffn_norm.weight", nEmbd);
    weight(p + "ffn_gate.weight", "ffn_gate.weight", il, nEmbd, nFf);
    weight(p + "ffn_up.weight", "ffn_up.weight", il, nEmbd, nFf);
    weight(p + "ffn_down.weight", "ffn_down.weight", il, nFf, nEmbd);
    if (arch === "gemma3") postNorm(p + "post_ffw_norm.weight");
  }
  return { arch, hparams: hp, vocab, tied, fileType, kvs: w, tensors };
}

/** The whole model in memory (every tensor generated). */
export function makeSyntheticModel(opts: SyntheticModelOptions): GGUFWriter {
  const plan = planSyntheticModel(opts);
  for (const t of plan.tensors) plan.kvs.addTensor(t.name, t.dims, DTYPE_IDS[t.type], t.generate());
  return plan.kvs;
}

/** The file's bytes. */
export function syntheticModelBytes(opts: SyntheticModelOptions): Uint8Array {
  return makeSyntheticModel(opts).toBytes();
}

export interface WriteResult {
  path: string;
  bytes: number;
  ms: number;
  tensors: number;
}

/**
 * Writes the model to `path`, streaming: the header (KVs and tensor infos, laid out by
 * GGUFWriter.layout() exactly as `write()` would) goes first, then each tensor is generated,
 * written at its offset and dropped, so memory stays at about one tensor plus one f32 chunk.
 * Byte-identical to `makeSyntheticModel(opts).write(path)`.
 */
export function writeSyntheticModel(path: string, opts: SyntheticModelOptions): WriteResult {
  const t0 = performance.now();
  const plan = planSyntheticModel(opts);
  const w = plan.kvs;
  // Header + KVs, as the writer encodes them (no tensors yet: a few hundred KB at most).
  const kvPart = w.toBytes().subarray(0, w.layout().infosOffset);
  // Register the real dims against views of one shared zero buffer, for the layout only.
  const maxBytes = plan.tensors.reduce((m, t) => Math.max(m, t.nbytes), 0);
  const zeros = new Uint8Array(maxBytes);
  for (const t of plan.tensors) w.addTensor(t.name, t.dims, DTYPE_IDS[t.type], zeros.subarray(0, t.nbytes));
  const layout = w.layout();
  const head = new Uint8Array(layout.dataOffset);
  head.set(kvPart, 0);
  const hv = new DataView(head.buffer);
  hv.setBigUint64(8, BigInt(plan.tensors.length), true);
  const enc = new TextEncoder();
  plan.tensors.forEach((t, i) => {
    const l = layout.tensors[i]!;
    const name = enc.encode(t.name);
    hv.setBigUint64(l.infoOffset, BigInt(name.length), true);
    head.set(name, l.infoOffset + 8);
    hv.setUint32(l.nDimsOffset, t.dims.length, true);
    t.dims.forEach((d, j) => hv.setBigUint64(l.neOffset + 8 * j, BigInt(d), true));
    hv.setUint32(l.typeOffset, DTYPE_IDS[t.type], true);
    hv.setBigUint64(l.offsetOffset, BigInt(l.dataOffset - layout.dataOffset), true);
  });
  const fd = openSync(path, "w");
  try {
    writeAll(fd, head, 0);
    let end = layout.dataOffset;
    plan.tensors.forEach((t, i) => {
      const l = layout.tensors[i]!;
      if (l.dataOffset > end) writeAll(fd, new Uint8Array(l.dataOffset - end), end); // alignment padding
      writeAll(fd, t.generate(), l.dataOffset);
      end = l.dataOffset + l.nbytes;
    });
    if (layout.totalSize > end) writeAll(fd, new Uint8Array(layout.totalSize - end), end);
  } finally {
    closeSync(fd);
  }
  return { path, bytes: layout.totalSize, ms: performance.now() - t0, tensors: plan.tensors.length };
}

function writeAll(fd: number, b: Uint8Array, pos: number): void {
  let done = 0;
  while (done < b.length) done += writeSync(fd, b, done, b.length - done, pos + done);
}
