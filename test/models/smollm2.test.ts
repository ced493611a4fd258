/**
 * The real instruction-tuned model (SmolLM2-135M-Instruct Q4_1, llama architecture, fetched by
 * scripts/fetch-smollm2.sh) against llama.cpp on the same file: greedy generation from ChatML
 * prompts is identical, up to at most one near tie (by llama.cpp's own logits), and the answer
 * to a factual question is the expected one.
 *
 * llama.cpp is evaluated at batch size 1 here: on an Intel Xeon with AMX, the prebuilt
 * node-llama-cpp (3.22.1, its sapphirerapids CPU variant) computes *batched* Q4_1 prefill wrongly
 * (batch 512: "L'Étoile, la Marseillaise," for the France prompt; batch 1: "The capital of France
 * is Paris."). Its batch-1 path is the trustworthy reference on every machine.
 * kiln reads the prompt one token at a time here too (prefillChunk 1): this model's logits move
 * by up to ~1 logit between summation orders (measured: its prompt read in one 37-row batch vs
 * token by token differs by 0.68 at most; flash vs naive attention, both token by token, by
 * 0.65), so batch 1 against batch 1 is the like-for-like comparison.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { openReference, type LlamaReference } from "../../bench/llamacpp";
import { loadModel, type Model } from "../../src/runtime/model";
import { expectGreedyParity } from "./greedy-parity";

const MODEL = join(import.meta.dir, "..", "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf");
const present = existsSync(MODEL);
if (!present) console.warn(`smollm2.test.ts: ${MODEL} is missing (run scripts/setup.sh); skipped`);
/** A flip is accepted only where llama.cpp's own margin between its choice and kiln's is below this. */
const TIE_LOGITS = 0.5;

describe.skipIf(!present)("SmolLM2-135M-Instruct Q4_1 vs llama.cpp at batch size 1 (same file)", () => {
  let model: Model;
  let ref: LlamaReference;
  beforeAll(async () => {
    model = await loadModel(MODEL, { threads: 2, contextLength: 512, prefillChunk: 1 });
    ref = await openReference(MODEL, { threads: 2, contextSize: 512, batchSize: 1 });
  }, 60_000);
  afterAll(async () => {
    model?.dispose();
    await ref?.close();
  }, 60_000);

  // "What is the capital of France?" sits on a near tie at its first token in this model ("The" vs
  // "L", within 0.3 logits on every path measured, kiln's and llama.cpp's), so the factual check
  // asks in a form whose answer is stable across summation orders.
  const questions = ["Name the capital of France.", "What is the capital of Germany?", "Write a haiku about the sea.", "List three prime numbers."];
  for (const q of questions) {
    test(`greedy 32 tokens identical to llama.cpp: ${JSON.stringify(q)}`, async () => {
      const prompt = model.applyChatTemplate([{ role: "user", content: q }]);
      const ids = ref.tokenize(prompt, { addSpecial: true, parseSpecial: true });
      expect(model.tokenize(prompt, { addSpecial: true, parseSpecial: true })).toEqual(ids);
      const got = await expectGreedyParity(model, ref, ids, 32, TIE_LOGITS, JSON.stringify(q));
      if (q.includes("France")) expect(model.detokenize(got)).toContain("Paris");
      if (q.includes("Germany")) expect(model.detokenize(got)).toContain("Berlin");
    }, 60_000);
  }
});
