/**
 * Vocabulary-shaped tokenizers for synthetic GGUF models: real token tables (unique strings,
 * byte tokens, merges that reference existing tokens) that llama.cpp's vocab loader accepts and
 * that tokenize English text into plausible pieces, built without any downloaded tokenizer.
 *
 * - SentencePiece style (`tokenizer.ggml.model = "llama"`, used by llama and gemma3): specials,
 *   the 256 byte-fallback tokens `<0x00>`..`<0xFF>` (type 6), then pieces learned by a small BPE
 *   trainer over the built-in corpus (▁-prefixed words and common subwords, descending scores),
 *   then the single characters (lowest scores), padded to the requested size with generated
 *   pieces that are concatenations of two earlier pieces (so every piece stays reachable).
 * - Byte-level BPE (`tokenizer.ggml.model = "gpt2"`, `pre = "qwen2"`, used by qwen2): the 256
 *   GPT-2 byte-to-unicode tokens, one token per learned merge (pre-tokenized with the qwen2
 *   regex), generated merges as padding, and the `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`
 *   control tokens at the end.
 *
 * The tables depend only on (kind, size): a weight seed never changes the tokenizer.
 */
import { GGUFValueType as T } from "../gguf/types";
import type { GGUFWriter } from "../gguf/writer";

/** llama.cpp token types (`tokenizer.ggml.token_type`). */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export type VocabFlavor = "llama" | "gemma3" | "qwen2";

export interface SyntheticVocab {
  flavor: VocabFlavor;
  /** `tokenizer.ggml.model`. */
  model: "llama" | "gpt2";
  /** `tokenizer.ggml.pre`. */
  pre: string;
  tokens: string[];
  scores: Float32Array;
  tokenTypes: Int32Array;
  /** BPE merges ("A B", rank = index); empty for SentencePiece. */
  merges: string[];
  bos: number;
  eos: number;
  unk?: number;
  pad?: number;
  addBos: boolean;
  addEos: boolean;
  addSpacePrefix?: boolean;
}

/** A few paragraphs of plain English (with digits, punctuation and newlines) to learn pieces from. */
export const CORPUS = `The quick brown fox jumps over the lazy dog. Once upon a time, in a small village by the sea, there lived an old fisherman and his daughter. Every morning they would walk down to the harbor, check the nets, and talk about the weather.
"It will rain today," the old man said, looking at the grey clouds that were gathering over the hills. His daughter laughed and answered that he said the same thing every day, and that the sun was shining anyway.
The village had a market on Saturdays. People came from the neighboring towns to sell bread, cheese, apples, and fresh fish. Children played between the stalls while their parents argued about prices. In 1998 the market was moved to the new square near the church, and since then it has grown to more than 120 stalls.
Learning a language takes time and patience. You read, you listen, you make mistakes, and slowly the words begin to make sense. Teachers often say that the best way to learn is to practice a little every day instead of studying for many hours once a week.
Computers process information by following instructions written in programming languages. A program reads input, performs calculations, and produces output. Modern computers can perform billions of operations per second, which allows them to train large models on enormous amounts of text.
Scientists study the natural world through observation and experiment. They form hypotheses, design tests, measure results, and share their findings with others. Good science is careful, honest, and open to correction when new evidence appears.
The weather in the mountains changes quickly. In the morning the sky may be clear and blue, but by the afternoon heavy clouds can bring thunder, rain, or even snow. Experienced hikers always carry warm clothes, water, and a map.
What is the capital of France? The capital of France is Paris, a city famous for its museums, its cafes, and the tower built for the world fair of 1889. Many people visit it every year, and they often say that they would like to return.
She opened the window and the cold air filled the room. Outside, the streets were quiet; only a cat was walking slowly along the wall, stopping now and then to look at the birds in the trees.
Here is a simple recipe: mix two cups of flour with one cup of water, add a pinch of salt, and knead the dough for ten minutes. Let it rest, then bake it in a hot oven until the bread is golden and smells wonderful.
Numbers like 3, 14, 42, 100, 256, 1024 and 2048 appear everywhere in computing. Time is measured in hours, minutes and seconds; distance in meters and kilometers; and temperature in degrees.
I think that we should go home now, because it is getting late and tomorrow we have to wake up early. Do you remember where we parked the car? Yes, it is just around the corner, next to the old library.`;

const SP = "\u2581"; // ▁

// ---------------------------------------------------------------------------------------------
// A tiny BPE trainer
// ---------------------------------------------------------------------------------------------

/**
 * Greedy BPE over `words` (each already split into initial symbols, with a count): repeatedly
 * merges the most frequent adjacent pair (ties: first seen) until `maxMerges` or no pair occurs
 * at least `minCount` times. Returns the merges in order.
 */
function trainBpe(words: Map<string, number>, split: (w: string) => string[], maxMerges: number, minCount = 2): [string, string][] {
  const seqs: { syms: string[]; n: number }[] = [];
  for (const [w, n] of words) seqs.push({ syms: split(w), n });
  const merges: [string, string][] = [];
  while (merges.length < maxMerges) {
    const counts = new Map<string, number>();
    let best = "";
    let bestN = 0;
    for (const s of seqs) {
      for (let i = 0; i + 1 < s.syms.length; i++) {
        const key = s.syms[i] + "\u0000" + s.syms[i + 1];
        const c = (counts.get(key) ?? 0) + s.n;
        counts.set(key, c);
        if (c > bestN) {
          bestN = c;
          best = key;
        }
      }
    }
    if (bestN < minCount) break;
    const [a, b] = best.split("\u0000") as [string, string];
    merges.push([a, b]);
    const ab = a + b;
    for (const s of seqs) {
      const out: string[] = [];
      for (let i = 0; i < s.syms.length; i++) {
        if (i + 1 < s.syms.length && s.syms[i] === a && s.syms[i + 1] === b) {
          out.push(ab);
          i++;
        } else out.push(s.syms[i]!);
      }
      s.syms = out;
    }
  }
  return merges;
}

/** A small deterministic PRNG (mulberry32) for padding pieces; independent of any model seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Generates `count` new distinct pieces, each the concatenation of two existing pieces `a + b`
 * (b never starting with `wordStart`, so pieces look like word / subword continuations), and
 * calls `emit(a, b)` for each. `pool` grows as pieces are added.
 */
function padPieces(pool: string[], have: Set<string>, count: number, wordStart: string, maxLen: number, emit: (a: string, b: string) => void): void {
  const rnd = mulberry32(0x5eed);
  const conts = pool.filter((p) => !p.startsWith(wordStart));
  let added = 0;
  let tries = 0;
  while (added < count) {
    if (++tries > count * 200 + 100000) throw new Error(`synthetic vocab: could not generate ${count} distinct pieces`);
    // Bias towards short pieces so the vocabulary stays word-like.
    const a = pool[Math.floor(rnd() * rnd() * pool.length)]!;
    const b = conts[Math.floor(rnd() * rnd() * conts.length)]!;
    const ab = a + b;
    if ([...ab].length > maxLen || have.has(ab)) continue;
    have.add(ab);
    pool.push(ab);
    if (!ab.startsWith(wordStart)) conts.push(ab);
    emit(a, b);
    added++;
  }
}

// ---------------------------------------------------------------------------------------------
// SentencePiece (llama, gemma3)
// ---------------------------------------------------------------------------------------------

const BYTE_TOKENS = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);

/** Characters always present as single-character pieces (besides those in the corpus). */
const BASE_CHARS = [
  SP,
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-[]{}/\\@#$%&*+=<>_~`|^",
];

function spmVocab(flavor: "llama" | "gemma3", size: number): SyntheticVocab {
  const tokens: string[] = [];
  const types: number[] = [];
  const scores: number[] = [];
  const have = new Set<string>();
  const add = (t: string, type: number, score: number) => {
    if (have.has(t)) throw new Error(`synthetic vocab: duplicate token ${JSON.stringify(t)}`);
    have.add(t);
    tokens.push(t);
    types.push(type);
    scores.push(score);
  };
  let ids: { bos: number; eos: number; unk: number; pad?: number };
  if (flavor === "llama") {
    add("<unk>", TokenType.UNKNOWN, 0);
    add("<s>", TokenType.CONTROL, 0);
    add("</s>", TokenType.CONTROL, 0);
    ids = { unk: 0, bos: 1, eos: 2 };
  } else {
    // Gemma's layout: pad 0, eos 1, bos 2, unk 3, mask 4, then the chat-turn controls.
    add("<pad>", TokenType.CONTROL, 0);
    add("<eos>", TokenType.CONTROL, 0);
    add("<bos>", TokenType.CONTROL, 0);
    add("<unk>", TokenType.UNKNOWN, 0);
    add("<mask>", TokenType.CONTROL, 0);
    add("<start_of_turn>", TokenType.CONTROL, 0);
    add("<end_of_turn>", TokenType.CONTROL, 0);
    ids = { pad: 0, eos: 1, bos: 2, unk: 3 };
  }
  for (const b of BYTE_TOKENS) add(b, TokenType.BYTE, 0);

  const chars = new Set<string>(BASE_CHARS);
  const words = new Map<string, number>();
  for (const line of CORPUS.split("\n")) {
    for (const w of line.split(/ +/)) {
      if (!w) continue;
      const piece = SP + w;
      for (const ch of piece) chars.add(ch);
      words.set(piece, (words.get(piece) ?? 0) + 1);
    }
  }
  const charList = [...chars];
  const budget = size - tokens.length - charList.length;
  if (budget < 0) throw new Error(`synthetic vocab: size ${size} is too small for ${flavor} (needs ≥ ${tokens.length + charList.length})`);
  const merges = trainBpe(words, (w) => [...w], budget);
  let score = 0;
  for (const [a, b] of merges) {
    if (!have.has(a + b)) add(a + b, TokenType.NORMAL, --score);
  }
  // Padding pieces (concatenations of learned pieces), still ahead of the single characters.
  const pool = tokens.filter((_, i) => types[i] === TokenType.NORMAL);
  const charBase = charList.filter((c) => !have.has(c));
  const pad = size - tokens.length - charBase.length;
  if (pad > 0) {
    for (const c of charBase) have.add(c); // reserve: padding must not produce a bare character
    padPieces([...pool, ...charBase], have, pad, SP, 12, (a, b) => {
      have.delete(a + b);
      add(a + b, TokenType.NORMAL, --score);
    });
    for (const c of charBase) have.delete(c);
  }
  for (const c of charBase) add(c, TokenType.NORMAL, --score - 1000);
  if (tokens.length !== size) throw new Error(`synthetic vocab: built ${tokens.length} tokens, wanted ${size}`);
  return {
    flavor,
    model: "llama",
    pre: "default",
    tokens,
    scores: Float32Array.from(scores),
    tokenTypes: Int32Array.from(types),
    merges: [],
    ...ids,
    addBos: true,
    addEos: false,
    addSpacePrefix: flavor === "llama",
  };
}

// ---------------------------------------------------------------------------------------------
// Byte-level BPE (qwen2)
// ---------------------------------------------------------------------------------------------

/** GPT-2's bytes_to_unicode: [byte order of the base tokens, byte → character]. */
function bytesToUnicode(): { order: number[]; map: string[] } {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const map: string[] = new Array(256);
  bs.forEach((b, i) => (map[b] = String.fromCodePoint(cs[i]!)));
  return { order: bs, map };
}

/** llama.cpp's `qwen2` pre-tokenizer regex (llama3's, with single digits). */
const QWEN2_PRE =
  /(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

export const QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] as const;

function bpeVocab(size: number): SyntheticVocab {
  const { order, map } = bytesToUnicode();
  const enc = new TextEncoder();
  const byteLevel = (s: string) => Array.from(enc.encode(s), (b) => map[b]!).join("");
  const tokens: string[] = order.map((b) => map[b]!);
  const have = new Set(tokens);
  const merges: string[] = [];
  const nSpecial = QWEN2_SPECIALS.length;
  const budget = size - tokens.length - nSpecial;
  if (budget < 0) throw new Error(`synthetic vocab: size ${size} is too small for qwen2 (needs ≥ ${tokens.length + nSpecial})`);

  const words = new Map<string, number>();
  for (const m of CORPUS.matchAll(QWEN2_PRE)) {
    const w = byteLevel(m[0]);
    words.set(w, (words.get(w) ?? 0) + 1);
  }
  for (const [a, b] of trainBpe(words, (w) => [...w], budget)) {
    if (have.has(a + b)) continue; // (never happens with a consistent trainer; keeps ranks valid)
    merges.push(`${a} ${b}`);
    tokens.push(a + b);
    have.add(a + b);
  }
  const pad = budget - (tokens.length - 256);
  if (pad > 0) {
    const pool = tokens.slice(256).concat(tokens.slice(0, 256).filter((t) => /^[a-z]$/.test(t)));
    padPieces(pool, have, pad, "\u0120", 12, (a, b) => {
      merges.push(`${a} ${b}`);
      tokens.push(a + b);
    });
  }
  const eot = tokens.length;
  tokens.push(...QWEN2_SPECIALS);
  const types = new Int32Array(tokens.length).fill(TokenType.NORMAL);
  types.fill(TokenType.CONTROL, eot);
  if (tokens.length !== size) throw new Error(`synthetic vocab: built ${tokens.length} tokens, wanted ${size}`);
  return {
    flavor: "qwen2",
    model: "gpt2",
    pre: "qwen2",
    tokens,
    scores: new Float32Array(0),
    tokenTypes: types,
    merges,
    bos: eot,
    eos: eot + 2, // <|im_end|>, as Qwen2.5-Instruct
    pad: eot,
    addBos: false,
    addEos: false,
  };
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

const cache = new Map<string, SyntheticVocab>();

/** The synthetic vocabulary for an architecture and size (cached; treat as read-only). */
export function makeSyntheticVocab(flavor: VocabFlavor, size: number): SyntheticVocab {
  if (!Number.isInteger(size) || size < 1) throw new Error(`synthetic vocab: bad size ${size}`);
  const key = `${flavor}:${size}`;
  let v = cache.get(key);
  if (!v) {
    v = flavor === "qwen2" ? bpeVocab(size) : spmVocab(flavor, size);
    cache.set(key, v);
  }
  return v;
}

/** Writes the `tokenizer.ggml.*` keys for `vocab`. */
export function addTokenizerKVs(w: GGUFWriter, v: SyntheticVocab): void {
  w.addKV("tokenizer.ggml.model", T.STRING, v.model);
  w.addKV("tokenizer.ggml.pre", T.STRING, v.pre);
  w.addArray("tokenizer.ggml.tokens", T.STRING, v.tokens);
  if (v.model === "llama") w.addArray("tokenizer.ggml.scores", T.FLOAT32, v.scores);
  w.addArray("tokenizer.ggml.token_type", T.INT32, v.tokenTypes);
  if (v.model === "gpt2") w.addArray("tokenizer.ggml.merges", T.STRING, v.merges);
  w.addKV("tokenizer.ggml.bos_token_id", T.UINT32, v.bos);
  w.addKV("tokenizer.ggml.eos_token_id", T.UINT32, v.eos);
  if (v.unk !== undefined) w.addKV("tokenizer.ggml.unknown_token_id", T.UINT32, v.unk);
  if (v.pad !== undefined) w.addKV("tokenizer.ggml.padding_token_id", T.UINT32, v.pad);
  w.addKV("tokenizer.ggml.add_bos_token", T.BOOL, v.addBos);
  w.addKV("tokenizer.ggml.add_eos_token", T.BOOL, v.addEos);
  if (v.addSpacePrefix !== undefined) w.addKV("tokenizer.ggml.add_space_prefix", T.BOOL, v.addSpacePrefix);
}
