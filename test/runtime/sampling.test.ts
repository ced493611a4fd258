/**
 * Sampler chain (llama.cpp order: bias → penalties → top-k → top-p → min-p → temperature → dist)
 * and the xoshiro128** RNG. Hand-built small logits with hand-computed expectations, statistical
 * checks with fixed seeds (so they are deterministic), and a speed guard on a Gemma-3-sized vocab.
 */
import { describe, expect, test } from "bun:test";
import { Rng } from "../../src/runtime/rng";
import { createSampler, DEFAULT_SAMPLING, type SamplingOptions } from "../../src/runtime/sampling";
import { randn } from "../helpers";
import { argmaxF32, topKF32 } from "../../src/backends/cpu";

const f32 = (xs: number[]) => Float32Array.from(xs);
/** Options that switch every truncation stage off, at temperature 1. */
const PLAIN: SamplingOptions = { topK: 0, topP: 1, minP: 0, temperature: 1, seed: 1 };

/** The sparse distribution as a sorted-by-id list of [id, prob] (copied out of the sampler's buffers). */
function distOf(opts: SamplingOptions, logits: number[], history: number[] = []): [number, number][] {
  const s = createSampler(opts, logits.length);
  const d = s.distribution(f32(logits), history);
  const out: [number, number][] = [];
  for (let i = 0; i < d.n; i++) out.push([d.ids[i]!, d.probs[i]!]);
  return out.sort((a, b) => a[0] - b[0]);
}
const idsOf = (d: [number, number][]) => d.map(([id]) => id);

function softmax(xs: number[]): number[] {
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

describe("rng (xoshiro128**)", () => {
  test("matches the reference xoshiro128** outputs for state {1,2,3,4}", () => {
    const r = Rng.fromState([1, 2, 3, 4]);
    // First outputs of the reference C implementation (hand-checked: rotl(2*5,7)*9 = 11520, ...).
    expect([r.nextU32(), r.nextU32(), r.nextU32()]).toEqual([11520, 0, 5927040]);
  });

  test("same seed → same sequence; different seeds differ; floats in [0,1)", () => {
    const a = new Rng(42), b = new Rng(42), c = new Rng(43);
    const xa = Array.from({ length: 1000 }, () => a.nextFloat());
    const xb = Array.from({ length: 1000 }, () => b.nextFloat());
    const xc = Array.from({ length: 1000 }, () => c.nextFloat());
    expect(xa).toEqual(xb);
    expect(xa).not.toEqual(xc);
    for (const x of xa) expect(x >= 0 && x < 1).toBe(true);
    const mean = xa.reduce((s, x) => s + x, 0) / xa.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.05); // σ of the mean ≈ 0.009
  });

  test("snapshot/restore and clone replay the same future", () => {
    const r = new Rng(7);
    r.nextFloat();
    const snap = r.snapshot();
    const twin = r.clone();
    const ahead = [r.nextFloat(), r.nextFloat()];
    expect([twin.nextFloat(), twin.nextFloat()]).toEqual(ahead);
    r.restore(snap);
    expect([r.nextFloat(), r.nextFloat()]).toEqual(ahead);
  });

  test("no seed (or llama.cpp's -1 / 0xFFFFFFFF) picks a random seed that replays", () => {
    for (const seed of [undefined, -1, 0xffffffff]) {
      const r = new Rng(seed);
      expect(r.seed).not.toBe(0xffffffff);
      const replay = new Rng(r.seed);
      expect(r.nextU32()).toBe(replay.nextU32());
    }
  });
});

describe("greedy (temperature 0)", () => {
  const greedy = (xs: number[], opts: SamplingOptions = {}) =>
    createSampler({ temperature: 0, ...opts }, xs.length).sample(f32(xs), []);

  test("argmax, ties → lowest id", () => {
    expect(greedy([0.1, 3, -2, 2.9])).toBe(1);
    expect(greedy([1, 5, 5, 5])).toBe(1);
    expect(greedy([7, 7])).toBe(0);
  });

  test("NaN is never chosen; -Infinity only loses", () => {
    expect(greedy([NaN, -1, NaN])).toBe(1);
    expect(greedy([-Infinity, NaN, -50])).toBe(2);
    expect(greedy([NaN, -Infinity, -Infinity, -1e30])).toBe(3);
  });

  test("all NaN / -Infinity throws a clear error (greedy and sampled)", () => {
    expect(() => greedy([NaN, -Infinity, NaN])).toThrow(/every logit is NaN or -Infinity/);
    for (const opts of [{}, PLAIN, { ...PLAIN, topP: 0.9 }, { ...PLAIN, minP: 0.1 }]) {
      const s = createSampler(opts, 3);
      expect(() => s.sample(f32([-Infinity, NaN, -Infinity]), [])).toThrow(/every logit is NaN or -Infinity/);
    }
  });

  test("greedy sees logit bias and penalties, and its distribution is a point mass", () => {
    expect(greedy([1, 2, 0], { logitBias: { 1: -Infinity } })).toBe(0);
    expect(greedy([2, 1.5, 0], { repeatPenalty: 2 })).toBe(0);
    const s = createSampler({ temperature: 0, repeatPenalty: 2 }, 3);
    expect(s.sample(f32([2, 1.5, 0]), [0])).toBe(1); // 2/2 = 1 < 1.5
    const d = s.distribution(f32([2, 1.5, 0]), [0]);
    expect([d.n, d.ids[0], d.probs[0]]).toEqual([1, 1, 1]);
  });

  test("NaN never enters a sampled candidate set", () => {
    const d = distOf({ ...PLAIN, topK: 2 }, [NaN, 1, NaN, 0.5, NaN]);
    expect(idsOf(d)).toEqual([1, 3]);
    expect(idsOf(distOf(PLAIN, [NaN, 1, -Infinity, 0.5]))).toEqual([1, 3]);
  });
});

describe("truncation stages keep exactly the expected candidates", () => {
  const logits = [1.0, 4.0, 3.0, 0.5, 2.0, 3.0, -1.0, 2.5];
  // Sorted best-first: 1 (4.0), 2 (3.0), 5 (3.0), 7 (2.5), 4 (2.0), 0 (1.0), 3 (0.5), 6 (-1.0)

  test("top-k keeps the k largest (ties → lower id), ≤ 0 disables", () => {
    expect(idsOf(distOf({ ...PLAIN, topK: 1 }, logits))).toEqual([1]);
    expect(idsOf(distOf({ ...PLAIN, topK: 2 }, logits))).toEqual([1, 2]); // 2 and 5 tie: 2 wins
    expect(idsOf(distOf({ ...PLAIN, topK: 4 }, logits))).toEqual([1, 2, 5, 7]);
    expect(idsOf(distOf({ ...PLAIN, topK: 0 }, logits))).toHaveLength(8);
    expect(idsOf(distOf({ ...PLAIN, topK: 100 }, logits))).toHaveLength(8);
  });

  test("top-k output is ordered best-first", () => {
    const s = createSampler({ ...PLAIN, topK: 5 }, logits.length);
    const d = s.distribution(f32(logits), []);
    expect(Array.from(d.ids.subarray(0, d.n))).toEqual([1, 2, 5, 7, 4]);
  });

  test("top-p keeps the shortest prefix reaching p", () => {
    const p = softmax(logits);
    const order = [1, 2, 5, 7, 4, 0, 3, 6];
    const cum = order.map((_, i) => order.slice(0, i + 1).reduce((s, id) => s + p[id]!, 0));
    // cum ≈ [0.433, 0.593, 0.752, 0.849, 0.907, 0.966, 0.988, 1]
    const expectFor = (pp: number) => order.slice(0, cum.findIndex((c) => c >= pp) + 1).sort((a, b) => a - b);
    for (const pp of [0.3, 0.5, 0.75, 0.9, 0.95, 0.99]) {
      expect(idsOf(distOf({ ...PLAIN, topP: pp }, logits))).toEqual(expectFor(pp));
    }
    expect(idsOf(distOf({ ...PLAIN, topP: 0.5 }, logits))).toEqual([1, 2]);
    expect(idsOf(distOf({ ...PLAIN, topP: 0.9 }, logits))).toEqual([1, 2, 4, 5, 7]);
    expect(idsOf(distOf({ ...PLAIN, topP: 0 }, logits))).toEqual([1]); // always keeps one
  });

  test("top-p normalizes over the top-k survivors (top-k runs first)", () => {
    // Over top-3 {1,2,5}: p = [0.576, 0.212, 0.212] → 0.7 needs 2 tokens (vs 3 over all 8).
    expect(idsOf(distOf({ ...PLAIN, topK: 3, topP: 0.7 }, logits))).toEqual([1, 2]);
    expect(idsOf(distOf({ ...PLAIN, topP: 0.7 }, logits))).toEqual([1, 2, 5]);
  });

  test("min-p keeps logits ≥ max + ln(p)", () => {
    // max 4.0: p=0.3 → 2.796 → {1,2,5}; p=0.2 → 2.391 → {1,2,5,7}; p=0.1 → 1.697 → +4
    expect(idsOf(distOf({ ...PLAIN, minP: 0.3 }, logits))).toEqual([1, 2, 5]);
    expect(idsOf(distOf({ ...PLAIN, minP: 0.2 }, logits))).toEqual([1, 2, 5, 7]);
    expect(idsOf(distOf({ ...PLAIN, minP: 0.1 }, logits))).toEqual([1, 2, 4, 5, 7]);
    expect(idsOf(distOf({ ...PLAIN, minP: 1 }, logits))).toEqual([1]);
  });

  test("top-p then min-p, with and without top-k, agree with the stage-by-stage definition", () => {
    // top-p 0.9 → {1,2,5,7,4}; min-p 0.2 (≥ 2.391) → {1,2,5,7}. Without top-k this goes through
    // the min-p prefilter path, which must give the same set.
    expect(idsOf(distOf({ ...PLAIN, topP: 0.9, minP: 0.2 }, logits))).toEqual([1, 2, 5, 7]);
    expect(idsOf(distOf({ ...PLAIN, topK: 6, topP: 0.9, minP: 0.2 }, logits))).toEqual([1, 2, 5, 7]);
    // top-p 0.5 → {1,2}, min-p 0.05 keeps both.
    expect(idsOf(distOf({ ...PLAIN, topP: 0.5, minP: 0.05 }, logits))).toEqual([1, 2]);
  });

  test("llama.cpp defaults (top-k 40, top-p 0.95, min-p 0.05, temp 0.8)", () => {
    expect(DEFAULT_SAMPLING).toMatchObject({ temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05, penaltyLastN: 64 });
    // top-p 0.95 → 6 tokens (cum 0.966), min-p 0.05 (≥ 1.004) drops id 0 (1.0).
    const d = distOf({ seed: 1 }, logits);
    expect(idsOf(d)).toEqual([1, 2, 4, 5, 7]);
    const want = softmax([1, 2, 4, 5, 7].map((id) => logits[id]! / 0.8));
    d.forEach(([, p], i) => expect(p).toBeCloseTo(want[i]!, 6));
  });
});

describe("penalties and logit bias", () => {
  test("repeat / frequency / presence on a hand-computed example", () => {
    // history counts: id0 ×2, id1 ×1, id3 ×1; id2 unseen.
    const logits = [2.0, -1.0, 0.5, 0.0];
    const opts = { ...PLAIN, temperature: 1, repeatPenalty: 2, frequencyPenalty: 0.25, presencePenalty: 0.5 };
    // id0: 2/2 = 1, − (2·0.25 + 0.5) = 0.0
    // id1: −1·2 = −2, − (0.25 + 0.5) = −2.75
    // id2: untouched 0.5
    // id3: 0·2 = 0, − 0.75 = −0.75
    const want = softmax([0.0, -2.75, 0.5, -0.75]);
    const d = distOf(opts, logits, [0, 1, 0, 3]);
    d.forEach(([, p], i) => expect(p).toBeCloseTo(want[i]!, 6));
  });

  test("penaltyLastN limits the window; 0 turns penalties off; -1 uses all history", () => {
    const logits = [1, 1, 1];
    const opts = { ...PLAIN, presencePenalty: Math.log(2) }; // halves a seen token's weight
    // Last 2 of [0, 1, 2] are {1, 2}: weights [1, 0.5, 0.5] → [0.5, 0.25, 0.25]
    expect(distOf({ ...opts, penaltyLastN: 2 }, logits, [0, 1, 2]).map(([, p]) => p)).toEqual(
      [0.5, 0.25, 0.25].map((x) => expect.closeTo(x, 6)),
    );
    expect(distOf({ ...opts, penaltyLastN: 0 }, logits, [0, 1, 2]).map(([, p]) => p)).toEqual(
      [1 / 3, 1 / 3, 1 / 3].map((x) => expect.closeTo(x, 6)),
    );
    expect(distOf({ ...opts, penaltyLastN: -1 }, logits, [0, 0, 0, 0, 1]).map(([, p]) => p)).toEqual(
      [0.25, 0.25, 0.5].map((x) => expect.closeTo(x, 6)),
    );
  });

  test("penalties never touch the caller's logits and don't leak between calls", () => {
    const logits = f32([3, 1, 2]);
    const s = createSampler({ ...PLAIN, temperature: 0, repeatPenalty: 10 }, 3);
    expect(s.sample(logits, [0])).toBe(2);
    expect(Array.from(logits)).toEqual([3, 1, 2]);
    expect(s.sample(logits, [])).toBe(0); // counts were cleared
  });

  test("logit bias adds before everything; -Infinity bans; bad ids are rejected", () => {
    expect(idsOf(distOf({ ...PLAIN, topK: 1, logitBias: { 2: 10 } }, [5, 4, 0]))).toEqual([2]);
    expect(idsOf(distOf({ ...PLAIN, logitBias: { 0: -Infinity } }, [5, 4, 0]))).toEqual([1, 2]);
    expect(() => createSampler({ logitBias: { 3: 1 } }, 3)).toThrow(/outside the vocabulary/);
  });
});

describe("temperature", () => {
  test("divides logits before the softmax", () => {
    const logits = [2, 1, 0, -1];
    for (const t of [0.5, 1, 2]) {
      const want = softmax(logits.map((x) => x / t));
      distOf({ ...PLAIN, temperature: t }, logits).forEach(([, p], i) => expect(p).toBeCloseTo(want[i]!, 6));
    }
  });

  test("is applied after min-p (the cut uses untempered logits)", () => {
    // min-p 0.3 on [2, 1, 0]: threshold 2 + ln 0.3 = 0.796 keeps {0, 1} regardless of T = 10.
    expect(idsOf(distOf({ ...PLAIN, minP: 0.3, temperature: 10 }, [2, 1, 0]))).toEqual([0, 1]);
  });
});

/**
 * Pearson χ² of observed counts against expected probabilities. With k categories it has k−1
 * degrees of freedom; the bounds below are the 0.999 quantiles (df=4: 18.47, df=2: 13.82), so a
 * correct sampler fails with probability 0.1% — and with the fixed seed the run is deterministic.
 */
function chiSquared(counts: number[], probs: number[], draws: number): number {
  return counts.reduce((s, c, i) => s + (c - draws * probs[i]!) ** 2 / (draws * probs[i]!), 0);
}

describe("draws match the computed distribution", () => {
  const logits = [1.5, 0.2, -0.7, 1.0, 0.0];
  const DRAWS = 20_000;

  test("χ² over 20,000 draws on a 5-token distribution (df=4, bound 18.47 = 0.999 quantile)", () => {
    const s = createSampler({ ...PLAIN, temperature: 0.9, seed: 1234 }, 5);
    const want = softmax(logits.map((x) => x / 0.9));
    const counts = [0, 0, 0, 0, 0];
    const x = f32(logits);
    for (let i = 0; i < DRAWS; i++) counts[s.sample(x, [])]!++;
    expect(chiSquared(counts, want, DRAWS)).toBeLessThan(18.47);
  });

  test("the sparse distribution sums to 1 and agrees with sample()'s frequencies after truncation", () => {
    // Defaults: top-p 0.95 / min-p 0.05 remove tokens; only the survivors may ever be drawn.
    const s = createSampler({ seed: 99, topP: 0.8 }, 5);
    const x = f32(logits);
    const d = s.distribution(x, []);
    const ids = Array.from(d.ids.subarray(0, d.n));
    const probs = Array.from(d.probs.subarray(0, d.n));
    expect(probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
    expect(ids).toEqual([0, 3, 1]); // best-first: cum 0.44, 0.70, 0.85 ≥ 0.8
    const counts = new Map<number, number>();
    for (let i = 0; i < DRAWS; i++) {
      const id = s.sample(x, []);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual([0, 1, 3]);
    expect(chiSquared(ids.map((id) => counts.get(id)!), probs, DRAWS)).toBeLessThan(13.82); // df=2
  });

  test("sample() is draw(distribution()) on the same RNG stream", () => {
    const a = createSampler({ seed: 5 }, 5), b = createSampler({ seed: 5 }, 5);
    const x = f32(logits);
    for (let i = 0; i < 200; i++) expect(a.sample(x, [])).toBe(b.draw(b.distribution(x, [])));
  });
});

describe("seeding", () => {
  const x = randn(1000, 3, 2);
  const run = (s: ReturnType<typeof createSampler>) => Array.from({ length: 300 }, () => s.sample(x, []));

  test("same seed → same sequence; reset() replays it; different seed differs", () => {
    const a = createSampler({ seed: 77, topK: 0, topP: 1, minP: 0, temperature: 1.5 }, 1000);
    const b = createSampler({ seed: 77, topK: 0, topP: 1, minP: 0, temperature: 1.5 }, 1000);
    const c = createSampler({ seed: 78, topK: 0, topP: 1, minP: 0, temperature: 1.5 }, 1000);
    const seqA = run(a);
    expect(run(b)).toEqual(seqA);
    expect(run(c)).not.toEqual(seqA);
    a.reset();
    expect(run(a)).toEqual(seqA);
  });

  test("a random seed is reported and replays", () => {
    const a = createSampler({ topK: 0, topP: 1, minP: 0, temperature: 1.5 }, 1000);
    const b = createSampler({ seed: a.options.seed, topK: 0, topP: 1, minP: 0, temperature: 1.5 }, 1000);
    expect(run(a)).toEqual(run(b));
  });
});

describe("speed on a Gemma 3 vocabulary (262,144)", () => {
  const V = 262_144;
  const logits = randn(V, 11, 3);
  const history = Array.from({ length: 200 }, (_, i) => (i * 7919) % V);

  test("top-k 40 / top-p 0.95 / min-p 0.05 with penalties: < 5 ms per call, buffers reused", () => {
    const s = createSampler(
      { topK: 40, topP: 0.95, minP: 0.05, temperature: 0.8, repeatPenalty: 1.1, seed: 1 },
      V,
    );
    const d1 = s.distribution(logits, history);
    // No allocation per call: the returned distribution *is* the sampler's preallocated buffers.
    const d2 = s.distribution(logits, history);
    expect(d2).toBe(d1);
    expect(d2.ids.length).toBe(40); // candidate buffers sized to k, not to the vocab
    for (let i = 0; i < 20; i++) s.sample(logits, history); // warm up the JIT
    const N = 200;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) s.sample(logits, history);
    const perCall = (performance.now() - t0) / N;
    console.log(`sample() on ${V} logits (top-k 40, top-p 0.95, min-p 0.05, penalties): ${perCall.toFixed(3)} ms/call`);
    expect(perCall).toBeLessThan(5);
  });

  test("top-k off but min-p on stays fast (min-p prefilter before top-p's sort)", () => {
    const s = createSampler({ topK: 0, topP: 0.95, minP: 0.05, seed: 1 }, V);
    for (let i = 0; i < 5; i++) s.sample(logits, []);
    const N = 50;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) s.sample(logits, []);
    const perCall = (performance.now() - t0) / N;
    console.log(`sample() on ${V} logits (top-k off, top-p 0.95, min-p 0.05): ${perCall.toFixed(3)} ms/call`);
    expect(perCall).toBeLessThan(20);
  });

  test("greedy on 262k logits", () => {
    const s = createSampler({ temperature: 0 }, V);
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i]! > logits[best]!) best = i;
    expect(s.sample(logits, [])).toBe(best);
  });
});

describe("selection kernels the samplers call (cpu.argmaxF32, cpu.topKF32)", () => {
  /** Reference top-k: every candidate (above −Infinity) sorted by (value desc, id asc), first k. */
  function topKRef(x: Float32Array, k: number): [number[], number[]] {
    const c: number[] = [];
    for (let i = 0; i < x.length; i++) if (x[i]! > -Infinity) c.push(i);
    c.sort((a, b) => x[b]! - x[a]! || a - b);
    const ids = c.slice(0, k);
    return [ids, ids.map((i) => x[i]!)];
  }
  /** Few distinct values (ties), NaN, ±Infinity and ±0, at a length that leaves a vector tail. */
  function awkward(n: number, seed: number, distinct: number): Float32Array {
    const r = new Rng(seed);
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const u = r.nextU32() % 100;
      x[i] = u === 0 ? NaN : u === 1 ? -Infinity : u === 2 ? -0 : u === 3 ? Infinity : (r.nextU32() % distinct) * 0.5 - 2;
    }
    return x;
  }

  test("argmax: the first of the largest, NaN never, −1 when nothing is above −Infinity", () => {
    for (let t = 0; t < 300; t++) {
      const x = awkward(1 + (t % 97) + (t > 200 ? 4000 : 0), t, t % 2 ? 3 : 1000);
      let best = -1;
      for (let i = 0, v = -Infinity; i < x.length; i++) if (x[i]! > v) (v = x[i]!), (best = i);
      expect(argmaxF32(x)).toBe(best);
    }
    expect(argmaxF32(f32([NaN, -Infinity, NaN]))).toBe(-1);
    expect(argmaxF32(new Float32Array(0))).toBe(-1);
  });

  test("top-k equals sorting every candidate, ties at the cut keeping the lower ids", () => {
    const ids = new Int32Array(600);
    const vals = new Float32Array(600);
    for (let t = 0; t < 200; t++) {
      const n = 1 + ((t * 37) % 500);
      const x = awkward(n, 1000 + t, t % 2 ? 4 : 300);
      for (const k of [1, 2, 40, n, n + 5]) {
        const got = topKF32(x, k, ids, vals);
        const [wantIds, wantVals] = topKRef(x, k);
        expect(Array.from(ids.subarray(0, got))).toEqual(wantIds);
        expect(Array.from(vals.subarray(0, got))).toEqual(wantVals);
      }
    }
    // A Gemma-sized row whose 40th place falls inside a run of equal logits.
    const x = new Float32Array(262_144);
    const r = new Rng(7);
    for (let i = 0; i < x.length; i++) x[i] = (r.nextU32() % 2000) * 0.01;
    const got = topKF32(x, 40, ids, vals);
    const [wantIds] = topKRef(x, 40);
    expect(Array.from(ids.subarray(0, got))).toEqual(wantIds);
  });

  test("bad calls are refused with the problem named, before the kernel", () => {
    const x = new Float32Array(16);
    const ids = new Int32Array(4);
    const vals = new Float32Array(4);
    expect(() => topKF32(x, 0, ids, vals)).toThrow(/k must be a positive integer/);
    expect(() => topKF32(x, 5, ids, vals)).toThrow(/must hold k = 5/);
    expect(() => topKF32(x, 2, ids, x.subarray(8, 12))).toThrow(/must not share bytes/);
    expect(() => topKF32(x, 2, new Int32Array(x.buffer, 0, 4), vals)).toThrow(/must not share bytes/);
  });
});
