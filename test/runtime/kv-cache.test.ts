/**
 * The Q8_0 KV cache (ContextOptions.kvType "q8_0", llama.cpp's -ctk/-ctv q8_0): the bytes it
 * takes (34 per 32 values against f16's 64), logits close to the f16 cache's on every
 * architecture and on the real model (its only error is the 8-bit rounding of K and V; greedy
 * text can part ways after some tokens, as with llama.cpp's), and a clear error where head_dim
 * is not whole blocks.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel, type Model } from "../../src/runtime/model";
import { writeSyntheticModel, type SyntheticArch } from "../../src/tools/synthetic-model";
import { nmse, thrownKilnError } from "../helpers";

const dir = mkdtempSync(join(tmpdir(), "kiln-kv-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const GEMMA = join(import.meta.dir, "..", "..", "models", "gemma-3-270m-Q4_K_M.gguf");

// "llama-gqa8": 8 query heads per KV head, so decode too takes the rows-in-lanes attention, which
// scores a Q8_0 cache from the Q8_0-quantized query (integer dot products) on VNNI builds.
const GQA8 = { nEmbd: 256, nLayer: 2, nHead: 8, nHeadKv: 1, nFf: 640, nVocab: 600 };
describe.each(["llama", "qwen2", "gemma3", "llama-gqa8"] as const)("%s: q8_0 KV cache", (name) => {
  const arch: SyntheticArch = name === "llama-gqa8" ? "llama" : name;
  let model: Model;
  beforeAll(async () => {
    const p = join(dir, `${name}.gguf`);
    writeSyntheticModel(p, { arch, type: "q8_0", shape: name === "llama-gqa8" ? GQA8 : "tiny", seed: 21 });
    model = await loadModel(p, { contextLength: 256 });
  });
  afterAll(() => model.dispose());

  test("takes 34/64 of the f16 cache's bytes; logits after a 150-token prompt within 3e-3 NMSE of f16's", () => {
    const f16 = model.contextMemory({ contextLength: 256, kvType: "f16" });
    const q8 = model.contextMemory({ contextLength: 256, kvType: "q8_0" });
    expect(q8.kvBytes / f16.kvBytes).toBeCloseTo(34 / 64, 10);
    const ids = Array.from({ length: 150 }, (_, i) => 1 + ((i * 37) % 200));
    const a = model.createContext({ contextLength: 256, kvType: "f16" });
    const b = model.createContext({ contextLength: 256, kvType: "q8_0" });
    // Prompt in chunks, then single tokens: both the prefill and the decode path read the cache.
    a.eval(ids.slice(0, 140));
    b.eval(ids.slice(0, 140));
    let la: Float32Array = new Float32Array(0);
    let lb: Float32Array = new Float32Array(0);
    for (const t of ids.slice(140)) {
      la = Float32Array.from(a.eval([t]).f32);
      lb = Float32Array.from(b.eval([t]).f32);
    }
    const e = nmse(lb, la);
    console.log(`${name}: logits NMSE q8_0 vs f16 KV ${e.toExponential(2)}`);
    expect(e).toBeGreaterThan(0); // it is a different cache
    expect(e).toBeLessThan(3e-3); // measured 2026-12-03: llama ~4e-4, gemma3 1.1e-3 (random weights)
    a.dispose();
    b.dispose();
  });
});

test("kvType is checked: an unknown type and a head_dim that is not whole blocks are named", async () => {
  const p = join(dir, "odd.gguf");
  writeSyntheticModel(p, { arch: "llama", type: "f32", shape: { nEmbd: 48, nLayer: 1, nHead: 2, nFf: 64, nVocab: 400 }, seed: 2 });
  const m = await loadModel(p, { contextLength: 64 });
  const code = (f: () => unknown) => thrownKilnError(f)?.message ?? "no error";
  expect(code(() => m.createContext({ kvType: "q4_9" as never }))).toMatch(/kvType must be "f16", "f32", "q8_0", got "q4_9"/);
  expect(code(() => m.createContext({ kvType: "q8_0" }))).toMatch(/blocks of 32 values; this model's head_dim 24 is not a multiple/);
  m.dispose();
});

test.skipIf(!existsSync(GEMMA))("Gemma 3 270M: next-token logits with a q8_0 cache close to the f16 cache's, same top token", async () => {
  const m = await loadModel(GEMMA, { contextLength: 512 });
  const ids = m.tokenizer.encode("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg, a goldsmith from Mainz, combined movable metal type with", { addSpecial: true });
  const last = (kvType: "f16" | "q8_0") => {
    const c = m.createContext({ contextLength: 512, kvType });
    c.eval(ids.slice(0, -3));
    let l = new Float32Array(0);
    for (const t of ids.slice(-3)) l = Float32Array.from(c.eval([t]).f32);
    c.dispose();
    return l;
  };
  const a = last("f16");
  const b = last("q8_0");
  const e = nmse(b, a);
  console.log(`Gemma 3 270M: logits NMSE q8_0 vs f16 KV ${e.toExponential(2)} (${ids.length} tokens)`);
  expect(e).toBeLessThan(1e-2);
  const argmax = (x: Float32Array) => x.reduce((bi, v, i) => (v > x[bi]! ? i : bi), 0);
  expect(argmax(b)).toBe(argmax(a));
  m.dispose();
}, 60_000);
