/**
 * SentencePiece-style tokenization (tokenizer.ggml.model = "llama": Llama 2, TinyLlama,
 * Gemma), as llama.cpp's llm_tokenizer_spm does it: spaces become ▁, the text is split into
 * UTF-8 characters, adjacent pairs whose concatenation is a token are merged highest score
 * first (ties: leftmost), and pieces that are not tokens fall back to <0xNN> byte tokens.
 */
import { TokenType, type Vocab } from "./vocab";

interface Sym {
  text: string;
  prev: number;
  next: number;
  /** Consumed by a merge into its left neighbour. */
  dead: boolean;
}

interface Bigram {
  left: number;
  right: number;
  score: number;
  text: string;
}

/** A binary max-heap on (score, then smaller left index). */
class BigramHeap {
  #a: Bigram[] = [];
  get size(): number {
    return this.#a.length;
  }
  #above(x: Bigram, y: Bigram): boolean {
    return x.score > y.score || (x.score === y.score && x.left < y.left);
  }
  push(b: Bigram): void {
    const a = this.#a;
    a.push(b);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#above(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): Bigram {
    const a = this.#a;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.#above(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.#above(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

const utf8 = new TextEncoder();

/** Token ids of one raw-text fragment (already space-prefixed by the caller if needed). */
export function spmEncode(v: Vocab, text: string, out: number[]): void {
  const escaped = text.replaceAll(" ", "▁");
  if (escaped.length === 0) return;
  const chars = Array.from(escaped);
  const syms: Sym[] = chars.map((ch, i) => ({ text: ch, prev: i - 1, next: i + 1 < chars.length ? i + 1 : -1, dead: false }));
  const heap = new BigramHeap();
  const tryAdd = (left: number, right: number) => {
    if (left < 0 || right < 0) return;
    const t = syms[left]!.text + syms[right]!.text;
    const id = v.ids.get(t);
    if (id === undefined) return;
    heap.push({ left, right, score: v.scores[id]!, text: t });
  };
  for (let i = 1; i < syms.length; i++) tryAdd(i - 1, i);
  while (heap.size > 0) {
    const b = heap.pop();
    const l = syms[b.left]!;
    const r = syms[b.right]!;
    // Stale: one side was merged away, or has grown since this pair was pushed.
    if (l.dead || r.dead || l.text + r.text !== b.text) continue;
    l.text = b.text;
    r.dead = true;
    l.next = r.next;
    if (r.next >= 0) syms[r.next]!.prev = b.left;
    tryAdd(l.prev, b.left);
    tryAdd(b.left, l.next);
  }
  for (let i = 0; i !== -1; i = syms[i]!.next) emitSymbol(v, syms[i]!.text, out);
}

/**
 * Emits a final symbol: its token, else its bytes as <0xNN> tokens (unknown when even those are
 * missing). Merges only join pairs whose concatenation is a token, so every merged symbol is a
 * token; only single characters outside the vocabulary reach the byte fallback.
 */
function emitSymbol(v: Vocab, text: string, out: number[]): void {
  const id = v.ids.get(text);
  if (id !== undefined) {
    out.push(id);
    return;
  }
  for (const byte of utf8.encode(text)) {
    const byteId = v.ids.get(`<0x${byte.toString(16).toUpperCase().padStart(2, "0")}>`);
    if (byteId !== undefined) out.push(byteId);
    else if (v.unk >= 0) out.push(v.unk);
  }
}

/** The bytes of one token for decoding. */
export function spmPiece(v: Vocab, id: number, renderSpecial: boolean): Uint8Array | string {
  const type = v.types[id];
  const text = v.tokens[id]!;
  if (type === TokenType.byte) {
    const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
    if (m) return Uint8Array.of(parseInt(m[1]!, 16));
  }
  if (type === TokenType.control || type === TokenType.unknown) return renderSpecial ? text : "";
  if (type === TokenType.userDefined) return text;
  return text.replaceAll("▁", " ");
}
