/**
 * The llama.cpp reference (node-llama-cpp, in-process under Bun) loads the default Gemma model and behaves
 * deterministically. Skipped when the model file is absent: run `bash scripts/fetch-model.sh`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { openReference, referenceBatchSize, type LlamaReference } from "../../bench/llamacpp";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";
import { nmse } from "../helpers";

const GEMMA_PATH = join(import.meta.dir, "../../models/gemma-3-270m-Q4_K_M.gguf");
const haveModel = existsSync(GEMMA_PATH);
if (!haveModel)
  console.warn(`[skip] llama.cpp reference tests: ${GEMMA_PATH} is absent (run: bash scripts/fetch-model.sh)`);

function argmax(v: Float32Array): number {
  let b = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[b]!) b = i;
  return b;
}

describe.skipIf(!haveModel)("llama.cpp reference on Gemma 3 270M Q4_K_M (needs models/; fetch-model.sh)", () => {
  let ref: LlamaReference;
  beforeAll(async () => {
    ref = await openReference(GEMMA_PATH, { threads: 2, contextSize: 256, flashAttention: false });
  }, 60_000);
  afterAll(async () => {
    await ref?.close();
  });

  test("loads the model on the CPU", () => {
    expect(ref.vocabSize).toBe(262144);
    expect(ref.bos).toBe(2);
    expect(ref.eos).toBe(1);
    expect(ref.raw.llama.gpu).toBe(false);
  });

  test("tokenizes like llama_tokenize (add_special / parse_special)", () => {
    expect(ref.tokenize("Hello world")).toEqual([9259, 1902]);
    expect(ref.tokenize("Hello world", { addSpecial: true })).toEqual([2, 9259, 1902]);
    // parse_special=false treats control-token text as plain text; true maps it to the control token.
    expect(ref.tokenize("<start_of_turn>hi", { parseSpecial: true })).toEqual([105, 2202]);
    expect(ref.tokenize("<start_of_turn>hi")).not.toContain(105);
    expect(ref.detokenize([9259, 1902])).toBe("Hello world");
  });

  test("greedy-generates 8 tokens deterministically", async () => {
    const prompt = ref.tokenize("The capital of France is", { addSpecial: true });
    const a = await ref.greedy(prompt, 8);
    const b = await ref.greedy(prompt, 8);
    expect(a).toHaveLength(8);
    expect(b).toEqual(a);
    // Only the first three steps are pinned (top-1 leads by ≥0.5 logits there). Later steps have margins as
    // small as 0.02–0.2 (flash attention on/off alone moves them), so another CPU's kernels could flip them.
    // Observed here (AVX-512, 2 threads): [506, 5279, 529, 506, 2891, 529, 7001, 236761],
    // " the capital of the country of France."
    expect(a.slice(0, 3)).toEqual([506, 5279, 529]);
    expect(ref.detokenize(a.slice(0, 3))).toBe(" the capital of");
  }, 60_000);

  test("per-position logits agree with greedy decoding", async () => {
    const prompt = ref.tokenize("The capital of France is", { addSpecial: true });
    const gen = await ref.greedy(prompt, 4);
    const ids = [...prompt, ...gen];
    const logits = await ref.logits(ids);
    expect(logits).toHaveLength(ids.length);
    for (const l of logits) expect(l).toHaveLength(ref.vocabSize);
    const picked = logits.slice(prompt.length - 1, prompt.length - 1 + gen.length).map(argmax);
    expect(picked).toEqual(gen);
    const last = await ref.lastLogits(ids);
    const full = logits.at(-1)!;
    let same = last.length === full.length;
    for (let i = 0; same && i < last.length; i++) same = Object.is(last[i], full[i]);
    expect(same).toBe(true);
  }, 60_000);
});

describe("the reference at batch size 1 (what parity tests use for llama.cpp's AMX types on AMX hosts)", () => {
  const dir = mkdtempSync(join(tmpdir(), "kiln-refbatch-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("referenceBatchSize: 1 only on an AMX host for a file with a matrix of an AMX type", () => {
    const q41 = join(dir, "llama-q4_1.gguf");
    const f16 = join(dir, "llama-f16.gguf");
    writeSyntheticModel(q41, { arch: "llama", type: "q4_1", shape: "tiny", seed: 3 });
    writeSyntheticModel(f16, { arch: "llama", type: "f16", shape: "tiny", seed: 3 });
    expect(referenceBatchSize(q41, ["avx512f", "avx512_vnni"])).toBeUndefined();
    expect(referenceBatchSize(q41, ["avx512f", "amx_tile", "amx_int8"])).toBe(1);
    expect(referenceBatchSize(f16, ["avx512f", "amx_tile", "amx_int8"])).toBeUndefined();
  });

  test("batch size 1 gives the batched path's logits, every position (so it can stand in for it)", async () => {
    // F16 weights: no AMX type, so the batched path is a trustworthy comparison on every host.
    const path = join(dir, "llama-f16-b.gguf");
    writeSyntheticModel(path, { arch: "llama", type: "f16", shape: "tiny", seed: 4 });
    const ids = [1, ...Array.from({ length: 23 }, (_, i) => 3 + ((i * 37) % 400))];
    const batched = await openReference(path, { threads: 2, contextSize: 64 });
    const single = await openReference(path, { threads: 2, contextSize: 64, batchSize: 1 });
    try {
      const a = await batched.logits(ids);
      const b = await single.logits(ids);
      expect(b).toHaveLength(ids.length);
      // The same weights in other summation orders: close, not equal.
      expect(nmse(b.flatMap((x) => Array.from(x)), a.flatMap((x) => Array.from(x)))).toBeLessThan(1e-3);
    } finally {
      await batched.close();
      await single.close();
    }
  }, 60_000);
});
