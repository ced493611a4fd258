/**
 * Llama family (architecture "llama": Llama 2/3, TinyLlama, SmolLM, Mistral-style), as
 * llama.cpp's src/models/llama.cpp computes it: pre-norm blocks, grouped-query attention with
 * normal (adjacent-pair) RoPE — the converter permuted Q/K rows for it — optional rope_freqs,
 * SiLU-gated FFN, and an output head that is `output.weight` or, when absent, token_embd.
 * Qwen2 (qwen2.ts) is this graph plus Q/K/V biases and NeoX RoPE, so it reuses `forward` here.
 * Tensor names are GGUF's, verbatim.
 */
import type { GGUFFile } from "../gguf";
import type { Tensor } from "../tensor";
import { F32_ONLY, attend, beginBatch, endBatch, optionalWeight, outputLogits, runSteps, storeKV, weight, type SeqPart } from "./common";
import { checkLayerCount, readHParams, type HParams } from "./hparams";
import type { RunState } from "./state";

export interface LlamaLayer {
  attn_norm: Tensor; // (n_embd)
  attn_q: Tensor; // (n_head * head_dim, n_embd)
  attn_k: Tensor; // (n_kv_head * head_dim, n_embd)
  attn_v: Tensor; // (n_kv_head * head_dim, n_embd)
  attn_q_bias?: Tensor; // (n_head * head_dim)       qwen2
  attn_k_bias?: Tensor; // (n_kv_head * head_dim)    qwen2
  attn_v_bias?: Tensor; // (n_kv_head * head_dim)    qwen2
  attn_output: Tensor; // (n_embd, n_head * head_dim)
  attn_output_bias?: Tensor; // (n_embd)             optional on llama
  ffn_norm: Tensor; // (n_embd)
  ffn_gate: Tensor; // (n_ff, n_embd)
  ffn_up: Tensor; // (n_ff, n_embd)
  ffn_down: Tensor; // (n_embd, n_ff)
}

export interface LlamaWeights {
  token_embd: Tensor; // (n_vocab, n_embd)
  output_norm: Tensor; // (n_embd)
  output: Tensor; // (n_vocab, n_embd): output.weight, or token_embd when tied
  output_bias?: Tensor; // (n_vocab)                 qwen2, optional
  rope_freqs?: Tensor; // (n_rot / 2)                Llama 3.1+
  blk: LlamaLayer[];
  ropeMode: "normal" | "neox";
}

export interface LlamaVariant {
  arch: "llama" | "qwen2";
  qkvBias: boolean;
  ropeMode: "normal" | "neox";
}

export const LLAMA: LlamaVariant = { arch: "llama", qkvBias: false, ropeMode: "normal" };

export function readLlamaHParams(file: GGUFFile, variant: LlamaVariant = LLAMA): HParams {
  return readHParams(file, [variant.arch]);
}

export function loadWeights(file: GGUFFile, bytes: Uint8Array, hp: HParams, variant: LlamaVariant = LLAMA): LlamaWeights {
  checkLayerCount(file, hp.nLayer);
  const { nEmbd: d, nFf: ff } = hp;
  const qDim = hp.nHead * hp.headDim;
  const kvDim = hp.nKvHead * hp.headDim;
  const w = (name: string, dims: number[], f32 = false) => weight(file, bytes, name, dims, f32 ? F32_ONLY : undefined);
  const opt = (name: string, dims: number[]) => optionalWeight(file, bytes, name, dims, F32_ONLY);
  const blk = Array.from({ length: hp.nLayer }, (_, i): LlamaLayer => {
    const p = `blk.${i}.`;
    return {
      attn_norm: w(p + "attn_norm.weight", [d], true),
      attn_q: w(p + "attn_q.weight", [d, qDim]),
      attn_k: w(p + "attn_k.weight", [d, kvDim]),
      attn_v: w(p + "attn_v.weight", [d, kvDim]),
      // llama.cpp's qwen2 graph adds the biases unconditionally, so they are required there.
      attn_q_bias: variant.qkvBias ? w(p + "attn_q.bias", [qDim], true) : undefined,
      attn_k_bias: variant.qkvBias ? w(p + "attn_k.bias", [kvDim], true) : undefined,
      attn_v_bias: variant.qkvBias ? w(p + "attn_v.bias", [kvDim], true) : undefined,
      attn_output: w(p + "attn_output.weight", [qDim, d]),
      attn_output_bias: variant.arch === "llama" ? opt(p + "attn_output.bias", [d]) : undefined,
      ffn_norm: w(p + "ffn_norm.weight", [d], true),
      ffn_gate: w(p + "ffn_gate.weight", [d, ff]),
      ffn_up: w(p + "ffn_up.weight", [d, ff]),
      ffn_down: w(p + "ffn_down.weight", [ff, d]),
    };
  });
  const token_embd = w("token_embd.weight", [d, hp.nVocab]);
  return {
    token_embd,
    output_norm: w("output_norm.weight", [d], true),
    output: optionalWeight(file, bytes, "output.weight", [d, hp.nVocab]) ?? token_embd,
    output_bias: variant.arch === "qwen2" ? opt("output.bias", [hp.nVocab]) : undefined,
    rope_freqs: opt("rope_freqs.weight", [hp.nRot / 2]),
    blk,
    ropeMode: variant.ropeMode,
  };
}

/**
 * Runs `tokens` at positions s.nPast.. through the model, appends their K/V to the cache, and
 * returns the logits of the last `logitRows` positions (a view of s.logits). With `parts`, the
 * tokens continue several sequences at once (one pass over the weights for all of them) and
 * the logits are one row per part, its last position.
 */
export function forward(hp: HParams, w: LlamaWeights, s: RunState, tokens: Int32Array, logitRows = 1, parts?: readonly SeqPart[]): Tensor {
  return runSteps(forwardSteps(hp, w, s, tokens, logitRows, parts));
}

/** forward, pausing after each layer (a caller may return to the event loop there: runtime/context.ts). */
export function* forwardSteps(hp: HParams, w: LlamaWeights, s: RunState, tokens: Int32Array, logitRows = 1, parts?: readonly SeqPart[]): Generator<void, Tensor> {
  const b = beginBatch(s, tokens, hp.nVocab, parts);
  const eps = hp.rmsEps;
  const be = s.ops;
  const rope = { nRot: hp.nRot, mode: w.ropeMode, freqBase: hp.ropeBase, freqScale: hp.ropeScale, freqFactors: w.rope_freqs };

  be.getRows(w.token_embd, tokens, b.x);

  for (let il = 0; il < hp.nLayer; il++) {
    const L = w.blk[il]!;

    // attention (x += the previous block's FFN output, fused into this norm)
    be.rmsNorm(b.x, L.attn_norm, b.h, eps, { residual: il > 0 ? b.o : undefined, feeds: L.attn_q });
    be.linear3(L.attn_q, L.attn_k, L.attn_v, b.h, b.q, b.k, b.v);
    if (L.attn_q_bias) be.addBias(b.q, L.attn_q_bias);
    if (L.attn_k_bias) be.addBias(b.k, L.attn_k_bias);
    if (L.attn_v_bias) be.addBias(b.v, L.attn_v_bias);
    be.rope(b.q, hp.nHead, b.positions, rope);
    be.rope(b.k, hp.nKvHead, b.positions, rope);
    storeKV(s, il, b);
    attend(s, il, b, hp.nHead, { scale: 1 / Math.sqrt(hp.headDim) });
    be.linear(L.attn_output, b.attn, b.o);
    if (L.attn_output_bias) be.addBias(b.o, L.attn_output_bias);

    // feed-forward: x += attention output; h = norm(x)
    be.rmsNorm(b.x, L.ffn_norm, b.h, eps, { residual: b.o, feeds: L.ffn_gate });
    be.gatedFfn(L.ffn_gate, L.ffn_up, b.h, b.ff, "silu", b.ff2);
    be.linear(L.ffn_down, b.ff, b.o);
    yield; // a layer done: nothing but this batch's own buffers and the cache carries over
  }

  be.rmsNorm(b.x, w.output_norm, b.h, eps, { residual: b.o });
  endBatch(s, b);
  return outputLogits(s, b, w.output, logitRows, parts !== undefined, w.output_bias);
}
