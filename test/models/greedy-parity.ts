/**
 * Greedy parity with llama.cpp, shared by the real-model tests: kiln's greedy continuation equals
 * llama.cpp's, or equals it up to one position where llama.cpp's own logit margin between its
 * choice and kiln's is below `tieLogits` (a near tie; after it the two contexts differ).
 */
import { expect } from "bun:test";
import type { LlamaReference } from "../../bench/llamacpp";
import type { Model } from "../../src/runtime/model";

/** Compares `n` greedy tokens after `ids`; returns kiln's tokens. */
export async function expectGreedyParity(model: Model, ref: LlamaReference, ids: number[], n: number, tieLogits: number, label: string): Promise<number[]> {
  const want = (await ref.greedy(ids, n, { stopAtEog: true })).filter((t) => !ref.isEog(t));
  const got = (await model.complete(ids, { maxTokens: n, temperature: 0 })).tokens;
  let i = 0;
  while (i < got.length && i < want.length && got[i] === want[i]) i++;
  if (i < Math.max(got.length, want.length)) {
    expect(i).toBeLessThan(Math.min(got.length, want.length)); // not merely one stopping early
    const theirs = await ref.logits([...ids, ...want.slice(0, i)]);
    const last = theirs[theirs.length - 1]!;
    const margin = last[want[i]!]! - last[got[i]!]!;
    console.log(`${label}: near tie at generated token ${i}: llama.cpp's margin ${margin.toFixed(3)} logits`);
    expect(margin).toBeLessThan(tieLogits);
  }
  return got;
}
