/**
 * The elementwise kernel families (cuda/norm.cu, rope.cu, activations.cu, sampling.cu) through
 * their launchers, against kiln's CPU kernels (src/backends/cpu.ts) on awkward shapes: rows 1
 * and 3, cols 1, 7, 33, 257, 1000, head dims 64/128/256, partial rotations, both RoPE modes with
 * and without frequency factors. Outputs sit between guard bytes; inputs at unaligned offsets.
 *
 * Tolerances: the kernels follow the CPU's order of f32 operations (RMSNorm sums squares in f64
 * and rounds the mean like norm.zig; RoPE uses the same f32 θ recurrence and double cos/sin), so
 * norm and rope agree to a few ulps (FMA contraction on a GPU is the remaining difference);
 * exp-based kernels differ by expf's last bits (CPU: a polynomial, GPU: ≤ 2 ulp expf).
 */
import { expect, test } from "bun:test";
import * as cpu from "../../src/backends/cpu";
import { add, addBias, f32ToF16, geluTanhMul, mul, scale, siluMul } from "../../src/backends/cuda/kernels/activations";
import { rmsNorm, rmsNormHeads } from "../../src/backends/cuda/kernels/norm";
import { rope } from "../../src/backends/cuda/kernels/rope";
import { argmaxRows, softmaxRows } from "../../src/backends/cuda/kernels/sampling";
import { type DeviceBuffer, type DeviceRuntime, subBuffer } from "../../src/backends/cuda/runtime";
import { Tensor } from "../../src/tensor";
import { maxAbsDiff, randn, thrownKilnError } from "../helpers";
import { f32Bytes, forEachRuntime, GUARD_BYTE, guarded } from "./runtimes";

/** max |got − want| relative to max(1e-30, max |want|). */
function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < want.length; i++) m = Math.max(m, Math.abs(want[i]!));
  return maxAbsDiff(got, want) / Math.max(m, 1e-30);
}

function expectClose(what: string, got: Float32Array, want: Float32Array, tol: number): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(want[i]!) !== Number.isNaN(got[i]!)) throw new Error(`${what}: [${i}] got ${got[i]}, want ${want[i]}`);
  }
  const e = relErr(got, want);
  if (!(e <= tol)) throw new Error(`${what}: relative max error ${e} > ${tol}`);
}

/** A device copy of `data` at a 4-byte (not 256-byte) aligned offset, followed by guard bytes. */
function input(rt: DeviceRuntime, data: Float32Array | Int32Array, label: string) {
  const g = guarded(rt, data.byteLength + 4, label, undefined);
  const buf = subBuffer(g.buf, 4, data.byteLength, label);
  rt.upload(buf, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  const read = () => {
    const out = new Float32Array(data.length);
    rt.download(buf, f32Bytes(out));
    return out;
  };
  const checkGuard = () => {
    g.checkGuard();
    const lead = new Uint8Array(4);
    rt.download(g.buf, lead);
    if (lead.some((v) => v !== GUARD_BYTE)) throw new Error(`${label}: a guard byte before the start was overwritten`);
  };
  return { buf, read, checkGuard };
}

const t2 = (data: Float32Array, rows: number, cols: number) => Tensor.fromF32(data.slice(), [rows, cols]);

const SHAPES: [number, number][] = [
  [1, 1],
  [3, 7],
  [1, 33],
  [3, 257],
  [2, 1000],
];

await forEachRuntime(import.meta.file, (rt) => {
  test("rmsNorm with and without residual and weight, out separate or in place", () => {
    let seed = 1;
    for (const [rows, cols] of SHAPES) {
      for (const withRes of [false, true]) {
        for (const withW of [false, true]) {
          for (const inPlace of [false, true]) {
            const x = randn(rows * cols, seed++, 3);
            const res = randn(rows * cols, seed++);
            const w = randn(cols, seed++);
            const eps = 1e-5;
            // CPU
            const cx = t2(x, rows, cols);
            const cout = inPlace ? cx : Tensor.zeros("f32", [rows, cols]);
            cpu.rmsNorm(cx, withW ? Tensor.fromF32(w, [cols]) : null, cout, eps, withRes ? { residual: t2(res, rows, cols) } : {});
            // device
            const dx = input(rt, x, "x");
            const dres = withRes ? input(rt, res, "residual") : null;
            const dw = withW ? input(rt, w, "weight") : null;
            const dout = inPlace ? dx : input(rt, new Float32Array(rows * cols), "out");
            rmsNorm(rt, dx.buf, dres?.buf ?? null, dw?.buf ?? null, dout.buf, rows, cols, eps);
            const what = `rmsNorm ${rows}x${cols} res=${withRes} w=${withW} inPlace=${inPlace}`;
            expectClose(what, dout.read(), cout.f32, 1e-6);
            if (withRes && !inPlace) expectClose(`${what} (x after the residual add)`, dx.read(), cx.f32, 0);
            for (const b of [dx, dres, dw, dout]) b?.checkGuard();
          }
        }
      }
    }
  });

  test("rmsNorm refuses short buffers, bad sizes and shifted aliasing (KilnError naming them)", () => {
    const x = rt.alloc(3 * 7 * 4, "xbuf");
    const w = rt.alloc(6 * 4, "wshort");
    expect(thrownKilnError(() => rmsNorm(rt, x, null, w, x, 3, 7, 1e-5))?.message).toContain("weight (wshort) has 24 bytes, needs 28");
    expect(thrownKilnError(() => rmsNorm(rt, x, null, null, x, 4, 7, 1e-5))?.message).toContain("x (xbuf)");
    expect(thrownKilnError(() => rmsNorm(rt, x, null, null, x, 3, 0, 1e-5))?.message).toContain("cols");
    expect(thrownKilnError(() => rmsNorm(rt, x, null, null, x, 3, 7, Number.NaN))?.message).toContain("eps");
    const shifted = subBuffer(x, 4, 20 * 4, "shifted");
    expect(thrownKilnError(() => rmsNorm(rt, x, null, null, shifted, 1, 7, 1e-5))?.message).toContain("overlap");
    rt.free(x);
    rt.free(w);
  });

  test("rmsNormHeads per head, head dims 64/128/256", () => {
    let seed = 100;
    for (const rows of [1, 3]) {
      for (const nHead of [1, 3, 4]) {
        for (const headDim of [64, 128, 256]) {
          const x = randn(rows * nHead * headDim, seed++, 2);
          const w = randn(headDim, seed++);
          const cx = t2(x, rows, nHead * headDim);
          cpu.rmsNormHeads(cx, nHead, Tensor.fromF32(w, [headDim]), 1e-6);
          const dx = input(rt, x, "x");
          const dw = input(rt, w, "w");
          rmsNormHeads(rt, dx.buf, dw.buf, rows, nHead, headDim, 1e-6);
          expectClose(`rmsNormHeads ${rows}x${nHead}x${headDim}`, dx.read(), cx.f32, 1e-6);
          dx.checkGuard();
        }
      }
    }
    const small = rt.alloc(64 * 4, "xs");
    expect(thrownKilnError(() => rmsNormHeads(rt, small, small, 1, 2, 64, 1e-6))?.message).toContain("x (xs) has 256 bytes, needs 512");
    rt.free(small);
  });

  test("rope: both modes, partial rotation, frequency factors and scale, large positions", () => {
    let seed = 200;
    let checked = 0;
    for (const rows of [1, 3]) {
      for (const [nHead, headDim] of [
        [1, 64],
        [3, 128],
        [2, 256],
      ] as const) {
        for (const nRot of [headDim, headDim / 2]) {
          for (const mode of ["normal", "neox"] as const) {
            for (const withFF of [false, true]) {
              const x = randn(rows * nHead * headDim, seed++);
              const positions = Int32Array.from({ length: rows }, (_, i) => [0, 17, 4099, 131071][(i + seed) % 4]!);
              const ff = Float32Array.from({ length: nRot / 2 }, (_, k) => 1 + (k % 5) * 0.75);
              const freqBase = withFF ? 500000 : 10000;
              const freqScale = withFF ? 0.25 : 1;
              const cx = t2(x, rows, nHead * headDim);
              cpu.rope(cx, nHead, positions, { nRot, mode, freqBase, freqScale, freqFactors: withFF ? Tensor.fromF32(ff, [nRot / 2]) : undefined });
              const dx = input(rt, x, "x");
              const dpos = input(rt, positions, "positions");
              const dff = withFF ? input(rt, ff, "ff") : null;
              rope(rt, dx.buf, dpos.buf, dff?.buf ?? null, rows, nHead, headDim, nRot, mode, freqBase, freqScale);
              const got = dx.read();
              expectClose(`rope ${rows}x${nHead}x${headDim} nRot=${nRot} ${mode} ff=${withFF}`, got, cx.f32, 2e-6);
              dx.checkGuard();
              // Teeth: the other mode gives a different answer on the same data (unless nothing rotates).
              if (positions.some((p) => p !== 0)) {
                const other = t2(x, rows, nHead * headDim);
                cpu.rope(other, nHead, positions, { nRot, mode: mode === "normal" ? "neox" : "normal", freqBase, freqScale, freqFactors: withFF ? Tensor.fromF32(ff, [nRot / 2]) : undefined });
                expect(relErr(got, other.f32)).toBeGreaterThan(1e-3);
                checked++;
              }
            }
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(10);
  });

  test("rope refuses odd or oversized nRot, a bad mode, short positions", () => {
    const x = rt.alloc(2 * 64 * 4, "x");
    const pos = rt.alloc(4, "pos1");
    expect(thrownKilnError(() => rope(rt, x, pos, null, 1, 2, 64, 63, "normal", 10000, 1))?.message).toContain("nRot 63");
    expect(thrownKilnError(() => rope(rt, x, pos, null, 1, 2, 64, 66, "normal", 10000, 1))?.message).toContain("nRot 66");
    expect(thrownKilnError(() => rope(rt, x, pos, null, 1, 2, 64, 64, 1 as never, 10000, 1))?.message).toContain("mode");
    expect(thrownKilnError(() => rope(rt, x, pos, null, 2, 1, 64, 64, "neox", 10000, 1))?.message).toContain("positions (pos1) has 4 bytes, needs 8");
    expect(thrownKilnError(() => rope(rt, x, pos, pos, 1, 2, 64, 64, "neox", 10000, 1))?.message).toContain("freqFactors (pos1)");
    rt.free(x);
    rt.free(pos);
  });

  test("siluMul and geluTanhMul, separate output and in place over gate", () => {
    let seed = 300;
    for (const n of [1, 7, 33, 257, 1000, 70001]) {
      for (const [name, dev, ref] of [
        ["siluMul", siluMul, cpu.siluMul],
        ["geluTanhMul", geluTanhMul, cpu.geluTanhMul],
      ] as const) {
        for (const inPlace of [false, true]) {
          const g = randn(n, seed++, 4);
          const u = randn(n, seed++);
          const cg = Tensor.fromF32(g.slice(), [n]);
          const cout = inPlace ? cg : Tensor.zeros("f32", [n]);
          ref(cg, Tensor.fromF32(u, [n]), cout);
          const dg = input(rt, g, "gate");
          const du = input(rt, u, "up");
          const dout = inPlace ? dg : input(rt, new Float32Array(n), "out");
          dev(rt, dg.buf, du.buf, dout.buf, n);
          expectClose(`${name} n=${n} inPlace=${inPlace}`, dout.read(), cout.f32, 3e-6);
          for (const b of [dg, du, dout]) b.checkGuard();
        }
      }
    }
    const a = rt.alloc(40, "a");
    expect(thrownKilnError(() => siluMul(rt, a, a, a, 11))?.message).toContain("gate (a) has 40 bytes, needs 44");
    expect(thrownKilnError(() => geluTanhMul(rt, a, a, subBuffer(a, 4, 36, "a+1"), 9))?.message).toContain("overlap");
    rt.free(a);
  });

  test("add, mul, scale, addBias", () => {
    let seed = 400;
    for (const [rows, cols] of SHAPES) {
      const n = rows * cols;
      const a = randn(n, seed++);
      const b = randn(n, seed++);
      const bias = randn(cols, seed++);
      for (const [name, dev, ref] of [
        ["add", add, cpu.add],
        ["mul", mul, cpu.mul],
      ] as const) {
        const ca = Tensor.fromF32(a.slice(), [n]);
        ref(ca, Tensor.fromF32(b, [n]));
        const da = input(rt, a, "dst");
        const db = input(rt, b, "src");
        dev(rt, da.buf, db.buf, n);
        expectClose(`${name} n=${n}`, da.read(), ca.f32, 0);
        da.checkGuard();
      }
      {
        const ca = Tensor.fromF32(a.slice(), [n]);
        cpu.scale(ca, -0.37);
        const da = input(rt, a, "x");
        scale(rt, da.buf, n, -0.37);
        expectClose(`scale n=${n}`, da.read(), ca.f32, 0);
        da.checkGuard();
      }
      {
        const ca = t2(a, rows, cols);
        cpu.addBias(ca, Tensor.fromF32(bias, [cols]));
        const da = input(rt, a, "x");
        const dbias = input(rt, bias, "bias");
        addBias(rt, da.buf, dbias.buf, rows, cols);
        expectClose(`addBias ${rows}x${cols}`, da.read(), ca.f32, 0);
        da.checkGuard();
      }
    }
    const x = rt.alloc(28, "x7");
    expect(thrownKilnError(() => addBias(rt, x, x, 2, 7))?.message).toContain("x (x7) has 28 bytes, needs 56");
    expect(thrownKilnError(() => add(rt, x, x, 8))?.message).toContain("x7");
    expect(thrownKilnError(() => scale(rt, x, 7, Number.POSITIVE_INFINITY))?.message).toContain("s must be");
    rt.free(x);
  });

  test("f32ToF16 rounds to nearest even like Float16Array (ties, overflow, subnormals, NaN)", () => {
    const special = [0, -0, 1, -1, 65504, 65520, 65519.99, 1e6, -1e6, 2 ** -24, 2 ** -25, 2 ** -25 * 1.0001, 3 * 2 ** -26, 6.1e-5, 1 + 2 ** -11, 1 + 3 * 2 ** -11, Number.NaN, Infinity, -Infinity];
    const src = Float32Array.from([...special, ...randn(1000, 500, 100)]);
    const want = new Uint16Array(new Float16Array(src).buffer);
    const dsrc = input(rt, src, "src");
    const n = src.length;
    const g = guarded(rt, n * 2, "dst");
    f32ToF16(rt, dsrc.buf, g.buf, n);
    const got = new Uint16Array(g.read().buffer);
    for (let i = 0; i < n; i++) {
      if (Number.isNaN(src[i]!)) expect((got[i]! & 0x7c00) === 0x7c00 && (got[i]! & 0x3ff) !== 0).toBe(true);
      else if (got[i] !== want[i]) throw new Error(`f32ToF16(${src[i]}): got 0x${got[i]!.toString(16)}, want 0x${want[i]!.toString(16)}`);
    }
    g.checkGuard();
    expect(thrownKilnError(() => f32ToF16(rt, dsrc.buf, subBuffer(g.buf, 0, n * 2 - 2, "dst-short"), n))?.message).toContain("dst (dst-short)");
  });

  test("softmaxRows, with -inf entries and a row of only -inf", () => {
    let seed = 600;
    for (const [rows, cols] of SHAPES) {
      const x = randn(rows * cols, seed++, 5);
      if (cols > 3) x[1] = -Infinity;
      if (rows === 3) for (let c = 0; c < cols; c++) x[cols + c] = -Infinity;
      const cx = t2(x, rows, cols);
      cpu.softmax(cx);
      const dx = input(rt, x, "x");
      softmaxRows(rt, dx.buf, rows, cols);
      const got = dx.read();
      expectClose(`softmax ${rows}x${cols}`, got, cx.f32, 3e-6);
      if (rows === 3) for (let c = 0; c < cols; c++) expect(got[cols + c]).toBe(0);
      dx.checkGuard();
    }
  });

  test("argmaxRows: first index of the max, NaN never wins, -1 when nothing is above -inf", () => {
    let seed = 700;
    for (const [rows, cols] of [...SHAPES, [3, 5000] as [number, number]]) {
      const x = randn(rows * cols, seed++);
      const want: number[] = [];
      for (let r = 0; r < rows; r++) {
        const row = x.subarray(r * cols, (r + 1) * cols);
        if (r === 1 && cols > 3) {
          row[0] = Number.NaN;
          row[cols - 1] = 100;
          row[2] = 100; // a tie: the first wins
        }
        let best = -1;
        let bv = -Infinity;
        for (let i = 0; i < cols; i++) if (row[i]! > bv) (bv = row[i]!), (best = i);
        want.push(best);
      }
      const dx = input(rt, x, "x");
      const out = guarded(rt, rows * 4, "out");
      argmaxRows(rt, dx.buf, out.buf, rows, cols);
      expect([...new Int32Array(out.read().buffer)]).toEqual(want);
      out.checkGuard();
    }
    const x = Float32Array.from([Number.NaN, -Infinity, Number.NaN, 1, Number.NaN, 2, 2, 0]);
    const dx = input(rt, x, "x");
    const out = guarded(rt, 8, "out");
    argmaxRows(rt, dx.buf, out.buf, 2, 4);
    expect([...new Int32Array(out.read().buffer)]).toEqual([3, 1]);
    const allBad = input(rt, Float32Array.from([Number.NaN, -Infinity, Number.NaN]), "bad");
    argmaxRows(rt, allBad.buf, out.buf, 1, 3);
    expect(new Int32Array(out.read().buffer)[0]).toBe(-1);
    expect(thrownKilnError(() => argmaxRows(rt, dx.buf, subBuffer(out.buf, 0, 4, "out4"), 2, 4))?.message).toContain("out (out4)");
  });
});
