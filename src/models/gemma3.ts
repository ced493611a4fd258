/**
 * Gemma 3 (architecture "gemma3"), as llama.cpp's src/models/gemma3.cpp computes it:
 * - the token embedding is scaled by √n_embd;
 * - sliding-window layers (il % 6 < 5, window `attention.sliding_window`, RoPE base 10000)
 *   interleaved with global ones (RoPE base `rope.freq_base`, linear scaling);
 * - QK-norm (per-head RMSNorm of Q and K before RoPE), NeoX RoPE, attention scale 1/√head_dim;
 * - pre- and post-norms around attention and the FFN, GELU-tanh gated FFN;
 * - output head tied to token_embd, no logit softcap.
 * Norm weights already include Gemma's +1 (the converter adds it): x·w, not x·(1+w).
 * Tensor names are GGUF's, verbatim.
 */
import type { GGUFFile } from "../gguf";
import type { Tensor } from "../tensor";
import { F32_ONLY, attend, beginBatch, endBatch, outputLogits, runSteps, storeKV, weight, type SeqPart } from "./common";
import { checkLayerCount, readHParams, type HParams } from "./hparams";
import type { RunState } from "./state";

export interface Gemma3Layer {
  attn_norm: Tensor; // (n_embd)
  attn_q: Tensor; // (n_head * head_dim, n_embd)
  attn_k: Tensor; // (n_kv_head * head_dim, n_embd)
  attn_v: Tensor; // (n_kv_head * head_dim, n_embd)
  attn_q_norm: Tensor; // (head_dim)
  attn_k_norm: Tensor; // (head_dim)
  attn_output: Tensor; // (n_embd, n_head * head_dim)
  post_attention_norm: Tensor; // (n_embd)
  ffn_norm: Tensor; // (n_embd)
  ffn_gate: Tensor; // (n_ff, n_embd)
  ffn_up: Tensor; // (n_ff, n_embd)
  ffn_down: Tensor; // (n_embd, n_ff)
  post_ffw_norm: Tensor; // (n_embd)
}

export interface Gemma3Weights {
  token_embd: Tensor; // (n_vocab, n_embd), also the output head
  output_norm: Tensor; // (n_embd)
  blk: Gemma3Layer[];
}

export function loadWeights(file: GGUFFile, bytes: Uint8Array, hp: HParams): Gemma3Weights {
  checkLayerCount(file, hp.nLayer);
  const { nEmbd: d, nFf: ff, headDim: hd } = hp;
  const qDim = hp.nHead * hd;
  const kvDim = hp.nKvHead * hd;
  const w = (name: string, dims: number[], allowed?: readonly string[]) => weight(file, bytes, name, dims, allowed as never);
  const blk = Array.from({ length: hp.nLayer }, (_, i) => {
    const p = `blk.${i}.`;
    return {
      attn_norm: w(p + "attn_norm.weight", [d], F32_ONLY),
      attn_q: w(p + "attn_q.weight", [d, qDim]),
      attn_k: w(p + "attn_k.weight", [d, kvDim]),
      attn_v: w(p + "attn_v.weight", [d, kvDim]),
      attn_q_norm: w(p + "attn_q_norm.weight", [hd], F32_ONLY),
      attn_k_norm: w(p + "attn_k_norm.weight", [hd], F32_ONLY),
      attn_output: w(p + "attn_output.weight", [qDim, d]),
      post_attention_norm: w(p + "post_attention_norm.weight", [d], F32_ONLY),
      ffn_norm: w(p + "ffn_norm.weight", [d], F32_ONLY),
      ffn_gate: w(p + "ffn_gate.weight", [d, ff]),
      ffn_up: w(p + "ffn_up.weight", [d, ff]),
      ffn_down: w(p + "ffn_down.weight", [ff, d]),
      post_ffw_norm: w(p + "post_ffw_norm.weight", [d], F32_ONLY),
    };
  });
  return { token_embd: w("token_embd.weight", [d, hp.nVocab]), output_norm: w("output_norm.weight", [d], F32_ONLY), blk };
}

export function readGemma3HParams(file: GGUFFile): HParams {
  return readHParams(file, ["gemma3"]);
}

/** Layer il uses the sliding window unless il % 6 == 5 (llama.cpp's set_swa_pattern(6)). */
export const isLocalLayer = (hp: HParams, il: number) => hp.slidingWindow > 0 && il % 6 < 5;

/**
 * Runs `tokens` at positions s.nPast.. through the model, appends their K/V to the cache, and
 * returns the logits of the last `logitRows` positions (a view of s.logits). With `parts`, the
 * tokens continue several sequences at once (one pass over the weights for all of them) and
 * the logits are one row per part, its last position.
 */
export function forward(hp: HParams, w: Gemma3Weights, s: RunState, tokens: Int32Array, logitRows = 1, parts?: readonly SeqPart[]): Tensor {
  return runSteps(forwardSteps(hp, w, s, tokens, logitRows, parts));
}

/** forward, pausing after each layer (a caller may return to the event loop there: runtime/context.ts). */
export function* forwardSteps(hp: HParams, w: Gemma3Weights, s: RunState, tokens: Int32Array, logitRows = 1, parts?: readonly SeqPart[]): Generator<void, Tensor> {
  const b = beginBatch(s, tokens, hp.nVocab, parts);
  const eps = hp.rmsEps;
  const be = s.ops;

  be.getRows(w.token_embd, tokens, b.x);
  be.scale(b.x, Math.fround(Math.sqrt(hp.nEmbd)));

  for (let il = 0; il < hp.nLayer; il++) {
    const L = w.blk[il]!;
    const local = isLocalLayer(hp, il);

    // attention
    be.rmsNorm(b.x, L.attn_norm, b.h, eps, { feeds: L.attn_q });
    be.linear3(L.attn_q, L.attn_k, L.attn_v, b.h, b.q, b.k, b.v);
    be.rmsNormHeads(b.q, hp.nHead, L.attn_q_norm, eps);
    be.rmsNormHeads(b.k, hp.nKvHead, L.attn_k_norm, eps);
    const rope = { nRot: hp.nRot, mode: "neox" as const, freqBase: local ? hp.ropeBaseLocal : hp.ropeBase, freqScale: local ? 1 : hp.ropeScale };
    be.rope(b.q, hp.nHead, b.positions, rope);
    be.rope(b.k, hp.nKvHead, b.positions, rope);
    storeKV(s, il, b);
    attend(s, il, b, hp.nHead, { window: local ? hp.slidingWindow : 0, scale: 1 / Math.sqrt(hp.headDim) });
    be.linear(L.attn_output, b.attn, b.o);
    be.rmsNorm(b.o, L.post_attention_norm, b.o, eps);

    // feed-forward: x += attention output; h = norm(x)
    be.rmsNorm(b.x, L.ffn_norm, b.h, eps, { residual: b.o, feeds: L.ffn_gate });
    be.gatedFfn(L.ffn_gate, L.ffn_up, b.h, b.ff, "gelu_tanh", b.ff2);
    be.linear(L.ffn_down, b.ff, b.o);
    be.rmsNorm(b.o, L.post_ffw_norm, b.o, eps);
    be.add(b.x, b.o);
    yield; // a layer done: nothing but this batch's own buffers and the cache carries over
  }

  be.rmsNorm(b.x, w.output_norm, b.h, eps);
  endBatch(s, b);
  return outputLogits(s, b, w.token_embd, logitRows, parts !== undefined);
}
