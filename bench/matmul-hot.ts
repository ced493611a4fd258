/**
 * One matmul shape in a hot loop, best time of a few seconds, as GFLOP/s: the kernel's compute
 * rate with its weights cache-warm (prefill-shaped by default), for quick before/after checks of
 * a tile kernel in one process:
 *
 *   bun bench/matmul-hot.ts [bf16] [2048x2048]        (env M=activation rows (512), T=threads (1),
 *                                                     SECS=seconds (4), KILN_LIBRARY=another build,
 *                                                     PACKED=1: read a packed copy, cpu.packRows)
 *
 * Includes preparing the activations (cpu.matmul does), as a forward pass pays it once per call.
 */
import * as cpu from "../src/backends/cpu";
import { Tensor, type DType } from "../src/tensor";
import { randomF32 } from "./random";
const dtype = (process.argv[2] ?? "bf16") as DType;
const [n, k] = (process.argv[3] ?? "2048x2048").split("x").map(Number) as [number, number];
const m = Number(process.env.M ?? 512);
cpu.setThreads(Number(process.env.T ?? 1));
const w = cpu.quantize(Tensor.fromF32(randomF32(n * k, 7, 0.05), [n, k]), dtype);
if (process.env.PACKED === "1" && !cpu.packRows(w)) throw new Error(`${w}: ${cpu.packUnsupportedReason(w)}`);
const x = Tensor.fromF32(randomF32(m * k, 3), [m, k]);
const y = Tensor.zeros("f32", [m, n]);
const t0 = performance.now();
let best = Infinity;
while (performance.now() - t0 < Number(process.env.SECS ?? 4) * 1000) {
  const t = performance.now();
  cpu.matmul(w, x, y);
  best = Math.min(best, performance.now() - t);
}
console.log(`${dtype}${process.env.PACKED === "1" ? " packed" : ""} ${n}x${k} m=${m} ${process.env.T ?? 1}t: best ${best.toFixed(2)} ms, ${((2 * n * k * m) / best / 1e6).toFixed(0)} GFLOP/s`);
