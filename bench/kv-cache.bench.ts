/**
 * Decode speed with an f16 vs a Q8_0 KV cache at long contexts: the time of one decode step
 * (median of `steps`) with N positions already in the cache, for N in --contexts. Long-context
 * decode reads the whole KV cache every token, so halving its bytes should show there. The
 * cache is filled with random keys and values (a block of 1024 random rows repeated) and its length
 * set, so the 16K point costs seconds, not a 16K prefill. The cache must be written: pages of a
 * fresh allocation that were never written all map the kernel's one zero page, which stays in
 * cache and hides exactly the memory traffic this bench is about.
 *
 *   bun bench/kv-cache.bench.ts [--model PATH] [--contexts 512,4096,16384] [--steps 24] [--threads 2]
 */
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { loadModel } from "../src/runtime/model";
import { ensureSynthetic } from "./suite";
import * as cpu from "../src/backends/cpu";
import { Tensor } from "../src/tensor";
import { randomF32 } from "./random";

const { values } = parseArgs({ options: { model: { type: "string" }, contexts: { type: "string", default: "512,4096,16384" }, steps: { type: "string", default: "24" }, threads: { type: "string", default: "2" } } });
const path = values.model ?? (await ensureSynthetic("tinyllama-q4_0-ctx32k.gguf", (s) => console.error(s)));
const contexts = values.contexts!.split(",").map(Number);
const steps = Number(values.steps);
const model = await loadModel(path, { threads: Number(values.threads), device: "cpu" });
/**
 * Every position of every layer's cache (the context holds n + a few, so about the n read):
 * a quantized block of random rows, repeated. The whole buffer, whatever the backend's
 * kvLayout puts where.
 */
function fillCache(caches: readonly Tensor[], dtype: "f16" | "q8_0", n: number, seed: number) {
  for (const [layer, c] of caches.entries()) {
    const rows = Math.min(1024, n);
    const block = cpu.quantize(Tensor.fromF32(randomF32(rows * c.cols, seed + layer), [rows, c.cols]), dtype).bytes;
    const dst = c.bytes;
    for (let off = 0; off < dst.byteLength; off += block.byteLength) {
      dst.set(block.subarray(0, Math.min(block.byteLength, dst.byteLength - off)), off);
    }
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
console.log(`${path.split("/").pop()}, CPU ${cpus()[0]?.model}, ${values.threads} threads; decode step median of ${steps}`);
console.log("context | f16 KV ms/token | q8_0 KV ms/token | q8_0 speed-up | KV MiB f16 / q8_0");
for (const n of contexts) {
  const row: Record<string, number> = {};
  const mem: Record<string, number> = {};
  // Alternate the two cache types to spread the machine's noise over both.
  for (const rep of [0, 1]) {
    for (const kvType of (rep === 0 ? ["f16", "q8_0"] : ["q8_0", "f16"]) as ("f16" | "q8_0")[]) {
      const ctx = model.createContext({ contextLength: n + steps + 8, kvType, maxLogitRows: 1 });
      mem[kvType] = ctx.state.plan.kvBytes;
      ctx.eval([1]);
      fillCache(ctx.state.kCache, kvType, n, 21);
      fillCache(ctx.state.vCache, kvType, n, 22);
      ctx.state.nPast = n; // as if n tokens had been evaluated
      const times: number[] = [];
      for (let i = 0; i < steps; i++) {
        const t0 = performance.now();
        ctx.eval([100 + i]);
        times.push(performance.now() - t0);
      }
      ctx.dispose();
      row[kvType] = Math.min(row[kvType] ?? Infinity, median(times));
    }
  }
  console.log(`${String(n).padStart(7)} | ${row.f16!.toFixed(2).padStart(15)} | ${row.q8_0!.toFixed(2).padStart(16)} | ${(row.f16! / row.q8_0!).toFixed(2).padStart(12)}× | ${(mem.f16! / 2 ** 20).toFixed(0)} / ${(mem.q8_0! / 2 ** 20).toFixed(0)}`);
}
model.dispose();
