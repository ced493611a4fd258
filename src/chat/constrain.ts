/**
 * JSON-schema constrained decoding, part 2: the byte grammar of json-schema.ts as a token mask.
 *
 * Per tokenizer (cached in a WeakMap): every token's bytes, sorted into a byte trie laid out in
 * preorder (`byte`, `depth`, `end` = index after the subtree, the tokens ending at each node).
 * The mask of a grammar state walks that trie once, stepping the recognizer one byte per node
 * and skipping a whole subtree at its first rejected byte; transitions are cached on the interned
 * states, and the finished mask (a list of allowed or of forbidden ids, whichever is shorter) is
 * memoized per (grammar, tokenizer, state), so a repeated state (inside a free string, between
 * members) costs only applying the list. Tokens whose bytes are empty without special rendering
 * (control tokens) are never allowed; end-of-generation tokens only when the value is complete.
 */
import { KilnError } from "../errors";
import type { Tokenizer } from "../tokenizer";
import type { GrammarState, JsonGrammar } from "./json-schema";

interface TokenTrie {
  vocabSize: number;
  pieces: Uint8Array[];
  eog: Int32Array;
  /** Per node, preorder: the byte on the edge into it, its depth (1 = child of the root), the index after its subtree. */
  byte: Uint8Array;
  depth: Uint16Array;
  end: Int32Array;
  /** Tokens ending at a node: ids[first .. first + count). */
  first: Int32Array;
  count: Uint16Array;
  ids: Int32Array;
  maxDepth: number;
}

const tries = new WeakMap<Tokenizer, TokenTrie>();

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/** The byte trie of a tokenizer's vocabulary (built once per tokenizer). */
export function tokenTrie(tok: Tokenizer): TokenTrie {
  const hit = tries.get(tok);
  if (hit) return hit;
  const n = tok.vocabSize;
  const pieces: Uint8Array[] = new Array(n);
  const eog: number[] = [];
  const order: number[] = [];
  for (let id = 0; id < n; id++) {
    pieces[id] = tok.tokenToPiece(id, false);
    if (tok.isEog(id)) eog.push(id);
    else if (pieces[id]!.length > 0) order.push(id);
  }
  order.sort((a, b) => compareBytes(pieces[a]!, pieces[b]!) || a - b);
  let cap = 1024;
  let byte = new Uint8Array(cap), depth = new Uint16Array(cap), end = new Int32Array(cap), first = new Int32Array(cap), count = new Uint16Array(cap);
  let nodes = 0, maxDepth = 0;
  const open: number[] = []; // open[d - 1] = node at depth d on the current path
  let prev: Uint8Array = new Uint8Array(0);
  for (let k = 0; k < order.length; k++) {
    const p = pieces[order[k]!]!;
    let l = 0;
    while (l < p.length && l < prev.length && p[l] === prev[l]) l++;
    if (l === p.length && l === prev.length) {
      count[open[l - 1]!]!++; // same bytes as the previous token
      continue;
    }
    while (open.length > l) end[open.pop()!] = nodes;
    for (let d = l; d < p.length; d++) {
      if (nodes === cap) {
        cap *= 2;
        const grow = <T extends Uint8Array | Uint16Array | Int32Array>(a: T): T => {
          const b = new (a.constructor as new (n: number) => T)(cap);
          b.set(a);
          return b;
        };
        byte = grow(byte); depth = grow(depth); end = grow(end); first = grow(first); count = grow(count);
      }
      byte[nodes] = p[d]!;
      depth[nodes] = d + 1;
      first[nodes] = -1;
      count[nodes] = 0;
      open.push(nodes++);
    }
    const term = open[p.length - 1]!;
    first[term] = k;
    count[term] = 1;
    maxDepth = Math.max(maxDepth, p.length);
    prev = p;
  }
  while (open.length) end[open.pop()!] = nodes;
  const trie: TokenTrie = {
    vocabSize: n, pieces, eog: Int32Array.from(eog),
    byte: byte.subarray(0, nodes), depth: depth.subarray(0, nodes), end: end.subarray(0, nodes),
    first: first.subarray(0, nodes), count: count.subarray(0, nodes), ids: Int32Array.from(order), maxDepth,
  };
  tries.set(tok, trie);
  return trie;
}

/** A state's mask: the allowed ids, or (when most are allowed) the forbidden ones. */
interface Mask {
  allowed: Int32Array | null;
  forbidden: Int32Array | null;
}

/** Most memoized masks per (grammar, tokenizer); past it the memo starts afresh. */
const MAX_MASKS = 4096;
const memos = new WeakMap<JsonGrammar, WeakMap<TokenTrie, Map<GrammarState, Mask>>>();

function memoFor(g: JsonGrammar, t: TokenTrie): Map<GrammarState, Mask> {
  let byTrie = memos.get(g);
  if (!byTrie) memos.set(g, (byTrie = new WeakMap()));
  let m = byTrie.get(t);
  if (!m) byTrie.set(t, (m = new Map()));
  return m;
}

/** Walks the trie from state s: every token whose bytes the grammar accepts from s. */
function computeMask(g: JsonGrammar, t: TokenTrie, s: GrammarState, scratch: Int32Array): Mask {
  const { byte, depth, end, first, count, ids } = t;
  const states: GrammarState[] = new Array(t.maxDepth + 1);
  states[0] = s;
  let n = 0;
  const total = byte.length;
  for (let i = 0; i < total; ) {
    const d = depth[i]!;
    const next = g.step(states[d - 1]!, byte[i]!);
    if (next === null) {
      i = end[i]!;
      continue;
    }
    states[d] = next;
    const c = count[i]!;
    if (c !== 0) for (let k = first[i]!, e = k + c; k < e; k++) scratch[n++] = ids[k]!;
    i++;
  }
  if (s.complete) for (const id of t.eog) scratch[n++] = id;
  if (n <= t.vocabSize / 2) return { allowed: scratch.slice(0, n).sort(), forbidden: null };
  const ok = new Uint8Array(t.vocabSize);
  for (let k = 0; k < n; k++) ok[scratch[k]!] = 1;
  const forbidden = new Int32Array(t.vocabSize - n);
  for (let id = 0, m = 0; id < t.vocabSize; id++) if (!ok[id]) forbidden[m++] = id;
  return { allowed: null, forbidden };
}

export class TokenConstraint {
  readonly #g: JsonGrammar;
  readonly #trie: TokenTrie;
  readonly #memo: Map<GrammarState, Mask>;
  readonly #scratch: Int32Array;
  #saved: Float32Array = new Float32Array(64);
  #state: GrammarState;
  /** An end-of-generation token was accepted. */
  #ended = false;

  constructor(grammar: JsonGrammar, tokenizer: Tokenizer) {
    this.#g = grammar;
    this.#trie = tokenTrie(tokenizer);
    this.#memo = memoFor(grammar, this.#trie);
    this.#scratch = new Int32Array(this.#trie.vocabSize);
    this.#state = grammar.start;
  }

  /** The bytes so far form a complete value (after it, trailing whitespace is irrelevant). */
  get complete(): boolean {
    return this.#state.complete;
  }

  /** Whether any further byte is allowed (false: generation must stop now). */
  get canContinue(): boolean {
    return !this.#ended && this.#g.canContinue(this.#state);
  }

  #mask(): Mask {
    let m = this.#memo.get(this.#state);
    if (m === undefined) {
      m = computeMask(this.#g, this.#trie, this.#state, this.#scratch);
      if (this.#memo.size >= MAX_MASKS) this.#memo.clear();
      this.#memo.set(this.#state, m);
    }
    return m;
  }

  /** The token ids allowed next, ascending (for tests and samplers that want a list). */
  allowedTokens(): Int32Array {
    if (this.#ended) return new Int32Array(0);
    const m = this.#mask();
    if (m.allowed) return m.allowed;
    const out = new Int32Array(this.#trie.vocabSize - m.forbidden!.length);
    for (let id = 0, k = 0, j = 0; id < this.#trie.vocabSize; id++) {
      if (j < m.forbidden!.length && m.forbidden![j] === id) j++;
      else out[k++] = id;
    }
    return out;
  }

  /**
   * Sets every token the grammar does not allow next to -Infinity in `logits` (length = vocab);
   * end-of-generation tokens are allowed only when the value is complete.
   */
  mask(logits: Float32Array): void {
    if (logits.length !== this.#trie.vocabSize) throw new KilnError("BAD_OPTION", `mask: logits have ${logits.length} entries, the vocabulary ${this.#trie.vocabSize}`);
    if (this.#ended) return void logits.fill(-Infinity);
    const m = this.#mask();
    if (m.forbidden) {
      const f = m.forbidden;
      for (let k = 0; k < f.length; k++) logits[f[k]!] = -Infinity;
      return;
    }
    const a = m.allowed!;
    if (this.#saved.length < a.length) this.#saved = new Float32Array(a.length);
    const saved = this.#saved;
    for (let k = 0; k < a.length; k++) saved[k] = logits[a[k]!]!;
    logits.fill(-Infinity);
    for (let k = 0; k < a.length; k++) logits[a[k]!] = saved[k]!;
  }

  /** Advances past a sampled token (throws KilnError if it was not allowed). */
  accept(token: number): void {
    const t = this.#trie;
    if (!Number.isInteger(token) || token < 0 || token >= t.vocabSize) throw new KilnError("BAD_OPTION", `accept: token id ${token} is outside the vocabulary [0, ${t.vocabSize})`);
    if (this.#ended) throw new KilnError("BAD_OPTION", `accept: token ${token} after the end of generation`);
    if (t.eog.includes(token)) {
      if (!this.#state.complete) throw new KilnError("BAD_OPTION", `accept: end-of-generation token ${token} before the JSON value is complete`);
      this.#ended = true;
      return;
    }
    const p = t.pieces[token]!;
    const next = p.length === 0 ? null : this.#g.run(this.#state, p);
    if (next === null) throw new KilnError("BAD_OPTION", `accept: token ${token} (${JSON.stringify(new TextDecoder().decode(p))}) is not allowed by the JSON schema here`);
    this.#state = next;
  }
}
