/**
 * Decode attention alone (one query row) over a long KV cache: TinyLlama-1.1B's shape (32 query
 * heads, 4 KV heads, head_dim 64), f16 vs Q8_0 cache, the minimum over many calls (robust to a
 * busy machine), and the KV bytes it reads as GB/s.
 *
 *   bun bench/attention-decode.bench.ts [--contexts 4096,16384] [--threads 1] [--calls 30] [--heads 32/4/64]
 */
import { parseArgs } from "node:util";
import { cpus } from "node:os";
import * as cpu from "../src/backends/cpu";
import { Tensor } from "../src/tensor";
import { randomF32 } from "./random";

const { values } = parseArgs({ options: { contexts: { type: "string", default: "4096,16384" }, threads: { type: "string", default: "1" }, calls: { type: "string", default: "30" }, heads: { type: "string", default: "32/4/64" } } });
const [nHead, nKvHead, hd] = values.heads!.split("/").map(Number) as [number, number, number];
cpu.setThreads(Number(values.threads));
const calls = Number(values.calls);
console.log(`decode attention ${nHead}/${nKvHead}/${hd}, CPU ${cpus()[0]?.model}, ${values.threads} thread(s), min of ${calls} calls`);
console.log("keys | f16 ms | q8_0 ms | q8_0 speed-up | f16 GB/s | q8_0 GB/s");
for (const nKv of values.contexts!.split(",").map(Number)) {
  const q = Tensor.fromF32(randomF32(nHead * hd, 15), [1, nHead, hd]);
  const out = Tensor.zeros("f32", [1, nHead, hd]);
  const opts = { qPos0: nKv - 1, scale: 1 / Math.sqrt(hd) };
  const ms: Record<string, number> = {};
  const bytes: Record<string, number> = {};
  for (const dtype of ["f16", "q8_0"] as const) {
    const k = cpu.quantize(Tensor.fromF32(randomF32(nKv * nKvHead * hd, 13), [nKv * nKvHead, hd]), dtype).reshape([nKv, nKvHead, hd]);
    const v = cpu.quantize(Tensor.fromF32(randomF32(nKv * nKvHead * hd, 14), [nKv * nKvHead, hd]), dtype).reshape([nKv, nKvHead, hd]);
    bytes[dtype] = k.bytes.byteLength * 2;
    let best = Infinity;
    for (let i = 0; i < calls; i++) {
      const t0 = performance.now();
      cpu.flashAttention(q, k, v, nKv, out, nHead, opts);
      best = Math.min(best, performance.now() - t0);
    }
    ms[dtype] = best;
  }
  console.log(`${nKv} | ${ms.f16!.toFixed(3)} | ${ms.q8_0!.toFixed(3)} | ${(ms.f16! / ms.q8_0!).toFixed(2)}× | ${(bytes.f16! / ms.f16! / 1e6).toFixed(1)} | ${(bytes.q8_0! / ms.q8_0! / 1e6).toFixed(1)}`);
}
