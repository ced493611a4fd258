/**
 * GGUF `general.architecture` → the module that reads its hyper-parameters and weights and runs
 * its forward pass. The runtime drives every architecture through this one interface.
 */
import type { GGUFFile } from "../gguf";
import type { Tensor } from "../tensor";
import * as gemma3 from "./gemma3";
import { ModelError, type HParams } from "./hparams";
import * as llama from "./llama";
import * as qwen2 from "./qwen2";
import type { RunState } from "./state";
import type { SeqPart } from "./common";

export interface Architecture<W = unknown> {
  name: string;
  readHParams(file: GGUFFile): HParams;
  loadWeights(file: GGUFFile, bytes: Uint8Array, hp: HParams): W;
  /**
   * Appends `tokens` to the context and returns the last `logitRows` rows of logits; with
   * `parts`, the tokens continue several sequences of the state and one row per part comes back.
   */
  forward(hp: HParams, weights: W, state: RunState, tokens: Int32Array, logitRows?: number, parts?: readonly SeqPart[]): Tensor;
  /**
   * forward as steps: the generator pauses after each layer and returns the logits at its end.
   * Between steps the caller may return to the event loop (nothing but the state's own buffers
   * carries over); a generator dropped before its end leaves the state's positions as they were.
   */
  forwardSteps(hp: HParams, weights: W, state: RunState, tokens: Int32Array, logitRows?: number, parts?: readonly SeqPart[]): Generator<void, Tensor>;
  /** Every weight tensor, for dtype listings and scratch sizing. */
  tensors(weights: W): Tensor[];
  /** The output head (n_vocab × n_embd): the tensor the runtime may pack at load. */
  outputHead(weights: W): Tensor;
}

const flatTensors = (w: object): Tensor[] => {
  const out: Tensor[] = [];
  const visit = (v: unknown) => {
    if (v && typeof v === "object" && "dtype" in v && "shape" in v) out.push(v as Tensor);
    else if (Array.isArray(v)) v.forEach(visit);
    else if (v && typeof v === "object") Object.values(v).forEach(visit);
  };
  visit(w);
  return out;
};

export const ARCHITECTURES: Record<string, Architecture<any>> = {
  llama: { name: "llama", readHParams: (f) => llama.readLlamaHParams(f), loadWeights: (f, b, hp) => llama.loadWeights(f, b, hp), forward: llama.forward, forwardSteps: llama.forwardSteps, tensors: flatTensors, outputHead: (w) => w.output },
  qwen2: { name: "qwen2", readHParams: qwen2.readQwen2HParams, loadWeights: qwen2.loadWeights, forward: qwen2.forward, forwardSteps: qwen2.forwardSteps, tensors: flatTensors, outputHead: (w) => w.output },
  gemma3: { name: "gemma3", readHParams: gemma3.readGemma3HParams, loadWeights: gemma3.loadWeights, forward: gemma3.forward, forwardSteps: gemma3.forwardSteps, tensors: flatTensors, outputHead: (w) => w.token_embd },
};

export function architectureOf(file: GGUFFile): Architecture {
  const v = file.metadata.get("general.architecture");
  if (!v || v.type !== 8) throw new ModelError("MISSING_ARCHITECTURE", "general.architecture is missing or not a string", file.fileName);
  const arch = ARCHITECTURES[v.value as string];
  if (!arch) throw new ModelError("UNSUPPORTED_ARCHITECTURE", `architecture "${v.value}" is not supported (kiln runs ${Object.keys(ARCHITECTURES).join(", ")})`, file.fileName);
  return arch;
}
