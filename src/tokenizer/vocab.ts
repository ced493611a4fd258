/**
 * The vocabulary as GGUF stores it (tokenizer.ggml.*), with llama.cpp's defaults, special ids
 * and end-of-generation set, shared by the SentencePiece-style and byte-level BPE tokenizers.
 */
import { KilnError } from "../errors";
import { checkTokenizerMetadata, getArray, getArrayOpt, getBool, getInt, getString, GGUFValueType, type GGUFMetadata } from "../gguf";
import { isLlama3Pre } from "./pretokenize";

/** llama.cpp's token types (tokenizer.ggml.token_type). */
export const TokenType = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/**
 * Texts llama.cpp puts in the end-of-generation set (and forces to CONTROL) wherever they occur.
 * "</s>" is one of them: Gemma's USER_DEFINED "</s>" (id 212) is EOG in llama.cpp and is not
 * matched as a special token without parseSpecial (checked against the reference).
 */
const EOG_TEXTS = [
  "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
  "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>", "</s>",
];
/**
 * Fill-in-the-middle tokens llama.cpp adds to the end-of-generation set: pad, repository and
 * file separator, each the file's own id (tokenizer.ggml.fim_*_token_id) or else the first of
 * these texts present, forced to CONTROL (SmolLM2's "<reponame>", id 4, is one).
 */
const FIM_EOG_TEXTS: Record<"fim_pad" | "fim_rep" | "fim_sep", string[]> = {
  fim_pad: ["<|fim_pad|>", "<fim-pad>", "<PAD>"],
  fim_rep: ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
  fim_sep: ["<|file_sep|>"],
};
/** Texts llama.cpp takes as the end-of-turn token when the file names none (first found here). */
const EOT_TEXTS = [
  "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "_<EOT>",
  "<｜end▁of▁sentence｜>", "<end_of_utterance>",
];

export interface SpecialToken {
  id: number;
  text: string;
  type: number;
}

export interface Vocab {
  model: "llama" | "gpt2";
  pre: string;
  tokens: string[];
  scores: Float32Array;
  /** Token types, with EOG tokens forced to CONTROL as llama.cpp does. */
  types: Int32Array;
  /** Text → id. On duplicate texts the last id wins, as in llama.cpp's token_to_id map. */
  ids: Map<string, number>;
  merges: string[];
  /** Special ids; -1 when the model has none. */
  bos: number;
  eos: number;
  eot: number;
  unk: number;
  addBos: boolean;
  addEos: boolean;
  addSpacePrefix: boolean;
  eog: Set<number>;
  /** CONTROL / USER_DEFINED / UNKNOWN tokens, longest text first: the special-token partition. */
  specials: SpecialToken[];
}

type Model = Vocab["model"];

export function readVocab(meta: GGUFMetadata): Vocab {
  const { nVocab: n } = checkTokenizerMetadata(meta);
  const model = readModel(meta);
  const spm = model === "llama";
  const pre = meta.has("tokenizer.ggml.pre") ? getString(meta, "tokenizer.ggml.pre") : "default";
  // llama.cpp names empty token texts "[EMPTY_<id>]" so that they can never match text.
  const tokens = (getArray(meta, "tokenizer.ggml.tokens", GGUFValueType.STRING) as string[]).map((t, i) => (t === "" ? `[EMPTY_${i}]` : t));
  const scores = getArrayOpt(meta, "tokenizer.ggml.scores", GGUFValueType.FLOAT32) ?? new Float32Array(n);
  const types = Int32Array.from(getArrayOpt(meta, "tokenizer.ggml.token_type", GGUFValueType.INT32) ?? new Int32Array(n).fill(TokenType.normal));
  const merges = (getArrayOpt(meta, "tokenizer.ggml.merges", GGUFValueType.STRING) as string[] | undefined) ?? [];
  const ids = new Map<string, number>();
  tokens.forEach((t, i) => ids.set(t, i));

  const flag = (key: string, fallback: boolean) => (meta.has(key) ? getBool(meta, key) : fallback);
  const id = (key: string, fallback: number) => specialId(meta, `tokenizer.ggml.${key}_token_id`, fallback, n);
  const autoEot = firstPresent(ids, EOT_TEXTS);
  const eot = id("eot", autoEot);
  const v: Vocab = {
    model,
    pre,
    tokens,
    scores,
    types,
    ids,
    merges,
    // llama.cpp's defaults when the file is silent (BPE's 11 is GPT-2's; real files override it).
    bos: id("bos", spm ? 1 : 11),
    eos: id("eos", spm ? 2 : 11),
    eot,
    unk: id("unknown", spm ? 0 : -1),
    addBos: flag("tokenizer.ggml.add_bos_token", spm || isLlama3Pre(pre)),
    addEos: flag("tokenizer.ggml.add_eos_token", false),
    addSpacePrefix: flag("tokenizer.ggml.add_space_prefix", spm),
    eog: new Set(),
    specials: [],
  };
  // An end-of-turn token found by its text is forced to CONTROL, one named by the file is not.
  if (eot >= 0 && eot === autoEot && !meta.has("tokenizer.ggml.eot_token_id")) types[eot] = TokenType.control;
  v.eog = endOfGeneration(v, id("eom", -1));
  for (const [key, texts] of Object.entries(FIM_EOG_TEXTS)) {
    const auto = firstPresent(ids, texts);
    const fim = id(key, auto);
    if (fim < 0) continue;
    v.eog.add(fim);
    if (fim === auto && !meta.has(`tokenizer.ggml.${key}_token_id`)) types[fim] = TokenType.control;
  }
  v.specials = specialTokens(v);
  return v;
}

function readModel(meta: GGUFMetadata): Model {
  const model = getString(meta, "tokenizer.ggml.model");
  if (model !== "llama" && model !== "gpt2") {
    throw new Error(`tokenizer.ggml.model "${model}" is not supported (kiln reads "llama" and "gpt2")`);
  }
  return model;
}

/** An optional special-token id; -1 (or u32 0xFFFFFFFF) means "none". */
function specialId(meta: GGUFMetadata, key: string, fallback: number, n: number): number {
  if (!meta.has(key)) return fallback;
  const id = getInt(meta, key);
  if (id === -1 || id === 0xffffffff) return -1;
  if (!(id >= 0 && id < n)) throw new KilnError("BAD_OPTION", `${key} = ${id} is outside the vocabulary [0, ${n})`);
  return id;
}

function firstPresent(ids: Map<string, number>, texts: string[]): number {
  for (const t of texts) {
    const id = ids.get(t);
    if (id !== undefined) return id;
  }
  return -1;
}

/** EOS, EOT, EOM and every token whose text marks an end of turn; the latter become CONTROL. */
function endOfGeneration(v: Vocab, eom: number): Set<number> {
  const eog = new Set<number>();
  for (const id of [v.eos, v.eot, eom]) if (id >= 0) eog.add(id);
  for (const text of EOG_TEXTS) {
    const id = v.ids.get(text);
    if (id === undefined) continue;
    eog.add(id);
    v.types[id] = TokenType.control;
  }
  return eog;
}

const utf8 = new TextEncoder();

/** Longest first by UTF-8 length (llama.cpp compares byte lengths), then by id. */
function specialTokens(v: Vocab): SpecialToken[] {
  const out: (SpecialToken & { bytes: number })[] = [];
  v.types.forEach((type, id) => {
    if (type !== TokenType.control && type !== TokenType.userDefined && type !== TokenType.unknown) return;
    const text = v.tokens[id]!;
    out.push({ id, text, type, bytes: utf8.encode(text).length });
  });
  out.sort((a, b) => b.bytes - a.bytes || a.id - b.id);
  return out.map(({ id, text, type }) => ({ id, text, type }));
}
