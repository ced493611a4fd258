/**
 * Byte-level BPE (tokenizer.ggml.model = "gpt2": Llama 3, Qwen2, SmolLM), as llama.cpp's BPE
 * tokenizer does it: split the text with the pre-tokenizer chosen by tokenizer.ggml.pre, spell
 * each piece's UTF-8 bytes with GPT-2's printable code points, merge adjacent symbols lowest
 * merge rank first (ties: leftmost), then look the symbols up.
 */
import { mergeSymbols } from "./merge";
import { PRE_TOKENIZERS, isLlama3Pre, preTokenize, preTokenizerFor } from "./pretokenize";
import { TokenType, type Vocab } from "./vocab";

/**
 * GPT-2's byte → code point table: printable Latin-1 bytes stand for themselves, the other 68
 * (controls, space, DEL, NBSP, soft hyphen, …) map in byte order to U+0100, U+0101, …
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = [];
  let extra = 0x100;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table.push(String.fromCodePoint(printable ? b : extra++));
  }
  return table;
})();
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

const utf8 = new TextEncoder();

/** A piece's UTF-8 bytes in GPT-2's byte alphabet. */
export function byteEncode(piece: string): string {
  let out = "";
  for (const b of utf8.encode(piece)) out += BYTE_TO_CHAR[b]!;
  return out;
}

/** Pre-tokens repeat a lot in real text ("the", " of", "\n"); cache their ids up to a bound. */
const CACHE_LIMIT = 65536;

export class BpeEncoder {
  readonly #v: Vocab;
  readonly #ranks = new Map<string, number>();
  readonly #regexes: readonly RegExp[];
  /** Llama 3: a pre-token that is already a token is emitted whole, merges or not. */
  readonly #ignoreMerges: boolean;
  readonly #cache = new Map<string, number[]>();

  constructor(v: Vocab) {
    this.#v = v;
    // A repeated merge keeps its first (best) rank, as llama.cpp's map does.
    v.merges.forEach((m, i) => {
      if (!this.#ranks.has(m)) this.#ranks.set(m, i);
    });
    this.#regexes = PRE_TOKENIZERS[preTokenizerFor(v.pre)];
    this.#ignoreMerges = isLlama3Pre(v.pre);
  }

  encode(text: string, out: number[]): void {
    for (const piece of preTokenize(text, this.#regexes)) {
      let ids = this.#cache.get(piece);
      if (!ids) {
        ids = this.#encodeWord(byteEncode(piece));
        if (this.#cache.size < CACHE_LIMIT) this.#cache.set(piece, ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  #encodeWord(word: string): number[] {
    const whole = this.#v.ids.get(word);
    if (this.#ignoreMerges && whole !== undefined) return [whole];
    const rank = (a: string, b: string) => this.#ranks.get(`${a} ${b}`);
    const ids: number[] = [];
    for (const sym of mergeSymbols(Array.from(word), rank)) {
      const id = this.#v.ids.get(sym);
      if (id !== undefined) ids.push(id);
      else this.#fallback(sym, ids);
    }
    return ids;
  }

  /**
   * A symbol with no token: llama.cpp looks each of its UTF-8 bytes up as a one-byte string and
   * drops the bytes that have none. Only ASCII characters can be one-byte tokens.
   */
  #fallback(sym: string, ids: number[]): void {
    for (const ch of sym) {
      const id = ch.codePointAt(0)! < 0x80 ? this.#v.ids.get(ch) : undefined;
      if (id !== undefined) ids.push(id);
    }
  }
}

/** The bytes of one token for decoding, by its type as llama.cpp renders it. */
export function bpePiece(v: Vocab, id: number, renderSpecial: boolean): Uint8Array | string {
  const text = v.tokens[id]!;
  switch (v.types[id]) {
    case TokenType.normal:
      return unmapBytes(text);
    case TokenType.userDefined:
      return text;
    case TokenType.control:
    case TokenType.unknown:
      return renderSpecial ? text : "";
    default:
      return ""; // byte, unused and unrecognised types are suppressed, as llama.cpp does
  }
}

/** GPT-2 code points back to bytes; a code point outside the table keeps its own UTF-8. */
function unmapBytes(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b !== undefined) out.push(b);
    else for (const x of utf8.encode(ch)) out.push(x);
  }
  return Uint8Array.from(out);
}
