/**
 * A/B of kernel-library builds on the packed output head (zig-kernels/packed.zig), one decode row,
 * against the same tensor read in place, in one process:
 *
 *   bun bench/packed-head-ab.ts MODEL.gguf A.so [B.so ...]     (env TENSOR (token_embd.weight),
 *                                                             ROUNDS (200), T threads (2))
 *
 * Each build packs its own copy of the model's tensor (as loadModel's packOutputHead does); calls
 * alternate call by call between the builds' packed copies and A's in-place kernel on the file's
 * mapping; prints p10 and p50 ms and p50 GB/s of each. A head the size of Gemma 3 270M's (178 MB)
 * streams from DRAM every call; a smaller one (SmolLM2's 30 MB) partly stays in L3 between calls
 * here, which a forward pass, whose layers stream in between, does not give it.
 */
import { dlopen } from "bun:ffi";
import * as cpu from "../src/backends/cpu";
import { symbols } from "../src/ffi/library";
import { parseGGUF, tensorData } from "../src/gguf/reader";
import { MappedFile } from "../src/runtime/mapped-file";
import { DTYPE_IDS, NativeBuffer, type DType } from "../src/tensor";
import { randomF32 } from "./random";

const [file, ...libs] = process.argv.slice(2);
if (!file || libs.length === 0) throw new Error("usage: bun bench/packed-head-ab.ts MODEL.gguf A.so [B.so ...]");
const sym = { kiln_set_threads: symbols.kiln_set_threads, kiln_quantize_act: symbols.kiln_quantize_act, kiln_pack_rows: symbols.kiln_pack_rows, kiln_matmul_packed: symbols.kiln_matmul_packed, kiln_matmul: symbols.kiln_matmul };
const mf = new MappedFile(file);
const name = process.env.TENSOR ?? "token_embd.weight";
const info = parseGGUF(mf.bytes).tensors.find((x) => x.name === name);
if (!info) throw new Error(`${file}: no tensor ${name}`);
const [k, n] = info.dims.map(Number) as [number, number];
const w = tensorData(mf.bytes, info);
const x = new Float32Array(randomF32(k, 3));
const threads = Number(process.env.T ?? 2);
const dtype = Object.entries(DTYPE_IDS).find(([, v]) => v === info.type)?.[0] as DType | undefined;
if (!dtype) throw new Error(`${file}: ${name} has a type kiln does not read`);

function prepared(L: ReturnType<typeof dlopen<typeof sym>>["symbols"]) {
  L.kiln_set_threads(threads);
  const xq = new Uint8Array(cpu.matmulScratchBytes(dtype!, 1, k) + 64);
  L.kiln_quantize_act(info!.type, x, k, 1, k, xq);
  return { xq, y: new Float32Array(n) };
}
const configs = libs.map((lib) => {
  const L = dlopen(lib, sym).symbols;
  // Native memory, as cpu.packRows allocates the real copy (not a JavaScript heap array).
  const p = new NativeBuffer(w.byteLength).bytes;
  const rc = L.kiln_pack_rows(info.type, w, n, k, p, p.byteLength, 0);
  if (rc !== 0) throw new Error(`${lib}: kiln_pack_rows returned ${rc} for ${name}`);
  const { xq, y } = prepared(L);
  return { name: `${lib.split("/").pop()} packed`, run: () => L.kiln_matmul_packed(info.type, p, n, k, xq, 1, y, n) };
});
{
  const L = dlopen(libs[0]!, sym).symbols;
  const { xq, y } = prepared(L);
  configs.push({ name: `${libs[0]!.split("/").pop()} in place`, run: () => L.kiln_matmul(info.type, w, n, k, xq, 1, y, n) });
}
const times: number[][] = configs.map(() => []);
for (let r = 0; r < Number(process.env.ROUNDS ?? 200); r++) {
  configs.forEach((c, i) => {
    const t0 = performance.now();
    c.run();
    times[i]!.push(performance.now() - t0);
  });
}
const q = (a: number[], f: number) => [...a].sort((u, v) => u - v)[Math.floor(a.length * f)]!;
console.log(`${name} of ${file} (${n}×${k}, ${(w.byteLength / 2 ** 20).toFixed(0)} MiB), one row, ${threads} threads`);
configs.forEach((c, i) => console.log(`${c.name}: p10 ${q(times[i]!, 0.1).toFixed(3)} p50 ${q(times[i]!, 0.5).toFixed(3)} ms, ${(w.byteLength / q(times[i]!, 0.5) / 1e6).toFixed(1)} GB/s p50`));
