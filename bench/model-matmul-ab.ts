/**
 * A/B of kernel-library builds (or of model files) on one op over every layer of a real GGUF file,
 * read through the file's mapping, layer after layer, as a forward pass reads it:
 *
 *   bun bench/model-matmul-ab.ts LIB.so:MODEL.gguf LIB2.so:MODEL2.gguf ...   (env OP, T, ROUNDS)
 *
 * OP: gated (ffn_gate + ffn_up, fused, SiLU; the default), ffn_down, attn_output, attn_q, attn_k,
 * attn_v. One decode row (m = 1), or M=rows of a prefill batch (then GFLOP/s too). Rounds alternate between the configurations; prints p10 and p50
 * GB/s of weight bytes for each. Unlike bench/matmul-ab.ts (copies of random weights in huge-page
 * memory, a pause between blocks), this sees what a forward pass sees: the file's page cache (see
 * bench/page-cache.ts) and calls back to back. It found the legacy types' short prefetch distance
 * (zig-kernels/quant_legacy.zig, prefetchDistance).
 *
 * PACKED=1 reads each layer's weights from packed copies instead (zig-kernels/packed.zig, as
 * LoadOptions.packLayers makes them: one native buffer of 2 MiB pages, cpu.packArena), packed by
 * each build itself. A configuration written LIB.so:MODEL.gguf@packed (or @in-place) sets it for
 * that configuration alone, so packed and in-place reads alternate round by round.
 */
import { dlopen } from "bun:ffi";
import * as cpu from "../src/backends/cpu";
import { symbols } from "../src/ffi/library";
import { parseGGUF, tensorData } from "../src/gguf/reader";
import { MappedFile } from "../src/runtime/mapped-file";
import { DTYPE_IDS, NativeBuffer, type DType } from "../src/tensor";
import { randomF32 } from "./random";

const op = process.env.OP ?? "gated";
const m = Number(process.env.M ?? 1);
const names = op === "gated" ? ["ffn_gate", "ffn_up"] : [op];
// The signatures of src/ffi/library.ts's one table, for several builds loaded side by side.
const sym = { kiln_quantize_act: symbols.kiln_quantize_act, kiln_set_threads: symbols.kiln_set_threads, kiln_matmul: symbols.kiln_matmul, kiln_ffn_gated: symbols.kiln_ffn_gated, kiln_pack_rows: symbols.kiln_pack_rows, kiln_matmul_packed: symbols.kiln_matmul_packed, kiln_ffn_gated_packed: symbols.kiln_ffn_gated_packed };
const packedDefault = process.env.PACKED === "1";
if (process.argv.length < 3) throw new Error("usage: bun bench/model-matmul-ab.ts LIB.so:MODEL.gguf [LIB2.so:MODEL2.gguf ...]");
const configs = process.argv.slice(2).map((spec) => {
  const how = spec.match(/@(packed|in-place)$/)?.[1];
  const arg = how ? spec.slice(0, -how.length - 1) : spec;
  const packed = how ? how === "packed" : packedDefault;
  const at = arg.lastIndexOf(".so:");
  if (at < 0) throw new Error(`${arg}: expected LIB.so:MODEL.gguf`);
  const [lib, file] = [arg.slice(0, at + 3), arg.slice(at + 4)];
  const L = dlopen(lib, sym).symbols;
  L.kiln_set_threads(Number(process.env.T ?? 2));
  const mf = new MappedFile(file);
  const g = parseGGUF(mf.bytes);
  const find = (n: string) => g.tensors.find((t) => t.name === n);
  const info = find(`blk.0.${names[0]}.weight`);
  if (!info) throw new Error(`${file}: no tensor blk.0.${names[0]}.weight`);
  // Layers whose tensors have layer 0's type and shape (Q4_K_M files mix types between layers).
  const layers: Uint8Array[][] = [];
  let skipped = 0;
  for (let l = 0; find(`blk.${l}.${names[0]}.weight`); l++) {
    const ts = names.map((n) => find(`blk.${l}.${n}.weight`)!);
    if (ts.every((t) => t.type === info.type && t.dims.join() === info.dims.join())) layers.push(ts.map((t) => tensorData(mf.bytes, t)));
    else skipped++;
  }
  const [k, n] = info.dims.map(Number) as [number, number];
  const dtype = Object.entries(DTYPE_IDS).find(([, v]) => v === info.type)?.[0] as DType | undefined;
  if (!dtype) throw new Error(`${file}: ${info.name} has a type kiln does not read`);
  const x = new Float32Array(randomF32(m * k, 3));
  const xq = new Uint8Array(cpu.matmulScratchBytes(dtype, m, k) + 64);
  L.kiln_quantize_act(info.type, x, k, m, k, xq);
  const out = new Float32Array(n * m);
  const bytes = layers.reduce((s, ws) => s + ws.reduce((a, w) => a + w.byteLength, 0), 0);
  // Packed: every layer's copies in one buffer, each at a 4 KiB boundary (cpu.packArena's layout).
  const slot = (b: number) => Math.ceil(b / 4096) * 4096;
  const arena = packed ? new NativeBuffer(layers.reduce((s, ws) => s + ws.reduce((a, w) => a + slot(w.byteLength), 0), 0)) : null;
  let offset = 0;
  const read = layers.map((ws) =>
    ws.map((w) => {
      if (!arena) return w;
      const copy = arena.bytes.subarray(offset, offset + w.byteLength);
      offset += slot(w.byteLength);
      if (L.kiln_pack_rows(info.type, w, n, k, copy, copy.byteLength, 0) !== 0) throw new Error(`${lib}: cannot pack ${dtype} ${n}×${k}`);
      return copy;
    }),
  );
  const run = () => {
    for (const ws of read) {
      if (op === "gated") (packed ? L.kiln_ffn_gated_packed : L.kiln_ffn_gated)(info.type, ws[0]!, ws[1]!, n, k, xq, m, out, n, 0);
      else (packed ? L.kiln_matmul_packed : L.kiln_matmul)(info.type, ws[0]!, n, k, xq, m, out, n);
    }
  };
  const flops = 2 * m * layers.reduce((s, ws) => s + ws.length, 0) * n * k;
  return { flops, name: `${lib} on ${file.split("/").at(-1)}${packed ? " (packed)" : ""} (${dtype} ${n}×${k}, ${layers.length} layers${skipped ? `, ${skipped} of another type skipped` : ""})`, run, bytes, times: [] as number[] };
});
for (let r = 0; r < Number(process.env.ROUNDS ?? 40); r++) {
  for (const c of configs) {
    const t = Bun.nanoseconds();
    c.run();
    c.times.push(Bun.nanoseconds() - t);
  }
}
const q = (a: number[], f: number) => [...a].sort((x, y) => x - y)[Math.floor(a.length * f)]!;
for (const c of configs) console.log(`${op} ${c.name}: p10 ${(c.bytes / q(c.times, 0.1)).toFixed(1)} p50 ${(c.bytes / q(c.times, 0.5)).toFixed(1)} GB/s${m > 1 ? `, p10 ${(c.flops / q(c.times, 0.1)).toFixed(0)} p50 ${(c.flops / q(c.times, 0.5)).toFixed(0)} GFLOP/s (m = ${m})` : ""}`);
