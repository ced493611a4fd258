/**
 * The tokenizer of the real Gemma 3 270M file (262144 tokens, SentencePiece, no space prefix):
 * known ids, chat markers, the EOG set, byte fallback, round trips, and speed. Skipped, with the
 * reason, when models/gemma-3-270m-Q4_K_M.gguf is absent.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { parseGGUF, type GGUFMetadata } from "../../src/gguf";
import { createTokenizer, type Tokenizer } from "../../src/tokenizer";
import { PARITY_CORPUS } from "./fixtures";

const GEMMA = join(import.meta.dir, "..", "..", "models", "gemma-3-270m-Q4_K_M.gguf");
const have = existsSync(GEMMA);
if (!have) console.warn(`[skip] Gemma 3 tokenizer tests: ${GEMMA} is absent (run: bash scripts/fetch-model.sh)`);

describe.skipIf(!have)("Gemma 3 270M tokenizer (real model file)", () => {
  let meta: GGUFMetadata;
  let tok: Tokenizer;
  let buildMs = 0;
  beforeAll(async () => {
    meta = parseGGUF(new Uint8Array(await Bun.file(GEMMA).arrayBuffer())).metadata;
    const t0 = performance.now();
    tok = createTokenizer(meta);
    buildMs = performance.now() - t0;
  }, 30_000);

  test("vocabulary and special ids as in the file", () => {
    expect(tok.vocabSize).toBe(262144);
    expect([tok.bos, tok.eos, tok.vocab.unk]).toEqual([2, 1, 3]);
    expect(tok.addBos).toBe(true);
    expect(tok.vocab.addSpacePrefix).toBe(false);
    expect(tok.eot).toBe(106);
    expect(tok.isEog(1) && tok.isEog(106) && !tok.isEog(2) && !tok.isEog(105)).toBe(true);
  });

  test("plain text and the chat template's markers", () => {
    expect(tok.encode("Hello world")).toEqual([9259, 1902]);
    expect(tok.encode("Hello world", { addSpecial: true })).toEqual([2, 9259, 1902]);
    const chat = "<bos><start_of_turn>user\nTest<end_of_turn>\n<start_of_turn>model\n";
    expect(tok.encode(chat, { parseSpecial: true })).toEqual([2, 105, 2364, 107, 3694, 106, 107, 105, 4368, 107]);
    expect(tok.encode(chat)).not.toContain(105); // without parseSpecial it is plain text
    expect(tok.decode([105, 2364, 107])).toBe("<start_of_turn>user\n");
    expect(tok.decode([2, 105, 2364, 107, 106], { skipSpecial: true })).toBe("user\n");
  });

  test("a character outside the vocabulary falls back to <0xNN> byte tokens", () => {
    const ids = tok.encode("\u{10FFFD}");
    expect(ids.map((id) => tok.vocab.tokens[id])).toEqual(["<0xF4>", "<0x8F>", "<0xBF>", "<0xBD>"]);
    expect(tok.decode(ids)).toBe("\u{10FFFD}");
  });

  test("decode(encode(s)) === s on the hard-strings corpus", () => {
    for (const s of PARITY_CORPUS) expect(tok.decode(tok.encode(s))).toBe(s);
  });

  test("building the tokenizer takes < 1 s; encoding 10 KB of mixed text < 200 ms", () => {
    expect(buildMs).toBeLessThan(1000);
    let text = "";
    for (let i = 0; text.length < 10_000; i++) text += PARITY_CORPUS[i % PARITY_CORPUS.length] + "\n";
    text = text.slice(0, 10_000);
    tok.encode(text.slice(0, 500)); // warm up the JIT
    const t0 = performance.now();
    const ids = tok.encode(text);
    const encodeMs = performance.now() - t0;
    const t1 = performance.now();
    tok.encode(text, { parseSpecial: true });
    const specialMs = performance.now() - t1;
    console.log(`[gemma tokenizer] build ${buildMs.toFixed(0)} ms; 10 KB → ${ids.length} tokens in ${encodeMs.toFixed(1)} ms (${specialMs.toFixed(1)} ms with parseSpecial)`);
    expect(encodeMs).toBeLessThan(200);
    expect(specialMs).toBeLessThan(200);
    expect(tok.decode(ids)).toBe(text);
  });
});
