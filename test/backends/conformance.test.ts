/**
 * Op conformance, once per backend: every op the model files call through BackendOps (linear
 * for each weight type, the gated FFN, RMSNorm with residual, per-head norm, RoPE both modes
 * with frequency factors, the KV store, attention, embedding rows, bias/add/scale) against f64
 * references computed here, on the CPU backend and on the CUDA backend over each device runtime
 * (the host emulator always; a GPU when one is present).
 *
 * Bounds are per op and the same for every backend: quantized linear layers allow for the CPU's
 * 8-bit activations and the GPU's f16 tensor-core tiles (NMSE < 2e-4); float ops are near exact.
 */
import { afterAll, describe, expect, test } from "bun:test";
import * as cpu from "../../src/backends/cpu";
import { CPU_BACKEND } from "../../src/backends/cpu-backend";
import { CudaBackend } from "../../src/backends/cuda/backend";
import type { Backend, BackendOps } from "../../src/backends/backend";
import type { HParams } from "../../src/models/hparams";
import { RunState } from "../../src/models/state";
import { Tensor, type DType } from "../../src/tensor";
import { matmulRef, nmse, randn } from "../helpers";
import { testRuntimes } from "../cuda/runtimes";

const runtimes = await testRuntimes(import.meta.file);
afterAll(() => {
  for (const { rt } of runtimes) rt.dispose();
});

const WEIGHT_TYPES: DType[] = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k"];
const HP: HParams = {
  arch: "llama", nCtxTrain: 64, nEmbd: 256, nLayer: 1, nFf: 96, nHead: 4, nKvHead: 2, headDim: 64, nRot: 64,
  rmsEps: 1e-5, ropeBase: 10000, ropeScale: 1, slidingWindow: 0, ropeBaseLocal: 10000, nVocab: 40,
};

/** A backend with a state to make its ops, and host ↔ backend copies for the test. */
class Bench {
  readonly state: RunState;
  readonly ops: BackendOps;
  constructor(readonly backend: Backend) {
    this.state = new RunState(HP, { nCtx: 48, maxBatch: 12, maxLogitRows: 1, kvType: "f16", weightTypes: WEIGHT_TYPES }, backend);
    this.ops = this.state.ops;
  }
  put(t: Tensor): Tensor {
    return this.backend instanceof CudaBackend ? this.backend.upload(t) : t;
  }
  f32(data: Float32Array, shape: number[], name = "x"): Tensor {
    return this.put(Tensor.fromF32(data.slice(), shape, name));
  }
  read(t: Tensor): Float32Array {
    const out = new Uint8Array(t.byteLength);
    if (t.onHost) out.set(t.bytes);
    else (this.backend as CudaBackend).runtime.download(t.storage.buffer, out);
    return t.dtype === "f16" ? Float32Array.from(new Float16Array(out.buffer)) : new Float32Array(out.buffer);
  }
  /** A forward call's start: positions p0.. for n rows (CUDA uploads them for RoPE). */
  begin(n: number, p0: number, tokens = new Int32Array(n)) {
    const b = this.state.views(n);
    for (let i = 0; i < n; i++) b.positions[i] = p0 + i;
    b.spans.length = 1;
    Object.assign(b.spans[0]!, { seq: 0, start: 0, n, pos0: p0 });
    this.ops.beginForward(b, tokens);
    return b;
  }
  dispose(): void {
    this.state.dispose();
    if (this.backend !== CPU_BACKEND) this.backend.dispose();
  }
}

/** Quantized random weights [n, k] and their exact f32 values. */
function weights(dtype: DType, n: number, k: number, seed: number): { w: Tensor; f: Float32Array } {
  const w = cpu.quantize(Tensor.fromF32(randn(n * k, seed, 0.5), [n, k], `w_${dtype}`), dtype);
  const f = Tensor.zeros("f32", [n, k]);
  cpu.dequantize(w, f);
  return { w, f: f.f32 };
}

const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
const silu = (x: number) => x / (1 + Math.exp(-x));

function ropeRef(x: Float32Array, rows: number, nHead: number, hd: number, pos: number[], neox: boolean, ff: Float32Array | null, freqBase = HP.ropeBase): Float64Array {
  const y = Float64Array.from(x);
  for (let r = 0; r < rows; r++) for (let h = 0; h < nHead; h++) for (let i = 0; i < hd / 2; i++) {
    const th = (pos[r]! * freqBase ** (-2 * i / hd)) / (ff ? ff[i]! : 1);
    const base = r * nHead * hd + h * hd;
    const [a, b] = neox ? [base + i, base + i + hd / 2] : [base + 2 * i, base + 2 * i + 1];
    const x0 = x[a]!, x1 = x[b]!;
    y[a] = x0 * Math.cos(th) - x1 * Math.sin(th);
    y[b] = x0 * Math.sin(th) + x1 * Math.cos(th);
  }
  return y;
}

const backends: [string, () => Backend][] = [["cpu", () => CPU_BACKEND], ...runtimes.map(({ name, rt }) => [`cuda on ${name}`, () => new CudaBackend(rt, { graphs: false })] as [string, () => Backend])];

for (const [name, make] of backends) {
  describe(`BackendOps conformance: ${name}`, () => {
    let t: Bench;
    const bench = () => (t ??= new Bench(make()));
    afterAll(() => t?.dispose());

    for (const dtype of WEIGHT_TYPES) {
      test(`linear ${dtype}: m = 1, 5, 12 vs f64 (NMSE < 2e-4)`, () => {
        const B = bench();
        const [n, k] = [24, 256];
        const { w, f } = weights(dtype, n, k, 3 + dtype.length);
        const wd = B.put(w);
        for (const m of [1, 5, 12]) {
          const x = randn(m * k, m);
          const out = B.f32(new Float32Array(m * n), [m, n], "out");
          B.ops.linear(wd, B.f32(x, [m, k]), out);
          expect(nmse(B.read(out), matmulRef(f, n, k, x, m))).toBeLessThan(2e-4);
        }
      });
    }

    for (const dtypes of [["q4_1", "q4_1", "q4_1"], ["q5_0", "q5_0", "q8_0"], ["bf16", "bf16", "bf16"]] as DType[][]) {
      test(`linear3 ${dtypes.join("/")}: each output is linear's, bit for bit (m = 1 and 3)`, () => {
        const B = bench();
        const k = 256;
        const ns = [64, 24, 24];
        const ws = dtypes.map((d, i) => B.put(weights(d, ns[i]!, k, 50 + i).w)) as [Tensor, Tensor, Tensor];
        for (const m of [1, 3]) {
          const x = B.f32(randn(m * k, 60 + m), [m, k]);
          const one = ns.map((n) => B.f32(new Float32Array(m * n), [m, n], "one"));
          const three = ns.map((n) => B.f32(new Float32Array(m * n).fill(7), [m, n], "three")) as [Tensor, Tensor, Tensor];
          for (let i = 0; i < 3; i++) B.ops.linear(ws[i]!, x, one[i]!);
          B.ops.linear3(ws[0], ws[1], ws[2], x, three[0], three[1], three[2]);
          for (let i = 0; i < 3; i++) expect(new Uint32Array(B.read(three[i]!).buffer)).toEqual(new Uint32Array(B.read(one[i]!).buffer));
        }
      });
    }

    for (const act of ["silu", "gelu_tanh"] as const) {
      test(`gatedFfn ${act} q4_k: m = 2 and 9 vs f64`, () => {
        const B = bench();
        const [n, k] = [32, 256];
        const g = weights("q4_k", n, k, 21);
        const u = weights("q4_k", n, k, 22);
        for (const m of [2, 9]) {
          const x = randn(m * k, 30 + m);
          const out = B.f32(new Float32Array(m * n), [m, n], "out");
          B.ops.gatedFfn(B.put(g.w), B.put(u.w), B.f32(x, [m, k]), out, act, B.f32(new Float32Array(m * n), [m, n], "tmp"));
          const gr = matmulRef(g.f, n, k, x, m);
          const ur = matmulRef(u.f, n, k, x, m);
          const want = gr.map((v, i) => (act === "silu" ? silu(v) : gelu(v)) * ur[i]!);
          expect(nmse(B.read(out), want)).toBeLessThan(2e-4);
        }
      });
    }

    test("rmsNorm with residual and weight: x updated, out normalized (f64)", () => {
      const B = bench();
      const [rows, cols] = [3, 256];
      const x = randn(rows * cols, 40), r = randn(rows * cols, 41), w = randn(cols, 42);
      const xd = B.f32(x, [rows, cols]);
      const out = B.f32(new Float32Array(rows * cols), [rows, cols], "out");
      B.ops.rmsNorm(xd, B.f32(w, [cols], "w"), out, 1e-5, { residual: B.f32(r, [rows, cols], "res") });
      const sum = x.map((v, i) => v + r[i]!);
      const want = new Float64Array(rows * cols);
      for (let i = 0; i < rows; i++) {
        let ss = 0;
        for (let j = 0; j < cols; j++) ss += sum[i * cols + j]! ** 2;
        const s = 1 / Math.sqrt(ss / cols + 1e-5);
        for (let j = 0; j < cols; j++) want[i * cols + j] = sum[i * cols + j]! * s * w[j]!;
      }
      expect(nmse(B.read(xd), sum)).toBeLessThan(1e-12);
      expect(nmse(B.read(out), want)).toBeLessThan(1e-11);
    });

    test("rmsNormHeads: each head normalized with the shared weight", () => {
      const B = bench();
      const [rows, nHead, hd] = [2, 4, 64];
      const x = randn(rows * nHead * hd, 50), w = randn(hd, 51);
      const xd = B.f32(x, [rows, nHead * hd]);
      B.ops.rmsNormHeads(xd, nHead, B.f32(w, [hd], "w"), 1e-6);
      const want = new Float64Array(x.length);
      for (let h = 0; h < rows * nHead; h++) {
        let ss = 0;
        for (let j = 0; j < hd; j++) ss += x[h * hd + j]! ** 2;
        for (let j = 0; j < hd; j++) want[h * hd + j] = (x[h * hd + j]! / Math.sqrt(ss / hd + 1e-6)) * w[j]!;
      }
      expect(nmse(B.read(xd), want)).toBeLessThan(1e-11);
    });

    for (const mode of ["normal", "neox"] as const) {
      test(`rope ${mode} with frequency factors at positions 7..10`, () => {
        const B = bench();
        const [rows, nHead, hd] = [4, 4, 64];
        const x = randn(rows * nHead * hd, 60);
        const ff = Float32Array.from({ length: hd / 2 }, (_, i) => 1 + (i % 5) * 0.5);
        const b = B.begin(rows, 7);
        const xd = B.f32(x, [rows, nHead * hd]);
        B.ops.rope(xd, nHead, b.positions, { mode, freqBase: HP.ropeBase, freqFactors: B.f32(ff, [hd / 2], "ff") });
        expect(nmse(B.read(xd), ropeRef(x, rows, nHead, hd, [7, 8, 9, 10], mode === "neox", ff))).toBeLessThan(1e-11);
      });
    }

    test("rope again after the positions move (same row count), and in a second configuration: each call at its own positions", () => {
      // The CPU backend reuses one cos/sin table per configuration while the positions stay the
      // same; a table kept past a change of positions would rotate these rows as the old ones.
      const B = bench();
      const [rows, nHead, hd] = [3, 2, 64];
      for (const [pos0, mode, base] of [[7, "neox", HP.ropeBase], [7, "neox", HP.ropeBase], [40, "neox", HP.ropeBase], [40, "normal", HP.ropeBase], [40, "neox", 1e6]] as const) {
        const x = randn(rows * nHead * hd, 70 + pos0);
        const b = B.begin(rows, pos0);
        const xd = B.f32(x, [rows, nHead * hd]);
        B.ops.rope(xd, nHead, b.positions, { mode, freqBase: base });
        const pos = Array.from({ length: rows }, (_, i) => pos0 + i);
        const want = ropeRef(x, rows, nHead, hd, pos, mode === "neox", null, base);
        expect(nmse(B.read(xd), want)).toBeLessThan(1e-11);
      }
    });

    test("storeKV rounds to f16 (nearest even) into the cache rows; attention over them vs f64 (GQA, causal, window)", () => {
      const B = bench();
      const s = B.state;
      const [nHead, nKvHead, hd] = [4, 2, 64];
      const nKv = 11;
      const kv = randn(nKv * nKvHead * hd, 70);
      const vv = randn(nKv * nKvHead * hd, 71);
      const kc = s.kCache[0]!, vc = s.vCache[0]!;
      B.ops.storeKV(B.f32(kv, [nKv, nKvHead * hd], "k"), kc, 0);
      B.ops.storeKV(B.f32(vv, [nKv, nKvHead * hd], "v"), vc, 0);
      const k16 = Float32Array.from(new Float16Array(kv));
      const v16 = Float32Array.from(new Float16Array(vv));
      // The cache's first nKv positions, position-major whatever the backend's kvLayout.
      const positions = (all: Float32Array) => {
        if (s.backend.kvLayout === "position-major") return all.subarray(0, nKv * nKvHead * hd);
        const out = new Float32Array(nKv * nKvHead * hd);
        for (let p = 0; p < nKv; p++) for (let h = 0; h < nKvHead; h++) out.set(all.subarray((h * s.nCtx + p) * hd, (h * s.nCtx + p + 1) * hd), (p * nKvHead + h) * hd);
        return out;
      };
      expect(positions(B.read(kc))).toEqual(k16);
      expect(positions(B.read(vc))).toEqual(v16);
      for (const [nQ, window] of [[1, 0], [4, 0], [4, 5]] as const) {
        const q = randn(nQ * nHead * hd, 72 + nQ + window);
        const qPos0 = nKv - nQ;
        B.begin(nQ, qPos0);
        const out = B.f32(new Float32Array(q.length), [nQ, nHead, hd], "out");
        const scale = 1 / 8;
        B.ops.attention(B.f32(q, [nQ, nHead, hd], "q"), kc, vc, nKv, out, nHead, { qPos0, scale, window });
        const want = new Float64Array(q.length);
        for (let i = 0; i < nQ; i++) for (let h = 0; h < nHead; h++) {
          const g = Math.floor(h / (nHead / nKvHead));
          const p = qPos0 + i;
          const keys = [...Array(p + 1).keys()].filter((j) => window === 0 || p - j < window);
          const sc = keys.map((j) => { let d = 0; for (let c = 0; c < hd; c++) d += q[(i * nHead + h) * hd + c]! * k16[(j * nKvHead + g) * hd + c]!; return d * scale; });
          const mx = Math.max(...sc);
          const e = sc.map((v) => Math.exp(v - mx));
          const z = e.reduce((a, b) => a + b, 0);
          for (let c = 0; c < hd; c++) want[(i * nHead + h) * hd + c] = keys.reduce((a, j, t) => a + (e[t]! / z) * v16[(j * nKvHead + g) * hd + c]!, 0);
        }
        // The GPU's prefill path rounds Q and P to f16 for its tensor cores (nQ > 8 only; not here).
        expect(nmse(B.read(out), want)).toBeLessThan(1e-9);
      }
    });

    test("getRows q4_k and q8_0: rows dequantized exactly", () => {
      const B = bench();
      for (const dtype of ["q4_k", "q8_0"] as DType[]) {
        const { w, f } = weights(dtype, HP.nVocab, 256, 80);
        const ids = Int32Array.of(3, 0, 39, 3);
        B.begin(ids.length, 0, ids);
        const out = B.f32(new Float32Array(ids.length * 256), [ids.length, 256], "out");
        B.ops.getRows(B.put(w), ids, out);
        const want = new Float32Array(ids.length * 256);
        ids.forEach((id, i) => want.set(f.subarray(id * 256, (id + 1) * 256), i * 256));
        expect(B.read(out)).toEqual(want);
      }
    });

    test("addBias, add, scale", () => {
      const B = bench();
      const [rows, cols] = [3, 40];
      const x = randn(rows * cols, 90), y = randn(rows * cols, 91), bias = randn(cols, 92);
      const xd = B.f32(x, [rows, cols]);
      B.ops.addBias(xd, B.f32(bias, [cols], "bias"));
      B.ops.add(xd, B.f32(y, [rows, cols], "y"));
      B.ops.scale(xd, 0.5);
      const want = x.map((v, i) => Math.fround(Math.fround(Math.fround(v + bias[i % cols]!) + y[i]!) * 0.5));
      expect(B.read(xd)).toEqual(want);
    });

    test("teeth: a wrong reference (RoPE at positions off by one) is rejected by the same bound", () => {
      const B = bench();
      const [rows, nHead, hd] = [2, 4, 64];
      const x = randn(rows * nHead * hd, 61);
      const b = B.begin(rows, 3);
      const xd = B.f32(x, [rows, nHead * hd]);
      B.ops.rope(xd, nHead, b.positions, { mode: "neox", freqBase: HP.ropeBase });
      expect(nmse(B.read(xd), ropeRef(x, rows, nHead, hd, [4, 5], true, null))).toBeGreaterThan(1e-3);
    });
  });
}
