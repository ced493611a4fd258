/**
 * Byte-level BPE pre-tokenizers: the regex lists llama.cpp selects by tokenizer.ggml.pre. Each
 * regex splits every piece left by the previous one; text between matches stays a piece.
 *
 * llama.cpp runs these through hand-written matchers (gpt2, llama3) or std::regex over a
 * category-collapsed copy of the text. Both agree with a JS `u` regex except for what counts as
 * whitespace: llama.cpp uses the Unicode White_Space set (which has U+0085 and lacks U+FEFF,
 * unlike JS's \s), so \s and \S are spelled out with that set below.
 */

const WS = "\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const s = `[${WS}]`;
const notS = `[^${WS}]`;

/** Contractions, case-insensitive, as llama.cpp's adaptation of `(?i:'s|'t|'re|'ve|'m|'ll|'d)`. */
const CONTRACTIONS_CI = "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]";

/** Llama 3 and Qwen2 differ only in digit grouping: up to three digits, or one. */
const llama3Like = (digits: string) =>
  `(?:${CONTRACTIONS_CI})|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|${digits}| ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*|${s}*[\\r\\n]+|${s}+(?!${notS})|${s}+`;

/** GPT-2's original pattern (contractions case-sensitive, digit runs unbounded). */
const GPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|${s}+(?!${notS})`;

const re = (source: string) => new RegExp(source, "gu");

export const PRE_TOKENIZERS = {
  llama3: [re(llama3Like("\\p{N}{1,3}"))],
  qwen2: [re(llama3Like("\\p{N}"))],
  gpt2: [re(GPT2)],
  /** Starcoder, SmolLM, Command-R, …: every digit alone, then GPT-2's pattern. */
  starcoder: [re("\\p{N}"), re(GPT2)],
  /** llama.cpp's fallback for "default" and unknown names. */
  default: [re("[\\p{P}$+<=>^~|]+"), re(GPT2), re("\\p{N}+"), re("[0-9][0-9][0-9]")],
} as const satisfies Record<string, readonly RegExp[]>;

export type PreTokenizerName = keyof typeof PRE_TOKENIZERS;

/** tokenizer.ggml.pre → which regex list llama.cpp uses, for the families kiln supports. */
const PRE_NAMES: Record<string, PreTokenizerName> = {
  "llama3": "llama3", "llama-v3": "llama3", "llama-bpe": "llama3", "falcon3": "llama3",
  "falcon-h1": "llama3", "pixtral": "llama3", "midm-2.0": "llama3", "lfm2": "llama3",
  "dbrx": "llama3", "smaug-bpe": "llama3",
  "qwen2": "qwen2", "deepseek-r1-qwen": "qwen2", "stablelm2": "qwen2", "hunyuan": "qwen2", "megrez": "qwen2",
  "gpt-2": "gpt2", "phi-2": "gpt2", "mpt": "gpt2", "olmo": "gpt2", "jais": "gpt2", "trillion": "gpt2",
  "starcoder": "starcoder", "refact": "starcoder", "command-r": "starcoder", "smollm": "starcoder",
  "codeshell": "starcoder", "exaone": "starcoder", "minerva-7b": "starcoder",
};

/** The regex family for a pre-tokenizer name; unknown names get "default" (Ollama's behaviour). */
export function preTokenizerFor(pre: string): PreTokenizerName {
  return PRE_NAMES[pre] ?? "default";
}

/** Pre-types that also turn on ignore_merges and add_bos in llama.cpp. */
export function isLlama3Pre(pre: string): boolean {
  return PRE_NAMES[pre] === "llama3" && pre !== "dbrx" && pre !== "smaug-bpe";
}

/** Splits `text` into pre-tokens (never empty strings; their concatenation is `text`). */
export function preTokenize(text: string, regexes: readonly RegExp[]): string[] {
  let pieces = [text];
  for (const regex of regexes) {
    const next: string[] = [];
    for (const piece of pieces) splitOn(piece, regex, next);
    pieces = next;
  }
  return pieces;
}

function splitOn(piece: string, regex: RegExp, out: string[]): void {
  let last = 0;
  for (const m of piece.matchAll(regex)) {
    if (m.index > last) out.push(piece.slice(last, m.index));
    if (m[0].length > 0) out.push(m[0]);
    last = m.index + m[0].length;
  }
  if (last < piece.length) out.push(piece.slice(last));
}
