/**
 * Byte-level BPE (tokenizer.ggml.model = "gpt2": Llama 3, Qwen2, SmolLM), as llama.cpp's
 * llm_tokenizer_bpe does it: split the text with the pre-tokenizer regexes chosen by
 * tokenizer.ggml.pre, map each piece's bytes to GPT-2's printable code points, merge adjacent
 * symbols lowest merge rank first (ties: leftmost), then look the symbols up.
 */
import type { Vocab } from "./vocab";

const LLAMA3 = /(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;
const QWEN2 = /(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;
const GPT2 = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)/gu;
const DEFAULT = [/[\p{P}$+<=>^~|]+/gu, GPT2, /\p{N}+/gu, /[0-9][0-9][0-9]/gu];

/** The regex list for a tokenizer.ggml.pre name (unknown names use "default", as Ollama does). */
export function preTokenizerRegexes(pre: string): RegExp[] {
  switch (pre) {
    case "llama3":
    case "llama-bpe":
    case "smollm":
    case "dbrx":
      return [LLAMA3];
    case "qwen2":
    case "deepseek-r1-qwen":
      return [QWEN2];
    case "gpt-2":
    case "gpt2":
      return [GPT2];
    default:
      return DEFAULT;
  }
}

/** Each regex splits every piece further; text between matches stays a piece of its own. */
export function preTokenize(text: string, regexes: RegExp[]): string[] {
  let pieces = [text];
  for (const re of regexes) {
    const next: string[] = [];
    for (const p of pieces) {
      let last = 0;
      for (const m of p.matchAll(re)) {
        if (m.index! > last) next.push(p.slice(last, m.index));
        if (m[0].length > 0) next.push(m[0]);
        last = m.index! + m[0].length;
      }
      if (last < p.length) next.push(p.slice(last));
    }
    pieces = next;
  }
  return pieces;
}

/** GPT-2's byte → code point table (printable bytes map to themselves, the rest to 256+). */
export const BYTE_TO_CHAR: string[] = (() => {
  const table: string[] = new Array(256);
  let extra = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCodePoint(printable ? b : extra++);
  }
  return table;
})();
export const CHAR_TO_BYTE = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

const utf8 = new TextEncoder();

export class BpeEncoder {
  readonly #ranks = new Map<string, number>();
  readonly #regexes: RegExp[];
  readonly #ignoreMerges: boolean;
  readonly #cache = new Map<string, number[]>();

  constructor(readonly v: Vocab) {
    v.merges.forEach((m, i) => this.#ranks.set(m, i));
    this.#regexes = preTokenizerRegexes(v.pre);
    this.#ignoreMerges = v.pre === "llama3" || v.pre === "llama-bpe";
  }

  encode(text: string, out: number[]): void {
    for (const piece of preTokenize(text, this.#regexes)) {
      const cached = this.#cache.get(piece);
      if (cached) {
        out.push(...cached);
        continue;
      }
      const ids = this.#encodeWord(Array.from(utf8.encode(piece), (b) => BYTE_TO_CHAR[b]!).join(""));
      if (this.#cache.size < 50_000) this.#cache.set(piece, ids);
      out.push(...ids);
    }
  }

  #encodeWord(word: string): number[] {
    const whole = this.v.ids.get(word);
    if (this.#ignoreMerges && whole !== undefined) return [whole];
    const syms = Array.from(word);
    // Repeatedly merge the lowest-ranked adjacent pair (words are short: a scan is fine).
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < syms.length; i++) {
        const r = this.#ranks.get(`${syms[i]} ${syms[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      syms.splice(best, 2, syms[best]! + syms[best + 1]!);
    }
    const ids: number[] = [];
    for (const s of syms) {
      const id = this.v.ids.get(s);
      if (id !== undefined) ids.push(id);
      else for (const ch of s) { const b = this.v.ids.get(ch); if (b !== undefined) ids.push(b); else if (this.v.unk >= 0) ids.push(this.v.unk); }
    }
    return ids;
  }
}

/** Bytes of one BPE token (its code points mapped back through GPT-2's table). */
export function bpeBytes(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b !== undefined) out.push(b);
    else out.push(...utf8.encode(ch));
  }
  return Uint8Array.from(out);
}
