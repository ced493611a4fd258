/**
 * Decode speed with an f16 vs a Q8_0 KV cache at long contexts: the time of one decode step
 * (median of `steps`) with N positions already in the cache, for N in --contexts. Long-context
 * decode reads the whole KV cache every token, so halving its bytes should show there. The
 * cache is filled by setting its length (kernel times do not depend on the cached values), so
 * the 16K point costs seconds, not a 16K prefill.
 *
 *   bun bench/kv-cache.bench.ts [--model PATH] [--contexts 512,4096,16384] [--steps 24] [--threads 2]
 */
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { loadModel } from "../src/runtime/model";
import { ensureSynthetic } from "./suite";

const { values } = parseArgs({ options: { model: { type: "string" }, contexts: { type: "string", default: "512,4096,16384" }, steps: { type: "string", default: "24" }, threads: { type: "string", default: "2" } } });
const path = values.model ?? (await ensureSynthetic("tinyllama-q4_0-ctx32k.gguf", (s) => console.error(s)));
const contexts = values.contexts!.split(",").map(Number);
const steps = Number(values.steps);
const model = await loadModel(path, { threads: Number(values.threads) });
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
