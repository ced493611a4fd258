/**
 * Small hand-made vocabularies for the tokenizer unit tests, as the GGUF metadata Map that
 * parseGGUF returns, so expected ids can be worked out by hand.
 */
import { GGUFMetadata, GGUFValueType as T, type GGUFValue } from "../../src/gguf";
import { BYTE_TO_CHAR } from "../../src/tokenizer/bpe";

export const TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

export interface VocabSpec {
  model: "llama" | "gpt2";
  pre?: string;
  tokens: string[];
  types: number[];
  scores?: number[];
  merges?: string[];
  bos?: number;
  eos?: number;
  unk?: number;
  addBos?: boolean;
  addEos?: boolean;
  addSpacePrefix?: boolean;
}

const val = (v: object) => ({ offset: 0, ...v }) as unknown as GGUFValue;

export function metadataOf(s: VocabSpec): GGUFMetadata {
  const m = new GGUFMetadata("synthetic");
  m.set("tokenizer.ggml.model", val({ type: T.STRING, value: s.model }));
  if (s.pre !== undefined) m.set("tokenizer.ggml.pre", val({ type: T.STRING, value: s.pre }));
  m.set("tokenizer.ggml.tokens", val({ type: T.ARRAY, elemType: T.STRING, value: s.tokens }));
  m.set("tokenizer.ggml.token_type", val({ type: T.ARRAY, elemType: T.INT32, value: Int32Array.from(s.types) }));
  if (s.scores) m.set("tokenizer.ggml.scores", val({ type: T.ARRAY, elemType: T.FLOAT32, value: Float32Array.from(s.scores) }));
  if (s.merges) m.set("tokenizer.ggml.merges", val({ type: T.ARRAY, elemType: T.STRING, value: s.merges }));
  const id = (key: string, v: number | undefined) => v !== undefined && m.set(`tokenizer.ggml.${key}_token_id`, val({ type: T.UINT32, value: v }));
  id("bos", s.bos);
  id("eos", s.eos);
  id("unknown", s.unk);
  const flag = (key: string, v: boolean | undefined) => v !== undefined && m.set(`tokenizer.ggml.${key}`, val({ type: T.BOOL, value: v }));
  flag("add_bos_token", s.addBos);
  flag("add_eos_token", s.addEos);
  flag("add_space_prefix", s.addSpacePrefix);
  return m;
}

/** Builds a token table with an id for every text, so tests can say `ids["▁hello"]`. */
class Table {
  tokens: string[] = [];
  types: number[] = [];
  scores: number[] = [];
  ids: Record<string, number> = {};
  add(text: string, type: number = TYPE.normal, score = 0): number {
    this.ids[text] = this.tokens.length;
    this.tokens.push(text);
    this.types.push(type);
    this.scores.push(score);
    return this.ids[text]!;
  }
}

export const byteTokenText = (b: number) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;

/**
 * A SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens (ids 3..258), then pieces with
 * scores chosen so that the merge order is known:
 * - "abc": "bc" (−1) beats "ab" (−5), so it is [a, bc].
 * - "▁hello": "ll" (−2), then "lo" (−2.5) goes stale, "he" (−3), "hell" (−4), "hello" (−6), "▁hello" (−7).
 * - "aaa": "aa" ties with itself; the leftmost pair wins, so [aa, a].
 * Plus <start_of_turn> / <end_of_turn> (CONTROL) and <tab> (USER_DEFINED).
 */
export function spmVocab(opts: Partial<VocabSpec> = {}) {
  const t = new Table();
  t.add("<unk>", TYPE.unknown);
  t.add("<s>", TYPE.control);
  t.add("</s>", TYPE.control);
  for (let b = 0; b < 256; b++) t.add(byteTokenText(b), TYPE.byte);
  const pieces: [string, number][] = [
    ["▁", -1], ["a", -10], ["b", -10], ["c", -10], ["h", -10], ["e", -10], ["l", -10], ["o", -10], ["w", -10], ["r", -10], ["d", -10], ["x", -10],
    ["ab", -5], ["bc", -1], ["aa", -1], ["ll", -2], ["lo", -2.5], ["he", -3], ["hell", -4], ["hello", -6], ["▁hello", -7],
    ["▁w", -8], ["or", -8], ["ld", -8], ["orld", -8.5], ["▁world", -9], ["▁▁", -3], ["中", -10],
  ];
  for (const [p, s] of pieces) t.add(p, TYPE.normal, s);
  t.add("<start_of_turn>", TYPE.control);
  t.add("<end_of_turn>", TYPE.normal); // llama.cpp forces it to CONTROL (an end-of-generation text)
  t.add("<tab>", TYPE.userDefined);
  const spec: VocabSpec = { model: "llama", tokens: t.tokens, types: t.types, scores: t.scores, bos: 1, eos: 2, unk: 0, ...opts };
  return { meta: metadataOf(spec), ids: t.ids };
}

/**
 * A byte-level BPE vocabulary: the 256 byte characters in GPT-2's alphabet (id = byte value),
 * then one token per merge in rank order (rank = index in BPE_MERGES), then "xyz" (a token no
 * merge produces, for ignore_merges) and three control tokens.
 */
export const BPE_MERGES = ["h e", "l l", "he ll", "hell o", "Ġ hello", "l o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2", "12 3"];

export function bpeVocab(opts: Partial<VocabSpec> = {}) {
  const t = new Table();
  for (let b = 0; b < 256; b++) t.add(BYTE_TO_CHAR[b]!);
  for (const m of BPE_MERGES) t.add(m.replace(" ", ""));
  t.add("xyz");
  t.add("<|endoftext|>", TYPE.control);
  t.add("<|im_start|>", TYPE.control);
  t.add("<|im_end|>", TYPE.control);
  const spec: VocabSpec = { model: "gpt2", pre: "gpt-2", tokens: t.tokens, types: t.types, merges: BPE_MERGES, bos: t.ids["<|endoftext|>"], eos: t.ids["<|im_end|>"], ...opts };
  return { meta: metadataOf(spec), ids: t.ids };
}

/** Strings that stress byte fallback, spaces and specials (no U+2581, which SPM turns into a space). */
export const ROUND_TRIP_CORPUS = [
  "", " ", "   ", "a", "hello world", "  leading and trailing  ", "tabs\tand\nnewlines\r\n\n",
  "Ünïcödé façade naïve", "Ελληνικά и русский", "中文字符测试，日本語のテキスト、한국어",
  "emoji 🦙🔥👍🏽 family 👨‍👩‍👧 flags 🇫🇷", "zero\u200bwidth\ufeffbom\u00a0nbsp",
  "def f(x):\n    return {'a': [1, 2]}  # comment\n", "numbers 1234567890 3.14159 -42 1e10 007",
  "<start_of_turn>user\nhi<end_of_turn>", "<s></s><unk><tab>", "\u0000\u0001\u007f control bytes",
  "𝕏 math 𝔸𝔹 and astral 𠀀", "x".repeat(1000), "ab ".repeat(200),
];

/**
 * Strings for the llama.cpp parity runs: the round-trip corpus plus pre-tokenizer edge cases
 * (contractions, digit groups, whitespace and newline runs, U+0085 / U+FEFF) and the text of
 * special tokens of the vocabularies under test.
 */
export const PARITY_CORPUS = [
  ...ROUND_TRIP_CORPUS,
  "Hello world", " leading space", "trailing space ", "double  space", "\r\n windows line\r\n",
  "I'm sure they'll've DON'T WE'RE 'S 'll", "x  \r\n\r\ny", "foo!!\n\nbar", "a\n\n  b", "a   b",
  "1234567 x12 ٣٤٥ ½ 3.14 1,000,000", "(hello), world! a+b=c $x^2 ~|~ `code`",
  "a\u0085\u0085b", "a\ufeff\ufeff\ufeffb", "\u3000ideographic\u2003em space",
  "<b>html</b> &amp; <table>   \t\t\n\n\n", "<s> </s> <unk> <|im_start|> <|endoftext|> <start_of_turn>",
  "<bos><start_of_turn>user\nTest<end_of_turn>\n<start_of_turn>model\n",
  "https://example.com/path?q=1&r=2#frag", "The quick brown fox jumps over the lazy dog.",
];

/**
 * Byte-level BPE merges learned on `text` WITHOUT pre-tokenization, most frequent pair first,
 * so that tokens span the places where pre-tokenizers split (spaces before words, digit groups,
 * contractions, newline runs). Tokenizing such text with a wrong split changes the ids, which
 * makes a parity test sensitive to every pre-tokenizer detail.
 */
export function learnCrossingMerges(text: string, maxMerges: number): string[] {
  let seq = Array.from(new TextEncoder().encode(text), (b) => BYTE_TO_CHAR[b]!);
  const merges: string[] = [];
  const have = new Set<string>();
  while (merges.length < maxMerges) {
    const counts = new Map<string, number>();
    for (let i = 0; i + 1 < seq.length; i++) {
      const key = `${seq[i]} ${seq[i + 1]}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    let best = "";
    let bestCount = 1;
    for (const [k, c] of counts) if (c > bestCount && !have.has(k.replace(" ", ""))) [best, bestCount] = [k, c];
    if (!best) break;
    const [a, b] = [best.slice(0, best.indexOf(" ")), best.slice(best.indexOf(" ") + 1)];
    merges.push(best);
    have.add(a + b);
    const next: string[] = [];
    for (let i = 0; i < seq.length; i++) {
      if (i + 1 < seq.length && seq[i] === a && seq[i + 1] === b) next.push(a + b), i++;
      else next.push(seq[i]!);
    }
    seq = next;
  }
  return merges;
}
