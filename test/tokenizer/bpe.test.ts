/**
 * Byte-level BPE on a hand-made vocabulary (fixtures.ts): the byte alphabet, merges by rank,
 * ignore_merges, the pre-tokenizer splits of each family, special tokens, BOS rules, decoding.
 */
import { describe, expect, test } from "bun:test";
import { createTokenizer, PRE_TOKENIZERS, preTokenize, preTokenizerFor } from "../../src/tokenizer";
import { BYTE_TO_CHAR, byteEncode } from "../../src/tokenizer/bpe";
import { bpeVocab } from "./fixtures";

const { meta, ids: id } = bpeVocab();
const tok = createTokenizer(meta);
const bytes = (s: string) => Array.from(new TextEncoder().encode(s));

describe("GPT-2 byte alphabet", () => {
  test("printable bytes map to themselves, the other 68 to U+0100… in byte order", () => {
    expect(BYTE_TO_CHAR[0x41]).toBe("A");
    expect(BYTE_TO_CHAR[0xe9]).toBe("é");
    expect(BYTE_TO_CHAR[0x00]).toBe("\u0100");
    expect(BYTE_TO_CHAR[0x20]).toBe("Ġ"); // U+0120
    expect(BYTE_TO_CHAR[0x0a]).toBe("Ċ"); // U+010A
    expect(BYTE_TO_CHAR[0xad]).toBe("\u0143"); // soft hyphen: the 68th
    expect(new Set(BYTE_TO_CHAR).size).toBe(256);
    expect(byteEncode(" é")).toBe("ĠÃ©");
  });
});

describe("BPE merges", () => {
  test("lowest rank first: a chain of merges makes one token", () => {
    expect(tok.encode("hello")).toEqual([id.hello!]);
    expect(tok.encode(" hello")).toEqual([id["Ġhello"]!]);
    expect(tok.encode(" world")).toEqual([id["Ġworld"]!]);
    expect(tok.encode("hello world")).toEqual([id.hello!, id["Ġworld"]!]);
  });

  test("a lower-ranked pair wins over a leftward one: 'llo' is [ll, o], not [l, lo]", () => {
    expect(tok.encode("llo")).toEqual([id.ll!, id.o!]);
    expect(tok.encode("lo")).toEqual([id.lo!]);
  });

  test("unmerged bytes stay single byte tokens (id = byte here)", () => {
    expect(tok.encode("中")).toEqual(bytes("中"));
    expect(tok.encode("🦙")).toEqual(bytes("🦙"));
    expect(tok.encode("xyz")).toEqual([id.x!, id.y!, id.z!]);
  });

  test("ignore_merges (llama3 pre-types): a pre-token that is a token is taken whole", () => {
    const l3 = createTokenizer(bpeVocab({ pre: "llama-bpe" }).meta);
    expect(l3.encode("xyz")).toEqual([id.xyz!]);
    expect(l3.encode("hello")).toEqual([id.hello!]);
  });
});

describe("pre-tokenizers", () => {
  const split = (name: keyof typeof PRE_TOKENIZERS, s: string) => preTokenize(s, PRE_TOKENIZERS[name]);

  test("names map to families as llama.cpp's table does", () => {
    expect(preTokenizerFor("llama-bpe")).toBe("llama3");
    expect(preTokenizerFor("qwen2")).toBe("qwen2");
    expect(preTokenizerFor("gpt-2")).toBe("gpt2");
    expect(preTokenizerFor("smollm")).toBe("starcoder");
    expect(preTokenizerFor("default")).toBe("default");
    expect(preTokenizerFor("something-new")).toBe("default");
  });

  test("contractions: case-insensitive for Llama 3 / Qwen2, case-sensitive for GPT-2", () => {
    expect(split("llama3", "I'm sure they'll've DON'T")).toEqual(["I", "'m", " sure", " they", "'ll", "'ve", " DON", "'T"]);
    expect(split("qwen2", "WE'RE")).toEqual(["WE", "'RE"]);
    expect(split("gpt2", "I'm DON'T")).toEqual(["I", "'m", " DON", "'", "T"]);
  });

  test("digits: groups of three (Llama 3), one by one (Qwen2, SmolLM), whole runs (GPT-2)", () => {
    expect(split("llama3", "1234567 x12")).toEqual(["123", "456", "7", " x", "12"]);
    expect(split("qwen2", "2024")).toEqual(["2", "0", "2", "4"]);
    expect(split("starcoder", "a 2024")).toEqual(["a", " ", "2", "0", "2", "4"]);
    expect(split("gpt2", "a 2024")).toEqual(["a", " 2024"]);
    // default: \p{N}+ then [0-9]{3}, so ASCII runs break into threes from the left.
    expect(split("default", "1234567")).toEqual(["123", "456", "7"]);
  });

  test("whitespace runs: all but the last space stand alone, the last joins the next word", () => {
    expect(split("llama3", "a   b")).toEqual(["a", "  ", " b"]);
    expect(split("gpt2", "a   b")).toEqual(["a", "  ", " b"]);
    expect(split("llama3", "end   ")).toEqual(["end", "   "]);
  });

  test("newlines: Llama 3 keeps a run of newlines (and the spaces before it) together", () => {
    expect(split("llama3", "a\n\n  b")).toEqual(["a", "\n\n", " ", " b"]);
    expect(split("llama3", "x  \r\n\r\ny")).toEqual(["x", "  \r\n\r\n", "y"]);
    expect(split("llama3", "foo!!\n\nbar")).toEqual(["foo", "!!\n\n", "bar"]);
    expect(split("gpt2", "Hello\n\nfoo")).toEqual(["Hello", "\n", "\n", "foo"]);
  });

  test("punctuation and the optional leading character of a word", () => {
    expect(split("llama3", "(hello), world!")).toEqual(["(hello", "),", " world", "!"]);
    expect(split("gpt2", "(hello), world!")).toEqual(["(", "hello", "),", " world", "!"]);
    expect(split("default", "a+b=c")).toEqual(["a", "+", "b", "=", "c"]);
  });

  test("whitespace is Unicode White_Space as llama.cpp has it: U+0085 is, U+FEFF is not", () => {
    expect(split("llama3", "a\u0085\u0085b")).toEqual(["a", "\u0085", "\u0085b"]);
    expect(split("llama3", "a\ufeff\ufeff\ufeffb")).toEqual(["a", "\ufeff\ufeff\ufeff", "b"]);
  });

  test("pieces always concatenate back to the text", () => {
    const s = "It's 2024!\n\n  Ünïcödé 中文 🦙🦙  \t tabs\r\nend 12345678";
    for (const name of Object.keys(PRE_TOKENIZERS) as (keyof typeof PRE_TOKENIZERS)[]) {
      const pieces = split(name, s);
      expect(pieces.join("")).toBe(s);
      expect(pieces.every((p) => p.length > 0)).toBe(true);
    }
  });
});

describe("BPE special tokens and BOS", () => {
  test("control tokens only with parseSpecial; decode renders them unless skipSpecial", () => {
    const text = "<|im_start|>hello<|im_end|>";
    expect(tok.encode(text)).not.toContain(id["<|im_start|>"]!);
    expect(tok.decode(tok.encode(text))).toBe(text);
    const ids = tok.encode(text, { parseSpecial: true });
    expect(ids).toEqual([id["<|im_start|>"]!, id.hello!, id["<|im_end|>"]!]);
    expect(tok.decode(ids)).toBe(text);
    expect(tok.decode(ids, { skipSpecial: true })).toBe("hello");
  });

  test("EOG: <|im_end|> and <|endoftext|> by their text", () => {
    expect(tok.isEog(id["<|im_end|>"]!)).toBe(true);
    expect(tok.isEog(id["<|endoftext|>"]!)).toBe(true);
    expect(tok.isEog(id["<|im_start|>"]!)).toBe(false);
  });

  test("BOS: off by default for BPE, on for llama3 pre-types, the file's flag wins", () => {
    expect(tok.addBos).toBe(false);
    expect(tok.encode("hello", { addSpecial: true })).toEqual([id.hello!]);
    const l3 = createTokenizer(bpeVocab({ pre: "llama-bpe" }).meta);
    expect(l3.addBos).toBe(true);
    expect(l3.encode("hello", { addSpecial: true })).toEqual([id["<|endoftext|>"]!, id.hello!]);
    const off = createTokenizer(bpeVocab({ pre: "llama-bpe", addBos: false }).meta);
    expect(off.encode("hello", { addSpecial: true })).toEqual([id.hello!]);
  });

  test("decode maps the byte alphabet back to UTF-8", () => {
    const s = "hello world 中文 🦙 naïve\n\ttabs";
    expect(tok.decode(tok.encode(s))).toBe(s);
  });
});
