/**
 * The runtime on tiny synthetic models: chunked prefill equals one-shot prefill, greedy
 * generation equals step-by-step argmax, seeded sampling is reproducible, stop strings and
 * max tokens end generation with exactly the right text, a prompt longer than the context is a
 * clear error, and the CLI's generate/tokenize speak JSON.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel, type Model } from "../../src/runtime/model";
import { argmax } from "../../src/runtime/sampling";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";
import { maxAbsDiff, nmse } from "../helpers";

const dir = mkdtempSync(join(tmpdir(), "kiln-gen-"));
const paths: Record<string, string> = {};
beforeAll(() => {
  for (const arch of ["llama", "qwen2", "gemma3"] as const) {
    paths[arch] = join(dir, `${arch}.gguf`);
    writeSyntheticModel(paths[arch]!, { arch, type: "q8_0", shape: "tiny", seed: 3 });
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

for (const arch of ["llama", "qwen2", "gemma3"] as const) {
  describe(`${arch} (tiny synthetic)`, () => {
    let model: Model;
    beforeAll(async () => {
      model = await loadModel(paths[arch]!, { threads: 2, contextLength: 96, batchSize: 16, maxLogitRows: 16 });
    });
    afterAll(() => model.dispose());

    test("prefill in chunks of 16 gives the logits of a one-token-at-a-time pass", () => {
      const ids = Array.from({ length: 40 }, (_, i) => 5 + ((i * 37) % 500));
      model.reset();
      const chunked = model.eval(ids).f32.slice(0, model.hp.nVocab);
      model.reset();
      let last = new Float32Array();
      for (const id of ids) last = model.eval([id]).f32.slice(0, model.hp.nVocab);
      // Bitwise equal except where attention sums in another order (the decode path splits long
      // key ranges across threads): a ~1e-7 difference can then flip one 8-bit activation
      // rounding, which moves a logit by up to ~0.03 on these tiny random models.
      expect(nmse(chunked, last)).toBeLessThan(1e-3);
      expect(maxAbsDiff(chunked, last)).toBeLessThan(0.1);
    });

    test("greedy decoding speculates by default (adaptive prompt lookup); speculative: false is plain; same tokens", async () => {
      const prompt = [model.tokenizer.bos, 10, 20, 30, 10, 20, 30, 10, 20];
      const auto = await model.complete(prompt, { maxTokens: 16, temperature: 0 });
      const plain = await model.complete(prompt, { maxTokens: 16, temperature: 0, speculative: false });
      expect(auto.speculative?.drafter).toBe("prompt-lookup");
      expect(plain.speculative).toBeUndefined();
      expect(auto.tokens).toEqual(plain.tokens);
      // Sampling (temperature > 0) never speculates unless asked.
      expect((await model.complete(prompt, { maxTokens: 4, temperature: 0.8, seed: 1 })).speculative).toBeUndefined();
    });

    test("greedy generation equals argmax decoding step by step", async () => {
      const prompt = [model.tokenizer.bos, 10, 20, 30];
      const r = await model.complete(prompt, { maxTokens: 12, temperature: 0 });
      model.reset();
      let logits = model.eval(prompt);
      const want: number[] = [];
      for (let i = 0; i < r.tokens.length; i++) {
        const t = argmax(logits.f32);
        want.push(t);
        logits = model.eval([t]);
      }
      expect(r.tokens).toEqual(want);
      expect(r.tokens.length).toBeGreaterThan(0);
    });

    test("the same seed gives the same text; another seed another text", async () => {
      const opts = { maxTokens: 24, temperature: 1.0, topK: 0, topP: 1, minP: 0 };
      const a = await model.complete("the", { ...opts, seed: 7 });
      const b = await model.complete("the", { ...opts, seed: 7 });
      const c = await model.complete("the", { ...opts, seed: 8 });
      expect(a.tokens).toEqual(b.tokens);
      expect(a.tokens).not.toEqual(c.tokens);
    });

    test("maxTokens and stop strings end generation with exactly the right text", async () => {
      const r = await model.complete("the", { maxTokens: 20, temperature: 0 });
      expect(r.tokens.length).toBeLessThanOrEqual(20);
      if (r.text.length > 3) {
        const stop = r.text.slice(2, 4);
        const s = await model.complete("the", { maxTokens: 20, temperature: 0, stop: [stop] });
        expect(s.finishReason).toBe("stop");
        expect(s.text).toBe(r.text.slice(0, r.text.indexOf(stop)));
        // Streaming never shows the stop string, even split across pieces.
        let streamed = "";
        for await (const p of model.generate("the", { maxTokens: 20, temperature: 0, stop: [stop] })) streamed += p.text;
        expect(streamed).toBe(s.text);
      }
    });

    test("a prompt longer than the context is a clear error; so is a token outside the vocabulary", async () => {
      const long = Array.from({ length: 200 }, () => 7);
      await expect(model.complete(long, { maxTokens: 4 })).rejects.toThrow(/prompt has 200 tokens; the context holds 96/);
      model.reset();
      expect(() => model.eval([model.hp.nVocab])).toThrow(/outside the vocabulary/);
    });

    test("a speculative option of the wrong kind is refused by name, not failed on inside", async () => {
      const bad = (speculative: unknown) => model.complete("the", { maxTokens: 2, speculative: speculative as false });
      await expect(bad("off")).rejects.toThrow(/speculative must be false or an options object .* got "off"/);
      await expect(bad({ draft: "lookup" })).rejects.toThrow(/speculative.draft must be "prompt-lookup", "layer-skip", a Model or a Context, got "lookup"/);
      await expect(bad({ draft: 3 })).rejects.toThrow(/speculative.draft .* got number/);
    });
  });
}

describe("kiln CLI on a synthetic model", () => {
  const CLI = join(import.meta.dir, "..", "..", "src", "cli.ts");
  const run = (...args: string[]) => Bun.spawnSync([process.execPath, CLI, ...args], { stdout: "pipe", stderr: "pipe" });
  test("generate --json prints text, tokens and timings; tokenize --json prints ids", () => {
    const g = run("generate", "--model", paths.llama!, "--prompt", "the", "--max-tokens", "8", "--temperature", "0", "--json");
    expect(g.exitCode).toBe(0);
    const out = JSON.parse(g.stdout.toString());
    expect(typeof out.text).toBe("string");
    expect(out.tokens.length).toBeGreaterThan(0);
    expect(out.timings.prompt_tokens_per_second).toBeGreaterThan(0);
    expect(out.timings.generated_tokens_per_second).toBeGreaterThan(0);
    expect(out.timings.load_ms).toBeGreaterThan(0);
    const t = run("tokenize", "--model", paths.llama!, "--text", "the the", "--json");
    expect(t.exitCode).toBe(0);
    const ids = JSON.parse(t.stdout.toString()).ids as number[];
    expect(ids.length).toBeGreaterThan(0);
    const spec = run("generate", "--model", paths.llama!, "--prompt", "the the the the", "--max-tokens", "8", "--temperature", "0", "--json", "--speculative", "prompt-lookup");
    expect(spec.exitCode).toBe(0);
    const specOut = JSON.parse(spec.stdout.toString());
    expect(specOut.tokens.length).toBeGreaterThan(0);
    expect(specOut.speculative.drafter).toBe("prompt-lookup");
    expect(run("generate", "--model", paths.llama!, "--prompt", "x", "--speculative", "magic").exitCode).toBe(2);
    const withBos = JSON.parse(run("tokenize", "--model", paths.llama!, "--text", "the the", "--json", "--bos").stdout.toString()).ids;
    expect(withBos).toEqual([1, ...ids]);
  });
});
