/**
 * Kernel benchmarks (mitata): `bun run bench:kernels [--quick]`.
 *
 * 1. The machine's read bandwidth (libkiln's probe, all threads, 1 GiB).
 * 2. Fused dequantize+matmul per type on decode-shaped work (4096×4096 and 5632×2048): effective
 *    GB/s of weight bytes and the fraction of measured bandwidth. Each timed call reads a
 *    different copy of the weights (≥ 256 MB in all) so every byte comes from DRAM, not cache.
 *    Prefill-shaped matmuls (64 and 512 activation rows) per type in GFLOP/s.
 * 3. Each fusion against the unfused composition of the same kernels.
 * 4. Flash attention against naive attention at 512–16K keys: time and extra memory.
 * 5. Sampling's argmax and top-k over a Gemma 3 vocabulary, against JavaScript scans.
 *
 * Ends with issue 14's per-type targets, measured in this run: every type's prefill GFLOP/s at
 * 512 rows ≥ 70% of the fastest type's, every type's decode ≥ 85% of the measured bandwidth.
 * Types with a packed layout are measured in place and from packed copies; the targets take
 * what a model reads by default on this CPU (LoadOptions.packLayers).
 *
 * Prints tables and writes bench/results/kernels-<date>.json.
 */
import { measure } from "mitata";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as cpu from "../src/backends/cpu";
import { cpus } from "node:os";
import { amxBf16Status, amxStatus, bf16Status, kiln, loadedLevel, packLayersDefault } from "../src/ffi/library";
import { NativeBuffer, Tensor, type DType } from "../src/tensor";
import { randomF32 } from "./random";

const quick = process.argv.includes("--quick");
const threads = Number(process.env.KILN_THREADS ?? 2);
cpu.setThreads(threads);


/** Median seconds per call, measured by mitata. */
async function seconds(fn: () => void, minSamples = 12): Promise<number> {
  const stats = await measure(fn, { min_samples: minSamples, max_samples: quick ? 20 : 60, min_cpu_time: (quick ? 100 : 400) * 1e6 });
  return stats.p50 / 1e9;
}

const results: Record<string, unknown> = { date: new Date().toISOString(), cpu: cpus()[0]?.model ?? "unknown", cpuLevel: loadedLevel(), amx: amxStatus().reason, bf16: bf16Status().reason, threads };
const line = (...cols: (string | number)[]) => console.log(cols.map((c) => String(c).padEnd(17)).join(""));

// ---- 1. bandwidth ---------------------------------------------------------------------------
const probe = new NativeBuffer(1 << 30);
probe.bytes.fill(1);
const bandwidth: Record<number, number> = {};
for (const t of [1, threads]) {
  cpu.setThreads(t);
  bandwidth[t] = kiln().kiln_read_bandwidth(probe.bytes, probe.byteLength, 5);
}
cpu.setThreads(threads);
probe.free();
const bw = bandwidth[threads]!;
console.log(`${results.cpu}, CPU level ${loadedLevel()} (AMX: ${amxStatus().reason}, AVX512-BF16: ${bf16Status().reason}), ${threads} threads`);
console.log(`read bandwidth: ${(bandwidth[1]! / 1e9).toFixed(1)} GB/s (1 thread), ${(bw / 1e9).toFixed(1)} GB/s (${threads} threads)\n`);
results.bandwidthGBs = Object.fromEntries(Object.entries(bandwidth).map(([t, b]) => [t, b / 1e9]));

// ---- 2. decode matmul per type --------------------------------------------------------------
/** `copies` copies of one random weight matrix in one native buffer, cycled through by calls. */
function weightCopies(dtype: DType, n: number, k: number, minBytes: number) {
  const w = cpu.quantize(Tensor.fromF32(randomF32(n * k, n ^ k, 0.05), [n, k]), dtype);
  const bytes = w.bytes.byteLength;
  const copies = Math.max(2, Math.ceil(minBytes / bytes));
  const buf = new NativeBuffer(bytes * copies);
  for (let c = 0; c < copies; c++) buf.bytes.set(w.bytes, c * bytes);
  const tensors = Array.from({ length: copies }, (_, c) => buf.tensor(dtype, [n, k], c * bytes));
  return { tensors, bytes, free: () => buf.free() };
}

const types: DType[] = quick ? ["q4_0", "q8_0", "q4_k", "q6_k", "q5_0"] : ["q4_0", "q8_0", "q4_k", "q6_k", "q5_0", "q4_1", "q5_1", "q5_k", "bf16", "f16", "f32"];
const shapes: [number, number][] = [[4096, 4096], [5632, 2048]];
// Types this build packs (zig-kernels/packed.zig) are also measured from packed copies, in one
// arena as models hold them; where the CPU packs layers by default (packLayersDefault), those
// rows are what a model reads, and the targets below take them.
const packsByDefault = packLayersDefault().pack;
const packable = (dtype: DType) => cpu.packUnsupportedReason(Tensor.zeros(dtype, [16, 256])) === null;
const readByDefault = (dtype: DType, packed: boolean) => packed === (packsByDefault && packable(dtype));
const matmulRows: Record<string, unknown>[] = [];
console.log("fused dequantize+matmul, decode (one activation row), weights streamed from DRAM");
line("type", "shape", "µs/call", "GB/s", "of bandwidth");
for (const dtype of types) {
  for (const [n, k] of shapes) {
    const { tensors, bytes, free } = weightCopies(dtype, n, k, quick ? 128 << 20 : 256 << 20);
    const x = Tensor.fromF32(randomF32(k, 3), [1, k]);
    const y = Tensor.zeros("f32", [1, n]);
    const scratch = new Uint8Array(cpu.matmulScratchBytes(dtype, 1, k));
    for (const packed of packable(dtype) ? [false, true] : [false]) {
      const arena = packed ? cpu.packArena(tensors) : null;
      if (arena) tensors.forEach((t, i) => cpu.packRows(t, { into: arena.slots[i] }));
      let c = 0;
      const s = await seconds(() => cpu.matmul(tensors[c++ % tensors.length]!, x, y, scratch));
      const gbs = bytes / s / 1e9;
      line(packed ? `${dtype} packed` : dtype, `${n}×${k}`, (s * 1e6).toFixed(1), gbs.toFixed(1), `${((gbs * 1e9 / bw) * 100).toFixed(0)}%`);
      matmulRows.push({ dtype, packed, n, k, us: s * 1e6, GBs: gbs, fractionOfBandwidth: (gbs * 1e9) / bw });
      if (arena) {
        for (const t of tensors) cpu.unpackRows(t);
        arena.buffer.free();
      }
    }
    free();
  }
}
results.matmulDecode = matmulRows;

// ---- 2b. prefill-shaped matmul (m activation rows against one weight matrix) -----------------
// Weights are reused across the m rows, so this is compute-bound: report effective GFLOP/s
// (2·m·n·k per call).
console.log("\nfused dequantize+matmul, prefill (m activation rows)");
line("type", "m×k → n", "ms/call", "GFLOP/s");
const prefillRows: Record<string, unknown>[] = [];
for (const dtype of (quick ? ["q4_0", "q8_0", "q4_1", "q4_k"] : ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k", "bf16", "f16", "f32"]) as DType[]) {
  const [n, k] = [4096, 4096];
  const w = cpu.quantize(Tensor.fromF32(randomF32(n * k, 17, 0.05), [n, k]), dtype);
  for (const packed of packable(dtype) ? [false, true] : [false]) {
    if (packed) cpu.packRows(w);
    for (const m of [64, 512]) {
      const x = Tensor.fromF32(randomF32(m * k, 18), [m, k]);
      const y = Tensor.zeros("f32", [m, n]);
      const scratch = new Uint8Array(cpu.matmulScratchBytes(dtype, m, k));
      const s = await seconds(() => cpu.matmul(w, x, y, scratch), 3);
      const gflops = (2 * m * n * k) / s / 1e9;
      line(packed ? `${dtype} packed` : dtype, `${m}×${k} → ${n}`, (s * 1e3).toFixed(2), gflops.toFixed(1));
      prefillRows.push({ dtype, packed, m, n, k, ms: s * 1e3, GFLOPs: gflops });
    }
    if (packed) cpu.unpackRows(w);
  }
}
results.matmulPrefill = prefillRows;

// ---- 2c. output head: packed copy vs read in place, decode and verification batches ----------
// Gemma 3's head shape (262144 × 640 Q8_0, 178 MB: streamed from DRAM at every size). The
// packed copy (zig-kernels/packed.zig) is what models read by default where the build has one.
const headRows: Record<string, unknown>[] = [];
{
  const [n, k] = [262144, 640];
  const dtype: DType = "q8_0";
  const tile = cpu.quantize(Tensor.fromF32(randomF32(4096 * k, 23, 0.05), [4096, k]), dtype);
  const buf = new NativeBuffer(tile.bytes.byteLength * (n / 4096));
  for (let c = 0; c < n / 4096; c++) buf.bytes.set(tile.bytes, c * tile.bytes.byteLength);
  const w = buf.tensor(dtype, [n, k], 0, "output.weight");
  // The same bytes as a second tensor that is never packed: the in-place reading.
  const wInPlace = buf.tensor(dtype, [n, k], 0, "output.weight");
  const packedOk = cpu.packRows(w);
  console.log(`\noutput head ${n}×${k} ${dtype}: packed copy vs in place (ms per call${packedOk ? "" : "; this build has no packed layout"})`);
  line("rows", "packed ms", "in place ms", "speed-up");
  for (const m of quick ? [1, 8] : [1, 2, 4, 8, 12, 16]) {
    const x = Tensor.fromF32(randomF32(m * k, 24 + m), [m, k]);
    const y = Tensor.zeros("f32", [m, n]);
    const scratch = new Uint8Array(cpu.matmulScratchBytes(dtype, m, k));
    const tp = packedOk ? await seconds(() => cpu.matmul(w, x, y, scratch), 5) : NaN;
    const ti = await seconds(() => cpu.matmul(wInPlace, x, y, scratch), 5);
    line(m, (tp * 1e3).toFixed(2), (ti * 1e3).toFixed(2), packedOk ? `${(ti / tp).toFixed(2)}×` : "-");
    headRows.push({ m, n, k, dtype, packedMs: tp * 1e3, inPlaceMs: ti * 1e3 });
  }
  cpu.unpackRows(w);
  buf.free();
}
results.outputHead = headRows;

// ---- 3. fusions vs unfused compositions -------------------------------------------------------
console.log("\nfusion vs the unfused composition of the same kernels");
line("fusion", "shape", "fused µs", "unfused µs", "speed-up");
const fusionRows: Record<string, unknown>[] = [];
async function compare(name: string, shape: string, fused: () => void, unfused: () => void) {
  const tf = await seconds(fused);
  const tu = await seconds(unfused);
  line(name, shape, (tf * 1e6).toFixed(1), (tu * 1e6).toFixed(1), `${(tu / tf).toFixed(2)}×`);
  fusionRows.push({ name, shape, fusedUs: tf * 1e6, unfusedUs: tu * 1e6, speedup: tu / tf });
}

{ // dequantize + matmul: the weights dequantized to f32 first, then an f32 matmul
  const [n, k] = [4096, 4096];
  const w = cpu.quantize(Tensor.fromF32(randomF32(n * k, 5, 0.05), [n, k]), "q4_0");
  const wf = Tensor.zeros("f32", [n, k]);
  const x = Tensor.fromF32(randomF32(k, 6), [1, k]);
  const y = Tensor.zeros("f32", [1, n]);
  await compare("dequant+matmul", `q4_0 ${n}×${k}`, () => cpu.matmul(w, x, y), () => { cpu.dequantize(w, wf); cpu.matmul(wf, x, y); });
}
for (const rows of [1, 512]) { // residual add + RMSNorm + weight scale (+ the next matmul's 8-bit activations)
  const n = 4096;
  const x = Tensor.fromF32(randomF32(rows * n, 7), [rows, n]);
  const res = Tensor.fromF32(randomF32(rows * n, 8), [rows, n]);
  const w = Tensor.fromF32(randomF32(n, 9), [n]);
  const wRows = Tensor.fromF32(new Float32Array(rows * n).fill(1.01), [rows, n]);
  const out = Tensor.zeros("f32", [rows, n]);
  const act = new Uint8Array(cpu.actRowBytes("q4_0", n) * rows);
  await compare("add+norm+scale+q8", `${rows}×${n}`,
    () => cpu.rmsNorm(x, w, out, 1e-5, { residual: res, emitFor: "q4_0", actOut: act }),
    () => { cpu.add(x, res); cpu.rmsNorm(x, null, out, 1e-5); cpu.mul(out, wRows); cpu.prepareActivations("q4_0", out, act); });
}
for (const m of [1, 64]) { // gate and up projections + SiLU·up
  const [nFf, k] = [5632, 2048];
  const wg = cpu.quantize(Tensor.fromF32(randomF32(nFf * k, 10, 0.05), [nFf, k]), "q4_0");
  const wu = cpu.quantize(Tensor.fromF32(randomF32(nFf * k, 11, 0.05), [nFf, k]), "q4_0");
  const x = Tensor.fromF32(randomF32(m * k, 12), [m, k]);
  const g = Tensor.zeros("f32", [m, nFf]);
  const u = Tensor.zeros("f32", [m, nFf]);
  const out = Tensor.zeros("f32", [m, nFf]);
  const scratch = new Uint8Array(cpu.matmulScratchBytes("q4_0", m, k));
  await compare("gate/up+SiLU", `q4_0 ${m}×${k}→${nFf}`,
    () => cpu.ffnGated(wg, wu, x, out, "silu", scratch),
    () => { cpu.matmul(wg, x, g, scratch); cpu.matmul(wu, x, u, scratch); cpu.siluMul(g, u, out); });
}
{ // RoPE of a forward pass's Q and K at 128 positions: one cos/sin table applied twice vs rope twice
  const [rows, nHead, nKvHead, hd] = [128, 32, 4, 64];
  const q = Tensor.fromF32(randomF32(rows * nHead * hd, 16), [rows, nHead * hd]);
  const kk = Tensor.fromF32(randomF32(rows * nKvHead * hd, 17), [rows, nKvHead * hd]);
  const pos = Int32Array.from({ length: rows }, (_, i) => 1000 + i);
  const o = { nRot: hd, mode: "normal" as const, freqBase: 10000 };
  const table = new Float32Array(cpu.ropeTableFloats(rows, hd));
  await compare("rope table (Q+K)", `${rows} rows`,
    () => { cpu.ropeTable(pos, o, table); cpu.ropeApply(q, nHead, table, hd, o.mode); cpu.ropeApply(kk, nKvHead, table, hd, o.mode); },
    () => { cpu.rope(q, nHead, pos, o); cpu.rope(kk, nKvHead, pos, o); });
}
for (const m of [1, 128]) { // SmolLM2's Q, K and V (576 → 576 + 2 × 192, Q4_1) in one call vs three
  const k = 576;
  const ns = [576, 192, 192];
  const ws = ns.map((n, i) => cpu.quantize(Tensor.fromF32(randomF32(n * k, 18 + i, 0.05), [n, k]), "q4_1")) as [Tensor, Tensor, Tensor];
  const x = Tensor.fromF32(randomF32(m * k, 21), [m, k]);
  const xq = new Uint8Array(cpu.matmulScratchBytes("q4_1", m, k));
  cpu.prepareActivations("q4_1", x, xq);
  const outs = ns.map((n) => Tensor.zeros("f32", [m, n])) as [Tensor, Tensor, Tensor];
  await compare("q/k/v matmul3", `q4_1 ${m}×${k}`,
    () => cpu.matmul3Prepared(ws[0], ws[1], ws[2], xq, m, outs[0], outs[1], outs[2]),
    () => { for (let i = 0; i < 3; i++) cpu.matmulPrepared(ws[i]!, xq, m, outs[i]!); });
}
{ // Gemma 3 270M's Q, K, V read from packed copies (Q5_0, Q5_0, Q8_0: 640 → 1024 + 256 + 256), one call vs three
  const k = 640;
  const ns = [1024, 256, 256];
  const types = ["q5_0", "q5_0", "q8_0"] as const;
  const ws = ns.map((n, i) => cpu.quantize(Tensor.fromF32(randomF32(n * k, 22 + i, 0.05), [n, k]), types[i]!)) as [Tensor, Tensor, Tensor];
  if (ws.every((w) => cpu.packRows(w))) {
    const x = Tensor.fromF32(randomF32(k, 25), [1, k]);
    const xq = new Uint8Array(cpu.matmulScratchBytes("q5_0", 1, k));
    cpu.prepareActivations("q5_0", x, xq);
    const outs = ns.map((n) => Tensor.zeros("f32", [1, n])) as [Tensor, Tensor, Tensor];
    await compare("q/k/v packed", `q5_0+q8_0 1×${k}`,
      () => cpu.matmul3Prepared(ws[0], ws[1], ws[2], xq, 1, outs[0], outs[1], outs[2]),
      () => { for (let i = 0; i < 3; i++) cpu.matmulPrepared(ws[i]!, xq, 1, outs[i]!); });
  }
  for (const w of ws) cpu.unpackRows(w);
}
results.fusions = fusionRows;

// ---- 4. flash vs naive attention ----------------------------------------------------------
// TinyLlama-1.1B attention: 32 query heads, 4 KV heads, head_dim 64, F16 cache. "prefill" is a
// 256-query chunk at the end of the context; "decode" is one query.
// With AMX-BF16 enabled (amxBf16Status()) the 256-query rows take zig-kernels/attention_amx.zig;
// KILN_AMX=0 measures the f32 lanes kernel instead.
console.log(`\nflash vs naive attention (32 heads / 4 KV heads / head_dim 64, F16 cache; prefill flash on ${amxBf16Status().enabled ? "AMX-BF16 tiles" : "the f32 lanes kernel"})`);
line("keys", "queries", "flash ms", "naive ms", "speed-up", "flash extra", "naive extra");
const [nHead, nKvHead, hd] = [32, 4, 64];
// Flash: per running task ≤ 16 (row, head) accumulators of ≤ 512 floats, one converted K/V
// tile of ≤ 8K floats and ≤ 16×64 scores, all on the stack (attention.zig); nothing grows with
// the number of keys. On AMX-BF16 tiles a prefill task holds four lane groups (queries split in
// bf16 halves, 16 × 256 accumulators each), a tile of K and V split into bf16 halves (4 × 8K),
// 16 × 64 probabilities twice and 64 × 16 scores: ≈ 200 KB (attention_amx.zig State).
const flashExtra = threads * (16 * 512 + 8 * 1024 + 16 * 64) * 4;
const flashExtraTiles = threads * (4 * (2 * 8 * 512 * 2 + 16 * 256 * 4) + 4 * 8192 * 2 + 2 * 16 * 64 * 2 + 64 * 16 * 4);
const attentionRows: Record<string, unknown>[] = [];
for (const nKv of quick ? [512, 2048] : [512, 2048, 4096, 8192, 16384]) {
  const kd = Tensor.fromF32(randomF32(nKv * nKvHead * hd, 13), [nKv * nKvHead, hd]);
  const k = cpu.quantize(kd, "f16").reshape([nKv, nKvHead, hd]);
  const v = cpu.quantize(Tensor.fromF32(randomF32(nKv * nKvHead * hd, 14), [nKv * nKvHead, hd]), "f16").reshape([nKv, nKvHead, hd]);
  for (const nQ of [1, 256]) {
    const q = Tensor.fromF32(randomF32(nQ * nHead * hd, 15), [nQ, nHead, hd]);
    const out = Tensor.zeros("f32", [nQ, nHead, hd]);
    const opts = { qPos0: nKv - nQ, scale: 1 / Math.sqrt(hd) };
    const naiveExtra = nQ * nHead * nKv * 4;
    const scores = new Float32Array(nQ * nHead * nKv);
    const tf = await seconds(() => cpu.flashAttention(q, k, v, nKv, out, nHead, opts), 5);
    const tn = await seconds(() => cpu.attentionNaive(q, k, v, nKv, out, nHead, opts, scores), 5);
    const mb = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;
    const extra = nQ > 16 && amxBf16Status().enabled ? flashExtraTiles : flashExtra;
    line(nKv, nQ, (tf * 1e3).toFixed(3), (tn * 1e3).toFixed(3), `${(tn / tf).toFixed(2)}×`, mb(extra), mb(naiveExtra));
    attentionRows.push({ nKv, nQ, flashMs: tf * 1e3, naiveMs: tn * 1e3, speedup: tn / tf, flashExtraBytes: extra, naiveExtraBytes: naiveExtra });
  }
}
results.attention = attentionRows;

// ---- 5. sampling: argmax and top-k over a Gemma 3 vocabulary ---------------------------------
// zig-kernels/sampling.zig, one logits row of 262,144 floats; argmax also as the plain JavaScript
// scan src/runtime/sampling.ts used before (the same result: test/runtime/sampling.test.ts).
console.log("\nsampling selection over 262,144 logits");
line("selection", "kernel µs", "JS scan µs");
const samplingRows: Record<string, unknown>[] = [];
{
  const V = 262_144;
  const logits = randomF32(V, 12, 3);
  const ids = new Int32Array(40);
  const vals = new Float32Array(40);
  const jsArgmax = () => {
    let best = -1;
    for (let i = 0, v = -Infinity; i < V; i++) if (logits[i]! > v) (v = logits[i]!), (best = i);
    return best;
  };
  const ta = await seconds(() => cpu.argmaxF32(logits));
  const tj = await seconds(jsArgmax);
  const tk = await seconds(() => cpu.topKF32(logits, 40, ids, vals));
  line("argmax", (ta * 1e6).toFixed(1), (tj * 1e6).toFixed(1));
  line("top-k 40", (tk * 1e6).toFixed(1), "");
  samplingRows.push({ name: "argmax", vocab: V, kernelUs: ta * 1e6, jsUs: tj * 1e6 }, { name: "top-k 40", vocab: V, kernelUs: tk * 1e6 });
}
results.sampling = samplingRows;

// The probe is noisy on shared machines (other tenants' traffic): measure again at the end and
// take the best reading as the machine's bandwidth for the fractions in the JSON.
const probe2 = new NativeBuffer(1 << 30);
probe2.bytes.fill(1);
const bwEnd = kiln().kiln_read_bandwidth(probe2.bytes, probe2.byteLength, 5);
probe2.free();
const bwBest = Math.max(bw, bwEnd);
results.bandwidthBestGBs = bwBest / 1e9;
for (const row of matmulRows) row.fractionOfBestBandwidth = (row.GBs as number) * 1e9 / bwBest;
console.log(`\nread bandwidth at the end: ${(bwEnd / 1e9).toFixed(1)} GB/s; best ${(bwBest / 1e9).toFixed(1)} GB/s`);
for (const row of matmulRows) console.log(`  ${(String(row.dtype) + (row.packed ? " packed" : "")).padEnd(13)} ${row.n}×${row.k}: ${(row.GBs as number).toFixed(1)} GB/s = ${(((row.fractionOfBestBandwidth as number)) * 100).toFixed(0)}% of the best bandwidth`);

// ---- per-type targets (issue 14), from this run's figures ------------------------------------
{
  // Each type as a model reads it by default: from its packed copy where this CPU packs layers.
  const big = prefillRows.filter((r) => r.m === 512 && readByDefault(r.dtype as DType, r.packed as boolean)) as { dtype: string; GFLOPs: number }[];
  const fastest = big.reduce((a, b) => (b.GFLOPs > a.GFLOPs ? b : a), big[0]!);
  const targets: Record<string, unknown>[] = [];
  console.log(`
per-type targets: prefill (512 rows) ≥ 70% of the fastest type's GFLOP/s (${fastest.dtype}, ${fastest.GFLOPs.toFixed(1)}); decode ≥ 85% of the best bandwidth${packsByDefault ? " (packable types from their packed copies, as models read them here)" : ""}`);
  line("type", "prefill", "of fastest", "", "decode", "of bandwidth", "");
  for (const dtype of types) {
    const p = big.find((r) => r.dtype === dtype);
    const decodes = matmulRows.filter((r) => r.dtype === dtype && readByDefault(dtype, r.packed as boolean)).map((r) => r.fractionOfBestBandwidth as number);
    const dec = decodes.length ? Math.min(...decodes) : NaN;
    const pf = p ? p.GFLOPs / fastest.GFLOPs : NaN;
    targets.push({ dtype, prefillGFLOPs: p?.GFLOPs, prefillOfFastest: pf, prefillMet: pf >= 0.7, decodeOfBandwidth: dec, decodeMet: dec >= 0.85 });
    // A miss under half a point says so with a decimal (never "missed by 0").
    const status = (x: number, goal: number) => (Number.isNaN(x) ? "-" : x >= goal ? "met" : `missed by ${((goal - x) * 100).toFixed(goal - x < 0.005 ? 1 : 0)} pts`);
    line(dtype, p ? p.GFLOPs.toFixed(1) : "-", Number.isNaN(pf) ? "-" : `${(pf * 100).toFixed(0)}%`, status(pf, 0.7), Number.isNaN(dec) ? "-" : "", Number.isNaN(dec) ? "-" : `${(dec * 100).toFixed(0)}%`, status(dec, 0.85));
  }
  results.targets = targets;
}

const dir = join(import.meta.dir, "results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `kernels-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.json`);
writeFileSync(file, JSON.stringify(results, null, 2));
console.log(`\nwrote ${file}`);

