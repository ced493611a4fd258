/**
 * The model's own tokenizer, built from GGUF metadata: SentencePiece-style ("llama") or
 * byte-level BPE ("gpt2"), with llama.cpp's special-token rules. With no options, `encode`
 * matches llama.cpp's `llama_tokenize(text, add_special = false, parse_special = false)`.
 */
import { KilnError } from "../errors";
import type { GGUFMetadata } from "../gguf";
import { BpeEncoder, bpePiece } from "./bpe";
import { partition } from "./special";
import { spmEncode, spmPiece } from "./spm";
import { TokenType, readVocab, type Vocab } from "./vocab";

export { TokenType, type Vocab } from "./vocab";
export { PRE_TOKENIZERS, preTokenize, preTokenizerFor, type PreTokenizerName } from "./pretokenize";

/** Options of Tokenizer.encode (llama.cpp's add_special / parse_special). */
export interface EncodeOptions {
  /** Add BOS/EOS as the model asks (tokenizer.ggml.add_bos_token / add_eos_token). Default false. */
  addSpecial?: boolean;
  /** Recognise the text of control tokens such as "<start_of_turn>" as those tokens. Default false. */
  parseSpecial?: boolean;
}

/** Options of Tokenizer.decode. */
export interface DecodeOptions {
  /** Render control and unknown tokens as nothing instead of their text. Default false. */
  skipSpecial?: boolean;
}

/** Incremental detokenization for streamed text (Tokenizer.createStreamDecoder). */
export interface StreamDecoder {
  /** The text this token completes: bytes of a character split across tokens wait for the rest. */
  push(id: number): string;
  /** Whatever is still pending (an incomplete character decodes to U+FFFD); resets the decoder. */
  flush(): string;
}

/** A model's tokenizer (SentencePiece-style or byte-level BPE), built from its GGUF metadata. */
export interface Tokenizer {
  /** Tokens in the vocabulary. */
  readonly vocabSize: number;
  /** Special ids; -1 when the model has none. */
  readonly bos: number;
  /** End-of-sequence id; -1 when the model has none. */
  readonly eos: number;
  /** End-of-turn (e.g. Gemma's <end_of_turn>), from the file or found by its text; undefined if none. */
  readonly eot?: number;
  /** Whether `encode(…, { addSpecial: true })` starts with BOS. */
  readonly addBos: boolean;
  /** The vocabulary: token texts, scores and types, as the file stores them. */
  readonly vocab: Vocab;
  /** Token ids of `text` (default: plain text, no BOS/EOS). */
  encode(text: string, opts?: EncodeOptions): number[];
  /** The text of token ids (with a SentencePiece space prefix, the space the first token carries is dropped). */
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  /** The raw bytes of one token; control tokens render as their text unless renderSpecial is false. */
  tokenToPiece(id: number, renderSpecial?: boolean): Uint8Array;
  /** End of generation: EOS, EOT and tokens such as <end_of_turn>, <|im_end|>, <|eot_id|>. */
  isEog(id: number): boolean;
  /** Incremental decoding for streamed generation: pieces as they are, without decode's space rule. */
  createStreamDecoder(opts?: DecodeOptions): StreamDecoder;
}

const utf8 = new TextEncoder();
const newDecoder = () => new TextDecoder("utf-8", { ignoreBOM: true });

export function createTokenizer(meta: GGUFMetadata): Tokenizer {
  const v = readVocab(meta);
  const spm = v.model === "llama";
  const bpe = spm ? null : new BpeEncoder(v);
  const n = v.tokens.length;

  const piece = (id: number, renderSpecial: boolean): Uint8Array => {
    if (!Number.isInteger(id) || id < 0 || id >= n) throw new KilnError("BAD_OPTION", `token id ${id} is outside the vocabulary [0, ${n})`);
    const p = spm ? spmPiece(v, id, renderSpecial) : bpePiece(v, id, renderSpecial);
    return typeof p === "string" ? utf8.encode(p) : p;
  };

  const encodeText = (text: string, out: number[]) => (bpe ? bpe.encode(text, out) : spmEncode(v, text, out));

  const encode = (text: string, opts: EncodeOptions = {}): number[] => {
    const out: number[] = [];
    if (opts.addSpecial && v.addBos && v.bos >= 0) out.push(v.bos);
    // SentencePiece's space prefix goes before each text fragment that starts the text or
    // follows a special token, as llama.cpp does it.
    let afterSpecial = true;
    for (const f of partition(v, text, opts.parseSpecial ?? false)) {
      if ("token" in f) {
        out.push(f.token);
        afterSpecial = true;
      } else {
        encodeText(spm && v.addSpacePrefix && afterSpecial ? " " + f.text : f.text, out);
        afterSpecial = false;
      }
    }
    if (opts.addSpecial && v.addEos && v.eos >= 0) out.push(v.eos);
    return out;
  };

  const createStreamDecoder = (opts: DecodeOptions = {}): StreamDecoder => {
    let dec = newDecoder();
    return {
      push: (id) => dec.decode(piece(id, !opts.skipSpecial), { stream: true }),
      flush: () => {
        const rest = dec.decode();
        dec = newDecoder();
        return rest;
      },
    };
  };

  /**
   * With a space prefix, the first text token carries a space that the text never had: drop it.
   * (llama.cpp drops it only when that token comes first; kiln also skips leading BOS/control
   * tokens, so that decode(encode(s, { addSpecial: true })) gives s back.)
   */
  const decode = (ids: readonly number[], opts: DecodeOptions = {}): string => {
    const dec = newDecoder();
    let dropSpace = spm && v.addSpacePrefix;
    let text = "";
    for (const id of ids) {
      let bytes = piece(id, !opts.skipSpecial);
      const type = v.types[id];
      if (dropSpace && type !== TokenType.control && type !== TokenType.unknown) {
        if (bytes[0] === 0x20) bytes = bytes.subarray(1);
        dropSpace = false;
      }
      text += dec.decode(bytes, { stream: true });
    }
    return text + dec.decode();
  };

  return {
    vocabSize: n,
    bos: v.bos,
    eos: v.eos,
    eot: v.eot >= 0 ? v.eot : undefined,
    addBos: v.addBos,
    vocab: v,
    encode,
    decode,
    tokenToPiece: (id, renderSpecial = true) => piece(id, renderSpecial),
    isEog: (id) => v.eog.has(id),
    createStreamDecoder,
  };
}
