/**
 * Using kiln inside a project's own `bun test` suite. A tiny synthetic model (random weights at
 * a toy shape: 2 layers, 256 wide, a 600-token vocabulary; ~1 MB) is written in beforeAll, so
 * the tests need no download and each runs in milliseconds; it generates nonsense text, but
 * everything about the API — determinism, token counts, stop reasons, errors — behaves as with
 * a real model.
 *
 *   bun test examples/testing/
 *
 * In your own project, import from "kiln" instead of "../../src/index". The synthetic-model
 * writer is a development tool of the kiln repository (src/tools/, not in the published
 * package); elsewhere, point the tests at any small GGUF file instead.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KilnError, loadModel, type Model } from "../../src/index";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";

describe("a tiny synthetic model in a bun test suite", () => {
  const dir = mkdtempSync(join(tmpdir(), "kiln-example-test-"));
  let model: Model;

  beforeAll(async () => {
    const path = join(dir, "tiny-llama-q8_0.gguf");
    writeSyntheticModel(path, { arch: "llama", type: "q8_0", shape: "tiny", seed: 1 });
    // One thread: tests run next to other work; small contexts keep every buffer tiny.
    model = await loadModel(path, { threads: 1, contextLength: 128 });
  });

  afterAll(() => {
    model?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  test("greedy generation (temperature 0) is deterministic, in any context", async () => {
    const a = await model.complete("The weather today is", { maxTokens: 12, temperature: 0 });
    const b = await model.complete("The weather today is", { maxTokens: 12, temperature: 0 });
    using other = model.createContext({ contextLength: 64 });
    const c = await other.complete("The weather today is", { maxTokens: 12, temperature: 0 });
    expect(a.tokens.length).toBeGreaterThan(0);
    expect(b.tokens).toEqual(a.tokens);
    expect(c.tokens).toEqual(a.tokens);
    expect(b.text).toBe(a.text);
  });

  test("sampling with the same seed gives the same text; another seed usually does not", async () => {
    const opts = { maxTokens: 16, temperature: 1, seed: 42 };
    const a = await model.complete("Once upon a time", opts);
    const b = await model.complete("Once upon a time", opts);
    expect(b.tokens).toEqual(a.tokens);
    const others = await Promise.all([1, 2, 3].map(async (seed) => {
      using ctx = model.createContext();
      return (await ctx.complete("Once upon a time", { ...opts, seed })).tokens.join();
    }));
    expect(others.some((t) => t !== a.tokens.join())).toBe(true);
  });

  test("token counts: maxTokens bounds the reply, and timings count what was evaluated", async () => {
    const prompt = "Count the tokens of this prompt";
    const promptTokens = model.tokenize(prompt, { addSpecial: true }).length;
    const r = await model.complete(prompt, { maxTokens: 5, temperature: 0 });
    // Cut at 5 tokens, unless the model produced its end-of-generation token first.
    if (r.finishReason === "length") expect(r.tokens.length).toBe(5);
    else expect(r.finishReason).toBe("eos");
    expect(r.tokens.length).toBeLessThanOrEqual(5);
    expect(r.timings.promptTokens).toBe(promptTokens);
    expect(r.timings.generatedTokens).toBe(r.tokens.length);
  });

  test("streaming yields the same text as complete()", async () => {
    let streamed = "";
    for await (const piece of model.generate("Streaming text", { maxTokens: 10, temperature: 0 })) streamed += piece.text;
    const whole = await model.complete("Streaming text", { maxTokens: 10, temperature: 0 });
    expect(streamed).toBe(whole.text);
  });

  test("errors are KilnErrors with stable codes", async () => {
    using ctx = model.createContext({ contextLength: 16 });
    const longPrompt = "word ".repeat(64);
    const error = await ctx.complete(longPrompt, { maxTokens: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KilnError);
    expect((error as KilnError).code).toBe("PROMPT_TOO_LONG");
  });
});
