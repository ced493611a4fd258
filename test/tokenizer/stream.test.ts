/**
 * The stream decoder: a character split across tokens comes out whole, once its last byte
 * arrives, and never as a broken (U+FFFD) fragment.
 */
import { describe, expect, test } from "bun:test";
import { createTokenizer, type Tokenizer } from "../../src/tokenizer";
import { bpeVocab, byteTokenText, spmVocab } from "./fixtures";

const spm = spmVocab({ addSpacePrefix: false });
const spmTok = createTokenizer(spm.meta);
const bpeTok = createTokenizer(bpeVocab().meta);

function pushAll(tok: Tokenizer, ids: number[]): string[] {
  const s = tok.createStreamDecoder();
  return [...ids.map((id) => s.push(id)), s.flush()];
}

describe("stream decoder", () => {
  test("a 4-byte emoji split over four SPM byte tokens appears with the last one", () => {
    const ids = spmTok.encode("a🦙b");
    expect(ids.length).toBe(6);
    expect(pushAll(spmTok, ids)).toEqual(["a", "", "", "", "🦙", "b", ""]);
  });

  test("CJK over byte-level BPE byte tokens (3 bytes each)", () => {
    const ids = bpeTok.encode("中文");
    expect(ids.length).toBe(6);
    expect(pushAll(bpeTok, ids)).toEqual(["", "", "中", "", "", "文", ""]);
  });

  test("whole-character tokens come out at once", () => {
    expect(pushAll(spmTok, [spm.ids["中"]!, spm.ids["▁hello"]!])).toEqual(["中", " hello", ""]);
  });

  test("an unfinished character is held back, then flushed as U+FFFD", () => {
    const s = spmTok.createStreamDecoder();
    expect(s.push(spm.ids[byteTokenText(0xf0)]!)).toBe("");
    expect(s.push(spm.ids[byteTokenText(0x9f)]!)).toBe("");
    expect(s.flush()).toBe("\ufffd");
    // flush resets: the next character decodes cleanly.
    expect(s.push(spm.ids.a!)).toBe("a");
  });

  test("pieces never contain U+FFFD for valid text, and join to decode()", () => {
    const text = "emoji 🦙🔥👍🏽 family 👨‍👩‍👧 中文字符 한국어 naïve";
    for (const tok of [spmTok, bpeTok]) {
      const pieces = pushAll(tok, tok.encode(text));
      expect(pieces.some((p) => p.includes("\ufffd"))).toBe(false);
      expect(pieces.join("")).toBe(text);
    }
  });

  test("skipSpecial drops control tokens from the stream", () => {
    const ids = spmTok.encode("<start_of_turn>hello", { parseSpecial: true });
    const s = spmTok.createStreamDecoder({ skipSpecial: true });
    expect(ids.map((id) => s.push(id)).join("")).toBe("hello");
  });
});
