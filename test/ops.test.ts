/**
 * The CPU op set through the FFI: each op against an f64 reference written here in TypeScript,
 * outputs inside guard bytes, and every malformed call rejected in TypeScript with an error that
 * names the op and the shapes. (Each kernel's SIMD paths are tested against their scalar
 * references at every CPU level by `zig build test`; this file tests the binding and the layer.)
 */
import { describe, expect, test } from "bun:test";
import * as cpu from "../src/backends/cpu";
import { DTYPE_IDS, DTYPE_LAYOUT, NativeBuffer, ShapeError, Tensor, type DType } from "../src/tensor";
import { SUPPORTED_GGML_TYPES } from "../src/gguf/types";
import { amxStatus, bf16Status, loadedLevel } from "../src/ffi/library";
import { matmulRef, maxAbsDiff, nmse, randn } from "./helpers";

const GUARD = 0xa5;

/** An f32 tensor whose bytes sit between guard regions of a larger buffer. */
function guarded(shape: number[], name = "out"): { t: Tensor; checkGuards: () => void } {
  const n = shape.reduce((a, b) => a * b, 1) * 4;
  const buf = new Uint8Array(n + 128).fill(GUARD);
  const t = new Tensor("f32", shape, buf.subarray(64, 64 + n), name);
  return {
    t,
    checkGuards: () => {
      for (let i = 0; i < 64; i++) expect(buf[i]).toBe(GUARD);
      for (let i = 64 + n; i < buf.length; i++) expect(buf[i]).toBe(GUARD);
    },
  };
}

function f32(data: Float32Array, shape: number[], name = ""): Tensor {
  return Tensor.fromF32(data, shape, name);
}

/** Per-type NMSE budget of the fused matmul against f64 on dequantized weights (the 8-bit
 * activation quantization dominates; float types are exact up to summation order). */
const MATMUL_NMSE: Record<DType, number> = {
  f32: 1e-10, f16: 1e-8, bf16: 1e-8,
  q8_0: 2e-4, q4_0: 2e-4, q4_1: 2e-4, q5_0: 2e-4, q5_1: 2e-4, q4_k: 2e-4, q5_k: 2e-4, q6_k: 2e-4,
};
/**
 * BF16 weights on AVX512-BF16 (vdpbf16ps, decode and prefill) multiply the activations rounded to
 * bf16, as llama.cpp does (zig-kernels/bf16.zig): the reference takes the same roundings, by the
 * kernels' own f32 → bf16 rule, so the budget stays the summation order's.
 */
function bf16Rounded(x: Float32Array, m: number, k: number): Float32Array {
  const r = Tensor.zeros("f32", [m, k]);
  cpu.dequantize(cpu.quantize(f32(x, [m, k], "x"), "bf16"), r);
  return r.f32;
}
/** Every type kiln reads can be quantized by the kernels, so every matmul is tested through the ops. */
const QUANTIZABLE = Object.keys(DTYPE_IDS) as DType[];

test("the kernels' dtypes are exactly the types the GGUF reader accepts (DTYPE_LAYOUT is read from its table)", () => {
  expect((Object.values(DTYPE_IDS) as number[]).sort((a, b) => a - b)).toEqual([...SUPPORTED_GGML_TYPES].sort((a, b) => a - b));
});

test("a tensor's shape is frozen; dim() and hasShape() (what the ops' checks read) agree with it in every dimension", () => {
  const t = Tensor.zeros("f32", [2, 3, 4], "t");
  expect(Object.isFrozen(t.shape)).toBe(true);
  expect(() => {
    (t.shape as number[])[0] = 9;
  }).toThrow(TypeError);
  expect([t.rank, t.dim(0), t.dim(1), t.dim(2), t.cols, t.rows]).toEqual([3, 2, 3, 4, 4, 6]);
  expect(() => t.dim(3)).toThrow(/no dimension 3 in shape \[2, 3, 4\]/);
  // A 1-D "weight" reaching an op that reads its width gets that error, not an undefined width.
  expect(() => cpu.matmulPrepared(Tensor.zeros("q8_0", [64], "w1d"), new Uint8Array(256), 1, Tensor.zeros("f32", [1, 64]))).toThrow(/w1d: no dimension 1 in shape \[64\]/);
  expect(t.hasShape([2, 3, 4])).toBe(true);
  expect(t.hasShape(Tensor.zeros("f16", [2, 3, 4]))).toBe(true);
  for (const other of [[2, 3, 5], [9, 3, 4], [2, 3], [2, 3, 4, 1], [2, 4, 3], []]) {
    expect(t.hasShape(other)).toBe(false);
    expect(t.hasShape(Tensor.zeros("f32", other.length ? other : [1]))).toBe(false);
  }
  // An op's check names the shape it wanted, whether that came from a tensor or a list.
  const x = Tensor.zeros("f32", [2, 4], "x");
  expect(() => cpu.rmsNorm(x, null, Tensor.zeros("f32", [2, 5], "out"), 1e-5)).toThrow(/out.*must have shape \[2, 4\]/);
  expect(() => cpu.rmsNorm(x, Tensor.zeros("f32", [5], "w"), Tensor.zeros("f32", [2, 4]), 1e-5)).toThrow(/w.*must have shape \[4\]/);
});

describe("matmul", () => {
  for (const dtype of QUANTIZABLE) {
    test(`${dtype}: decode and batched shapes match f64 on the dequantized weights`, () => {
      const bs = Math.max(DTYPE_LAYOUT[dtype].blockSize, 32);
      // NMSE over all outputs of all shapes: one dot of one block can cancel to near zero.
      const got: number[] = [];
      const wanted: number[] = [];
      for (const [n, k, m] of [[1, bs, 1], [37, bs * 3, 1], [64, bs * 5, 7], [300, bs * 4, 2]] as const) {
        const wq = cpu.quantize(f32(randn(n * k, n + k), [n, k], "w"), dtype);
        const wd = Tensor.zeros("f32", [n, k]);
        cpu.dequantize(wq, wd);
        const x = randn(m * k, 7 * m + k);
        const out = guarded([m, n]);
        cpu.matmul(wq, f32(x, [m, k], "x"), out.t);
        out.checkGuards();
        got.push(...out.t.f32);
        wanted.push(...matmulRef(wd.f32, n, k, dtype === "bf16" && bf16Status().enabled ? bf16Rounded(x, m, k) : x, m));
      }
      expect(nmse(got, wanted)).toBeLessThan(MATMUL_NMSE[dtype]);
    });
  }

  test("rejects mismatched shapes before any pointer crosses", () => {
    const w = Tensor.zeros("q4_0", [8, 64], "blk.0.attn_q.weight");
    const x = Tensor.zeros("f32", [2, 32], "x");
    expect(() => cpu.matmul(w, x, Tensor.zeros("f32", [2, 8]))).toThrow(/matmul: .*inner dims 32 ≠ 64/);
    expect(() => cpu.matmul(w, Tensor.zeros("f32", [2, 64]), Tensor.zeros("f32", [2, 9]))).toThrow(ShapeError);
    expect(() => cpu.matmul(w, Tensor.zeros("f32", [2, 64]), Tensor.zeros("f32", [2, 8]), new Uint8Array(3))).toThrow(/scratch has 3 bytes/);
    expect(() => new Tensor("q4_0", [8, 33], new Uint8Array(10), "bad")).toThrow(/not a whole number of 32-element blocks/);
    expect(() => new Tensor("f32", [4], new Uint8Array(15), "short")).toThrow(/needs 16 bytes, the view has 15/);
  });
});

describe("matmul3 (three projections of the same rows, one kernel call)", () => {
  // m = 1: decode's one dispatch; 5: the batch-invariant tiles, three calls; 40 and 300: one
  // dispatch over the interleaved (or, on AMX machines, the AMX) prefill kernels.
  for (const dtype of ["q4_1", "q8_0", "q4_k", "bf16"] as DType[]) {
    test(`${dtype}: each output equals matmul's bit for bit at m = 1, 5, 40, 300`, () => {
      const k = 256;
      const ns = [96, 32, 48];
      const ws = ns.map((n, i) => cpu.quantize(f32(randn(n * k, 70 + i), [n, k], `blk.0.attn_${"qkv"[i]}.weight`), dtype)) as [Tensor, Tensor, Tensor];
      for (const m of [1, 5, 40, 300]) {
        const x = f32(randn(m * k, 80 + m), [m, k], "x");
        const xq = new Uint8Array(cpu.matmulScratchBytes(dtype, m, k));
        cpu.prepareActivations(dtype, x, xq);
        const outs = ns.map((n) => f32(new Float32Array(m * n).fill(7), [m, n])) as [Tensor, Tensor, Tensor];
        cpu.matmul3Prepared(ws[0], ws[1], ws[2], xq, m, outs[0], outs[1], outs[2]);
        for (let i = 0; i < 3; i++) {
          const one = Tensor.zeros("f32", [m, ns[i]!]);
          cpu.matmul(ws[i]!, x, one);
          expect(new Uint32Array(outs[i]!.f32.buffer, outs[i]!.f32.byteOffset, m * ns[i]!)).toEqual(new Uint32Array(one.f32.buffer, one.f32.byteOffset, m * ns[i]!));
        }
      }
    });
  }
  test("shapes, dtypes, widths and row counts are checked before any pointer crosses", () => {
    const k = 128;
    const ns = [40, 8, 12];
    const ws = ns.map((n, i) => cpu.quantize(f32(randn(n * k, 70 + i), [n, k], `blk.0.attn_${"qkv"[i]}.weight`), "q4_1")) as [Tensor, Tensor, Tensor];
    const x = f32(randn(k, 80), [1, k], "x");
    const xq = new Uint8Array(cpu.matmulScratchBytes("q4_1", 1, k));
    cpu.prepareActivations("q4_1", x, xq);
    const outs = ns.map((n) => Tensor.zeros("f32", [1, n])) as [Tensor, Tensor, Tensor];
    const other = cpu.quantize(f32(randn(8 * k, 90), [8, k], "blk.0.attn_k.weight"), "q8_0");
    expect(() => cpu.matmul3Prepared(ws[0], other, ws[2], xq, 1, outs[0], Tensor.zeros("f32", [1, 8]), outs[2])).toThrow(/must share a dtype/);
    const narrow = cpu.quantize(f32(randn(8 * 64, 91), [8, 64], "blk.0.attn_k.weight"), "q4_1");
    expect(() => cpu.matmul3Prepared(ws[0], narrow, ws[2], xq, 1, outs[0], Tensor.zeros("f32", [1, 8]), outs[2])).toThrow(/must share a width \(128 ≠ 64\)/);
    expect(() => cpu.matmul3Prepared(ws[0], ws[1], ws[2], xq, 1, outs[0], Tensor.zeros("f32", [1, 9]), outs[2])).toThrow(ShapeError);
    expect(() => cpu.matmul3Prepared(ws[0], ws[1], ws[2], xq.subarray(0, 10), 1, outs[0], outs[1], outs[2])).toThrow(/prepared activations have 10 bytes/);
    expect(() => cpu.matmul3Prepared(ws[0], ws[1], ws[2], xq, 2, outs[0], outs[1], outs[2])).toThrow(/must have shape \[2, 40\]/);
    expect(() => cpu.matmul3Prepared(ws[0], ws[1], ws[2], xq, 0, outs[0], outs[1], outs[2])).toThrow(/m must be a positive integer, got 0/);
  });
});

describe("packed rows (the load-time layout of the output head and, LoadOptions.packLayers, the layers)", () => {
  // zig-kernels/packed.zig: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q4_K (the last three not where AMX is enabled) on the AVX-512
  // VNNI build; elsewhere packRows declines.
  const supported = (dtype: DType) => cpu.packUnsupportedReason(Tensor.zeros(dtype, [16, 256])) === null;

  for (const dtype of ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k"] as const) {
    test(`${dtype}: within rounding of the in-place matmul, and every batched row bitwise the row alone`, () => {
      if (!supported(dtype)) {
        // Not this build: packRows must decline and leave the weight read in place.
        const w = Tensor.zeros(dtype, [16, 256]);
        expect(cpu.packRows(w)).toBe(false);
        expect(cpu.packedCopy(w)).toBeNull();
        return;
      }
      // 80 rows (five groups of 16), k = 640 (20 blocks: not a multiple of a 64-byte vector's
      // blocks; Q4_K: 768, three of its 256-element blocks).
      const [n, k] = [80, dtype === "q4_k" ? 768 : 640];
      const w = cpu.quantize(f32(randn(n * k, 11), [n, k], "output.weight"), dtype);
      const mMax = 19;
      const x = f32(randn(mMax * k, 12), [mMax, k], "x");
      const inPlace = Tensor.zeros("f32", [mMax, n]);
      cpu.matmul(w, x, inPlace);
      expect(cpu.packRows(w)).toBe(true);
      expect(cpu.packedCopy(w)!.byteLength).toBe(w.bytes.byteLength);
      const alone: Float32Array[] = [];
      for (let i = 0; i < mMax; i++) {
        const y = Tensor.zeros("f32", [1, n]);
        cpu.matmul(w, x.sliceRows(i, 1), y);
        alone.push(y.f32.slice());
      }
      expect(nmse(alone.flatMap((r) => [...r]), [...inPlace.f32])).toBeLessThan(1e-10);
      // Beyond 16 rows (prefill) where AMX is enabled, the AMX kernel takes its tiles from the
      // copy: bitwise the in-place AMX prefill of the same rows instead of the rows alone.
      const amx = amxStatus().enabled;
      for (const m of [2, 3, 4, 5, 11, 16, 17, mMax]) {
        const out = guarded([m, n]);
        cpu.matmul(w, x.sliceRows(0, m), out.t);
        out.checkGuards();
        for (let i = 0; i < m; i++) {
          expect(out.t.f32.subarray(i * n, (i + 1) * n)).toEqual(m > 16 && amx ? inPlace.f32.subarray(i * n, (i + 1) * n) : alone[i]!);
        }
      }
      cpu.unpackRows(w);
      expect(cpu.packedCopy(w)).toBeNull();
      const again = Tensor.zeros("f32", [mMax, n]);
      cpu.matmul(w, x, again);
      expect(again.f32).toEqual(inPlace.f32);
    });
  }

  test("declines what it cannot pack, saying why", () => {
    expect(cpu.packUnsupportedReason(Tensor.zeros("q6_k", [16, 256], "output.weight"))).toMatch(/no packed layout for q6_k/);
    expect(cpu.packUnsupportedReason(Tensor.zeros("f32", [32]))).toMatch(/not 2-D/);
    if (supported("q8_0")) {
      expect(cpu.packUnsupportedReason(Tensor.zeros("q8_0", [24, 64], "output.weight"))).toMatch(/24 rows, not a multiple of 16/);
      expect(cpu.packUnsupportedReason(Tensor.zeros("q8_0", [16, 65536], "output.weight"))).toMatch(/65536 columns, more than 32768/);
    }
    const w = Tensor.zeros("q6_k", [16, 256]);
    expect(cpu.packRows(w)).toBe(false);
    expect(cpu.packedCopy(w)).toBeNull();
  });

  test("gated FFN over packed gate and up: bitwise the two packed matmuls and the gated product", () => {
    for (const dtype of ["q8_0", "q4_0", "q4_1"] as const) {
      if (!supported(dtype)) continue;
      const [nFf, k] = [80, 96];
      const [gate, up] = [0, 1].map((s) => cpu.quantize(f32(randn(nFf * k, 40 + s), [nFf, k], `blk.0.ffn_${s ? "up" : "gate"}`), dtype)) as [Tensor, Tensor];
      for (const w of [gate, up]) expect(cpu.packRows(w)).toBe(true);
      try {
        for (const m of [1, 5, 17, 40]) {
          const x = f32(randn(m * k, 50 + m), [m, k], "x");
          const xq = new Uint8Array(cpu.actRowBytes(dtype, k) * m);
          cpu.prepareActivations(dtype, x, xq);
          const [g, u, want] = [0, 1, 2].map(() => Tensor.zeros("f32", [m, nFf])) as [Tensor, Tensor, Tensor];
          cpu.matmulPrepared(gate, xq, m, g);
          cpu.matmulPrepared(up, xq, m, u);
          for (const act of ["silu", "gelu_tanh"] as const) {
            (act === "silu" ? cpu.siluMul : cpu.geluTanhMul)(g, u, want);
            const out = guarded([m, nFf]);
            cpu.ffnGatedPrepared(gate, up, xq, m, out.t, act);
            out.checkGuards();
            expect(out.t.f32).toEqual(want.f32);
          }
        }
      } finally {
        for (const w of [gate, up]) cpu.unpackRows(w);
      }
    }
  });

  test("an arena's slots hold the same packed bytes as copies of their own; bad slots are refused", () => {
    if (!supported("q4_0")) return;
    // Sizes that are not multiples of the slots' 4 KiB alignment, so slots start past gaps.
    const ws = [[48, 320], [16, 96], [32, 640]].map(([n, k], i) => cpu.quantize(f32(randn(n! * k!, 60 + i), [n!, k!], `blk.0.w${i}`), "q4_0"));
    const arena = cpu.packArena(ws)!;
    try {
      expect(arena.slots.map((s) => s.byteLength)).toEqual(ws.map((w) => w.bytes.byteLength));
      for (const s of arena.slots) expect(s.byteOffset % 4096).toBe(0);
      for (let i = 0; i < ws.length; i++) expect(cpu.packRows(ws[i]!, { into: arena.slots[i] })).toBe(true);
      // The same weights packed alone: the bytes must match, and the matmuls read the arena's.
      const alone = ws.map((w) => new Tensor(w.dtype, w.shape, w.bytes.slice(), w.name));
      for (const w of alone) cpu.packRows(w);
      for (let i = 0; i < ws.length; i++) {
        expect(cpu.packedCopy(ws[i]!)!.buffer).toBe(arena.buffer.bytes.buffer);
        expect(cpu.packedCopy(ws[i]!)).toEqual(cpu.packedCopy(alone[i]!)!);
        const k = ws[i]!.dim(1);
        const x = f32(randn(3 * k, 70 + i), [3, k], "x");
        const [a, b] = [Tensor.zeros("f32", [3, ws[i]!.dim(0)]), Tensor.zeros("f32", [3, ws[i]!.dim(0)])];
        cpu.matmul(ws[i]!, x, a);
        cpu.matmul(alone[i]!, x, b);
        expect(a.f32).toEqual(b.f32);
      }
      for (const w of alone) cpu.unpackRows(w);
      const spare = cpu.quantize(f32(randn(16 * 640, 80), [16, 640], "blk.1.w"), "q4_0");
      expect(() => cpu.packRows(spare, { into: arena.slots[1] })).toThrow(/needs 5760 bytes, the slot given has 864/);
      expect(() => cpu.packRows(spare, { into: spare.bytes })).toThrow(/overlaps/);
      expect(cpu.packedCopy(spare)).toBeNull();
    } finally {
      for (const w of ws) cpu.unpackRows(w); // slots are not freed one by one: the arena is
      expect(arena.buffer.bytes.byteLength).toBeGreaterThan(0);
      arena.buffer.free();
    }
    expect(cpu.packArena([])).toBeNull();
  });

  // Gemma's Q, K (Q5_0) and V (Q8_0 in some layers): one dispatch over three copies of two types.
  test("matmul3 over three packed copies: each output bitwise its own matmul; mixed copies and activation formats refused", () => {
    const types = ["q5_0", "q5_0", "q8_0"] as const;
    if (!types.every(supported)) return;
    const k = 640;
    const ns = [1024, 256, 48];
    const ws = ns.map((n, i) => cpu.quantize(f32(randn(n * k, 40 + i), [n, k], `blk.0.attn_${"qkv"[i]}.weight`), types[i]!)) as [Tensor, Tensor, Tensor];
    try {
      for (const w of ws) expect(cpu.packRows(w)).toBe(true);
      for (const m of [1, 4, 16, 17]) {
        const x = f32(randn(m * k, 50 + m), [m, k], "x");
        const xq = new Uint8Array(cpu.matmulScratchBytes("q5_0", m, k));
        cpu.prepareActivations("q5_0", x, xq);
        const outs = ns.map((n) => guarded([m, n]));
        cpu.matmul3Prepared(ws[0], ws[1], ws[2], xq, m, outs[0]!.t, outs[1]!.t, outs[2]!.t);
        for (let i = 0; i < 3; i++) {
          outs[i]!.checkGuards();
          const one = Tensor.zeros("f32", [m, ns[i]!]);
          cpu.matmulPrepared(ws[i]!, xq, m, one);
          expect(outs[i]!.t.f32).toEqual(one.f32);
        }
      }
      if (supported("q4_k")) {
        const kq = cpu.quantize(f32(randn(16 * 768, 60), [16, 768], "blk.0.attn_k.weight"), "q4_k");
        const k8 = cpu.quantize(f32(randn(16 * 768, 61), [16, 768], "blk.0.attn_v.weight"), "q8_0");
        const q8 = cpu.quantize(f32(randn(16 * 768, 62), [16, 768], "blk.0.attn_q.weight"), "q8_0");
        for (const w of [kq, k8, q8]) expect(cpu.packRows(w)).toBe(true);
        const xq = new Uint8Array(cpu.matmulScratchBytes("q4_k", 1, 768));
        const outs = [0, 1, 2].map(() => Tensor.zeros("f32", [1, 16]));
        expect(() => cpu.matmul3Prepared(q8, kq, k8, xq, 1, outs[0]!, outs[1]!, outs[2]!)).toThrow(/must share a dtype or at least the prepared activations/);
        for (const w of [kq, k8, q8]) cpu.unpackRows(w);
      }
    } finally {
      for (const w of ws) cpu.unpackRows(w);
    }
  });

  test("the fused in-place kernels refuse a weight with a packed copy (they would read the file's bytes)", () => {
    if (!supported("q8_0")) return;
    const k = 64;
    const ws = [0, 1, 2].map((s) => cpu.quantize(f32(randn(16 * k, 30 + s), [16, k], `blk.0.w${s}`), "q8_0"));
    const xq = new Uint8Array(cpu.actRowBytes("q8_0", k));
    cpu.prepareActivations("q8_0", f32(randn(k, 33), [1, k], "x"), xq);
    const outs = [0, 1, 2].map(() => Tensor.zeros("f32", [1, 16]));
    cpu.matmul3Prepared(ws[0]!, ws[1]!, ws[2]!, xq, 1, outs[0]!, outs[1]!, outs[2]!); // in place: fine
    cpu.ffnGatedPrepared(ws[0]!, ws[1]!, xq, 1, outs[0]!, "silu");
    expect(cpu.packRows(ws[1]!)).toBe(true);
    try {
      expect(() => cpu.matmul3Prepared(ws[0]!, ws[1]!, ws[2]!, xq, 1, outs[0]!, outs[1]!, outs[2]!)).toThrow(/w1.* is read from a packed copy and .*w0.* is not; use matmulPrepared/);
      expect(() => cpu.ffnGatedPrepared(ws[0]!, ws[1]!, xq, 1, outs[0]!, "silu")).toThrow(/w1.* is read from a packed copy and .*w0.* is not; use matmulPrepared/);
    } finally {
      cpu.unpackRows(ws[1]!);
    }
  });
});

describe("fused gated FFN", () => {
  for (const dtype of ["q4_0", "q8_0", "q4_k", "f16"] as DType[]) {
    for (const act of ["silu", "gelu_tanh"] as const) {
      test(`${dtype} ${act}: equals matmul, matmul, activation·up`, () => {
        const bs = Math.max(DTYPE_LAYOUT[dtype].blockSize, 32);
        const [nFf, k, m] = [96, bs * 2, 3];
        const wg = cpu.quantize(f32(randn(nFf * k, 1), [nFf, k]), dtype);
        const wu = cpu.quantize(f32(randn(nFf * k, 2), [nFf, k]), dtype);
        const x = f32(randn(m * k, 3), [m, k]);
        const g = Tensor.zeros("f32", [m, nFf]);
        const u = Tensor.zeros("f32", [m, nFf]);
        cpu.matmul(wg, x, g);
        cpu.matmul(wu, x, u);
        const unfused = Tensor.zeros("f32", [m, nFf]);
        (act === "silu" ? cpu.siluMul : cpu.geluTanhMul)(g, u, unfused);
        const fused = guarded([m, nFf]);
        cpu.ffnGated(wg, wu, x, fused.t, act);
        fused.checkGuards();
        expect(maxAbsDiff(fused.t.f32, unfused.f32)).toBeLessThan(1e-4);
        // and against f64 math on the same gate/up values
        const ref = g.f32.map((gv, i) => (act === "silu" ? gv / (1 + Math.exp(-gv)) : 0.5 * gv * (1 + Math.tanh(0.7978845608 * gv * (1 + 0.044715 * gv * gv)))) * u.f32[i]!);
        expect(nmse(fused.t.f32, ref)).toBeLessThan(1e-9);
      });
    }
  }
  test("gate and up must share shape and dtype", () => {
    const wg = Tensor.zeros("q4_0", [8, 64]);
    expect(() => cpu.ffnGated(wg, Tensor.zeros("q8_0", [8, 64]), Tensor.zeros("f32", [1, 64]), Tensor.zeros("f32", [1, 8]), "silu")).toThrow(/share a dtype/);
    expect(() => cpu.ffnGated(wg, Tensor.zeros("q4_0", [9, 64]), Tensor.zeros("f32", [1, 64]), Tensor.zeros("f32", [1, 8]), "silu")).toThrow(/must have shape \[8, 64\]/);
  });
});

describe("rmsNorm", () => {
  function ref(x: Float32Array, w: Float32Array | null, n: number): Float64Array {
    const out = new Float64Array(x.length);
    for (let r = 0; r < x.length / n; r++) {
      let ss = 0;
      for (let i = 0; i < n; i++) ss += x[r * n + i]! ** 2;
      const inv = 1 / Math.sqrt(ss / n + 1e-6);
      for (let i = 0; i < n; i++) out[r * n + i] = x[r * n + i]! * inv * (w ? w[i]! : 1);
    }
    return out;
  }
  for (const n of [1, 7, 64, 100, 640, 1023]) {
    test(`n=${n}: plain, with residual, and emitting prepared activations`, () => {
      const rows = 3;
      const x0 = randn(rows * n, n);
      const res = randn(rows * n, n + 1);
      const w = randn(n, n + 2);
      const out = guarded([rows, n]);
      cpu.rmsNorm(f32(x0.slice(), [rows, n]), f32(w, [n]), out.t, 1e-6);
      out.checkGuards();
      expect(nmse(out.t.f32, ref(x0, w, n))).toBeLessThan(1e-12);

      const x = x0.slice();
      const summed = x0.map((v, i) => v + res[i]!);
      const out2 = guarded([rows, n]);
      cpu.rmsNorm(f32(x, [rows, n]), f32(w, [n]), out2.t, 1e-6, { residual: f32(res, [rows, n]) });
      out2.checkGuards();
      expect(maxAbsDiff(x, summed)).toBeLessThan(1e-6); // the residual stream was updated in place
      expect(nmse(out2.t.f32, ref(summed, w, n))).toBeLessThan(1e-12);

      if (n % 32 === 0) {
        const act = new Uint8Array(cpu.actRowBytes("q8_0", n) * rows);
        const out3 = Tensor.zeros("f32", [rows, n]);
        cpu.rmsNorm(f32(x0.slice(), [rows, n]), f32(w, [n]), out3, 1e-6, { emitFor: "q8_0", actOut: act });
        const separately = new Uint8Array(act.length);
        cpu.prepareActivations("q8_0", out3, separately);
        expect(act).toEqual(separately);
      }
    });
  }
  test("rejects a weight of the wrong length", () => {
    expect(() => cpu.rmsNorm(Tensor.zeros("f32", [2, 8]), Tensor.zeros("f32", [7]), Tensor.zeros("f32", [2, 8]), 1e-6)).toThrow(/rmsNorm: .*must have shape \[8\]/);
  });
});

describe("rope", () => {
  function ref(x: Float32Array, nHead: number, hd: number, pos: Int32Array, nRot: number, neox: boolean, base: number): Float64Array {
    const out = Float64Array.from(x);
    for (let r = 0; r < pos.length; r++) {
      for (let h = 0; h < nHead; h++) {
        const o = (r * nHead + h) * hd;
        for (let k = 0; k < nRot / 2; k++) {
          const theta = pos[r]! * Math.pow(base, (-2 * k) / nRot);
          const [i0, i1] = neox ? [k, k + nRot / 2] : [2 * k, 2 * k + 1];
          const a = x[o + i0]!;
          const b = x[o + i1]!;
          out[o + i0] = a * Math.cos(theta) - b * Math.sin(theta);
          out[o + i1] = a * Math.sin(theta) + b * Math.cos(theta);
        }
      }
    }
    return out;
  }
  for (const neox of [false, true]) {
    test(`${neox ? "neox" : "normal"} pairing, partial rotation, many positions`, () => {
      const [rows, nHead, hd, nRot] = [5, 3, 64, 48];
      const x = randn(rows * nHead * hd, 11);
      const pos = Int32Array.from([0, 1, 17, 500, 4000]);
      const t = f32(x.slice(), [rows, nHead * hd]);
      cpu.rope(t, nHead, pos, { nRot, mode: neox ? "neox" : "normal", freqBase: 10000 });
      expect(maxAbsDiff(t.f32, ref(x, nHead, hd, pos, nRot, neox, 10000))).toBeLessThan(2e-3);
      expect(nmse(t.f32, ref(x, nHead, hd, pos, nRot, neox, 10000))).toBeLessThan(1e-9);
    });
  }
  test("rejects a position count that does not match the rows", () => {
    expect(() => cpu.rope(Tensor.zeros("f32", [2, 64]), 1, new Int32Array(3), { mode: "neox", freqBase: 1e4 })).toThrow(/3 positions for 2 rows/);
  });
  for (const neox of [false, true]) {
    test(`${neox ? "neox" : "normal"}: a table made once (ropeTable) and applied (ropeApply) gives rope's bits`, () => {
      const [rows, nHead, hd, nRot] = [37, 3, 64, 48];
      const x = randn(rows * nHead * hd, 12);
      const pos = Int32Array.from({ length: rows }, (_, i) => (i * 977) % 5000);
      const o = { nRot, mode: neox ? ("neox" as const) : ("normal" as const), freqBase: 500000, freqScale: 0.25, freqFactors: f32(Float32Array.from({ length: nRot / 2 }, (_, i) => 1 + (i % 3)), [nRot / 2]) };
      const want = f32(x.slice(), [rows, nHead * hd]);
      cpu.rope(want, nHead, pos, o);
      const table = new Float32Array(cpu.ropeTableFloats(rows, nRot) + 4).fill(-7);
      cpu.ropeTable(pos, o, table);
      expect(Array.from(table.subarray(cpu.ropeTableFloats(rows, nRot)))).toEqual([-7, -7, -7, -7]);
      const got = f32(x.slice(), [rows, nHead * hd]);
      cpu.ropeApply(got, nHead, table, nRot, o.mode);
      expect(new Uint32Array(got.f32.buffer)).toEqual(new Uint32Array(want.f32.buffer));
      // Teeth: a table made for other positions does not.
      cpu.ropeTable(pos.map((p) => p + 1), o, table);
      const off = f32(x.slice(), [rows, nHead * hd]);
      cpu.ropeApply(off, nHead, table, nRot, o.mode);
      expect(nmse(off.f32, want.f32)).toBeGreaterThan(1e-6);
    });
  }
  test("ropeTable and ropeApply refuse a table too short, and n_rot past the kernels' limit", () => {
    const o = { nRot: 64, mode: "neox" as const, freqBase: 1e4 };
    expect(() => cpu.ropeTable(new Int32Array(3), o, new Float32Array(3 * 128 - 1))).toThrow(/table has 383 floats, 3 positions need 384/);
    expect(() => cpu.ropeApply(Tensor.zeros("f32", [3, 64]), 1, new Float32Array(383), 64, "neox")).toThrow(/table has 383 floats, 3 rows of n_rot 64 need 384/);
    expect(() => cpu.ropeTable(new Int32Array(1), { ...o, nRot: 2048 }, new Float32Array(4096))).toThrow(/n_rot 2048 must be even, in \[2, 1024\]/);
  });
});

describe("attention", () => {
  /** f64 attention with causal + window masks. */
  function ref(q: Float32Array, k: Float32Array, v: Float32Array, nQ: number, nHead: number, nKvHead: number, hd: number, nKv: number, qPos0: number, window: number, scale: number): Float64Array {
    const out = new Float64Array(nQ * nHead * hd);
    const group = nHead / nKvHead;
    for (let i = 0; i < nQ; i++) {
      for (let h = 0; h < nHead; h++) {
        const g = Math.floor(h / group);
        const p = qPos0 + i;
        const s: number[] = [];
        for (let j = 0; j < nKv; j++) {
          if (j > p || (window > 0 && p - j >= window)) { s.push(-Infinity); continue; }
          let d = 0;
          for (let c = 0; c < hd; c++) d += q[(i * nHead + h) * hd + c]! * k[(j * nKvHead + g) * hd + c]!;
          s.push(d * scale);
        }
        const mx = Math.max(...s);
        const e = s.map((x) => (x === -Infinity ? 0 : Math.exp(x - mx)));
        const z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j < nKv; j++) {
          if (e[j] === 0) continue;
          for (let c = 0; c < hd; c++) out[(i * nHead + h) * hd + c] += (e[j]! / z) * v[(j * nKvHead + g) * hd + c]!;
        }
      }
    }
    return out;
  }
  /** Each 32-value block of x rounded as attention.zig's quantizeQueryBlock (f32 arithmetic). */
  function roundQueryQ8(x: Float32Array): Float32Array {
    const out = new Float32Array(x.length);
    for (let b = 0; b < x.length; b += 32) {
      let amax = 0;
      for (let i = b; i < b + 32; i++) amax = Math.max(amax, Math.abs(x[i]!));
      const d = Math.fround(amax / 127);
      const id = d !== 0 ? Math.fround(1 / d) : 0;
      for (let i = b; i < b + 32; i++) {
        const y = Math.min(127, Math.max(-127, Math.fround(x[i]! * id)));
        out[i] = Math.fround(Math.sign(y) * Math.round(Math.abs(y)) * d);
      }
    }
    return out;
  }
  const cases = [
    { name: "decode, GQA", nQ: 1, nHead: 8, nKvHead: 2, hd: 64, nKv: 300, nCtx: 512, qPos0: 299, window: 0 },
    { name: "prefill, causal, MQA", nQ: 33, nHead: 4, nKvHead: 1, hd: 80, nKv: 33, nCtx: 64, qPos0: 0, window: 0 },
    { name: "chunked prefill with sliding window", nQ: 16, nHead: 4, nKvHead: 2, hd: 128, nKv: 200, nCtx: 256, qPos0: 184, window: 50 },
  ];
  for (const c of cases) {
    for (const kvType of ["f32", "f16", "q8_0"] as const) {
      if (kvType === "q8_0" && c.hd % 32 !== 0) continue; // Q8_0 rows are whole 32-value blocks
      test(`${c.name}, ${kvType} cache: flash and naive match f64 over the cache's values`, () => {
        const q = randn(c.nQ * c.nHead * c.hd, 1);
        const k = randn(c.nCtx * c.nKvHead * c.hd, 2);
        const v = randn(c.nCtx * c.nKvHead * c.hd, 3);
        let kt = f32(k, [c.nCtx, c.nKvHead, c.hd]);
        let vt = f32(v, [c.nCtx, c.nKvHead, c.hd]);
        let kRef = k;
        let vRef = v;
        if (kvType !== "f32") {
          kt = cpu.quantize(kt.reshape([c.nCtx * c.nKvHead, c.hd]), kvType).reshape([c.nCtx, c.nKvHead, c.hd]);
          vt = cpu.quantize(vt.reshape([c.nCtx * c.nKvHead, c.hd]), kvType).reshape([c.nCtx, c.nKvHead, c.hd]);
          const kd = Tensor.zeros("f32", [c.nCtx * c.nKvHead, c.hd]);
          const vd = Tensor.zeros("f32", [c.nCtx * c.nKvHead, c.hd]);
          cpu.dequantize(kt.reshape([c.nCtx * c.nKvHead, c.hd]), kd);
          cpu.dequantize(vt.reshape([c.nCtx * c.nKvHead, c.hd]), vd);
          kRef = kd.f32;
          vRef = vd.f32;
        }
        const scale = 1 / Math.sqrt(c.hd);
        // On 512-bit VNNI builds (x86_64-v4) a Q8_0 cache is scored from the query rounded to
        // Q8_0 (attention.zig quantizesQuery: d = amax/127, q = round(x/d)), as llama.cpp does;
        // the flash path is then held to the reference on that query. The naive path is not.
        const qFlash = kvType === "q8_0" && loadedLevel() === "x86_64-v4" ? roundQueryQ8(q) : q;
        const wantFlash = ref(qFlash, kRef, vRef, c.nQ, c.nHead, c.nKvHead, c.hd, c.nKv, c.qPos0, c.window, scale);
        const want = ref(q, kRef, vRef, c.nQ, c.nHead, c.nKvHead, c.hd, c.nKv, c.qPos0, c.window, scale);
        const opts = { qPos0: c.qPos0, window: c.window, scale };
        const qt = f32(q, [c.nQ, c.nHead, c.hd]);
        const flash = guarded([c.nQ, c.nHead, c.hd]);
        cpu.flashAttention(qt, kt, vt, c.nKv, flash.t, c.nHead, opts);
        flash.checkGuards();
        expect(maxAbsDiff(flash.t.f32, wantFlash)).toBeLessThan(1e-4);
        const naive = guarded([c.nQ, c.nHead, c.hd]);
        cpu.attentionNaive(qt, kt, vt, c.nKv, naive.t, c.nHead, opts, new Float32Array(c.nQ * c.nHead * c.nKv));
        naive.checkGuards();
        expect(maxAbsDiff(naive.t.f32, want)).toBeLessThan(1e-4);
        if (kvType === "q8_0") {
          // Against the unquantized cache: the 8-bit K/V cost a small, bounded error.
          const exact = ref(q, k, v, c.nQ, c.nHead, c.nKvHead, c.hd, c.nKv, c.qPos0, c.window, scale);
          const e = nmse(flash.t.f32, exact);
          expect(e).toBeGreaterThan(0);
          expect(e).toBeLessThan(1e-3);
        }
      });
    }
  }
  test("rejects n_kv beyond the cache and heads that do not group", () => {
    const q = Tensor.zeros("f32", [1, 4, 64]);
    const k = Tensor.zeros("f32", [16, 2, 64]);
    const out = Tensor.zeros("f32", [1, 4, 64]);
    expect(() => cpu.flashAttention(q, k, k, 17, out, 4, { qPos0: 16, scale: 1 })).toThrow(/n_kv 17 outside the cache of 16/);
    const k3 = Tensor.zeros("f32", [16, 3, 64]);
    expect(() => cpu.flashAttention(q, k3, k3, 4, out, 4, { qPos0: 3, scale: 1 })).toThrow(/not a multiple of n_kv_head 3/);
  });
});

describe("storeKV and the cache layouts", () => {
  const [nCtx, nKvHead, hd] = [7, 3, 64];
  for (const dtype of ["f32", "f16", "q8_0"] as const) {
    for (const layout of ["position-major", "head-major"] as const) {
      test(`${dtype} ${layout}: each (position, head) row as quantizeInto writes it, nothing else touched`, () => {
        const rowB = (hd / DTYPE_LAYOUT[dtype].blockSize) * DTYPE_LAYOUT[dtype].typeSize;
        const bytes = nCtx * nKvHead * rowB;
        const buf = new Uint8Array(bytes + 128).fill(GUARD);
        const shape = layout === "head-major" ? [nKvHead, nCtx, hd] : [nCtx, nKvHead, hd];
        const cache = new Tensor(dtype, shape, buf.subarray(64, 64 + bytes), "cache");
        const [pos0, n] = [2, 3];
        const src = randn(n * nKvHead * hd, 301);
        cpu.storeKV(f32(src, [n, nKvHead * hd], "k"), cache, pos0, layout);
        const written = new Set<number>();
        for (let i = 0; i < n; i++) {
          for (let h = 0; h < nKvHead; h++) {
            const row = layout === "head-major" ? h * nCtx + pos0 + i : (pos0 + i) * nKvHead + h;
            written.add(row);
            const want = new Uint8Array(rowB);
            cpu.quantizeInto(f32(src.subarray((i * nKvHead + h) * hd, (i * nKvHead + h + 1) * hd), [1, hd]), new Tensor(dtype, [1, hd], want));
            expect(buf.subarray(64 + row * rowB, 64 + (row + 1) * rowB)).toEqual(want);
          }
        }
        for (let row = 0; row < nCtx * nKvHead; row++) {
          if (!written.has(row)) expect(buf.subarray(64 + row * rowB, 64 + (row + 1) * rowB).every((b) => b === GUARD)).toBe(true);
        }
        for (let i = 0; i < 64; i++) expect(buf[i]).toBe(GUARD);
        for (let i = 64 + bytes; i < buf.length; i++) expect(buf[i]).toBe(GUARD);
      });
    }
  }

  test("flash attention reads a head-major cache as the same positions position-major (same bits)", () => {
    const [nHead, nKv] = [6, nCtx];
    const q = f32(randn(2 * nHead * hd, 302), [2, nHead, hd], "q");
    const rows = randn(nKv * nKvHead * hd, 303);
    const vrows = randn(nKv * nKvHead * hd, 304);
    const outs: Float32Array[] = [];
    for (const layout of ["position-major", "head-major"] as const) {
      const shape = layout === "head-major" ? [nKvHead, nCtx, hd] : [nCtx, nKvHead, hd];
      const k = Tensor.zeros("f16", shape);
      const v = Tensor.zeros("f16", shape);
      cpu.storeKV(f32(rows, [nKv, nKvHead * hd]), k, 0, layout);
      cpu.storeKV(f32(vrows, [nKv, nKvHead * hd]), v, 0, layout);
      const out = Tensor.zeros("f32", [2, nHead, hd]);
      cpu.flashAttention(q, k, v, nKv, out, nHead, { qPos0: nKv - 2, scale: 0.125 }, layout);
      outs.push(out.f32.slice());
    }
    expect(outs[1]).toEqual(outs[0]!);
  });

  test("rejects positions outside the cache and rows of the wrong width before any pointer crosses", () => {
    const cache = Tensor.zeros("f16", [nKvHead, nCtx, hd]);
    expect(() => cpu.storeKV(Tensor.zeros("f32", [2, nKvHead * hd]), cache, 6, "head-major")).toThrow(/positions \[6, 8\) outside the cache of 7 positions/);
    expect(() => cpu.storeKV(Tensor.zeros("f32", [1, hd]), cache, 0, "head-major")).toThrow(/n_kv_head · head_dim = 192/);
    expect(() => cpu.storeKV(Tensor.zeros("f32", [1, nKvHead * hd]), Tensor.zeros("bf16", [nKvHead, nCtx, hd]), 0, "head-major")).toThrow(/storeKV/);
  });
});

describe("elementwise, softmax, embedding lookup", () => {
  test("softmax rows sum to one and match f64", () => {
    const x = randn(3 * 1001, 5, 4);
    const t = f32(x.slice(), [3, 1001]);
    cpu.softmax(t);
    for (let r = 0; r < 3; r++) {
      const row = x.subarray(r * 1001, (r + 1) * 1001);
      const mx = Math.max(...row);
      const z = row.reduce((a, b) => a + Math.exp(b - mx), 0);
      const want = Array.from(row, (v) => Math.exp(v - mx) / z);
      expect(maxAbsDiff(t.f32.subarray(r * 1001, (r + 1) * 1001), want)).toBeLessThan(1e-6);
    }
  });
  test("getRows dequantizes exactly the requested rows and rejects out-of-range ids", () => {
    const table = cpu.quantize(f32(randn(10 * 64, 9), [10, 64]), "q8_0");
    const all = Tensor.zeros("f32", [10, 64]);
    cpu.dequantize(table, all);
    const out = Tensor.zeros("f32", [3, 64]);
    cpu.getRows(table, Int32Array.from([9, 0, 4]), out);
    expect(out.f32.subarray(0, 64)).toEqual(all.f32.subarray(9 * 64, 10 * 64));
    expect(out.f32.subarray(128, 192)).toEqual(all.f32.subarray(4 * 64, 5 * 64));
    expect(() => cpu.getRows(table, Int32Array.from([10]), Tensor.zeros("f32", [1, 64]))).toThrow(/row id 10 outside \[0, 10\)/);
  });
  test("add, mul, scale", () => {
    const a = randn(37, 1);
    const b = randn(37, 2);
    const t = f32(a.slice(), [37]);
    cpu.add(t, f32(b, [37]));
    expect(maxAbsDiff(t.f32, a.map((v, i) => v + b[i]!))).toBe(0);
    cpu.mul(t, f32(b, [37]));
    cpu.scale(t, 0.5);
    expect(maxAbsDiff(t.f32, a.map((v, i) => Math.fround(Math.fround(v + b[i]!) * b[i]!) * 0.5))).toBe(0);
    expect(() => cpu.add(t, Tensor.zeros("f32", [36]))).toThrow(/add: .*must have shape \[37\]/);
  });
});

describe("native buffers and threads", () => {
  test("NativeBuffer is zeroed, page-aligned, usable by kernels, and throws after free", () => {
    const nb = new NativeBuffer(1 << 16);
    expect(nb.bytes.every((b) => b === 0)).toBe(true);
    const t = nb.tensor("f32", [4, 8]);
    t.f32.set(randn(32, 1));
    cpu.scale(t, 2);
    nb.free();
    expect(() => nb.bytes).toThrow(/after free/);
  });
  test("setThreads validates and takes effect; results do not depend on the thread count", () => {
    expect(() => cpu.setThreads(0)).toThrow(/threads must be an integer/);
    const w = cpu.quantize(f32(randn(512 * 256, 3), [512, 256]), "q4_0");
    const x = f32(randn(4 * 256, 4), [4, 256]);
    const outs = [1, 2, 3].map((n) => {
      expect(cpu.setThreads(n)).toBe(n);
      const o = Tensor.zeros("f32", [4, 512]);
      cpu.matmul(w, x, o);
      return o.f32;
    });
    expect(outs[1]).toEqual(outs[0]!);
    expect(outs[2]).toEqual(outs[0]!);
    cpu.setThreads(2);
  });
});
