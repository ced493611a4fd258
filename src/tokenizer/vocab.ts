/**
 * The vocabulary as GGUF stores it (tokenizer.ggml.*), with llama.cpp's defaults and checks,
 * shared by the SentencePiece-style and byte-level BPE tokenizers.
 */
import { checkTokenizerMetadata, getArray, getArrayOpt, getBool, getInt, getString, GGUFValueType, type GGUFMetadata } from "../gguf";

export const TokenType = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/** Texts llama.cpp adds to the end-of-generation set (and forces to CONTROL). */
const EOG_TEXTS = ["<|eot_id|>", "</s>", "_<EOT>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<|end_of_text|>", "<EOT>", "<|return|>", "<|call|>", "<|end▁of▁sentence|>"];

export interface Vocab {
  model: "llama" | "gpt2";
  pre: string;
  tokens: string[];
  scores: Float32Array;
  types: Int32Array;
  ids: Map<string, number>;
  merges: string[];
  bos: number;
  eos: number;
  eot: number;
  unk: number;
  addBos: boolean;
  addEos: boolean;
  addSpacePrefix: boolean;
  eog: Set<number>;
  /** CONTROL / USER_DEFINED / UNKNOWN tokens, longest text first (special-token partition). */
  specials: { id: number; text: string; type: number }[];
}

function optId(meta: GGUFMetadata, key: string, fallback: number, n: number): number {
  const id = meta.has(key) ? getInt(meta, key) : fallback;
  if (id !== -1 && !(id >= 0 && id < n)) throw new RangeError(`${key} = ${id} is outside the vocabulary [0, ${n})`);
  return id;
}

export function readVocab(meta: GGUFMetadata): Vocab {
  const { nVocab: n } = checkTokenizerMetadata(meta);
  const model = getString(meta, "tokenizer.ggml.model");
  if (model !== "llama" && model !== "gpt2") throw new Error(`tokenizer.ggml.model "${model}" is not supported (kiln reads "llama" and "gpt2")`);
  const tokens = getArray(meta, "tokenizer.ggml.tokens", GGUFValueType.STRING) as string[];
  const scores = getArrayOpt(meta, "tokenizer.ggml.scores", GGUFValueType.FLOAT32) ?? new Float32Array(n);
  const types = getArrayOpt(meta, "tokenizer.ggml.token_type", GGUFValueType.INT32) ?? new Int32Array(n).fill(TokenType.normal);
  const merges = (getArrayOpt(meta, "tokenizer.ggml.merges", GGUFValueType.STRING) as string[] | undefined) ?? [];
  const pre = meta.has("tokenizer.ggml.pre") ? getString(meta, "tokenizer.ggml.pre") : "default";
  const spm = model === "llama";
  const ids = new Map<string, number>();
  tokens.forEach((t, i) => { if (!ids.has(t)) ids.set(t, i); });
  const bos = optId(meta, "tokenizer.ggml.bos_token_id", spm ? 1 : 11, n);
  const eos = optId(meta, "tokenizer.ggml.eos_token_id", spm ? 2 : 11, n);
  const eot = optId(meta, "tokenizer.ggml.eot_token_id", -1, n);
  const unk = optId(meta, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1, n);
  const llama3 = pre === "llama3" || pre === "llama-bpe";
  const addBos = meta.has("tokenizer.ggml.add_bos_token") ? getBool(meta, "tokenizer.ggml.add_bos_token") : spm || llama3;
  const addEos = meta.has("tokenizer.ggml.add_eos_token") ? getBool(meta, "tokenizer.ggml.add_eos_token") : false;
  const addSpacePrefix = meta.has("tokenizer.ggml.add_space_prefix") ? getBool(meta, "tokenizer.ggml.add_space_prefix") : spm;
  const eog = new Set<number>();
  for (const id of [eos, eot]) if (id >= 0) eog.add(id);
  const typesCopy = Int32Array.from(types);
  for (const text of EOG_TEXTS) {
    const id = ids.get(text);
    if (id !== undefined) {
      eog.add(id);
      typesCopy[id] = TokenType.control;
    }
  }
  const specials: Vocab["specials"] = [];
  typesCopy.forEach((t, id) => {
    if ((t === TokenType.control || t === TokenType.userDefined || t === TokenType.unknown) && tokens[id]!.length > 0) specials.push({ id, text: tokens[id]!, type: t });
  });
  specials.sort((a, b) => b.text.length - a.text.length || a.id - b.id);
  return { model, pre, tokens, scores, types: typesCopy, ids, merges, bos, eos, eot, unk, addBos, addEos, addSpacePrefix, eog, specials };
}

export type Fragment = { text: string } | { token: number };

/**
 * llama.cpp's special-token partition: split the text on the exact text of special tokens,
 * longest first. USER_DEFINED tokens always match; CONTROL and UNKNOWN only with parseSpecial.
 */
export function partition(v: Vocab, text: string, parseSpecial: boolean): Fragment[] {
  let frags: Fragment[] = text.length > 0 ? [{ text }] : [];
  for (const s of v.specials) {
    if (!parseSpecial && s.type !== TokenType.userDefined) continue;
    const next: Fragment[] = [];
    for (const f of frags) {
      if (!("text" in f) || !f.text.includes(s.text)) {
        next.push(f);
        continue;
      }
      const parts = f.text.split(s.text);
      parts.forEach((p, i) => {
        if (p.length > 0) next.push({ text: p });
        if (i < parts.length - 1) next.push({ token: s.id });
      });
    }
    frags = next;
  }
  return frags;
}
