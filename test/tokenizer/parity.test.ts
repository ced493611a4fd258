/**
 * kiln's tokenizers against llama.cpp (bench/llamacpp.ts, node-llama-cpp in-process) on
 * the same files: identical ids on a corpus of hard strings, with and without BOS and special
 * parsing, for
 * - the real Gemma 3 270M (SentencePiece, 262k vocabulary, no space prefix), when present;
 * - the real SmolLM2-135M-Instruct (byte-level BPE, smollm pre-tokenizer, ChatML tokens), when present;
 * - a synthetic Llama (SentencePiece with space prefix and byte fallback);
 * - the synthetic Qwen2 (byte-level BPE, qwen2 pre-tokenizer);
 * - a byte-level BPE vocabulary whose merges span pre-token boundaries, under each pre-tokenizer
 *   family (tokenizer.ggml.pre = qwen2, llama-bpe, gpt-2, smollm, default): any difference in
 *   where kiln splits the text shows up as different ids.
 * Skipped, with the reason, when the reference harness or node-llama-cpp is unavailable.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GGUFValueType as T, GGUFWriter, parseGGUF, tensorData } from "../../src/gguf";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";
import { createTokenizer, type Tokenizer } from "../../src/tokenizer";
import { BYTE_TO_CHAR } from "../../src/tokenizer/bpe";
import { learnCrossingMerges, PARITY_CORPUS } from "./fixtures";

type Reference = typeof import("../../bench/llamacpp");
const HARNESS = join(import.meta.dir, "..", "..", "bench", "llamacpp.ts");
const GEMMA = join(import.meta.dir, "..", "..", "models", "gemma-3-270m-Q4_K_M.gguf");
const SMOLLM2 = join(import.meta.dir, "..", "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf");

let reference: Reference | undefined;
let why = "";
if (!existsSync(HARNESS)) why = `${HARNESS} is absent`;
else {
  try {
    reference = await import("../../bench/llamacpp");
  } catch (e) {
    why = `the llama.cpp reference does not load: ${(e as Error).message}`;
  }
}
if (!reference) console.warn(`[skip] tokenizer parity with llama.cpp: ${why}`);
if (!existsSync(GEMMA)) console.warn(`[skip] tokenizer parity on Gemma 3: ${GEMMA} is absent (run: bash scripts/fetch-model.sh)`);

const dir = mkdtempSync(join(tmpdir(), "kiln-tok-parity-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SHAPE = { nEmbd: 64, nLayer: 1, nHead: 4, nFf: 128, nVocab: 32000 };

function synthetic(arch: "llama" | "qwen2"): string {
  const path = join(dir, `${arch}.gguf`);
  if (!existsSync(path)) writeSyntheticModel(path, { arch, type: "f16", shape: SHAPE, seed: 1 });
  return path;
}

/**
 * A byte-level BPE vocabulary whose merges cross pre-token boundaries (learned on the corpus
 * itself), padded to the synthetic model's 32000 rows, with ChatML control tokens at the end.
 */
const crossing = (() => {
  let cached: { tokens: string[]; types: Int32Array; merges: string[] } | undefined;
  return () => {
    if (cached) return cached;
    const merges = learnCrossingMerges(PARITY_CORPUS.join("\n"), 6000);
    const tokens = [...BYTE_TO_CHAR, ...merges.map((m) => m.replace(" ", ""))];
    const specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    for (let i = 0; tokens.length < SHAPE.nVocab - specials.length; i++) tokens.push(`[PAD${i}]`);
    tokens.push(...specials);
    const types = new Int32Array(tokens.length).fill(1).fill(3, tokens.length - specials.length);
    return (cached = { tokens, types, merges });
  };
})();

/**
 * The synthetic Qwen2 file with the crossing-merges vocabulary and another tokenizer.ggml.pre
 * (weights and hyperparameters copied as they are).
 */
function withPre(pre: string): string {
  const src = synthetic("qwen2");
  const bytes = new Uint8Array(readFileSync(src));
  const file = parseGGUF(bytes);
  const v = crossing();
  const n = v.tokens.length;
  const w = new GGUFWriter();
  const replaced: Record<string, () => void> = {
    "tokenizer.ggml.pre": () => w.addKV("tokenizer.ggml.pre", T.STRING, pre),
    "tokenizer.ggml.tokens": () => w.addArray("tokenizer.ggml.tokens", T.STRING, v.tokens),
    "tokenizer.ggml.token_type": () => w.addArray("tokenizer.ggml.token_type", T.INT32, v.types),
    "tokenizer.ggml.merges": () => w.addArray("tokenizer.ggml.merges", T.STRING, v.merges),
    "tokenizer.ggml.bos_token_id": () => w.addKV("tokenizer.ggml.bos_token_id", T.UINT32, n - 3),
    "tokenizer.ggml.eos_token_id": () => w.addKV("tokenizer.ggml.eos_token_id", T.UINT32, n - 1),
    "tokenizer.ggml.padding_token_id": () => w.addKV("tokenizer.ggml.padding_token_id", T.UINT32, n - 3),
  };
  for (const [key, val] of file.metadata) {
    if (replaced[key]) replaced[key]();
    else if (val.type === T.ARRAY) w.addArray(key, val.elemType, val.value);
    else w.addKV(key, val.type, val.value);
  }
  for (const t of file.tensors) w.addTensor(t.name, t.dims, t.type, tensorData(bytes, t));
  const path = join(dir, `bpe-${pre}.gguf`);
  w.write(path);
  return path;
}

async function tokenizerOf(path: string): Promise<Tokenizer> {
  return createTokenizer(parseGGUF(new Uint8Array(await Bun.file(path).arrayBuffer())).metadata);
}

const cases: { name: string; file: () => string; skip: boolean }[] = [
  { name: "Gemma 3 270M Q4_K_M (real model)", file: () => GEMMA, skip: !existsSync(GEMMA) },
  { name: "SmolLM2-135M-Instruct Q4_1 (real model: byte-level BPE, pre = smollm, ChatML specials)", file: () => SMOLLM2, skip: !existsSync(SMOLLM2) },
  { name: "synthetic llama (SPM, space prefix, byte fallback)", file: () => synthetic("llama"), skip: false },
  { name: "synthetic qwen2 (BPE, pre = qwen2)", file: () => synthetic("qwen2"), skip: false },
  ...["qwen2", "llama-bpe", "gpt-2", "smollm", "default"].map((pre) => ({
    name: `BPE with merges across pre-token boundaries, pre = ${pre}`,
    file: () => withPre(pre),
    skip: false,
  })),
];

for (const c of cases) {
  describe.skipIf(!reference || c.skip)(`tokenizer parity with llama.cpp: ${c.name}`, () => {
    let tok: Tokenizer;
    let ref: Awaited<ReturnType<Reference["openReference"]>>;
    beforeAll(async () => {
      const path = c.file();
      tok = await tokenizerOf(path);
      ref = await reference!.openReference(path, { threads: 1, contextSize: 64 });
    }, 60_000);
    afterAll(async () => {
      await ref?.close();
    });

    test("identical ids on the hard-strings corpus (plain, +BOS/EOS, +special parsing)", () => {
      let compared = 0;
      for (const s of PARITY_CORPUS) {
        for (const parseSpecial of [false, true]) {
          for (const addSpecial of [false, true]) {
            const opts = { addSpecial, parseSpecial };
            expect({ s, ...opts, ids: tok.encode(s, opts) }).toEqual({ s, ...opts, ids: ref.tokenize(s, opts) });
            compared++;
          }
        }
      }
      expect(compared).toBe(PARITY_CORPUS.length * 4);
    }, 120_000);

    test("same BOS/EOS and end-of-generation set", () => {
      expect(tok.bos).toBe(ref.bos ?? -1);
      expect(tok.eos).toBe(ref.eos ?? -1);
      const eog = (isEog: (id: number) => boolean) => Array.from({ length: tok.vocabSize }, (_, i) => i).filter(isEog);
      expect(eog(tok.isEog)).toEqual(eog((id) => ref.isEog(id)));
    });

    test("decode(encode(s)) === s on the round-trippable strings", () => {
      for (const s of PARITY_CORPUS) {
        if (s.includes("\u2581")) continue; // SentencePiece reads ▁ as a space
        expect(tok.decode(tok.encode(s))).toBe(s);
      }
    });
  });
}
