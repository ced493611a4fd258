/**
 * SentencePiece-style tokenization on a hand-made vocabulary (fixtures.ts): merge order by
 * score, ties, byte fallback, space handling, special tokens, BOS/EOS, decoding and the
 * round-trip property.
 */
import { describe, expect, test } from "bun:test";
import { createTokenizer } from "../../src/tokenizer";
import { byteTokenText, ROUND_TRIP_CORPUS, spmVocab } from "./fixtures";

const plain = spmVocab({ addSpacePrefix: false });
const prefixed = spmVocab({ addSpacePrefix: true });
const tok = createTokenizer(plain.meta);
const tokP = createTokenizer(prefixed.meta);
const id = plain.ids;
const byteIds = (s: string) => Array.from(new TextEncoder().encode(s), (b) => id[byteTokenText(b)]!);

describe("SPM merges", () => {
  test("the highest-scoring pair merges first", () => {
    // "bc" (−1) beats "ab" (−5); "abc" is not a token.
    expect(tok.encode("abc")).toEqual([id.a!, id.bc!]);
    expect(tok.encode("ab")).toEqual([id.ab!]);
  });

  test("equal scores: the leftmost pair merges first", () => {
    expect(tok.encode("aaa")).toEqual([id.aa!, id.a!]);
    expect(tok.encode("aaaa")).toEqual([id.aa!, id.aa!]);
  });

  test("a chain of merges, with a competing pair made stale on the way", () => {
    // ll (−2) first, so lo (−2.5) is stale; then he, hell, hello, ▁hello.
    expect(tok.encode(" hello")).toEqual([id["▁hello"]!]);
    expect(tok.encode("hello")).toEqual([id.hello!]);
    expect(tok.encode(" hello world")).toEqual([id["▁hello"]!, id["▁world"]!]);
  });
});

describe("SPM spaces", () => {
  test("spaces become ▁; runs of spaces merge as the vocabulary allows", () => {
    expect(tok.encode("a b")).toEqual([id.a!, id["▁"]!, id.b!]);
    expect(tok.encode("a  b")).toEqual([id.a!, id["▁▁"]!, id.b!]);
    expect(tok.encode("a   b")).toEqual([id.a!, id["▁▁"]!, id["▁"]!, id.b!]);
    expect(tok.encode(" ")).toEqual([id["▁"]!]);
  });

  test("add_space_prefix puts one space before the text (Llama 2), not otherwise (Gemma)", () => {
    expect(tokP.encode("hello")).toEqual([id["▁hello"]!]);
    expect(tok.encode("hello")).toEqual([id.hello!]);
    expect(tokP.encode(" hello")).toEqual([id["▁▁"]!, id.hello!]);
  });

  test("with add_space_prefix, the prefix also follows each special token", () => {
    expect(tokP.encode("<start_of_turn>hello", { parseSpecial: true })).toEqual([id["<start_of_turn>"]!, id["▁hello"]!]);
  });

  test("decode drops the prefix space once, also after a leading BOS", () => {
    expect(tokP.decode(tokP.encode("hello world"))).toBe("hello world");
    expect(tokP.decode(tokP.encode(" hello"))).toBe(" hello");
    expect(tokP.decode(tokP.encode("hello", { addSpecial: true }), { skipSpecial: true })).toBe("hello");
    expect(tok.decode([id["▁hello"]!])).toBe(" hello");
  });
});

describe("SPM byte fallback", () => {
  test("a character outside the vocabulary becomes its UTF-8 bytes as <0xNN> tokens", () => {
    const ids = tok.encode("🦙");
    expect(ids).toEqual(byteIds("🦙"));
    expect(ids.map((i) => tok.vocab.tokens[i])).toEqual(["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]);
    expect(tok.encode("a中é")).toEqual([id.a!, id["中"]!, ...byteIds("é")]);
  });

  test("decoding byte tokens gives the bytes back, a partial character as U+FFFD", () => {
    expect(tok.decode(byteIds("🦙 naïve"))).toBe("🦙 naïve");
    expect(tok.decode(byteIds("🦙").slice(0, 2))).toBe("\ufffd");
  });
});

describe("SPM special tokens", () => {
  test("control-token text is plain text unless parseSpecial", () => {
    const text = "<start_of_turn>hello<end_of_turn>";
    const asText = tok.encode(text);
    expect(asText).not.toContain(id["<start_of_turn>"]!);
    expect(tok.decode(asText)).toBe(text);
    expect(tok.encode(text, { parseSpecial: true })).toEqual([id["<start_of_turn>"]!, id.hello!, id["<end_of_turn>"]!]);
  });

  test("USER_DEFINED tokens match even without parseSpecial, and decode verbatim", () => {
    expect(tok.encode("a<tab>b")).toEqual([id.a!, id["<tab>"]!, id.b!]);
    expect(tok.decode([id["<tab>"]!])).toBe("<tab>");
  });

  test("control tokens render as their text, or nothing with skipSpecial", () => {
    const ids = [id["<s>"]!, id.hello!, id["</s>"]!];
    expect(tok.decode(ids)).toBe("<s>hello</s>");
    expect(tok.decode(ids, { skipSpecial: true })).toBe("hello");
    expect(new TextDecoder().decode(tok.tokenToPiece(id["<s>"]!))).toBe("<s>");
    expect(tok.tokenToPiece(id["<s>"]!, false).length).toBe(0);
  });

  test("end of generation: EOS and <end_of_turn> (forced to CONTROL), which is also the EOT", () => {
    expect(tok.isEog(id["</s>"]!)).toBe(true);
    expect(tok.isEog(id["<end_of_turn>"]!)).toBe(true);
    expect(tok.eot).toBe(id["<end_of_turn>"]!);
    expect(tok.isEog(id["<s>"]!)).toBe(false);
    expect(tok.isEog(id.hello!)).toBe(false);
  });
});

describe("SPM BOS/EOS", () => {
  test("addSpecial adds BOS when add_bos (SPM's default), EOS when add_eos", () => {
    expect(tok.addBos).toBe(true);
    expect(tok.encode("hello")).toEqual([id.hello!]);
    expect(tok.encode("hello", { addSpecial: true })).toEqual([id["<s>"]!, id.hello!]);
    expect(tok.encode("", { addSpecial: true })).toEqual([id["<s>"]!]);
    const both = createTokenizer(spmVocab({ addSpacePrefix: false, addEos: true }).meta);
    expect(both.encode("hello", { addSpecial: true })).toEqual([id["<s>"]!, id.hello!, id["</s>"]!]);
    const none = createTokenizer(spmVocab({ addSpacePrefix: false, addBos: false }).meta);
    expect(none.addBos).toBe(false);
    expect(none.encode("hello", { addSpecial: true })).toEqual([id.hello!]);
  });
});

describe("SPM round trip", () => {
  for (const [name, t] of [["no space prefix", tok], ["space prefix", tokP]] as const) {
    test(`decode(encode(s)) === s on hard strings (${name})`, () => {
      for (const s of ROUND_TRIP_CORPUS) {
        expect(t.decode(t.encode(s))).toBe(s);
        expect(t.decode(t.encode(s, { addSpecial: true }), { skipSpecial: true })).toBe(s);
      }
    });
  }
});
