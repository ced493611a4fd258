/**
 * SentencePiece-style tokenization (tokenizer.ggml.model = "llama": Llama 2, TinyLlama, Gemma),
 * as llama.cpp's SPM tokenizer does it: spaces become ▁, the text is split into characters
 * (code points), adjacent pairs whose concatenation is a token merge highest score first
 * (ties: leftmost), and characters that are not tokens fall back to <0xNN> byte tokens.
 */
import { mergeSymbols } from "./merge";
import { TokenType, type Vocab } from "./vocab";

const utf8 = new TextEncoder();
export const SPM_SPACE = "\u2581"; // ▁

/** Appends the ids of one raw-text fragment (the caller has already added any space prefix). */
export function spmEncode(v: Vocab, text: string, out: number[]): void {
  if (text.length === 0) return;
  const escaped = text.replaceAll(" ", SPM_SPACE);
  // Scores are "higher is better"; mergeSymbols wants "lower is better".
  const rank = (a: string, b: string) => {
    const id = v.ids.get(a + b);
    return id === undefined ? undefined : -v.scores[id]!;
  };
  for (const sym of mergeSymbols(Array.from(escaped), rank)) emitSymbol(v, sym, out);
}

/**
 * A final symbol is either a token (a merge only happens when the concatenation is one) or a
 * single character outside the vocabulary, which falls back to its UTF-8 bytes.
 */
function emitSymbol(v: Vocab, sym: string, out: number[]): void {
  const id = v.ids.get(sym);
  if (id !== undefined) out.push(id);
  else for (const byte of utf8.encode(sym)) out.push(byteToken(v, byte));
}

/**
 * `<0xNN>` (uppercase hex), else the one-byte character itself (only possible for ASCII), else
 * the unknown token (llama.cpp throws where we use it; no real vocabulary gets that far).
 */
function byteToken(v: Vocab, byte: number): number {
  const hex = byte.toString(16).toUpperCase().padStart(2, "0");
  const id = v.ids.get(`<0x${hex}>`) ?? (byte < 0x80 ? v.ids.get(String.fromCharCode(byte)) : undefined) ?? v.unk;
  if (id < 0) throw new Error(`SentencePiece vocabulary has no token for byte 0x${hex} and no unknown token`);
  return id;
}

/** The bytes (or text) of one token for decoding, by its type as llama.cpp renders it. */
export function spmPiece(v: Vocab, id: number, renderSpecial: boolean): Uint8Array | string {
  const text = v.tokens[id]!;
  switch (v.types[id]) {
    case TokenType.normal:
      return text.replaceAll(SPM_SPACE, " ");
    case TokenType.byte:
      return Uint8Array.of(parseInt(text.slice(3, 5), 16));
    case TokenType.userDefined:
      return text;
    case TokenType.control:
    case TokenType.unknown:
      return renderSpecial ? text : "";
    default:
      return ""; // unused and unrecognised types are suppressed, as llama.cpp does
  }
}
