/**
 * The model's own tokenizer, built from GGUF metadata: SentencePiece-style ("llama") or
 * byte-level BPE ("gpt2"), with llama.cpp's special-token rules. Defaults match llama.cpp's
 * `llama_tokenize(text, add_special = false, parse_special = false)`.
 */
import type { GGUFMetadata } from "../gguf";
import { BpeEncoder, bpeBytes } from "./bpe";
import { spmEncode, spmPiece } from "./spm";
import { TokenType, partition, readVocab, type Vocab } from "./vocab";

export interface EncodeOptions {
  /** Add BOS/EOS as the model asks (tokenizer.ggml.add_bos_token / add_eos_token). */
  addSpecial?: boolean;
  /** Recognise the text of control tokens such as "<start_of_turn>" as those tokens. */
  parseSpecial?: boolean;
}

export interface StreamDecoder {
  /** Text completed by this token: a multi-byte character split across tokens waits for its end. */
  push(id: number): string;
  /** Whatever is pending (an incomplete sequence decodes to U+FFFD). */
  flush(): string;
}

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bos: number;
  readonly eos: number;
  readonly addBos: boolean;
  readonly vocab: Vocab;
  encode(text: string, opts?: EncodeOptions): number[];
  decode(ids: readonly number[], opts?: { skipSpecial?: boolean }): string;
  /** The raw bytes of one token (control tokens render as their text). */
  tokenToPiece(id: number, renderSpecial?: boolean): Uint8Array;
  isEog(id: number): boolean;
  createStreamDecoder(opts?: { skipSpecial?: boolean }): StreamDecoder;
}

const utf8 = new TextEncoder();

export function createTokenizer(meta: GGUFMetadata): Tokenizer {
  const v = readVocab(meta);
  const spm = v.model === "llama";
  const bpe = spm ? null : new BpeEncoder(v);
  const n = v.tokens.length;

  const checkId = (id: number) => {
    if (!Number.isInteger(id) || id < 0 || id >= n) throw new RangeError(`token id ${id} outside the vocabulary [0, ${n})`);
  };

  const tokenToPiece = (id: number, renderSpecial = true): Uint8Array => {
    checkId(id);
    if (spm) {
      const p = spmPiece(v, id, renderSpecial);
      return typeof p === "string" ? utf8.encode(p) : p;
    }
    const t = v.types[id];
    if (t === TokenType.control || t === TokenType.unknown) return renderSpecial ? utf8.encode(v.tokens[id]!) : new Uint8Array();
    if (t === TokenType.userDefined) return utf8.encode(v.tokens[id]!);
    return bpeBytes(v.tokens[id]!);
  };

  const encode = (text: string, opts: EncodeOptions = {}): number[] => {
    const out: number[] = [];
    if (opts.addSpecial && v.addBos && v.bos >= 0) out.push(v.bos);
    let prevSpecial = true;
    for (const f of partition(v, text, opts.parseSpecial ?? false)) {
      if ("token" in f) {
        out.push(f.token);
        prevSpecial = true;
        continue;
      }
      if (spm) spmEncode(v, (v.addSpacePrefix && prevSpecial ? " " : "") + f.text, out);
      else bpe!.encode(f.text, out);
      prevSpecial = false;
    }
    if (opts.addSpecial && v.addEos && v.eos >= 0) out.push(v.eos);
    return out;
  };

  const createStreamDecoder = (o: { skipSpecial?: boolean } = {}): StreamDecoder => {
    const dec = new TextDecoder("utf-8", { ignoreBOM: true });
    return {
      push: (id) => dec.decode(tokenToPiece(id, !o.skipSpecial), { stream: true }),
      flush: () => dec.decode(),
    };
  };

  const decode = (ids: readonly number[], o: { skipSpecial?: boolean } = {}): string => {
    const s = createStreamDecoder(o);
    let text = ids.map((id) => s.push(id)).join("") + s.flush();
    // SentencePiece's leading space is an artifact of the space prefix, not of the text.
    if (spm && v.addSpacePrefix && text.startsWith(" ")) text = text.slice(1);
    return text;
  };

  return {
    vocabSize: n,
    bos: v.bos,
    eos: v.eos,
    addBos: v.addBos,
    vocab: v,
    encode,
    decode,
    tokenToPiece,
    isEog: (id) => v.eog.has(id),
    createStreamDecoder,
  };
}
