/**
 * cuda/attention.cu through its launcher (src/backends/cuda/kernels/attention.ts) against kiln's
 * CPU flash attention (src/backends/cpu.ts) on f16 caches: both kernel paths (the tensor-core
 * tile kernel and the split-KV kernel + combine) forced on every shape, awkward sizes (1, 5, 17,
 * 70 query rows; key counts that are not multiples of any tile), GQA 4:1 and 1:1, a continued
 * cache (qPos0 > 0), sliding windows, softcap, rows that see no key, head dims 64, 80, 96, 128,
 * 256 and a padded one (32 in the 64 kernel). Outputs sit between guard bytes.
 *
 * Tolerances (max-abs, in units of max|v|):
 *   - split path: f32 throughout, only the summation order differs: 2^-14.
 *   - tile path: Q·scale and P are rounded to f16 for the MMA. Against the CPU kernel run on
 *     the same f16-rounded Q·scale (scale 1), only P's rounding remains: every weight p becomes
 *     p(1+δ), |δ| ≤ 2^-11, and the kernel divides by the sum of the rounded weights, so
 *     |Δout| = |Σ p δ (v − out)| / Σ p ≤ 2^-11 · max|v − out| ≤ 2^-10 · max|v|.
 *     Against the exact CPU kernel, Q's rounding moves each score by at most
 *     B = 2^-11 · scale · Σ_d |q_d k_d| (softcap only shrinks it); a softmax whose logits move by
 *     ≤ B moves its output by ≤ (e^{2B} − 1) · max|v − out| ≤ ~4B · max|v|: 2^-10 + 4.5B.
 *
 * Device position (posDev, for CUDA graphs): the split path with the position read from device
 * memory and the split count fixed by the cache capacity equals, bit for bit, the host-position
 * call with the same splits, and a graph captured once answers every position uploaded later.
 */
import { describe, expect, test } from "bun:test";
import * as cpu from "../../src/backends/cpu";
import { type DeviceBuffer, type DeviceRuntime, subBuffer } from "../../src/backends/cuda/runtime";
import { flashAttention, type FlashAttentionOptions, graphSplits, planSplits, splitScratchBytes, SPLIT_MAX_ROWS } from "../../src/backends/cuda/kernels/attention";
import { Tensor } from "../../src/tensor";
import { randn, thrownKilnError } from "../helpers";
import { forEachRuntime } from "./runtimes";

interface Case {
  nQ: number;
  qPos0: number;
  nKv: number;
  nHead: number;
  nKvHead: number;
  headDim: number;
  window: number;
  softcap: number;
  /** Forced splits for the split path (default: planned). */
  nSplit?: number;
  /** Cache rows beyond nKv (default 3). */
  spare?: number;
}

const CASES: Case[] = [
  { nQ: 17, qPos0: 0, nKv: 17, nHead: 8, nKvHead: 2, headDim: 64, window: 0, softcap: 0 },
  { nQ: 70, qPos0: 0, nKv: 70, nHead: 2, nKvHead: 2, headDim: 64, window: 0, softcap: 30, nSplit: 2 },
  { nQ: 5, qPos0: 130, nKv: 135, nHead: 4, nKvHead: 1, headDim: 256, window: 0, softcap: 0 },
  { nQ: 1, qPos0: 199, nKv: 200, nHead: 2, nKvHead: 2, headDim: 80, window: 50, softcap: 30 },
  { nQ: 17, qPos0: 100, nKv: 117, nHead: 8, nKvHead: 2, headDim: 96, window: 40, softcap: 0, nSplit: 3 },
  { nQ: 70, qPos0: 60, nKv: 130, nHead: 1, nKvHead: 1, headDim: 256, window: 0, softcap: 30 },
  { nQ: 5, qPos0: 36, nKv: 41, nHead: 4, nKvHead: 4, headDim: 128, window: 0, softcap: 0 },
  { nQ: 9, qPos0: 3, nKv: 12, nHead: 4, nKvHead: 1, headDim: 32, window: 0, softcap: 0 },
  // Rows that see no key (qpos ≥ nKv + window − 1) get zeros; nKv < qPos0 + nQ.
  { nQ: 5, qPos0: 8, nKv: 10, nHead: 2, nKvHead: 1, headDim: 64, window: 3, softcap: 0 },
];

const GUARD = 0xa5;
const GUARD_BYTES = 64;
const label = (c: Case) =>
  `nQ ${c.nQ}, qPos0 ${c.qPos0}, nKv ${c.nKv}, heads ${c.nHead}:${c.nKvHead}, headDim ${c.headDim}, window ${c.window}, softcap ${c.softcap}`;

/** Host data of a case: q f32, K/V f16 caches [nCtx][nKvHead][headDim]. */
interface Data {
  c: Case;
  nCtx: number;
  q: Float32Array;
  k: Float16Array;
  v: Float16Array;
}

function makeData(c: Case, seed: number): Data {
  const nCtx = c.nKv + (c.spare ?? 3);
  const kvN = nCtx * c.nKvHead * c.headDim;
  return {
    c,
    nCtx,
    q: randn(c.nQ * c.nHead * c.headDim, seed, 2),
    k: Float16Array.from(randn(kvN, seed + 1)),
    v: Float16Array.from(randn(kvN, seed + 2)),
  };
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** The CPU kernel on the case's data; `q`/`scale`/`qPos0`/`nKv` overridable for the rounded, the wrong and the per-position references. */
function cpuAttention(d: Data, o: { q?: Float32Array; scale?: number; qPos0?: number; nKv?: number } = {}): Float32Array {
  const { c } = d;
  const shapeQ = [c.nQ, c.nHead, c.headDim];
  const shapeKv = [d.nCtx, c.nKvHead, c.headDim];
  const out = Tensor.zeros("f32", shapeQ);
  cpu.flashAttention(
    Tensor.fromF32(o.q ?? d.q, shapeQ, "q"),
    new Tensor("f16", shapeKv, bytesOf(d.k), "k"),
    new Tensor("f16", shapeKv, bytesOf(d.v), "v"),
    o.nKv ?? c.nKv,
    out,
    c.nHead,
    { qPos0: o.qPos0 ?? c.qPos0, window: c.window, scale: o.scale ?? 1 / Math.sqrt(c.headDim), softcap: c.softcap },
  );
  return new Float32Array(out.bytes.buffer, out.bytes.byteOffset, c.nQ * c.nHead * c.headDim).slice();
}

/** q · scale rounded to f16, as the tile kernel feeds it to the MMA. */
function roundedQ(d: Data): Float32Array {
  const s = 1 / Math.sqrt(d.c.headDim);
  return Float32Array.from(d.q, (x) => Math.f16round(x * s));
}

/** B of the header: the largest score change Q's f16 rounding can cause. */
function scoreBound(d: Data): number {
  const { c } = d;
  const scale = 1 / Math.sqrt(c.headDim);
  const group = c.nHead / c.nKvHead;
  let b = 0;
  for (let i = 0; i < c.nQ; i++)
    for (let h = 0; h < c.nHead; h++)
      for (let p = 0; p < c.nKv; p++) {
        let s = 0;
        for (let e = 0; e < c.headDim; e++) {
          s += Math.abs(d.q[(i * c.nHead + h) * c.headDim + e]! * d.k[(p * c.nKvHead + Math.floor(h / group)) * c.headDim + e]!);
        }
        b = Math.max(b, s);
      }
  return 2 ** -11 * scale * b;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = Math.abs(a[i]! - b[i]!);
    if (!(x <= m)) m = x; // NaN wins
  }
  return m;
}

/** Device buffers of a case; out (and the optional scratch) between guard bytes. */
class Device {
  readonly q: DeviceBuffer;
  readonly k: DeviceBuffer;
  readonly v: DeviceBuffer;
  readonly outAll: DeviceBuffer;
  readonly out: DeviceBuffer;
  readonly scratch: DeviceBuffer | null;
  readonly outBytes: number;

  constructor(readonly rt: DeviceRuntime, readonly d: Data, scratchSplits: number) {
    const { c } = d;
    this.q = rt.alloc(d.q.byteLength, "q");
    this.k = rt.alloc(d.k.byteLength, "k cache");
    this.v = rt.alloc(d.v.byteLength, "v cache");
    rt.upload(this.q, bytesOf(d.q));
    rt.upload(this.k, bytesOf(d.k));
    rt.upload(this.v, bytesOf(d.v));
    this.outBytes = c.nQ * c.nHead * c.headDim * 4;
    this.outAll = rt.alloc(this.outBytes + 2 * GUARD_BYTES, "out+guards");
    this.out = subBuffer(this.outAll, GUARD_BYTES, this.outBytes, "out");
    this.scratch = scratchSplits > 1 ? rt.alloc(splitScratchBytes(c.nQ, c.nHead, c.headDim, scratchSplits), "scratch") : null;
  }

  options(path: "tile" | "split", nSplit?: number): FlashAttentionOptions {
    const { c } = this.d;
    return {
      nQ: c.nQ, nHead: c.nHead, nKvHead: c.nKvHead, headDim: c.headDim, nKv: c.nKv, qPos0: c.qPos0,
      window: c.window, scale: 1 / Math.sqrt(c.headDim), softcap: c.softcap, kvRowCapacity: this.d.nCtx, path, nSplit,
    };
  }

  /** Runs the kernel with out pre-filled with guard bytes; returns out, having checked the guards. */
  run(o: FlashAttentionOptions): Float32Array {
    const all = new Uint8Array(this.outAll.byteLength).fill(GUARD);
    this.rt.upload(this.outAll, all);
    flashAttention(this.rt, this.q, this.k, this.v, this.out, o, this.scratch);
    this.rt.synchronize();
    this.rt.download(this.outAll, all);
    for (let i = 0; i < GUARD_BYTES; i++) expect(all[i]).toBe(GUARD);
    for (let i = GUARD_BYTES + this.outBytes; i < all.length; i++) expect(all[i]).toBe(GUARD);
    return new Float32Array(all.slice(GUARD_BYTES, GUARD_BYTES + this.outBytes).buffer);
  }

  /** Rewrites rows of the K and V caches (positions, all KV heads) with `value`. */
  poison(positions: number[], value: number): void {
    const { c } = this.d;
    const row = c.nKvHead * c.headDim;
    const bad = new Float16Array(row).fill(value);
    for (const p of positions) {
      this.rt.upload(this.k, bytesOf(bad), p * row * 2);
      this.rt.upload(this.v, bytesOf(bad), p * row * 2);
    }
  }

  free(): void {
    for (const b of [this.q, this.k, this.v, this.outAll, this.scratch]) if (b) this.rt.free(b);
  }
}

await forEachRuntime(import.meta.file, (rt: DeviceRuntime) => {
  describe("flash attention", () => {
    CASES.forEach((c, ci) => {
      test(label(c), () => {
        const d = makeData(c, 1000 + 17 * ci);
        const want = cpuAttention(d);
        const wantRounded = cpuAttention(d, { q: roundedQ(d), scale: 1 });
        const vMax = maxAbs(d.v);
        const dev = new Device(rt, d, 8);
        try {
          // Split path: f32 end to end (planned splits, and the case's forced count).
          for (const nSplit of new Set([undefined, c.nSplit])) {
            const got = dev.run(dev.options("split", nSplit));
            expect(maxDiff(got, want)).toBeLessThanOrEqual(2 ** -14 * vMax);
          }
          // Tile path: within the bounds of the header.
          const got = dev.run(dev.options("tile"));
          expect(maxDiff(got, wantRounded)).toBeLessThanOrEqual(2 ** -10 * vMax + 1e-6);
          expect(maxDiff(got, want)).toBeLessThanOrEqual((2 ** -10 + 4.5 * scoreBound(d)) * vMax);
          // Rows that see no key are exact zeros on both paths (the reference has them too).
          const width = c.nHead * c.headDim;
          for (let i = 0; i < c.nQ; i++) {
            const qpos = c.qPos0 + i;
            if (c.window > 0 && qpos + 1 - c.window >= Math.min(c.nKv, qpos + 1)) {
              expect(maxAbs(want.subarray(i * width, (i + 1) * width))).toBe(0);
              expect(maxAbs(got.subarray(i * width, (i + 1) * width))).toBe(0);
            }
          }
        } finally {
          dev.free();
        }
      });
    });

    test("a kernel that dropped the causal mask would fail: the wrong reference is far outside the tolerance", () => {
      const c = CASES[0]!;
      const d = makeData(c, 5);
      const dev = new Device(rt, d, 8);
      try {
        const vMax = maxAbs(d.v);
        // Every row seeing every key: what a kernel without the mask would compute.
        const wrong = cpuAttention(d, { qPos0: c.nKv });
        for (const path of ["tile", "split"] as const) {
          const got = dev.run(dev.options(path));
          expect(maxDiff(got, wrong)).toBeGreaterThan(100 * 2 ** -10 * vMax);
        }
      } finally {
        dev.free();
      }
    });

    test("keys a row may not see change nothing in it (future keys, keys before the window)", () => {
      const c: Case = { nQ: 17, qPos0: 20, nKv: 37, nHead: 4, nKvHead: 2, headDim: 64, window: 24, softcap: 0 };
      const d = makeData(c, 9);
      const dev = new Device(rt, d, 8);
      try {
        const width = c.nHead * c.headDim;
        for (const path of ["tile", "split"] as const) {
          dev.rt.upload(dev.k, bytesOf(d.k));
          dev.rt.upload(dev.v, bytesOf(d.v));
          const before = dev.run(dev.options(path));
          // Key 36 is the last row's own; key 0 is inside the window of rows at qpos < 24 only.
          dev.poison([0, c.nKv - 1], 1000);
          const after = dev.run(dev.options(path));
          for (let i = 0; i < c.nQ; i++) {
            const qpos = c.qPos0 + i;
            const sees = qpos === c.nKv - 1 || qpos < c.window;
            const same = maxDiff(before.subarray(i * width, (i + 1) * width), after.subarray(i * width, (i + 1) * width)) === 0;
            expect({ path, qpos, same }).toEqual({ path, qpos, same: !sees });
          }
        }
      } finally {
        dev.free();
      }
    });

    test("row strides (q inside a fused QKV row, out rows with gaps): the gaps stay untouched", () => {
      const c: Case = { nQ: 11, qPos0: 4, nKv: 15, nHead: 4, nKvHead: 2, headDim: 64, window: 0, softcap: 0 };
      const d = makeData(c, 21);
      const want = cpuAttention(d);
      const width = c.nHead * c.headDim;
      const qRowStride = width + 2 * c.nKvHead * c.headDim;
      const outRowStride = width + 8;
      const qPadded = new Float32Array(c.nQ * qRowStride).fill(NaN);
      for (let i = 0; i < c.nQ; i++) qPadded.set(d.q.subarray(i * width, (i + 1) * width), i * qRowStride);
      const dev = new Device(rt, d, 8);
      const qBuf = rt.alloc(qPadded.byteLength, "qkv");
      const outBytes = ((c.nQ - 1) * outRowStride + width) * 4;
      const outBuf = rt.alloc(outBytes, "strided out");
      try {
        rt.upload(qBuf, bytesOf(qPadded));
        for (const path of ["tile", "split"] as const) {
          const bytes = new Uint8Array(outBytes).fill(GUARD);
          rt.upload(outBuf, bytes);
          flashAttention(rt, qBuf, dev.k, dev.v, outBuf, { ...dev.options(path), qRowStride, outRowStride }, dev.scratch);
          rt.synchronize();
          rt.download(outBuf, bytes);
          const got = new Float32Array(bytes.buffer);
          const rows = new Float32Array(c.nQ * width);
          for (let i = 0; i < c.nQ; i++) {
            rows.set(got.subarray(i * outRowStride, i * outRowStride + width), i * width);
            if (i + 1 < c.nQ) for (let b = (i * outRowStride + width) * 4; b < (i + 1) * outRowStride * 4; b++) expect(bytes[b]).toBe(GUARD);
          }
          expect(maxDiff(rows, want)).toBeLessThanOrEqual((path === "tile" ? 2 ** -10 + 4.5 * scoreBound(d) : 2 ** -14) * maxAbs(d.v));
        }
      } finally {
        rt.free(qBuf);
        rt.free(outBuf);
        dev.free();
      }
    });

    test("sizes are validated before any launch: the error names the field or buffer", () => {
      const c = CASES[3]!;
      const d = makeData(c, 3);
      const dev = new Device(rt, d, 2);
      try {
        const base = dev.options("split");
        const call = (o: Partial<FlashAttentionOptions>, b: { k?: DeviceBuffer; out?: DeviceBuffer; scratch?: DeviceBuffer | null } = {}) =>
          thrownKilnError(() =>
            flashAttention(rt, dev.q, b.k ?? dev.k, dev.v, b.out ?? dev.out, { ...base, ...o }, b.scratch === undefined ? dev.scratch : b.scratch),
          )?.message;
        expect(call({}, { k: subBuffer(dev.k, 0, dev.k.byteLength - 2, "small k") })).toMatch(/k cache \(small k\) has \d+ bytes, needs/);
        expect(call({ nKv: d.nCtx + 1 })).toMatch(/nKv \d+ exceeds kvRowCapacity/);
        expect(call({ kvRowCapacity: d.nCtx + 1 })).toMatch(/k cache \(k cache\) has/);
        expect(call({ nKvHead: 3 })).toMatch(/nHead 2 is not a multiple of nKvHead 3/);
        expect(call({ headDim: 100 })).toMatch(/headDim 100 must be a multiple of 8/);
        expect(call({ headDim: 264 })).toMatch(/headDim 264/);
        expect(call({ nQ: c.nQ + 1 })).toMatch(/q \(q\) has/);
        expect(call({}, { out: subBuffer(dev.out, 4, dev.out.byteLength - 4, "short out") })).toMatch(/out \(short out\) has/);
        expect(call({ qRowStride: c.nHead * c.headDim - 1 })).toMatch(/qRowStride/);
        expect(call({ window: -1 })).toMatch(/window/);
        expect(call({ nSplit: 4 })).toMatch(/scratch \(scratch\) has/);
        expect(call({ nSplit: 4 }, { scratch: null })).toMatch(/need a scratch buffer/);
        expect(call({ scale: NaN })).toMatch(/scale/);
        expect(call({ path: "tile" }, { out: dev.q })).toMatch(/overlaps q/);
      } finally {
        dev.free();
      }
    });

    describe("device position (posDev, for CUDA graphs)", () => {
      const CAP = 200;
      const POSITIONS_NKV = [1, 2, 63, 64, 65, 150, 200];
      /** The cache filled to capacity, GQA 4:1; nQ query rows; positions come from the device. */
      const posCase = (nQ: number, headDim: number, window: number): Case => ({ nQ, qPos0: CAP - nQ, nKv: CAP, nHead: 8, nKvHead: 2, headDim, window, softcap: 0, spare: 0 });
      const setPos = (buf: DeviceBuffer, pos: number) => rt.upload(buf, bytesOf(Int32Array.of(pos)));

      for (const headDim of [64, 256])
        for (const window of [0, 16])
          test(`headDim ${headDim}, window ${window}: every position equals the host-position call (bit for bit with the same splits)`, () => {
            for (const nQ of [1, 5]) {
              const c = posCase(nQ, headDim, window);
              const d = makeData(c, 300 + headDim + window + nQ);
              const fixed = graphSplits(nQ, c.nHead, c.nKvHead, headDim, CAP);
              expect(fixed).toBeGreaterThan(1); // so splits past the position are empty and must contribute nothing
              const dev = new Device(rt, d, fixed);
              const posBuf = rt.alloc(4, "position");
              const vMax = maxAbs(d.v);
              try {
                for (const nKv of POSITIONS_NKV.filter((n) => n >= nQ)) {
                  const qPos0 = nKv - nQ;
                  const at = { ...dev.options("split"), nKv, qPos0 };
                  setPos(posBuf, qPos0);
                  const got = dev.run({ ...at, posDev: posBuf });
                  // The host's nKv/qPos0 are ignored: stale ones give the same bits.
                  const stale = dev.run({ ...at, nKv: nQ, qPos0: 0, posDev: posBuf });
                  const sameSplits = dev.run({ ...at, nSplit: fixed });
                  const planned = dev.run(at);
                  const want = cpuAttention(d, { nKv, qPos0 });
                  const where = { nQ, nKv };
                  expect({ ...where, stale: maxDiff(stale, got) }).toEqual({ ...where, stale: 0 });
                  expect({ ...where, sameSplits: maxDiff(sameSplits, got) }).toEqual({ ...where, sameSplits: 0 });
                  expect({ ...where, planned: maxDiff(planned, got) <= 1e-6 * vMax }).toEqual({ ...where, planned: true });
                  expect({ ...where, cpu: maxDiff(want, got) <= 2 ** -14 * vMax }).toEqual({ ...where, cpu: true });
                }
              } finally {
                rt.free(posBuf);
                dev.free();
              }
            }
          });

      test("one capture, many positions: the same argument bytes answer each position uploaded later", () => {
        for (const window of [0, 16]) {
          const c = posCase(1, 64, window);
          const d = makeData(c, 77 + window);
          const dev = new Device(rt, d, graphSplits(1, c.nHead, c.nKvHead, c.headDim, CAP));
          const posBuf = rt.alloc(4, "position");
          const vMax = maxAbs(d.v);
          const launches: { kernel: string; args: Uint8Array }[] = [];
          const recorder: DeviceRuntime = Object.assign(Object.create(rt) as DeviceRuntime, {
            launch: (kernel: string, grid: readonly [number, number, number], block: readonly [number, number, number], sharedBytes: number, args: Uint8Array) => {
              launches.push({ kernel: `${kernel} ${grid} ${block} ${sharedBytes}`, args: args.slice() });
              rt.launch(kernel, grid, block, sharedBytes, args);
            },
          });
          try {
            // The launcher packs the same bytes and grid whatever the host position (and different ones without posDev).
            const at = (nKv: number) => ({ ...dev.options("split"), nKv, qPos0: nKv - 1 });
            setPos(posBuf, 10);
            for (const nKv of [1, 150]) flashAttention(recorder, dev.q, dev.k, dev.v, dev.out, { ...at(nKv), posDev: posBuf }, dev.scratch);
            expect(launches.length).toBe(4);
            expect(launches[2]).toEqual(launches[0]!);
            expect(launches[3]).toEqual(launches[1]!);
            launches.length = 0;
            for (const nKv of [1, 150]) flashAttention(recorder, dev.q, dev.k, dev.v, dev.out, { ...at(nKv), nSplit: 4 }, dev.scratch);
            expect(launches[0]!.args).not.toEqual(launches[launches.length - 1]!.args);

            // Capture at position 149, replay for others: only the int in posDev changes.
            setPos(posBuf, 149);
            const graph = rt.captureGraph(() => flashAttention(rt, dev.q, dev.k, dev.v, dev.out, { ...at(150), posDev: posBuf }, dev.scratch));
            const answers = new Map<number, Float32Array>();
            try {
              for (const nKv of [150, 1, 65, 2, 64, 63, 200, 150]) {
                setPos(posBuf, nKv - 1);
                const all = new Uint8Array(dev.outAll.byteLength).fill(GUARD);
                rt.upload(dev.outAll, all);
                graph.launch();
                rt.synchronize();
                rt.download(dev.outAll, all);
                for (let i = 0; i < GUARD_BYTES; i++) expect(all[i]).toBe(GUARD);
                for (let i = GUARD_BYTES + dev.outBytes; i < all.length; i++) expect(all[i]).toBe(GUARD);
                const got = new Float32Array(all.slice(GUARD_BYTES, GUARD_BYTES + dev.outBytes).buffer);
                const want = cpuAttention(d, { nKv, qPos0: nKv - 1 });
                expect({ window, nKv, ok: maxDiff(got, want) <= 2 ** -14 * vMax }).toEqual({ window, nKv, ok: true });
                const before = answers.get(nKv);
                if (before) expect(maxDiff(before, got)).toBe(0); // a replay at a position seen before: the same bits
                answers.set(nKv, got);
              }
            } finally {
              graph.dispose();
            }
            // Teeth: the positions' answers differ far beyond the tolerance, so a kernel that ignored
            // posDev (answering the captured position 149 every time) fails the checks above.
            const ref149 = cpuAttention(d, { nKv: 150, qPos0: 149 });
            for (const nKv of [1, 2, 63, 64, 65, 200]) {
              expect(maxDiff(answers.get(nKv)!, ref149)).toBeGreaterThan(100 * 2 ** -14 * vMax);
              expect(maxDiff(answers.get(nKv)!, answers.get(150)!)).toBeGreaterThan(100 * 2 ** -14 * vMax);
            }
          } finally {
            rt.free(posBuf);
            dev.free();
          }
        }
      });

      test("a position past the cache reads no row beyond it", () => {
        for (const window of [0, 16]) {
          const c = posCase(1, 64, window);
          const d = makeData(c, 51);
          const dev = new Device(rt, d, graphSplits(1, c.nHead, c.nKvHead, c.headDim, CAP));
          const posBuf = rt.alloc(4, "position");
          try {
            setPos(posBuf, CAP + 50);
            const got = dev.run({ ...dev.options("split"), posDev: posBuf });
            // nKv is bounded by the cache: the keys 0..199 at position 250 (none inside a window of 16).
            const want = cpuAttention(d, { nKv: CAP, qPos0: CAP + 50 });
            expect(maxDiff(got, want)).toBeLessThanOrEqual(2 ** -14 * maxAbs(d.v));
            if (window > 0) expect(maxAbs(got)).toBe(0);
            else expect(maxAbs(got)).toBeGreaterThan(0);
          } finally {
            rt.free(posBuf);
            dev.free();
          }
        }
      });

      test("posDev is validated: its size, alignment, the split path, and a scratch for the fixed splits", () => {
        const c = posCase(1, 64, 0);
        const d = makeData(c, 8);
        const fixed = graphSplits(1, c.nHead, c.nKvHead, c.headDim, CAP);
        const dev = new Device(rt, d, fixed);
        const small = new Device(rt, d, fixed - 1);
        const posAll = rt.alloc(8, "position");
        const posBuf = subBuffer(posAll, 0, 4, "position");
        try {
          const base = { ...dev.options("split"), posDev: posBuf };
          const call = (o: Partial<FlashAttentionOptions>, dv: Device = dev, scratch: DeviceBuffer | null | undefined = dv.scratch) =>
            thrownKilnError(() => flashAttention(rt, dv.q, dv.k, dv.v, dv.out, { ...base, ...o }, scratch))?.message;
          expect(call({})).toBeUndefined();
          expect(call({ posDev: subBuffer(posAll, 0, 2, "short position") })).toMatch(/posDev \(short position\) has 2 bytes/);
          expect(call({ posDev: subBuffer(posAll, 2, 4, "odd position") })).toMatch(/posDev \(odd position\) must be 4-byte aligned/);
          expect(call({ path: "tile" })).toMatch(/posDev \(position\) needs the split path/);
          expect(call({ path: "auto", nQ: SPLIT_MAX_ROWS + 1 })).toMatch(/needs the split path|q \(q\) has/);
          expect(call({}, small)).toMatch(/scratch \(scratch\) has \d+ bytes, needs/);
          expect(call({}, dev, null)).toMatch(new RegExp(`${fixed} splits need a scratch buffer .*graphSplits`));
          expect(call({ nKv: CAP + 1 })).toMatch(/nKv 201 exceeds kvRowCapacity/); // host values are still validated
          expect(call({ qPos0: -1 })).toMatch(/qPos0/);
        } finally {
          rt.free(posAll);
          small.free();
          dev.free();
        }
      });
    });
  });
});

test("split planning: decode fills the GPU with whole tiles of keys; the scratch covers the planned splits", () => {
  expect(SPLIT_MAX_ROWS).toBe(8);
  expect(planSplits(1, 32, 8, 128, 4096)).toBe(32);          // 8 KV heads: 32 splits of 128 keys
  expect(planSplits(1, 32, 8, 128, 100)).toBe(2);            // never less than a tile per split
  expect(planSplits(1, 4, 1, 256, 1 << 17)).toBe(64);        // capped
  expect(planSplits(8, 32, 32, 64, 10)).toBe(1);
  expect(splitScratchBytes(1, 32, 128, 32)).toBe(32 * 32 * 130 * 4);
  // Graph launches plan from the capacity, whatever the position.
  expect(graphSplits(1, 32, 8, 128, 4096)).toBe(planSplits(1, 32, 8, 128, 4096));
  expect(graphSplits(1, 8, 2, 64, 200)).toBe(4);
});
