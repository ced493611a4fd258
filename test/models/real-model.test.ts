/**
 * The real default model (Gemma 3 270M Q4_K_M, fetched by scripts/fetch-model.sh) against
 * llama.cpp on the same file, in the same process:
 * - logits of a 64-token sequence: top-1 agrees at every position, NMSE bounded;
 * - greedy generation of 32 tokens from several prompts is identical, up to at most one near
 *   tie (TIE_LOGITS, by llama.cpp's own logits) after which the two contexts differ;
 * - a golden test: greedy decoding from a fixed prompt gives exactly the committed text.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadModel, type Model } from "../../src/runtime/model";
import { cpuInfo, loadedLevel } from "../../src/ffi/library";
import { openReference, referenceBatchSize, type LlamaReference } from "../../bench/llamacpp";
import { nmse } from "../helpers";
import * as cpu from "../../src/backends/cpu";
import { Tensor } from "../../src/tensor";
import { expectGreedyParity } from "./greedy-parity";

const MODEL = join(import.meta.dir, "..", "..", "models", "gemma-3-270m-Q4_K_M.gguf");
const GOLDEN = join(import.meta.dir, "golden", "gemma3-270m-greedy.json");
const present = existsSync(MODEL);

/**
 * Logit NMSE bound against llama.cpp. This model is numerically touchy: llama.cpp's own logits
 * with flash attention on vs off differ by NMSE ≈ 5e-3 on the same sequence (its non-flash
 * path rounds Q and the softmax to f16); kiln measures ≈ 6.5e-3 against the non-flash path.
 */
const LOGIT_NMSE_BOUND = 2e-2;
/**
 * Near-tie rule for top-1. On this sequence llama.cpp disagrees with itself (flash attention on
 * vs off) at 3 of 64 positions, with its own logit margins up to 0.36; kiln differs from the
 * non-flash path at 4 positions, all with margins ≤ 0.22. A flip is accepted only where
 * llama.cpp's own margin between its choice and kiln's is below TIE_LOGITS.
 */
const TIE_LOGITS = 0.5;

function argmax(a: Float32Array): number {
  let m = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[m]!) m = i;
  return m;
}

describe.skipIf(!present)("Gemma 3 270M Q4_K_M vs llama.cpp (same file)", () => {
  let model: Model;
  let ref: LlamaReference;
  const sha256 = () => new Bun.CryptoHasher("sha256").update(readFileSync(MODEL)).digest("hex");
  let before = "";

  beforeAll(async () => {
    before = sha256();
    model = await loadModel(MODEL, { threads: 2, contextLength: 512, maxLogitRows: 64 });
    // On an AMX host, llama.cpp's batched path is not a reference for Q4_K/Q6_K: batch 1 there.
    ref = await openReference(MODEL, { threads: 2, contextSize: 512, batchSize: referenceBatchSize(MODEL, cpuInfo().features) });
  });
  afterAll(async () => {
    model?.dispose();
    await ref?.close();
  });

  test("logits of a 64-token sequence: top-1 agrees except at near-ties, NMSE within bound", async () => {
    const text = "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined movable metal type, oil-based inks and a wooden press. Within fifty years, presses had spread to more than two hundred cities across Europe, and the price of books fell so far that pamphlets, newspapers and scientific journals could reach readers who had never owned a manuscript.";
    const ids = ref.tokenize(text, { addSpecial: true }).slice(0, 64);
    expect(ids.length).toBe(64);
    const want = await ref.logits(ids);
    model.reset();
    const got = model.eval(ids, 64);
    const V = model.hp.nVocab;
    const flatGot: number[] = [];
    const flatWant: number[] = [];
    const flips: { i: number; margin: number }[] = [];
    for (let i = 0; i < ids.length; i++) {
      const g = got.f32.subarray(i * V, (i + 1) * V);
      const [mine, theirs] = [argmax(g), argmax(want[i]!)];
      if (mine !== theirs) flips.push({ i, margin: want[i]![theirs]! - want[i]![mine]! });
      for (let j = 0; j < V; j += 7) { flatGot.push(g[j]!); flatWant.push(want[i]![j]!); }
    }
    expect(flips.filter((f) => f.margin >= TIE_LOGITS)).toEqual([]);
    expect(flips.length).toBeLessThanOrEqual(8);
    expect(nmse(flatGot, flatWant)).toBeLessThan(LOGIT_NMSE_BOUND);
  });

  const prompts = [
    "The capital of France is",
    "<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\n",
    "def fibonacci(n):",
    "1, 2, 3, 4, 5,",
  ];
  for (const prompt of prompts) {
    test(`greedy 32 tokens identical to llama.cpp: ${JSON.stringify(prompt.slice(0, 30))}`, async () => {
      const ids = ref.tokenize(prompt, { addSpecial: true, parseSpecial: true });
      expect(model.tokenize(prompt, { addSpecial: true, parseSpecial: true })).toEqual(ids);
      // Identical, or identical up to one near tie (the rule above).
      await expectGreedyParity(model, ref, ids, 32, TIE_LOGITS, JSON.stringify(prompt.slice(0, 30)));
    });
  }

  test("packed output head: logits within rounding of the head read in place, the same greedy tokens", async () => {
    // Where this build packs Q8_0 (the AVX-512 VNNI and AVX2 libraries), the default model reads
    // a packed copy of the tied head; a model loaded with packOutputHead: false reads the mapped
    // file. The default model must really read the packed copy where the build has one, or the
    // comparison below would set the in-place head against itself.
    const buildPacksQ8_0 = cpu.packUnsupportedReason(Tensor.zeros("q8_0", [16, 256])) === null;
    expect(buildPacksQ8_0).toBe(loadedLevel() === "x86_64-v4" || loadedLevel() === "x86_64-v3");
    expect(model.outputHeadPacked).toBe(buildPacksQ8_0);
    const inPlace = await loadModel(MODEL, { threads: 2, contextLength: 512, maxLogitRows: 16, packOutputHead: false });
    try {
      expect(inPlace.outputHeadPacked).toBe(false);
      const ids = model.tokenize("Write a short poem about the sea and the wind, in four lines.", { addSpecial: true });
      model.reset();
      const a = model.eval(ids, 16).f32.slice();
      const b = inPlace.eval(ids, 16).f32;
      expect(nmse([...a], [...b])).toBeLessThan(1e-9);
      const opts = { maxTokens: 24, temperature: 0, speculative: false } as const;
      const [x, y] = [await model.complete(ids, opts), await inPlace.complete(ids, opts)];
      expect(x.tokens).toEqual(y.tokens);
    } finally {
      inPlace.dispose();
    }
  });

  test("the model file is unchanged after all of the above (it is mapped read-only)", () => {
    expect(sha256()).toBe(before);
  });

  test("golden: greedy continuation of a fixed prompt is exactly the committed text", async () => {
    const golden = JSON.parse(readFileSync(GOLDEN, "utf8")) as { prompt: string; maxTokens: number; text: string };
    const result = await model.complete(golden.prompt, { maxTokens: golden.maxTokens, temperature: 0 });
    expect(result.text).toBe(golden.text);
  });
});
