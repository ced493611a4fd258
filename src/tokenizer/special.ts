/**
 * llama.cpp's special-token partition, which runs before either tokenizer: the text is split on
 * the exact text of special tokens, longest first, and each occurrence becomes that token.
 * USER_DEFINED tokens always match; CONTROL and UNKNOWN tokens only with parseSpecial (so that
 * user text containing "<start_of_turn>" stays text unless the caller asks otherwise).
 */
import { TokenType, type Vocab } from "./vocab";

export type Fragment = { text: string } | { token: number };

export function partition(v: Vocab, text: string, parseSpecial: boolean): Fragment[] {
  let frags: Fragment[] = text.length > 0 ? [{ text }] : [];
  for (const s of v.specials) {
    if (!parseSpecial && s.type !== TokenType.userDefined) continue;
    // Most specials never occur: skip the rebuild unless some text fragment contains this one.
    if (!frags.some((f) => "text" in f && f.text.includes(s.text))) continue;
    frags = frags.flatMap((f) => ("text" in f ? splitOut(f.text, s.text, s.id) : [f]));
  }
  return frags;
}

/** `text` with every occurrence of `needle` (left to right) replaced by the token. */
function splitOut(text: string, needle: string, id: number): Fragment[] {
  const out: Fragment[] = [];
  const parts = text.split(needle);
  parts.forEach((part, i) => {
    if (i > 0) out.push({ token: id });
    if (part.length > 0) out.push({ text: part });
  });
  return out;
}
