/**
 * Hyper-parameters read from GGUF metadata with llama.cpp's defaults, and the checks of the
 * hardening note's section E (model semantics) that need only metadata and tensor shapes.
 */
import { KilnError } from "../errors";
import { getFloat, getInt, getString, type GGUFFile, type GGUFTensorInfo } from "../gguf";

/** A file that parses as GGUF but is not a model kiln can run (codes: MISSING_TENSOR, BAD_HEADS, …). */
export class ModelError extends KilnError {
  /** The class name, as `Error.name` ("ModelError"). */
  override name = "ModelError";
  constructor(
    code: string,
    message: string,
    /** The model file's name, when known. */
    readonly file?: string,
  ) {
    super(code, `${file ? file + ": " : ""}${message} [${code}]`);
  }
}

export const MAX_LAYERS = 512;
export const MAX_HEADS = 1024;
export const MAX_EMBD = 1 << 16;

/**
 * A model's hyper-parameters, read from its GGUF metadata (`{arch}.*` keys) with llama.cpp's
 * defaults and checked against its tensor shapes.
 */
export interface HParams {
  /** `general.architecture`: "llama", "qwen2" or "gemma3". */
  arch: string;
  /** The context length the model was trained with (`{arch}.context_length`). */
  nCtxTrain: number;
  /** Width of the residual stream (`{arch}.embedding_length`). */
  nEmbd: number;
  /** Transformer blocks (`{arch}.block_count`). */
  nLayer: number;
  /** Hidden width of the feed-forward network (`{arch}.feed_forward_length`). */
  nFf: number;
  /** Query heads (`{arch}.attention.head_count`). */
  nHead: number;
  /**
   * Key/value heads (`{arch}.attention.head_count_kv`; fewer than nHead is grouped-query attention).
   */
  nKvHead: number;
  /** Width of one head (`{arch}.attention.key_length`, equal to value_length). */
  headDim: number; // key_length (= value_length)
  /** Dimensions of a head that RoPE rotates (`{arch}.rope.dimension_count`). */
  nRot: number;
  /** RMSNorm epsilon (`{arch}.attention.layer_norm_rms_epsilon`). */
  rmsEps: number;
  /** RoPE frequency base (`{arch}.rope.freq_base`). */
  ropeBase: number;
  /** RoPE frequency scale: 1 / the scaling factor (`{arch}.rope.scaling.factor`). */
  ropeScale: number; // freq_scale = 1 / scaling factor
  /** Gemma 3: sliding window length (0 = none) and the local-layer RoPE base. */
  slidingWindow: number;
  /** Gemma 3: the RoPE base of the sliding-window (local) layers (`{arch}.rope.freq_base_swa`). */
  ropeBaseLocal: number;
  /** Vocabulary size (`{arch}.vocab_size`, else the tokenizer's token count). */
  nVocab: number;
}

function int(file: GGUFFile, key: string, lo: number, hi: number, fallback?: number): number {
  const v = getInt(file.metadata, key, fallback);
  if (!(v >= lo && v <= hi)) throw new ModelError("HPARAM_OUT_OF_RANGE", `${key} = ${v} is outside [${lo}, ${hi}]`, file.fileName);
  return v;
}

function positive(file: GGUFFile, key: string, fallback?: number): number {
  const v = getFloat(file.metadata, key, fallback);
  if (!(Number.isFinite(v) && v > 0)) throw new ModelError("HPARAM_NOT_POSITIVE", `${key} = ${v} must be finite and > 0`, file.fileName);
  return v;
}

export function readHParams(file: GGUFFile, supported: readonly string[]): HParams {
  const arch = getString(file.metadata, "general.architecture");
  if (!/^[a-z0-9_]+$/.test(arch)) throw new ModelError("BAD_ARCHITECTURE", `general.architecture "${arch}" is not a valid name`, file.fileName);
  if (!supported.includes(arch)) {
    throw new ModelError("UNSUPPORTED_ARCHITECTURE", `architecture "${arch}" is not supported (kiln runs ${supported.join(", ")})`, file.fileName);
  }
  const a = (k: string) => `${arch}.${k}`;
  const nEmbd = int(file, a("embedding_length"), 1, MAX_EMBD);
  const nHead = int(file, a("attention.head_count"), 1, MAX_HEADS);
  const nKvHead = int(file, a("attention.head_count_kv"), 1, MAX_HEADS, nHead);
  if (nHead % nKvHead !== 0) throw new ModelError("BAD_HEADS", `head_count ${nHead} is not a multiple of head_count_kv ${nKvHead}`, file.fileName);
  const hasKeyLength = file.metadata.has(a("attention.key_length"));
  if (!hasKeyLength && nEmbd % nHead !== 0) throw new ModelError("BAD_HEADS", `embedding_length ${nEmbd} is not a multiple of head_count ${nHead} and no key_length is given`, file.fileName);
  const headDim = int(file, a("attention.key_length"), 1, 512, nEmbd / nHead);
  const valueDim = int(file, a("attention.value_length"), 1, 512, headDim);
  if (valueDim !== headDim) throw new ModelError("UNSUPPORTED_HPARAM", `value_length ${valueDim} ≠ key_length ${headDim}`, file.fileName);
  const nRot = int(file, a("rope.dimension_count"), 2, headDim, headDim);
  if (nRot % 2 !== 0) throw new ModelError("BAD_ROPE", `rope.dimension_count ${nRot} must be even`, file.fileName);
  const factor = file.metadata.has(a("rope.scaling.factor")) ? getFloat(file.metadata, a("rope.scaling.factor")) : 0;
  if (!(Number.isFinite(factor) && factor >= 0)) throw new ModelError("HPARAM_NOT_POSITIVE", `rope.scaling.factor = ${factor}`, file.fileName);
  const scalingType = file.metadata.has(a("rope.scaling.type")) ? getString(file.metadata, a("rope.scaling.type")) : "linear";
  if (scalingType !== "linear" && scalingType !== "none") throw new ModelError("UNSUPPORTED_HPARAM", `rope.scaling.type "${scalingType}" is not supported`, file.fileName);
  const tokens = file.metadata.get("tokenizer.ggml.tokens");
  const nVocabMeta = tokens?.type === 9 ? (tokens.value as unknown[]).length : 0;
  return {
    arch,
    nCtxTrain: int(file, a("context_length"), 1, 1 << 24),
    nEmbd,
    nLayer: int(file, a("block_count"), 1, MAX_LAYERS),
    nFf: int(file, a("feed_forward_length"), 1, 1 << 20),
    nHead,
    nKvHead,
    headDim,
    nRot,
    rmsEps: positive(file, a("attention.layer_norm_rms_epsilon")),
    ropeBase: positive(file, a("rope.freq_base"), 10000),
    ropeScale: factor > 0 && scalingType === "linear" ? 1 / factor : 1,
    slidingWindow: int(file, a("attention.sliding_window"), 0, 1 << 24, 0),
    ropeBaseLocal: positive(file, a("rope.freq_base_swa"), 10000),
    nVocab: int(file, a("vocab_size"), 1, 1 << 22, nVocabMeta || undefined),
  };
}

/** Checks a tensor exists with exactly the expected ggml dims (innermost first). */
export function expectTensor(file: GGUFFile, name: string, dims: readonly number[], optional = false): GGUFTensorInfo | undefined {
  const t = file.tensorsByName.get(name);
  if (!t) {
    if (optional) return undefined;
    throw new ModelError("MISSING_TENSOR", `required tensor ${name} [${dims.join(", ")}] is missing`, file.fileName);
  }
  if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) {
    throw new ModelError("BAD_TENSOR_SHAPE", `tensor ${name} has dims [${t.dims.join(", ")}], expected [${dims.join(", ")}]`, file.fileName);
  }
  return t;
}

/** block_count must match the blk.N.* tensors present (E02). */
export function checkLayerCount(file: GGUFFile, nLayer: number): void {
  let maxBlock = -1;
  for (const t of file.tensors) {
    const m = /^blk\.(\d+)\./.exec(t.name);
    if (m) maxBlock = Math.max(maxBlock, Number(m[1]));
  }
  if (maxBlock + 1 !== nLayer) {
    throw new ModelError("LAYER_COUNT_MISMATCH", `block_count is ${nLayer} but the file has tensors for ${maxBlock + 1} blocks`, file.fileName);
  }
}
