/**
 * The pair-merging loop shared by both tokenizers. SentencePiece (merge the adjacent pair whose
 * concatenation is the highest-scoring token) and byte-level BPE (merge the adjacent pair with
 * the lowest merge rank) differ only in how a pair is ranked, so both hand this a `rank`
 * function where smaller is better; ties go to the leftmost pair, as in llama.cpp.
 *
 * Symbols live in a doubly linked list over an array and candidate pairs in a binary heap, so a
 * word of n characters costs O(n log n), not the O(n²) of rescanning for the best pair.
 */

interface Candidate {
  left: number;
  right: number;
  rank: number;
  /** The concatenation, to recognise a candidate made stale by an earlier merge. */
  text: string;
}

/** A binary min-heap on (rank, then left index). */
class CandidateHeap {
  readonly #a: Candidate[] = [];

  get size(): number {
    return this.#a.length;
  }

  static #before(x: Candidate, y: Candidate): boolean {
    return x.rank < y.rank || (x.rank === y.rank && x.left < y.left);
  }

  push(c: Candidate): void {
    const a = this.#a;
    a.push(c);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!CandidateHeap.#before(a[i]!, a[parent]!)) break;
      [a[i], a[parent]] = [a[parent]!, a[i]!];
      i = parent;
    }
  }

  pop(): Candidate {
    const a = this.#a;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length === 0) return top;
    a[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < a.length && CandidateHeap.#before(a[l]!, a[best]!)) best = l;
      if (r < a.length && CandidateHeap.#before(a[r]!, a[best]!)) best = r;
      if (best === i) return top;
      [a[i], a[best]] = [a[best]!, a[i]!];
      i = best;
    }
  }
}

/**
 * Merges adjacent symbols until no pair has a rank; returns the final symbols in order.
 * `rank(left, right)` is undefined when the pair may not merge.
 */
export function mergeSymbols(symbols: string[], rank: (left: string, right: string) => number | undefined): string[] {
  const n = symbols.length;
  if (n < 2) return symbols;
  const text = symbols.slice();
  const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
  const next = Int32Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
  const alive = new Uint8Array(n).fill(1);
  const heap = new CandidateHeap();

  const offer = (left: number, right: number) => {
    if (left < 0 || right < 0) return;
    const r = rank(text[left]!, text[right]!);
    if (r !== undefined) heap.push({ left, right, rank: r, text: text[left]! + text[right]! });
  };

  for (let i = 0; i + 1 < n; i++) offer(i, i + 1);
  while (heap.size > 0) {
    const c = heap.pop();
    // Stale: a side was merged away, or grew since this pair was offered.
    if (!alive[c.left] || !alive[c.right] || text[c.left]! + text[c.right]! !== c.text) continue;
    text[c.left] = c.text;
    alive[c.right] = 0;
    next[c.left] = next[c.right]!;
    if (next[c.right]! >= 0) prev[next[c.right]!] = c.left;
    offer(prev[c.left]!, c.left);
    offer(c.left, next[c.left]!);
  }

  // Symbol 0 is never merged away (merges fold the right symbol into the left one).
  const out: string[] = [];
  for (let i = 0; i >= 0; i = next[i]!) out.push(text[i]!);
  return out;
}
