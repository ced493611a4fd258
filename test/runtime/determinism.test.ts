/**
 * The determinism contract (README, "Determinism"), on the real default model:
 * - logits, and so greedy text, are bit for bit the same at any thread count (work is split
 *   across threads by output rows and heads, never inside one dot product's sum);
 * - the same seed and options give the same text, in any context, run after run;
 * - greedy text is the same with and without speculation (speculative.test.ts covers that in depth).
 * What may differ: logits across CPU levels (other kernels sum in another order) and sampled
 * text with adaptive speculation (its depth follows timings) — not asserted here.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadModel, type Model } from "../../src/runtime/model";

const path = join(import.meta.dir, "..", "..", "models", "gemma-3-270m-Q4_K_M.gguf");
const have = existsSync(path);
if (!have) console.warn(`determinism.test.ts: ${path} is missing (run scripts/setup.sh); skipped`);

describe.skipIf(!have)("determinism (Gemma 3 270M)", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(path, { contextLength: 256, maxLogitRows: 4 });
  });
  afterAll(() => model?.dispose());

  const prompt = "The old lighthouse keeper climbed the stairs every evening, and";

  test("logits are bit-identical at 1, 2 and 3 threads (prefill rows and decode steps)", () => {
    const ids = model.tokenize(prompt, { addSpecial: true });
    const run = (threads: number) => {
      const ctx = model.createContext({ threads });
      try {
        const prefill = ctx.eval(ids, 4).f32.slice();
        const decode = [7, 1234, 99].map((t) => ctx.eval([t]).f32.slice());
        return { prefill, decode };
      } finally {
        ctx.dispose();
      }
    };
    const [a, b, c] = [run(1), run(2), run(3)];
    expect(Buffer.from(b.prefill.buffer).equals(Buffer.from(a.prefill.buffer))).toBe(true);
    expect(Buffer.from(c.prefill.buffer).equals(Buffer.from(a.prefill.buffer))).toBe(true);
    for (let i = 0; i < 3; i++) {
      expect(Buffer.from(b.decode[i]!.buffer).equals(Buffer.from(a.decode[i]!.buffer))).toBe(true);
      expect(Buffer.from(c.decode[i]!.buffer).equals(Buffer.from(a.decode[i]!.buffer))).toBe(true);
    }
  });

  test("greedy text is the same at any thread count", async () => {
    const one = await model.createContext({ threads: 1 }).complete(prompt, { maxTokens: 24, temperature: 0 });
    const two = await model.createContext({ threads: 2 }).complete(prompt, { maxTokens: 24, temperature: 0 });
    expect(two.text).toBe(one.text);
    expect(one.tokens.length).toBe(24);
  });

  test("control tokens are not rendered into generated text unless renderSpecial (as llama.cpp)", async () => {
    // <start_of_turn> is CONTROL (not end-of-generation). USER_DEFINED tokens such as <start_of_image> are text, as in llama.cpp.
    const [img] = model.tokenize("<start_of_turn>", { parseSpecial: true });
    expect(model.tokenizer.isEog(img!)).toBe(false);
    const opts = { maxTokens: 3, temperature: 0, speculative: false as const, logitBias: { [img!]: 100 } };
    const plain = await model.createContext().complete(prompt, opts);
    expect(plain.tokens).toEqual([img, img, img]);
    expect(plain.text).toBe("");
    const rendered = await model.createContext().complete(prompt, { ...opts, renderSpecial: true });
    expect(rendered.text).toBe("<start_of_turn>".repeat(3));
  });

  test("the same seed and options give the same text in any context; another seed, other text", async () => {
    const opts = { maxTokens: 24, temperature: 0.9, topK: 40, topP: 0.95, seed: 1234 };
    const a = await model.createContext().complete(prompt, opts);
    const b = await model.createContext({ threads: 1 }).complete(prompt, opts);
    const c = await model.createContext().complete(prompt, { ...opts, seed: 4321 });
    expect(b.text).toBe(a.text);
    expect(c.text).not.toBe(a.text);
  });
});
