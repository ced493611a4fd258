/**
 * Qwen2 (architecture "qwen2"), as llama.cpp's src/models/qwen2.cpp computes it: the Llama
 * graph (llama.ts) with a bias added to Q, K and V right after their projections, NeoX RoPE,
 * and an optional output bias. Small Qwen2.5 models tie the output head to token_embd.
 */
import type { GGUFFile } from "../gguf";
import type { Tensor } from "../tensor";
import type { HParams } from "./hparams";
import * as llama from "./llama";
import type { RunState } from "./state";
import type { SeqPart } from "./common";

export const QWEN2: llama.LlamaVariant = { arch: "qwen2", qkvBias: true, ropeMode: "neox" };

export type Qwen2Weights = llama.LlamaWeights;

export const readQwen2HParams = (file: GGUFFile): HParams => llama.readLlamaHParams(file, QWEN2);

export const loadWeights = (file: GGUFFile, bytes: Uint8Array, hp: HParams): Qwen2Weights => llama.loadWeights(file, bytes, hp, QWEN2);

export const forward = (hp: HParams, w: Qwen2Weights, s: RunState, tokens: Int32Array, logitRows = 1, parts?: readonly SeqPart[]): Tensor => llama.forward(hp, w, s, tokens, logitRows, parts);

export const forwardSteps = (hp: HParams, w: Qwen2Weights, s: RunState, tokens: Int32Array, logitRows = 1, parts?: readonly SeqPart[]): Generator<void, Tensor> => llama.forwardSteps(hp, w, s, tokens, logitRows, parts);
