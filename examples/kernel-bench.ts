/**
 * How a kernel user starts with `kiln/ops`: one op — `matmul`, out = x · Wᵀ, here a
 * matrix-vector product shaped like one decoded token through a projection — benchmarked with
 * mitata against the plain TypeScript loop that computes the same thing. The results are
 * checked first; then mitata times kiln's matmul on f32 weights, on the same weights quantized
 * to q8_0 (what GGUF files hold), and the TypeScript loop.
 *
 *   bun examples/kernel-bench.ts [--small] [--threads N]
 *
 * --small: a 1024 × 512 weight matrix instead of 4096 × 2048 (what test/examples runs).
 */
import { bench, do_not_optimize, run, summary } from "mitata";
import { getThreads, matmul, matmulScratchBytes, quantize, setThreads, Tensor } from "../src/ops";
import { plural, small, threads } from "./common";

const [n, k] = small ? [1024, 512] : [4096, 2048];
if (threads) setThreads(threads);

/** Uniform values in [-1, 1) from a seeded LCG. */
function randomF32(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32) * 2 - 1;
  }
  return out;
}

/** The plain TypeScript version: out[j] = Σ_i x[i] · w[j, i]. */
function matvecTs(w: Float32Array, x: Float32Array, out: Float32Array): void {
  for (let j = 0; j < n; j++) {
    let sum = 0;
    const row = j * k;
    for (let i = 0; i < k; i++) sum += x[i]! * w[row + i]!;
    out[j] = sum;
  }
}

const wData = randomF32(n * k, 1);
const xData = randomF32(k, 2);
const w = Tensor.fromF32(wData, [n, k]); // kiln's Tensor: [rows, cols], row-major, the op's native layout
const wQ8 = quantize(w, "q8_0"); // 8-bit blocks of 32 values with one f16 scale, as in GGUF files
const x = Tensor.fromF32(xData, [1, k]);
const out = Tensor.zeros("f32", [1, n]);
const outQ8 = Tensor.zeros("f32", [1, n]);
const outTs = new Float32Array(n);
// Scratch for the activations in the weights' format: allocated once, not in the timed call.
const scratchQ8 = new Uint8Array(matmulScratchBytes("q8_0", 1, k));

// Correctness first: every version against the TypeScript loop.
matvecTs(wData, xData, outTs);
matmul(w, x, out);
matmul(wQ8, x, outQ8, scratchQ8);
const relativeError = (got: Float32Array) => {
  let num = 0;
  let den = 0;
  for (let j = 0; j < n; j++) {
    num += (got[j]! - outTs[j]!) ** 2;
    den += outTs[j]! ** 2;
  }
  return Math.sqrt(num / den);
};
const [errF32, errQ8] = [relativeError(out.f32), relativeError(outQ8.f32)];
console.log(`matmul ${n}×${k} weights · ${k} activations, kiln on ${plural(getThreads(), "thread")} (the TypeScript loop runs on one)`);
console.log(`check against the TypeScript loop: relative error f32 ${errF32.toExponential(2)}, q8_0 ${errQ8.toExponential(2)}`);
if (!(errF32 < 1e-5)) throw new Error(`kiln's f32 matmul differs from the TypeScript loop (relative error ${errF32})`);
if (!(errQ8 < 2e-2)) throw new Error(`kiln's q8_0 matmul is further from f32 than 8-bit weights explain (relative error ${errQ8})`);
console.log("check passed\n");

summary(() => {
  bench("TypeScript loop (f32)", () => matvecTs(wData, xData, outTs)).baseline(true);
  bench("kiln matmul (f32 weights)", () => matmul(w, x, out));
  bench("kiln matmul (q8_0 weights)", () => matmul(wQ8, x, outQ8, scratchQ8));
});
await run({ colors: process.stdout.isTTY === true });
do_not_optimize(outTs);
