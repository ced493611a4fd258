/**
 * A/B of two builds of the kernel library on one decode-shaped matmul, in one process:
 *
 *   bun bench/matmul-ab.ts OLD.so NEW.so [q4_0,q8_0,q4_k,q6_k] [4096x4096]   (env T=threads, M=rows)
 *
 * Blocks of 10 calls alternate between the two libraries (a 3 ms pause between blocks lets the
 * idle pool's workers go to sleep), each call reading a different copy of the weights (256 MB
 * in all, so every byte comes from DRAM). Prints p10 and p50 GB/s of each and the time ratio
 * NEW ÷ OLD, and whether both computed the same bits. On a shared host whose speed drifts by
 * ±30% between runs, this interleaving is what makes a 5% difference visible; separate runs
 * of kernels.bench.ts cannot.
 *
 * GATED=1 times the fused gate+up FFN instead (kiln_ffn_gated, SiLU): NxK is then n_ff × k, and
 * gate and up are two consecutive copies of the weights, so GB/s counts both matrices.
 */
import { dlopen, ptr } from "bun:ffi";
import * as cpu from "../src/backends/cpu";
import { symbols } from "../src/ffi/library";
import { DTYPE_IDS, NativeBuffer, Tensor, type DType } from "../src/tensor";
import { randomF32 } from "./random";
const [libA, libB] = [process.argv[2]!, process.argv[3]!];
const types = (process.argv[4] ?? "q4_0,q8_0,q4_k,q6_k").split(",") as DType[];
const shape = (process.argv[5] ?? "4096x4096").split("x").map(Number); const [n, k] = [shape[0]!, shape[1]!];
const threads = Number(process.env.T ?? 2);
const m = Number(process.env.M ?? 1); // activation rows per call (1: decode; 2–16: verification batches)
const ids = DTYPE_IDS;
// The signatures of src/ffi/library.ts's one table, for two builds loaded side by side.
const sym = { kiln_matmul: symbols.kiln_matmul, kiln_quantize_act: symbols.kiln_quantize_act, kiln_set_threads: symbols.kiln_set_threads, kiln_ffn_gated: symbols.kiln_ffn_gated };
const gated = process.env.GATED === "1";
const libs = [dlopen(libA, sym).symbols, dlopen(libB, sym).symbols];
for (const L of libs) L.kiln_set_threads(threads);
for (const dtype of types) {
  const w = cpu.quantize(Tensor.fromF32(randomF32(n * k, 7, 0.05), [n, k]), dtype);
  const wBytes = w.bytes.byteLength; const bytes = gated ? 2 * wBytes : wBytes; const copies = Math.ceil((256 << 20) / bytes);
  const buf = new NativeBuffer(bytes * copies); for (let c = 0; c < copies * (bytes / wBytes); c++) buf.bytes.set(w.bytes, c * wBytes);
  const x = new Float32Array(randomF32(m * k, 3)); const xq = new Uint8Array(cpu.matmulScratchBytes(dtype, m, k) + 64);
  libs[0]!.kiln_quantize_act(ids[dtype]!, x, k, m, k, xq);
  const ys = [new Float32Array(m * n), new Float32Array(m * n)];
  const times: number[][] = [[], []]; let c = 0; const base = ptr(buf.bytes);
  for (let round = 0; round < 40; round++) for (const li of [0, 1]) {
    Bun.sleepSync(3);
    for (let i = 0; i < 10; i++) { const wp = base + (c++ % copies) * bytes; const t = Bun.nanoseconds(); if (gated) libs[li]!.kiln_ffn_gated(ids[dtype]!, wp, wp + wBytes, n, k, xq, m, ys[li]!, n, 0); else libs[li]!.kiln_matmul(ids[dtype]!, wp, n, k, xq, m, ys[li]!, n); times[li]!.push(Bun.nanoseconds() - t); }
  }
  let same = true; for (let j = 0; j < m * n; j++) if (ys[0]![j] !== ys[1]![j]) same = false;
  const q = (a: number[], f: number) => [...a].sort((x, y) => x - y)[Math.floor(a.length * f)]!;
  const gb = (t: number) => (bytes / t).toFixed(1);
  console.log(`${gated ? "gated " : ""}${dtype} ${n}x${k} m=${m} ${threads}t: A p10 ${gb(q(times[0]!, 0.1))} p50 ${gb(q(times[0]!, 0.5))} GB/s | B p10 ${gb(q(times[1]!, 0.1))} p50 ${gb(q(times[1]!, 0.5))} GB/s | B/A time p10 ${(q(times[1]!, 0.1) / q(times[0]!, 0.1)).toFixed(3)} p50 ${(q(times[1]!, 0.5) / q(times[0]!, 0.5)).toFixed(3)} ${same ? "same bits" : "DIFFERENT"}`);
  buf.free();
}
