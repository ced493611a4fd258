/**
 * Speculative decoding never changes the output:
 * - greedy: for every drafter (prompt lookup, layer-skip, a draft model) the tokens equal plain
 *   greedy decoding, including across rollbacks and at the context limit;
 * - sampling: on a tiny model whose next-token distributions can be computed exactly, the joint
 *   distribution of two sampled tokens matches the target's (chi-squared), and a deliberately
 *   wrong acceptance rule fails the same test;
 * - KV rollback leaves the cache exactly as if the rejected tokens had never been seen.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel, type Model } from "../../src/runtime/model";
import { createSampler } from "../../src/runtime/sampling";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";

const dir = mkdtempSync(join(tmpdir(), "kiln-spec-"));
let target: Model;
let draft: Model;
beforeAll(async () => {
  writeSyntheticModel(join(dir, "target.gguf"), { arch: "llama", type: "q8_0", shape: "tiny", seed: 3 });
  writeSyntheticModel(join(dir, "draft.gguf"), { arch: "llama", type: "q4_0", shape: "tiny", seed: 3 });
  writeSyntheticModel(join(dir, "other.gguf"), { arch: "llama", type: "q8_0", shape: "tiny", seed: 4 });
  target = await loadModel(join(dir, "target.gguf"), { threads: 2, contextLength: 128 });
  draft = await loadModel(join(dir, "draft.gguf"), { threads: 2, contextLength: 128 });
});
afterAll(() => {
  target?.dispose();
  draft?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const prompts = [
  [1, 10, 11, 12, 13, 10, 11, 12, 13, 10, 11],
  [1, 100, 200, 300, 400, 500],
  [1, 42],
  [1, 7, 7, 7, 7, 7, 7, 7, 7],
];

describe("greedy speculative decoding equals plain greedy decoding", () => {
  for (const which of ["prompt-lookup", "layer-skip", "draft-model"] as const) {
    test(which, async () => {
      let accepted = 0;
      for (const prompt of prompts) {
        const plain = await target.complete(prompt, { maxTokens: 40, temperature: 0, speculative: false });
        for (const maxDraft of [1, 3, 8]) {
          // Fixed depth drafts every step (many rollbacks); the adaptive planner may stop drafting.
          for (const adaptive of [false, true]) {
            const spec = await target.complete(prompt, {
              maxTokens: 40,
              temperature: 0,
              speculative: { draft: which === "draft-model" ? draft : which, maxDraft, draftLayers: 1, adaptive },
            });
            expect(spec.tokens).toEqual(plain.tokens);
            if (!adaptive) accepted += spec.speculative!.accepted;
            expect(spec.speculative!.steps).toBeGreaterThan(0);
          }
        }
      }
      // The drafters are not trivially rejected (or the test would not exercise rollbacks).
      expect(accepted).toBeGreaterThan(0);
    });
  }

  test("a target with 8 query heads per KV head (decode attention in the rows-in-lanes layout)", async () => {
    // attention.zig takes the lanes layout from lanes_min_group query heads per KV head on, in
    // decode and verification alike; the tiny shape above (2 per KV head) takes dot products.
    const path = join(dir, "gqa8.gguf");
    writeSyntheticModel(path, { arch: "llama", type: "q8_0", shape: { nEmbd: 256, nLayer: 2, nHead: 8, nHeadKv: 1, nFf: 640, nVocab: 600 }, seed: 5 });
    const gqa = await loadModel(path, { threads: 2, contextLength: 128 });
    try {
      let accepted = 0;
      for (const prompt of prompts) {
        const plain = await gqa.complete(prompt, { maxTokens: 40, temperature: 0, speculative: false });
        for (const maxDraft of [3, 8]) {
          const spec = await gqa.complete(prompt, { maxTokens: 40, temperature: 0, speculative: { draft: "prompt-lookup", maxDraft, adaptive: false } });
          expect(spec.tokens).toEqual(plain.tokens);
          accepted += spec.speculative!.accepted;
        }
      }
      expect(accepted).toBeGreaterThan(0);
    } finally {
      gqa.dispose();
    }
  });

  test("at the context limit: generation stops exactly where plain decoding does", async () => {
    const small = await loadModel(join(dir, "target.gguf"), { threads: 2, contextLength: 24 });
    try {
      const prompt = prompts[0]!;
      const plain = await small.complete(prompt, { maxTokens: 100, temperature: 0, speculative: false });
      const spec = await small.complete(prompt, { maxTokens: 100, temperature: 0, speculative: { draft: "prompt-lookup", maxDraft: 8 } });
      expect(plain.tokens.length).toBe(24 - prompt.length);
      expect(spec.tokens).toEqual(plain.tokens);
    } finally {
      small.dispose();
    }
  });

  test("maxDraft is bounded by the logit rows and by the kernels' 16-row batch-invariant limit", async () => {
    const wide = await loadModel(join(dir, "target.gguf"), { threads: 2, contextLength: 128, maxLogitRows: 64 });
    try {
      await expect(wide.complete([1, 2], { maxTokens: 4, temperature: 0, speculative: { draft: "prompt-lookup", maxDraft: 16 } })).rejects.toThrow(/maxDraft must be an integer in \[1, 15\].*16-row batch-invariant limit/);
      const ok = await wide.complete([1, 2], { maxTokens: 4, temperature: 0, speculative: { draft: "prompt-lookup", maxDraft: 15 } });
      expect(ok.tokens.length).toBeGreaterThan(0);
    } finally {
      wide.dispose();
    }
    await expect(target.complete([1, 2], { maxTokens: 4, temperature: 0, speculative: { draft: "prompt-lookup", maxDraft: 16 } })).rejects.toThrow(/\[1, 15\]/);
  });

  test("a draft model with another vocabulary is refused with a clear error", async () => {
    const path = join(dir, "qwen.gguf");
    writeSyntheticModel(path, { arch: "qwen2", type: "q8_0", shape: "tiny", seed: 1 });
    const other = await loadModel(path, { contextLength: 128 });
    try {
      await expect(target.complete([1, 2], { maxTokens: 4, speculative: { draft: other } })).rejects.toThrow(/does not share the vocabulary/);
    } finally {
      other.dispose();
    }
  });
});

/** The f16 K cache's first n positions of every layer (each KV head's, in a head-major cache). */
function filledKeys(n: number): Uint8Array[][] {
  const state = target.defaultContext.state;
  return state.kCache.map((k) => {
    if (state.backend.kvLayout === "position-major") return [k.bytes.slice(0, n * k.cols * k.shape[1]! * 2)];
    const [nKvHead, nCtx, hd] = k.shape as [number, number, number];
    return Array.from({ length: nKvHead }, (_, h) => k.bytes.slice(h * nCtx * hd * 2, (h * nCtx + n) * hd * 2));
  });
}

describe("KV rollback", () => {
  test("evaluating drafts then truncating leaves cache and logits as if they were never seen", () => {
    const prompt = [1, 5, 6, 7, 8];
    target.reset();
    target.eval(prompt);
    target.eval([20, 21, 22, 23]); // drafts
    target.defaultContext.truncate(prompt.length + 1); // keep only the first
    const after = target.eval([30]).f32.slice();
    const kvA = filledKeys(prompt.length + 2);
    target.reset();
    target.eval(prompt);
    target.eval([20]);
    const clean = target.eval([30]).f32.slice();
    const kvB = filledKeys(prompt.length + 2);
    expect(after).toEqual(clean);
    expect(kvA).toEqual(kvB);
  });
});

describe("sampling: the speculative output distribution equals the target's", () => {
  /** Exact joint distribution of the first two sampled tokens under the target's sampler chain. */
  function exactJoint(model: Model, prompt: number[], opts: { temperature: number; topK: number }) {
    const s = createSampler({ ...opts, seed: 1 }, model.hp.nVocab);
    model.reset();
    const d1 = s.distribution(model.eval(prompt).f32, prompt);
    const first = Array.from(d1.ids.slice(0, d1.n), (id, i) => [id, d1.probs[i]!] as const);
    const joint = new Map<string, number>();
    for (const [t1, p1] of first) {
      model.reset();
      const d2 = s.distribution(model.eval([...prompt, t1]).f32, [...prompt, t1]);
      for (let i = 0; i < d2.n; i++) joint.set(`${t1},${d2.ids[i]}`, p1 * d2.probs[i]!);
    }
    return joint;
  }

  async function chiSquared(acceptRule?: (p: number, q: number) => number): Promise<number> {
    const other = await loadModel(join(dir, "other.gguf"), { threads: 2, contextLength: 64 });
    try {
      const prompt = [1, 50, 60];
      const opts = { temperature: 1.0, topK: 4, topP: 1, minP: 0 };
      const joint = exactJoint(target, prompt, opts);
      const counts = new Map<string, number>();
      const N = 800;
      for (let seed = 1; seed <= N; seed++) {
        const r = await target.complete(prompt, { ...opts, seed, maxTokens: 2, speculative: { draft: other, maxDraft: 3, adaptive: false, minConfidence: 0, acceptRule } });
        const key = r.tokens.join(",");
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
      let chi = 0;
      for (const [key, p] of joint) chi += ((counts.get(key) ?? 0) - N * p) ** 2 / (N * p);
      for (const key of counts.keys()) if (!joint.has(key)) chi += 1e6; // a pair the target can never produce
      return chi;
    } finally {
      other.dispose();
    }
  }

  // 16 cells (4 × 4) → 15 degrees of freedom; 0.999 quantile of χ²(15) is 37.7.
  const CHI2_15_999 = 37.7;

  test("rejection sampling (min(1, p/q), residual max(0, p − q), bonus token)", async () => {
    expect(await chiSquared()).toBeLessThan(CHI2_15_999);
  }, 300_000);

  test("a wrong rule (accept every draft) fails the same test", async () => {
    expect(await chiSquared(() => 1)).toBeGreaterThan(CHI2_15_999 * 3);
  }, 300_000);
});

const REAL = join(import.meta.dir, "..", "..", "models", "gemma-3-270m-Q4_K_M.gguf");
describe.skipIf(!existsSync(REAL))("real model (Gemma 3 270M)", () => {
  test("prompt lookup and layer-skip give plain greedy's tokens on an input-grounded prompt", async () => {
    const m = await loadModel(REAL, { threads: 2, contextLength: 512 });
    try {
      // A prompt the 270M model answers by copying (its greedy output is identical to llama.cpp's).
      const passage = "The Rhine rises in the Swiss Alps and flows north through Lake Constance, then west along the German-Swiss border to Basel, where it turns north again.";
      const prompt = `<start_of_turn>user\nRewrite the following text, replacing "Rhine" with "river" and changing nothing else:\n\n${passage}<end_of_turn>\n<start_of_turn>model\n`;
      const plain = await m.complete(prompt, { maxTokens: 40, temperature: 0, speculative: false });
      for (const draft of ["prompt-lookup", "layer-skip"] as const) {
        const spec = await m.complete(prompt, { maxTokens: 40, temperature: 0, speculative: { draft, maxDraft: 8 } });
        expect(spec.tokens).toEqual(plain.tokens);
      }
      // Fixed depth: how many drafts are accepted depends only on the tokens, not on timings.
      const lookup = await m.complete(prompt, { maxTokens: 40, temperature: 0, speculative: { draft: "prompt-lookup", maxDraft: 8, adaptive: false } });
      expect(lookup.tokens).toEqual(plain.tokens);
      expect(lookup.speculative!.tokensPerTargetForward).toBeGreaterThan(2);
    } finally {
      m.dispose();
    }
  }, 300_000);
});
