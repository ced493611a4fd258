/**
 * Parse speed sanity check on a Gemma-3-sized tokenizer: 262144 string tokens, f32 scores and
 * i32 token types. The bound is generous; it catches accidental quadratic or per-element BigInt
 * work, not small regressions.
 */
import { expect, test } from "bun:test";
import { parseGGUF } from "../../src/gguf/reader";
import { checkTokenizerMetadata, getArray } from "../../src/gguf/metadata";
import { GGMLType, GGUFValueType as T } from "../../src/gguf/types";
import { GGUFWriter } from "../../src/gguf/writer";

const N_VOCAB = 262144;

test(`parse a ${N_VOCAB}-token vocabulary in < 150 ms`, () => {
  const tokens = Array.from({ length: N_VOCAB }, (_, i) => (i % 5 === 0 ? `▁wörd${i}` : `tok${i.toString(36)}`));
  const w = new GGUFWriter();
  w.addKV("general.architecture", T.STRING, "gemma3");
  w.addArray("tokenizer.ggml.tokens", T.STRING, tokens);
  w.addArray("tokenizer.ggml.scores", T.FLOAT32, Float32Array.from({ length: N_VOCAB }, (_, i) => -i));
  w.addArray("tokenizer.ggml.token_type", T.INT32, new Int32Array(N_VOCAB).fill(1));
  w.addTensor("token_embd.weight", [256, 8], GGMLType.Q8_0, new Uint8Array(8 * 34 * 8));
  const bytes = w.toBytes();

  const times: number[] = [];
  let f = parseGGUF(bytes);
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    f = parseGGUF(bytes);
    times.push(performance.now() - t0);
  }
  const t0 = performance.now();
  checkTokenizerMetadata(f.metadata);
  const checkMs = performance.now() - t0;
  console.log(`${(bytes.length / 1e6).toFixed(1)} MB: parse ${times.map((t) => t.toFixed(1)).join(", ")} ms; tokenizer check ${checkMs.toFixed(1)} ms`);

  const got = getArray(f.metadata, "tokenizer.ggml.tokens", T.STRING);
  expect(got.length).toBe(N_VOCAB);
  expect(got[5]).toBe("▁wörd5");
  expect(got[N_VOCAB - 1]).toBe(tokens[N_VOCAB - 1]!);
  expect(getArray(f.metadata, "tokenizer.ggml.scores", T.FLOAT32)[7]).toBe(-7);
  expect(Math.min(...times)).toBeLessThan(150);
});
