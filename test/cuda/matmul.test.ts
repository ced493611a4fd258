/**
 * The weight kernels (cuda/matvec.cu, cuda/matmul.cu, cuda/embed.cu, dequant.cuh) through their
 * launchers (src/backends/cuda/kernels/matmul.ts) against kiln's CPU: for every weight type,
 * random f32 rows quantized by the CPU quantizer (cpu.quantize), the reference computed in f64
 * from the CPU's dequantization of those same bytes (cpu.dequantize), so only the kernels'
 * arithmetic is measured, never the quantization error. Awkward shapes: n = 1, 17, 70 output
 * rows; k = one and three blocks (32/96, 256/768; 13 and 40 for the float types, 13 taking the
 * element-wise path and 40 the 16-byte one); m = 1, 3, 8 (mat-vec) and 9, 33, 70 (matmul); x
 * strides that do and do not allow 16-byte loads. Outputs sit between guard bytes.
 *
 * Tolerances:
 *   - get_rows: bit-exact (the kernels dequantize exactly as the CPU).
 *   - mat-vec: f32 products and sums of exact weights: |err| ≤ 1e-5 · Σ|w·x| per output (f32
 *     rounding accumulates to about √k · 2^-24 of that sum; 1e-5 leaves a wide margin while a
 *     single wrong weight of a 768-long row moves the result by ~1e-3 of it).
 *   - tensor-core matmul: x and the weights are rounded to f16 (relative error ≤ 2^-11 each),
 *     so each product is off by ≤ ~2^-10 of itself: |err| ≤ 2e-3 · Σ|w·x| per output, and
 *     NMSE < 1e-5 over the whole output (random rounding errors give ~1e-7).
 *   - gated mat-vec: the same sums as the plain mat-vec (checked against it to 1e-6 of
 *     (|g| + 1)·|u|, the activation's own f32 rounding) and against the f64 reference.
 */
import { describe, expect, test } from "bun:test";
import * as cpu from "../../src/backends/cpu";
import { type DeviceBuffer, type DeviceRuntime, subBuffer } from "../../src/backends/cuda/runtime";
import { gatedFfn, getRows, linear, matmul, matvec, matvecGated, MATVEC_MAX_ROWS } from "../../src/backends/cuda/kernels/matmul";
import { DTYPE_LAYOUT, type DType, Tensor } from "../../src/tensor";
import { randn, thrownKilnError } from "../helpers";
import { forEachRuntime } from "./runtimes";

const TYPES: DType[] = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k"];
const GUARD = 0xa5;
const GUARD_BYTES = 64;

/**
 * [n, m, extra x stride]: every n of 1, 17, 70 with every m; the x stride k + 1 or k + 3 makes
 * the kernels take their element-wise x loads instead of the 16-byte ones.
 */
const MATVEC_SHAPES = [1, 17, 70].flatMap((n) => [1, 3, 8].map((m, i) => [n, m, i === 1 ? 3 : n === 17 ? 1 : 0] as const));
const MATMUL_SHAPES = [1, 17, 70].flatMap((n) => [9, 33, 70].map((m, i) => [n, m, i === 1 ? 1 : 0] as const));

/** k values per type: one block and three (floats: an odd length and a 16-byte-vector one). */
function kValues(t: DType): number[] {
  const bs = DTYPE_LAYOUT[t].blockSize;
  return bs === 1 ? [13, 40] : [bs, 3 * bs];
}

/** A quantized weight [n][k]: its bytes and the CPU's dequantization of them. */
function makeWeight(t: DType, n: number, k: number, seed: number): { bytes: Uint8Array; deq: Float32Array } {
  const src = Tensor.fromF32(randn(n * k, seed, 0.5), [n, k]);
  const q = cpu.quantize(src, t);
  return { bytes: q.bytes.slice(), deq: dequant(t, q.bytes, n, k) };
}

function dequant(t: DType, bytes: Uint8Array, n: number, k: number): Float32Array {
  const out = Tensor.zeros("f32", [n, k]);
  cpu.dequantize(new Tensor(t, [n, k], bytes), out);
  return out.f32.slice();
}

/** A device buffer with guard bytes before and after it (16-byte aligned start). */
function guardedBuf(rt: DeviceRuntime, byteLength: number, label: string, init?: Uint8Array) {
  const whole = rt.alloc(byteLength + 2 * GUARD_BYTES, label);
  const bytes = new Uint8Array(byteLength + 2 * GUARD_BYTES).fill(GUARD);
  if (init) bytes.set(init.subarray(0, byteLength), GUARD_BYTES);
  rt.upload(whole, bytes);
  const buf = subBuffer(whole, GUARD_BYTES, byteLength, label);
  return {
    buf,
    whole,
    read(): Uint8Array {
      const all = new Uint8Array(byteLength + 2 * GUARD_BYTES);
      rt.download(whole, all);
      for (let i = 0; i < GUARD_BYTES; i++) {
        if (all[i] !== GUARD) throw new Error(`${label}: guard byte ${GUARD_BYTES - i} before the start was overwritten`);
        if (all[GUARD_BYTES + byteLength + i] !== GUARD) throw new Error(`${label}: guard byte ${i} past the end was overwritten`);
      }
      return all.slice(GUARD_BYTES, GUARD_BYTES + byteLength);
    },
    f32(): Float32Array {
      return new Float32Array(this.read().buffer);
    },
    free(): void {
      rt.free(whole);
    },
  };
}

const f32Bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** ref[r][j] = Σ w[j]·x[r] in f64, and the scale Σ|w·x| of each. x rows are ldx apart. */
function reference(w: Float32Array, n: number, k: number, x: Float32Array, m: number, ldx: number) {
  const ref = new Float64Array(m * n);
  const mag = new Float64Array(m * n);
  for (let r = 0; r < m; r++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      let a = 0;
      for (let e = 0; e < k; e++) {
        const p = w[j * k + e]! * x[r * ldx + e]!;
        s += p;
        a += Math.abs(p);
      }
      ref[r * n + j] = s;
      mag[r * n + j] = a;
    }
  }
  return { ref, mag };
}

/** Reads out [m][n] (row stride ldo) and checks it against ref within tol·mag per element. */
function expectClose(what: string, got: Float32Array, ldo: number, ref: Float64Array, mag: Float64Array, n: number, m: number, tol: number): { nmse: number } {
  let num = 0;
  let den = 0;
  let worst = 0;
  let at = "";
  for (let r = 0; r < m; r++) {
    for (let j = 0; j < n; j++) {
      const g = got[r * ldo + j]!;
      const want = ref[r * n + j]!;
      const d = g - want;
      num += d * d;
      den += want * want;
      const rel = Math.abs(d) / (mag[r * n + j]! + 1e-30);
      if (!(rel <= worst)) {
        worst = rel;
        at = `row ${r}, out ${j}: got ${g}, want ${want}`;
      }
    }
  }
  if (!(worst <= tol)) throw new Error(`${what}: error ${worst.toExponential(2)} of Σ|w·x| > ${tol} (${at})`);
  return { nmse: num / Math.max(den, 1e-30) };
}

function silu(g: number): number {
  return g / (1 + Math.exp(-g));
}
function geluTanh(g: number): number {
  const u = Math.sqrt(2 / Math.PI) * g * (1 + 0.044715 * g * g);
  return g / (1 + Math.exp(-2 * u));
}

await forEachRuntime(import.meta.file, (rt) => {
  /** Uploads w with guards; returns the device buffer. */
  const upload = (bytes: Uint8Array, label: string) => guardedBuf(rt, bytes.byteLength, label, bytes);

  describe("matvec (m ≤ 8) vs the f64 reference of the dequantized weights", () => {
    for (const t of TYPES) {
      test(t, () => {
        let seed = 1;
        for (const k of kValues(t)) {
          for (const [n, m, ldxPad] of MATVEC_SHAPES) {
            const w = makeWeight(t, n, k, seed++);
            const ldx = k + ldxPad;
            const ldo = n + (m > 1 ? 2 : 0);
            const x = randn(m * ldx, seed++);
            const wb = upload(w.bytes, `w ${t}`);
            const xb = upload(f32Bytes(x), "x");
            const ob = guardedBuf(rt, ((m - 1) * ldo + n) * 4, "out");
            matvec(rt, t, wb.buf, xb.buf, ob.buf, n, k, m, ldx, ldo);
            rt.synchronize();
            const { ref, mag } = reference(w.deq, n, k, x, m, ldx);
            expectClose(`matvec ${t} n ${n} k ${k} m ${m} ldx ${ldx}`, ob.f32(), ldo, ref, mag, n, m, 1e-5);
            for (const b of [wb, xb, ob]) b.free();
          }
        }
      });
    }
  });

  describe("matmul (tensor cores, f16 tiles) vs the f64 reference", () => {
    for (const t of TYPES) {
      test(t, () => {
        let seed = 100;
        for (const k of kValues(t)) {
          for (const [n, m, ldxPad] of MATMUL_SHAPES) {
            const w = makeWeight(t, n, k, seed++);
            const ldx = k + ldxPad;
            const x = randn(m * ldx, seed++);
            const wb = upload(w.bytes, `w ${t}`);
            const xb = upload(f32Bytes(x), "x");
            const ob = guardedBuf(rt, m * n * 4, "out");
            matmul(rt, t, wb.buf, xb.buf, ob.buf, n, k, m, ldx, n);
            rt.synchronize();
            const { ref, mag } = reference(w.deq, n, k, x, m, ldx);
            const { nmse } = expectClose(`matmul ${t} n ${n} k ${k} m ${m}`, ob.f32(), n, ref, mag, n, m, 2e-3);
            expect(nmse).toBeLessThan(1e-5);
            for (const b of [wb, xb, ob]) b.free();
          }
        }
      });
    }
  });

  test("linear picks the mat-vec up to MATVEC_MAX_ROWS rows and the matmul above", () => {
    expect(MATVEC_MAX_ROWS).toBe(8);
    const t: DType = "q8_0";
    const n = 17;
    const k = 64;
    const w = makeWeight(t, n, k, 7);
    const wb = upload(w.bytes, "w");
    for (const m of [8, 9]) {
      const x = randn(m * k, 8 + m);
      const xb = upload(f32Bytes(x), "x");
      const ob = guardedBuf(rt, m * n * 4, "out");
      linear(rt, t, wb.buf, xb.buf, ob.buf, n, k, m);
      const { ref, mag } = reference(w.deq, n, k, x, m, k);
      // The mat-vec's f32 tolerance holds only on its path; the f16 path's error is larger.
      const got = ob.f32();
      expectClose(`linear m ${m}`, got, n, ref, mag, n, m, m <= 8 ? 1e-5 : 2e-3);
      if (m > 8) {
        let worst = 0;
        for (let i = 0; i < m * n; i++) worst = Math.max(worst, Math.abs(got[i]! - ref[i]!) / mag[i]!);
        expect(worst).toBeGreaterThan(1e-6); // f16 rounding is visible: the tensor-core path ran
      }
      xb.free();
      ob.free();
    }
    wb.free();
  });

  describe("gated mat-vec: act(gate·x)·(up·x) in one pass", () => {
    for (const t of ["f32", "bf16", "q4_0", "q5_1", "q4_k", "q6_k"] as DType[]) {
      test(t, () => {
        const k = kValues(t)[1]!;
        for (const [n, m, act] of [
          [17, 1, 0],
          [70, 3, 1],
          [1, 8, 0],
        ] as const) {
          const g = makeWeight(t, n, k, 300 + n + m);
          const u = makeWeight(t, n, k, 400 + n + m);
          const x = randn(m * k, 500 + m);
          const gb = upload(g.bytes, "gate");
          const ub = upload(u.bytes, "up");
          const xb = upload(f32Bytes(x), "x");
          const ob = guardedBuf(rt, m * n * 4, "out");
          const pg = guardedBuf(rt, m * n * 4, "plain gate");
          const pu = guardedBuf(rt, m * n * 4, "plain up");
          matvecGated(rt, t, gb.buf, ub.buf, xb.buf, ob.buf, n, k, m, act);
          matvec(rt, t, gb.buf, xb.buf, pg.buf, n, k, m);
          matvec(rt, t, ub.buf, xb.buf, pu.buf, n, k, m);
          const got = ob.f32();
          const gp = pg.f32();
          const up = pu.f32();
          const f = act === 0 ? silu : geluTanh;
          const rg = reference(g.deq, n, k, x, m, k);
          const ru = reference(u.deq, n, k, x, m, k);
          for (let i = 0; i < m * n; i++) {
            // Same sums as the plain mat-vec, then the activation in f32.
            const want = f(gp[i]!) * up[i]!;
            expect(Math.abs(got[i]! - want)).toBeLessThanOrEqual(1e-6 * (Math.abs(gp[i]!) + 1) * Math.abs(up[i]!) + 1e-30);
            // And the f64 reference of the dequantized weights (act is 1.1-Lipschitz).
            const exact = f(rg.ref[i]!) * ru.ref[i]!;
            const bound = 1e-5 * (1.2 * rg.mag[i]! * Math.abs(ru.ref[i]!) + (Math.abs(rg.ref[i]!) + 1) * ru.mag[i]!);
            expect(Math.abs(got[i]! - exact)).toBeLessThanOrEqual(bound);
          }
          for (const b of [gb, ub, xb, ob, pg, pu]) b.free();
        }
      });
    }
  });

  test("gatedFfn: fused mat-vec for m ≤ 8, two matmuls + siluMul/geluTanhMul above", () => {
    const t: DType = "q5_0";
    const n = 33;
    const k = 64;
    const g = makeWeight(t, n, k, 11);
    const u = makeWeight(t, n, k, 12);
    const gb = upload(g.bytes, "gate");
    const ub = upload(u.bytes, "up");
    for (const [m, act] of [
      [3, "silu"],
      [20, "gelu_tanh"],
      [20, "silu"],
    ] as const) {
      const x = randn(m * k, 13 + m);
      const xb = upload(f32Bytes(x), "x");
      const ob = guardedBuf(rt, m * n * 4, "out");
      const tb = guardedBuf(rt, m * n * 4, "tmp");
      gatedFfn(rt, t, gb.buf, ub.buf, xb.buf, ob.buf, n, k, m, act, tb.buf);
      const got = ob.f32();
      tb.read(); // guards
      const f = act === "silu" ? silu : geluTanh;
      const rg = reference(g.deq, n, k, x, m, k);
      const ru = reference(u.deq, n, k, x, m, k);
      const want = Array.from({ length: m * n }, (_, i) => f(rg.ref[i]!) * ru.ref[i]!);
      let num = 0;
      let den = 0;
      for (let i = 0; i < m * n; i++) {
        num += (got[i]! - want[i]!) ** 2;
        den += want[i]! ** 2;
      }
      expect(num / den).toBeLessThan(m <= 8 ? 1e-9 : 1e-5);
      if (m > 8) expect(thrownKilnError(() => gatedFfn(rt, t, gb.buf, ub.buf, xb.buf, ob.buf, n, k, m, act))?.message).toContain("tmp");
      xb.free();
      ob.free();
      tb.free();
    }
    gb.free();
    ub.free();
  });

  describe("get_rows: bit-exact CPU dequantization of the picked rows", () => {
    for (const t of TYPES) {
      test(t, () => {
        for (const cols of kValues(t)) {
          const nRows = 6;
          const w = makeWeight(t, nRows, cols, 900 + cols);
          const ids = new Int32Array([5, 0, 3, 3, 1]);
          const tb = upload(w.bytes, "table");
          const ib = upload(new Uint8Array(ids.buffer), "ids");
          const ob = guardedBuf(rt, ids.length * cols * 4, "out");
          getRows(rt, t, tb.buf, ib.buf, ob.buf, ids.length, cols, nRows);
          const got = new Uint32Array(ob.read().buffer);
          const want = new Uint32Array(w.deq.buffer);
          for (let i = 0; i < ids.length; i++) {
            for (let e = 0; e < cols; e++) {
              if (got[i * cols + e] !== want[ids[i]! * cols + e]) {
                throw new Error(`get_rows ${t} cols ${cols}: row ${i} (id ${ids[i]}) element ${e}: bits ${got[i * cols + e]!.toString(16)} ≠ ${want[ids[i]! * cols + e]!.toString(16)}`);
              }
            }
          }
          for (const b of [tb, ib, ob]) b.free();
        }
      });
    }
  });

  describe("teeth", () => {
    test("a weight buffer one row short, a bad k, too many rows, a short x throw KilnErrors naming them", () => {
      const t: DType = "q4_k";
      const n = 5;
      const k = 256;
      const w = makeWeight(t, n, k, 21);
      const short = rt.alloc(w.bytes.byteLength - 144, "blk.0.ffn_down.weight");
      const x = rt.alloc(9 * k * 4, "x");
      const out = rt.alloc(9 * n * 4, "out");
      try {
        for (const f of [matvec, matmul, linear]) {
          const e = thrownKilnError(() => f(rt, t, short, x, out, n, k, 1));
          expect(e?.message).toContain("blk.0.ffn_down.weight");
          expect(e?.message).toContain(`${w.bytes.byteLength}`);
        }
        expect(thrownKilnError(() => getRows(rt, t, short, x, out, 1, k, n))?.message).toContain("blk.0.ffn_down.weight");
        expect(thrownKilnError(() => matvecGated(rt, t, short, short, x, out, n, k, 1, 0))?.message).toContain("blk.0.ffn_down.weight");
        // k not a whole number of 256-element blocks.
        expect(thrownKilnError(() => matvec(rt, t, short, x, out, 1, 128, 1))?.message).toContain("not a whole number");
        // The mat-vec takes at most MATVEC_MAX_ROWS rows.
        const big = rt.alloc(w.bytes.byteLength, "w");
        expect(thrownKilnError(() => matvec(rt, t, big, x, out, n, k, 9))?.message).toContain("exceeds");
        expect(thrownKilnError(() => matvec(rt, t, big, x, out, n, k, 0))?.message).toContain("m must be");
        expect(thrownKilnError(() => matvec(rt, t, big, x, out, n, k, 2, k - 1))?.message).toContain("ldx");
        expect(thrownKilnError(() => matvec(rt, t, subBuffer(x, 4, 5 * 144, "odd"), x, out, n, k, 1))?.message).toContain("aligned");
        // x one element short of m rows.
        const e = thrownKilnError(() => matvec(rt, t, big, subBuffer(x, 0, 3 * k * 4 - 4, "x rows"), out, n, k, 3));
        expect(e?.message).toContain("x rows");
        expect(thrownKilnError(() => matmul(rt, t, big, x, subBuffer(out, 0, 9 * n * 4 - 4, "y"), n, k, 9))?.message).toContain("y");
        rt.free(big);
      } finally {
        rt.free(short);
        rt.free(x);
        rt.free(out);
      }
    });

    test("one corrupted q4_k scale byte changes the result, as on the CPU", () => {
      const t: DType = "q4_k";
      const n = 3;
      const k = 512;
      const m = 2;
      const w = makeWeight(t, n, k, 31);
      const x = randn(m * k, 32);
      const xb = upload(f32Bytes(x), "x");
      const run = (bytes: Uint8Array, mm: boolean) => {
        const wb = upload(bytes, "w");
        const ob = guardedBuf(rt, m * n * 4, "out");
        (mm ? matmul : matvec)(rt, t, wb.buf, xb.buf, ob.buf, n, k, m);
        const r = ob.f32();
        wb.free();
        ob.free();
        return r;
      };
      // Row 1, block 1: scales byte 2 (sub-block 2's 6-bit scale and the top bits of sub-block
      // 6's) — set to a different value.
      const bad = w.bytes.slice();
      const at = 1 * (k / 256) * 144 + 144 + 4 + 2;
      bad[at] = bad[at]! ^ 0xa7;
      const badDeq = dequant(t, bad, n, k);
      for (const mm of [false, true]) {
        const good = run(w.bytes, mm);
        const got = run(bad, mm);
        for (let r = 0; r < m; r++) {
          expect(got[r * n + 0]).toBe(good[r * n + 0]!);
          expect(got[r * n + 2]).toBe(good[r * n + 2]!);
          expect(got[r * n + 1]).not.toBe(good[r * n + 1]!);
        }
        const { ref, mag } = reference(badDeq, n, k, x, m, k);
        expectClose(`corrupted q4_k (${mm ? "matmul" : "matvec"})`, got, n, ref, mag, n, m, mm ? 2e-3 : 1e-5);
      }
      xb.free();
    });
  });
});
