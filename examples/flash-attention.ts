/**
 * The attention kernels alone (`kiln/ops`): fused flash attention (online softmax over K/V
 * tiles, no score matrix) against naive attention (the [queries × heads × keys] score matrix
 * materialized in a buffer the caller provides), at context lengths 512 → 16K. Prints a table of
 * time and extra memory and writes the same as an SVG chart.
 *
 *   bun examples/flash-attention.ts [--small] [--threads N] [--out FILE.svg]
 *
 * Shapes are Gemma 3 270M's (4 query heads sharing 1 KV head, head_dim 256, f16 KV cache), for a
 * prefill chunk of 128 queries at the end of the context and for one decoded token. First, both
 * kernels are checked to agree on the same inputs.
 *
 * The chart goes to examples/flash-attention.svg (or --out). --small: 512 → 2K, 3 repetitions,
 * and the chart in a temporary directory unless --out is given (what test/examples runs).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { attentionNaive, flashAttention, getThreads, quantize, setThreads, Tensor } from "../src/ops";
import { lineChart } from "../bench/svg";
import { kibOrMib, plural, small, threads } from "./common";

const [nHead, nKvHead, headDim] = [4, 1, 256];
const contextLengths = small ? [512, 1024, 2048] : [512, 1024, 2048, 4096, 8192, 16384];
const queryCounts = [128, 1];
const reps = small ? 3 : 7;
const outIndex = process.argv.indexOf("--out");
const outFile = outIndex >= 0 ? process.argv[outIndex + 1]! : small ? join(mkdtempSync(join(tmpdir(), "kiln-flash-")), "flash-attention.svg") : join(import.meta.dir, "flash-attention.svg");
// Flash attention allocates nothing: each kernel task keeps its tiles on its stack (≤ ~100 KB,
// zig-kernels/attention.zig), whatever the context length.
const FLASH_STACK_BYTES_PER_THREAD = 100 * 1024;

if (threads) setThreads(threads);
console.log(`attention kernels, ${nHead} heads / ${nKvHead} KV head / head_dim ${headDim}, f16 KV cache, ${plural(getThreads(), "thread")}\n`);

/** Uniform values in [-1, 1) from a seeded LCG. */
function randomF32(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32) * 2 - 1;
  }
  return out;
}

/** A K or V cache of `n` positions, converted to f16 as kiln's KV cache stores it. */
const cache = (n: number, seed: number) => quantize(Tensor.fromF32(randomF32(n * nKvHead * headDim, seed), [n * nKvHead, headDim]), "f16").reshape([n, nKvHead, headDim]);

/** Median milliseconds of `reps` calls (after one warm-up call). */
function medianMs(fn: () => void): number {
  fn();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[Math.floor(reps / 2)]!;
}

// Correctness first: both kernels on the same inputs give the same output (to rounding).
{
  const nKv = 300;
  const [k, v] = [cache(nKv, 1), cache(nKv, 2)];
  const q = Tensor.fromF32(randomF32(20 * nHead * headDim, 3), [20, nHead, headDim]);
  const [outFlash, outNaive] = [Tensor.zeros("f32", q.shape), Tensor.zeros("f32", q.shape)];
  const opts = { qPos0: nKv - 20, scale: 1 / Math.sqrt(headDim) };
  flashAttention(q, k, v, nKv, outFlash, nHead, opts);
  attentionNaive(q, k, v, nKv, outNaive, nHead, opts, new Float32Array(20 * nHead * nKv));
  let maxDiff = 0;
  for (let i = 0; i < outFlash.f32.length; i++) maxDiff = Math.max(maxDiff, Math.abs(outFlash.f32[i]! - outNaive.f32[i]!));
  console.log(`check: flash vs naive, 20 queries over ${nKv} keys: max |difference| ${maxDiff.toExponential(2)}`);
  if (!(maxDiff < 1e-3)) throw new Error(`flash and naive attention disagree: max difference ${maxDiff}`);
}

interface Row {
  nKv: number;
  nQ: number;
  flashMs: number;
  naiveMs: number;
  naiveExtraBytes: number;
}
const rows: Row[] = [];
const flashExtraBytes = FLASH_STACK_BYTES_PER_THREAD * getThreads();
console.log(`\n${"keys".padStart(6)}${"queries".padStart(9)}${"flash ms".padStart(11)}${"naive ms".padStart(11)}${"speed-up".padStart(10)}${"flash extra".padStart(14)}${"naive extra".padStart(14)}`);
for (const nKv of contextLengths) {
  const [k, v] = [cache(nKv, 10 + nKv), cache(nKv, 20 + nKv)];
  for (const nQ of queryCounts) {
    const q = Tensor.fromF32(randomF32(nQ * nHead * headDim, 30 + nQ), [nQ, nHead, headDim]);
    const out = Tensor.zeros("f32", q.shape);
    const opts = { qPos0: nKv - nQ, scale: 1 / Math.sqrt(headDim) };
    // The naive kernel's extra memory is this score buffer: one float per (query, head, key).
    const scores = new Float32Array(nQ * nHead * nKv);
    const flashMs = medianMs(() => flashAttention(q, k, v, nKv, out, nHead, opts));
    const naiveMs = medianMs(() => attentionNaive(q, k, v, nKv, out, nHead, opts, scores));
    rows.push({ nKv, nQ, flashMs, naiveMs, naiveExtraBytes: scores.byteLength });
    console.log(`${String(nKv).padStart(6)}${String(nQ).padStart(9)}${flashMs.toFixed(3).padStart(11)}${naiveMs.toFixed(3).padStart(11)}${`${(naiveMs / flashMs).toFixed(2)}×`.padStart(10)}${`≤ ${kibOrMib(flashExtraBytes)}`.padStart(14)}${kibOrMib(scores.byteLength).padStart(14)}`);
  }
}
console.log(`\nflash extra = no heap memory, at most ~100 KB of kernel stack per thread whatever the length; naive extra = the score buffer (queries × heads × keys × 4 bytes).`);

const series = (nQ: number, pick: (r: Row) => number, name: string, color: string, dashed = false) =>
  ({ name, color, dashed, points: rows.filter((r) => r.nQ === nQ).map((r) => [r.nKv, pick(r)] as [number, number]) });
const svg = lineChart(
  [
    { title: "Prefill chunk (128 queries)", xLabel: "context length (keys)", yLabel: "ms per call", logX: true, series: [series(128, (r) => r.flashMs, "flash", "#c0392b"), series(128, (r) => r.naiveMs, "naive", "#2c3e50", true)] },
    { title: "Decode (1 query)", xLabel: "context length (keys)", yLabel: "ms per call", logX: true, series: [series(1, (r) => r.flashMs, "flash", "#c0392b"), series(1, (r) => r.naiveMs, "naive", "#2c3e50", true)] },
    { title: "Extra memory, 128 queries", xLabel: "context length (keys)", yLabel: "MiB", logX: true, series: [series(128, () => flashExtraBytes / 2 ** 20, "flash", "#c0392b"), series(128, (r) => r.naiveExtraBytes / 2 ** 20, "naive", "#2c3e50", true)] },
  ],
  { title: `kiln attention kernels: flash vs naive (Gemma 3 270M shapes, ${plural(getThreads(), "thread")})` },
);
writeFileSync(outFile, svg);
console.log(`wrote ${outFile}`);
