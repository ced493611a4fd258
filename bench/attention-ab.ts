/**
 * A/B of two builds of the kernel library on decode attention (one query row), in one process:
 *
 *   bun bench/attention-ab.ts OLD.so NEW.so [4/1/256,32/4/64] [512,4096]   (env T=threads, KV=f16|q8_0, COLD=1, HM=1, NQ=rows)
 *
 * Shapes are n_head/n_kv_head/head_dim. Blocks of 20 calls alternate between the libraries
 * (3 ms pauses let the idle pool sleep); prints each build's p10 and p50 µs per call, the time
 * ratio NEW ÷ OLD, and whether both wrote the same bits (kernel changes that only move work
 * around must not change a bit). See bench/matmul-ab.ts for why in-process interleaving.
 * NQ=128 times a prefill-shaped call instead: 128 query rows at the end of the context (causal).
 * HM=1 lays the cache out head-major (each KV head's rows contiguous) instead of kiln's
 * position-major [position][KV head][dim], to measure what that layout would change.
 */
import { dlopen } from "bun:ffi";
import * as cpu from "../src/backends/cpu";
import { symbols } from "../src/ffi/library";
import { DTYPE_IDS, Tensor } from "../src/tensor";
import { randomF32 } from "./random";

const [libA, libB] = [process.argv[2]!, process.argv[3]!];
const shapes = (process.argv[4] ?? "4/1/256,32/4/64").split(",").map((s) => s.split("/").map(Number) as [number, number, number]);
const contexts = (process.argv[5] ?? "512,4096").split(",").map(Number);
const threads = Number(process.env.T ?? 2);
const nQ = Number(process.env.NQ ?? 1);
const kvType = (process.env.KV ?? "f16") as "f16" | "q8_0";
// The signatures of src/ffi/library.ts's one table, for two builds loaded side by side.
const sym = { kiln_flash_attention: symbols.kiln_flash_attention, kiln_set_threads: symbols.kiln_set_threads };
const libs = [dlopen(libA, sym).symbols, dlopen(libB, sym).symbols];
for (const L of libs) L.kiln_set_threads(threads);
const q10 = (a: number[], f: number) => [...a].sort((x, y) => x - y)[Math.floor(a.length * f)]!;
for (const [nHead, nKvHead, hd] of shapes) {
  for (const nKv of contexts) {
    const q = new Float32Array(randomF32(nQ * nHead * hd, 15));
    const k1 = cpu.quantize(Tensor.fromF32(randomF32(nKv * nKvHead * hd, 13), [nKv * nKvHead, hd]), kvType).bytes;
    const v1 = cpu.quantize(Tensor.fromF32(randomF32(nKv * nKvHead * hd, 14), [nKv * nKvHead, hd]), kvType).bytes;
    // COLD=1: each call reads its own copy of the cache (256 MB in all), from DRAM as in a model,
    // whose weight reads evict the cache between layers; otherwise the one copy stays in L2/L3.
    const copies = process.env.COLD === "1" ? Math.max(2, Math.ceil((256 << 20) / (2 * k1.byteLength))) : 1;
    const ks = Array.from({ length: copies }, (_, c) => (c === 0 ? k1 : k1.slice()));
    const vs = Array.from({ length: copies }, (_, c) => (c === 0 ? v1 : v1.slice()));
    let call = 0;
    // Strides count elements, for every KV type.
    const headMajor = process.env.HM === "1";
    const posStride = headMajor ? hd : nKvHead * hd;
    const headStride = headMajor ? nKv * hd : hd;
    const outs = [new Float32Array(nQ * nHead * hd), new Float32Array(nQ * nHead * hd)];
    const times: number[][] = [[], []];
    for (let round = 0; round < 30; round++) for (const li of [0, 1]) {
      Bun.sleepSync(3);
      for (let i = 0; i < 20; i++) {
        const k = ks[call % copies]!;
        const v = vs[call++ % copies]!;
        const t = Bun.nanoseconds();
        const rc = libs[li]!.kiln_flash_attention(q, nHead * hd, hd, k, v, DTYPE_IDS[kvType], posStride, headStride, outs[li]!, nHead * hd, hd, nQ, nHead, nKvHead, hd, nKv, nKv - nQ, 0, 1 / Math.sqrt(hd), 0);
        times[li]!.push(Bun.nanoseconds() - t);
        if (rc !== 0) throw new Error(`kiln_flash_attention returned ${rc}`);
      }
    }
    const same = outs[0]!.every((x, i) => Object.is(x, outs[1]![i]));
    const us = (t: number) => (t / 1e3).toFixed(1);
    console.log(`${nHead}/${nKvHead}/${hd} ${kvType} ${nKv} keys${nQ > 1 ? ` ${nQ} queries` : ""} ${threads}t${copies > 1 ? " cold" : ""}${headMajor ? " head-major" : ""}: A p10 ${us(q10(times[0]!, 0.1))} p50 ${us(q10(times[0]!, 0.5))} µs | B p10 ${us(q10(times[1]!, 0.1))} p50 ${us(q10(times[1]!, 0.5))} µs | B/A p10 ${(q10(times[1]!, 0.1) / q10(times[0]!, 0.1)).toFixed(3)} p50 ${(q10(times[1]!, 0.5) / q10(times[0]!, 0.5)).toFixed(3)} ${same ? "same bits" : "DIFFERENT"}`);
  }
}
