/**
 * The kernel demo (the README's main command until a model runs end to end): one transformer
 * block's worth of kernels at TinyLlama-1.1B shape — fused RMSNorm, Q/K/V projections, RoPE,
 * flash attention over a 1K-token F16 cache, the fused gated FFN — on random Q4_0 weights, with
 * the measured memory bandwidth and how close the decode matmul gets to it.
 */
import * as cpu from "../src/backends/cpu";
import { kiln, loadedLevel } from "../src/ffi/library";
import { NativeBuffer, Tensor } from "../src/tensor";
import { randomF32 } from "./random";


function timeMs(fn: () => void, reps: number): number {
  fn();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = Bun.nanoseconds();
    fn();
    times.push((Bun.nanoseconds() - t0) / 1e6);
  }
  return times.sort((a, b) => a - b)[Math.floor(reps / 2)]!;
}

const dim = 2048, nHead = 32, nKvHead = 4, headDim = 64, nFf = 5632, nCtx = 1024;
const threads = cpu.getThreads();
console.log(`kiln kernel demo — CPU level ${loadedLevel()}, ${threads} threads`);

const probe = new NativeBuffer(512 << 20);
probe.bytes.fill(1);
const bandwidth = kiln().kiln_read_bandwidth(probe.bytes, probe.byteLength, 3);
probe.free();
console.log(`measured read bandwidth: ${(bandwidth / 1e9).toFixed(1)} GB/s`);

const weight = (rows: number, cols: number, seed: number) => cpu.quantize(Tensor.fromF32(randomF32(rows * cols, seed, 0.05), [rows, cols]), "q4_0");
const wq = weight(nHead * headDim, dim, 1), wk = weight(nKvHead * headDim, dim, 2), wv = weight(nKvHead * headDim, dim, 3);
const wo = weight(dim, nHead * headDim, 4), wGate = weight(nFf, dim, 5), wUp = weight(nFf, dim, 6), wDown = weight(dim, nFf, 7);
const normW = Tensor.fromF32(new Float32Array(dim).fill(1), [dim]);

const x = Tensor.fromF32(randomF32(dim, 9), [1, dim]);
const h = Tensor.zeros("f32", [1, dim]);
const q = Tensor.zeros("f32", [1, nHead * headDim]);
const attnOut = Tensor.zeros("f32", [1, nHead * headDim]);
const kCache = cpu.quantize(Tensor.fromF32(randomF32(nCtx * nKvHead * headDim, 10), [nCtx * nKvHead, headDim]), "f16").reshape([nCtx, nKvHead, headDim]);
const vCache = cpu.quantize(Tensor.fromF32(randomF32(nCtx * nKvHead * headDim, 11), [nCtx * nKvHead, headDim]), "f16").reshape([nCtx, nKvHead, headDim]);
const ffn = Tensor.zeros("f32", [1, nFf]);
const y = Tensor.zeros("f32", [1, dim]);
const kv = Tensor.zeros("f32", [1, nKvHead * headDim]);
const pos = Int32Array.of(nCtx - 1);

const block = () => {
  cpu.rmsNorm(x, normW, h, 1e-5);
  cpu.matmul(wq, h, q);
  cpu.matmul(wk, h, kv);
  cpu.matmul(wv, h, kv);
  cpu.rope(q, nHead, pos, { mode: "normal", freqBase: 10000 });
  cpu.flashAttention(q.reshape([1, nHead, headDim]), kCache, vCache, nCtx, attnOut.reshape([1, nHead, headDim]), nHead, { qPos0: nCtx - 1, scale: 1 / Math.sqrt(headDim) });
  cpu.matmul(wo, attnOut, y);
  cpu.rmsNorm(x, normW, h, 1e-5, { residual: y });
  cpu.ffnGated(wGate, wUp, h, ffn, "silu");
  cpu.matmul(wDown, ffn, y);
  cpu.add(x, y);
};

const ms = timeMs(block, 21);
const weightBytes = [wq, wk, wv, wo, wGate, wUp, wDown].reduce((s, w) => s + w.bytes.byteLength, 0);
console.log(`one Q4_0 decoder block at TinyLlama-1.1B shape (${(weightBytes / 1e6).toFixed(1)} MB of weights, ${nCtx}-token F16 cache): ${ms.toFixed(3)} ms`);
console.log(`  → ${(weightBytes / (ms / 1e3) / 1e9).toFixed(1)} GB/s of weights; 22 such blocks ≈ ${(1000 / (ms * 22)).toFixed(1)} tokens/s before the output head`);
const norm = Math.hypot(...x.f32);
console.log(`  output is finite: ${Number.isFinite(norm)} (‖x‖ = ${norm.toFixed(3)})`);
