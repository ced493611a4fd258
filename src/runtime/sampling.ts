/**
 * Token sampling over a full-vocabulary logits vector, following llama.cpp's default chain
 * (notes/model-facts.md §5) so a llama.cpp user gets the behaviour they expect:
 *
 *   logit-bias → penalties → top-k → top-p → min-p → temperature → dist
 *
 * (llama.cpp's dry / top-n-sigma / typical / xtc / mirostat stages are off by default and not
 * implemented.) `temperature <= 0` is greedy: argmax of the biased/penalized logits, ties to the
 * lowest id — llama.cpp's temp stage keeps only the first maximum, and the truncation stages
 * before it never remove the maximum, so they can be skipped.
 *
 * Speed: Gemma 3 has 262,144 logits, so nothing here sorts the vocabulary. Argmax and top-k are
 * kernels (zig-kernels/sampling.zig: one scan, a vector compare per 4–16 logits; top-k keeps a
 * k-sized min-heap and sorts only the k survivors): over Gemma's vocabulary argmax 30 µs against
 * the JavaScript scan's 142 µs, a default-chain sample() 0.04 ms against 0.45 (docs/optimization.md
 * "Sampling"). Every buffer is allocated once in `createSampler`; `sample` and `distribution`
 * allocate nothing.
 *
 * `distribution` exposes the exact final distribution `sample` draws from (for speculative
 * decoding's rejection sampler); `sample` is literally `draw(distribution(...))`.
 */
import { KilnError } from "../errors";
import { Rng } from "./rng";
import { argmaxF32, topKF32 } from "../backends/cpu";

/** Sampling options (llama.cpp's names and defaults); part of GenerateOptions. */
export interface SamplingOptions {
  /** Default 0.8. ≤ 0 → greedy (argmax, ties → lowest id). Applied after truncation, like llama.cpp. */
  temperature?: number;
  /** Default 40. ≤ 0 (or ≥ vocab) disables. */
  topK?: number;
  /** Default 0.95. ≥ 1 disables. Computed on the untempered logits of the top-k survivors. */
  topP?: number;
  /** Default 0.05. ≤ 0 disables. Keeps logits ≥ max + ln(minP) (untempered). */
  minP?: number;
  /** Default 1.0 (off). Positive logits of recent tokens are divided by it, negative multiplied. */
  repeatPenalty?: number;
  /** Default 0 (off). Subtracted once from every recent token's logit. */
  presencePenalty?: number;
  /** Default 0 (off). Subtracted `count` times from every recent token's logit. */
  frequencyPenalty?: number;
  /** Default 64. How many of the last history tokens the penalties look at; 0 → off, −1 → all. */
  penaltyLastN?: number;
  /** Default random (undefined, −1 or 0xFFFFFFFF, as llama.cpp's LLAMA_DEFAULT_SEED). */
  seed?: number;
  /** token id → value added to its logit before anything else; −Infinity bans the token. */
  logitBias?: Record<number, number>;
}

/** llama.cpp's `common_params_sampling` defaults (common/common.h). */
export const DEFAULT_SAMPLING = {
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1.0,
  presencePenalty: 0.0,
  frequencyPenalty: 0.0,
  penaltyLastN: 64,
} as const;

/**
 * Sparse final distribution: `probs[i]` is the probability of token `ids[i]` for i < n; sums to 1.
 * Order: descending probability whenever top-k or top-p is active (the order llama.cpp draws
 * in), otherwise id order. The arrays are the sampler's own buffers — valid until its next call;
 * copy them (`ids.slice(0, n)`) to keep them.
 */
export interface SparseDistribution {
  readonly ids: Int32Array;
  readonly probs: Float32Array;
  n: number;
}

/** A token sampler with its own buffers and RNG (createSampler); llama.cpp's default chain. */
export interface Sampler {
  /** The resolved options (defaults filled in) and the seed actually in use. */
  readonly options: Readonly<Required<Omit<SamplingOptions, "logitBias">>> & {
    /** token id → value added to its logit ({} when none). */
    logitBias: Record<number, number>;
  };
  /** Draw one token id. `history` = previously seen token ids (prompt + generated), for penalties. */
  sample(logits: Float32Array, history: ArrayLike<number>): number;
  /** The final distribution `sample` draws from, after every transform (same code path). */
  distribution(logits: Float32Array, history: ArrayLike<number>): SparseDistribution;
  /** Draw from a distribution previously returned by `distribution` (advances the RNG). */
  draw(dist: SparseDistribution): number;
  /** A uniform [0, 1) draw from the sampler's RNG (e.g. speculative decoding's accept test). */
  random(): number;
  /** Reseed: a fixed seed restarts its sequence, a random seed picks a new one (like llama.cpp). */
  reset(): void;
}

/**
 * A sampler over logits of `vocabSize` entries: logit bias → penalties → top-k → top-p → min-p →
 * temperature → draw, as llama.cpp samples by default. Allocates its buffers once.
 */
export function createSampler(opts: SamplingOptions, vocabSize: number): Sampler {
  return new ChainSampler(opts, vocabSize);
}

// ---------------------------------------------------------------------------------------------

class ChainSampler implements Sampler {
  readonly options: Sampler["options"];
  private readonly vocab: number;
  private readonly rng: Rng;
  private readonly randomSeed: boolean;

  /** Top-k active: candidates never exceed k, so the candidate buffers are only k long. */
  private readonly k: number;
  private readonly penaltiesOn: boolean;

  // Candidate set: parallel arrays (id, logit), then probabilities. `dist` wraps ids/probs.
  private readonly ids: Int32Array;
  private readonly vals: Float32Array;
  private readonly probs: Float32Array;
  private readonly dist: SparseDistribution;
  /**
   * Top-p's softmax normalizer when it must span more tokens than the candidates (set by the
   * min-p prefilter in `allCandidates`); 0 = "normalize over the candidates", consumed per call.
   */
  private topPMass = 0;

  /** Biased/penalized copy of the logits; only allocated when bias or penalties are on. */
  private readonly work: Float32Array | null;
  private readonly biasIds: Int32Array;
  private readonly biasVals: Float32Array;
  /** Per-token occurrence counts in the penalty window, and which ids were touched (to clear). */
  private readonly counts: Int32Array | null;
  private readonly touched: Int32Array | null;

  constructor(opts: SamplingOptions, vocabSize: number) {
    if (!Number.isInteger(vocabSize) || vocabSize <= 0) {
      throw new KilnError("BAD_OPTION", `createSampler: vocabSize must be a positive integer, got ${vocabSize}`);
    }
    this.vocab = vocabSize;
    const o = resolveOptions(opts, vocabSize);
    this.randomSeed = opts.seed === undefined || opts.seed === -1 || opts.seed === 0xffffffff;
    this.rng = new Rng(opts.seed);
    this.options = { ...o, seed: this.rng.seed };

    this.k = o.topK > 0 && o.topK < vocabSize ? o.topK : 0;
    const cap = this.k > 0 ? this.k : vocabSize;
    this.ids = new Int32Array(cap);
    this.vals = new Float32Array(cap);
    this.probs = new Float32Array(cap);
    this.dist = { ids: this.ids, probs: this.probs, n: 0 };

    const biasEntries = Object.entries(o.logitBias);
    this.biasIds = Int32Array.from(biasEntries, ([id]) => Number(id));
    this.biasVals = Float32Array.from(biasEntries, ([, v]) => v);
    this.penaltiesOn =
      o.penaltyLastN !== 0 && (o.repeatPenalty !== 1 || o.frequencyPenalty !== 0 || o.presencePenalty !== 0);
    this.work = biasEntries.length > 0 || this.penaltiesOn ? new Float32Array(vocabSize) : null;
    this.counts = this.penaltiesOn ? new Int32Array(vocabSize) : null;
    this.touched = this.penaltiesOn ? new Int32Array(vocabSize) : null;
  }

  sample(logits: Float32Array, history: ArrayLike<number>): number {
    return this.draw(this.distribution(logits, history));
  }

  distribution(logits: Float32Array, history: ArrayLike<number>): SparseDistribution {
    if (logits.length !== this.vocab) {
      throw new KilnError("BAD_OPTION", `sampler: logits has ${logits.length} entries, expected vocab size ${this.vocab}`);
    }
    const src = this.adjustLogits(logits, history);
    const o = this.options;
    if (o.temperature <= 0) {
      this.ids[0] = argmax(src);
      this.probs[0] = 1;
      this.dist.n = 1;
      return this.dist;
    }
    let n = this.k > 0 ? this.topK(src) : this.allCandidates(src);
    n = this.topP(n);
    n = this.minP(n);
    this.softmaxWithTemperature(n, o.temperature);
    this.dist.n = n;
    return this.dist;
  }

  /**
   * Inverse-CDF draw, as llama.cpp's dist stage: the first candidate whose cumulative probability
   * exceeds r·total. Strict `>` so a candidate whose probability underflowed to 0 is never picked.
   */
  draw(dist: SparseDistribution): number {
    const { ids, probs, n } = dist;
    let total = 0;
    for (let i = 0; i < n; i++) total += probs[i]!;
    const target = this.rng.nextFloat() * total;
    let cum = 0;
    let lastPositive = 0;
    for (let i = 0; i < n; i++) {
      const p = probs[i]!;
      if (p <= 0) continue;
      cum += p;
      lastPositive = i;
      if (cum > target) return ids[i]!;
    }
    return ids[lastPositive]!; // rounding: r·total landed past the last cumulative sum
  }

  random(): number {
    return this.rng.nextFloat();
  }

  reset(): void {
    if (this.randomSeed) {
      const fresh = new Rng(); // draws a new crypto seed; reset isn't on the per-token path
      this.rng.reseed(fresh.seed);
      (this.options as { seed: number }).seed = fresh.seed;
    } else {
      this.rng.reseed(this.options.seed);
    }
  }

  // --- stage 1: logit bias and penalties --------------------------------------------------------

  /** Returns the logits the chain should see: the input itself when nothing modifies it. */
  private adjustLogits(logits: Float32Array, history: ArrayLike<number>): Float32Array {
    const work = this.work;
    if (work === null) return logits; // never write into the caller's logits
    work.set(logits);
    for (let i = 0; i < this.biasIds.length; i++) work[this.biasIds[i]!]! += this.biasVals[i]!;
    if (this.penaltiesOn) this.applyPenalties(work, history);
    return work;
  }

  /**
   * llama.cpp's penalties stage: for each token seen c > 0 times in the last N, a logit ≤ 0 is
   * multiplied by `repeat` and a positive one divided (both push it down), then it loses
   * c·frequency + presence.
   */
  private applyPenalties(work: Float32Array, history: ArrayLike<number>): void {
    const counts = this.counts!, touched = this.touched!;
    const { penaltyLastN, repeatPenalty, frequencyPenalty, presencePenalty } = this.options;
    const start = penaltyLastN < 0 ? 0 : Math.max(0, history.length - penaltyLastN);
    let nTouched = 0;
    for (let i = start; i < history.length; i++) {
      const id = history[i]!;
      // An id outside the vocab can't match any candidate, so llama.cpp ignores it in effect too.
      if (!(id >= 0 && id < this.vocab)) continue;
      if (counts[id]++ === 0) touched[nTouched++] = id;
    }
    for (let j = 0; j < nTouched; j++) {
      const id = touched[j]!;
      const c = counts[id]!;
      counts[id] = 0; // leave the count table clean for the next call
      let l = work[id]!;
      l = l <= 0 ? l * repeatPenalty : l / repeatPenalty;
      work[id] = l - (c * frequencyPenalty + presencePenalty);
    }
  }

  // --- stage 2: candidate set -------------------------------------------------------------------

  /**
   * Top-k: the k best under the order (higher logit, then lower id), best first, from one kernel
   * scan (cpu.topKF32: a k-sized min-heap; a tie at the cut keeps the lower ids, as the greedy
   * tie rule). NaN and −Infinity never enter (they have no probability).
   */
  private topK(src: Float32Array): number {
    const size = topKF32(src, this.k, this.ids, this.vals);
    if (size === 0) throw allInvalid();
    return size;
  }

  /**
   * Top-k disabled: every finite token is a candidate. Top-p then needs them sorted, which would
   * be a full-vocab sort — so when min-p is on we first drop what min-p will drop anyway (its
   * threshold depends only on the max, which top-p always keeps); top-p still normalizes over
   * all tokens (`topPMass`), so the result is exactly top-p followed by min-p.
   */
  private allCandidates(src: Float32Array): number {
    const { topP, minP } = this.options;
    const ids = this.ids, vals = this.vals, V = src.length;
    const max = maxOf(src, V);
    if (!(max > -Infinity)) throw allInvalid();
    const threshold = minP > 0 ? minPThreshold(max, minP) : -Infinity;
    let mass = 0;
    let n = 0;
    for (let i = 0; i < V; i++) {
      const v = src[i]!;
      if (!(v > -Infinity)) continue;
      if (topP < 1) mass += expShifted(v, max);
      if (v >= threshold) {
        ids[n] = i;
        vals[n++] = v;
      }
    }
    if (topP < 1) {
      heapifyWorstFirst(ids, vals, n);
      heapsortBestFirst(ids, vals, n);
      this.topPMass = mass;
    }
    return n;
  }

  // --- stage 3: top-p and min-p on the untempered logits ----------------------------------------

  /** Keep the shortest best-first prefix whose probability mass reaches p (always ≥ 1 token). */
  private topP(n: number): number {
    const p = this.options.topP;
    const mass = this.topPMass;
    this.topPMass = 0;
    if (p >= 1 || n <= 1) return n;
    const vals = this.vals, w = this.probs;
    const max = vals[0]!; // candidates are sorted best-first here
    let sum = mass;
    for (let i = 0; i < n; i++) {
      w[i] = expShifted(vals[i]!, max);
      if (mass === 0) sum += w[i]!;
    }
    let cum = 0;
    for (let i = 0; i < n; i++) {
      cum += w[i]! / sum;
      if (cum >= p) return i + 1;
    }
    return n;
  }

  /** Keep logits ≥ max + ln(minP), i.e. probability ≥ minP × the top probability. Order kept. */
  private minP(n: number): number {
    const p = this.options.minP;
    if (p <= 0 || n <= 1) return n;
    const ids = this.ids, vals = this.vals;
    const threshold = minPThreshold(maxOf(vals, n), p);
    let kept = 0;
    for (let i = 0; i < n; i++) {
      const v = vals[i]!;
      if (v >= threshold) {
        ids[kept] = ids[i]!;
        vals[kept++] = v;
      }
    }
    return kept;
  }

  // --- stage 4: temperature + softmax -----------------------------------------------------------

  /** probs = softmax(logit / T) over the survivors, summed in double like llama.cpp's dist. */
  private softmaxWithTemperature(n: number, temperature: number): void {
    const vals = this.vals, probs = this.probs;
    const invT = 1 / temperature;
    const max = maxOf(vals, n);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const w = max === Infinity ? (vals[i] === Infinity ? 1 : 0) : Math.exp((vals[i]! - max) * invT);
      probs[i] = w;
      sum += w;
    }
    const inv = 1 / sum;
    for (let i = 0; i < n; i++) probs[i]! *= inv;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function resolveOptions(opts: SamplingOptions, vocab: number) {
  const o = {
    temperature: opts.temperature ?? DEFAULT_SAMPLING.temperature,
    topK: opts.topK ?? DEFAULT_SAMPLING.topK,
    topP: opts.topP ?? DEFAULT_SAMPLING.topP,
    minP: opts.minP ?? DEFAULT_SAMPLING.minP,
    repeatPenalty: opts.repeatPenalty ?? DEFAULT_SAMPLING.repeatPenalty,
    presencePenalty: opts.presencePenalty ?? DEFAULT_SAMPLING.presencePenalty,
    frequencyPenalty: opts.frequencyPenalty ?? DEFAULT_SAMPLING.frequencyPenalty,
    penaltyLastN: opts.penaltyLastN ?? DEFAULT_SAMPLING.penaltyLastN,
    logitBias: { ...(opts.logitBias ?? {}) },
  };
  for (const key of ["temperature", "topP", "minP", "presencePenalty", "frequencyPenalty"] as const) {
    if (!Number.isFinite(o[key])) throw new KilnError("BAD_OPTION", `createSampler: ${key} must be a finite number, got ${o[key]}`);
  }
  if (!Number.isInteger(o.topK)) throw new KilnError("BAD_OPTION", `createSampler: topK must be an integer, got ${o.topK}`);
  if (!Number.isInteger(o.penaltyLastN) || o.penaltyLastN < -1) {
    throw new KilnError("BAD_OPTION", `createSampler: penaltyLastN must be an integer ≥ −1, got ${o.penaltyLastN}`);
  }
  if (!(o.repeatPenalty > 0 && Number.isFinite(o.repeatPenalty))) {
    throw new KilnError("BAD_OPTION", `createSampler: repeatPenalty must be a positive finite number, got ${o.repeatPenalty}`);
  }
  for (const [key, bias] of Object.entries(o.logitBias)) {
    const id = Number(key);
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      throw new KilnError("BAD_OPTION", `createSampler: logitBias token id ${key} is outside the vocabulary [0, ${vocab})`);
    }
    if (typeof bias !== "number" || Number.isNaN(bias)) {
      throw new KilnError("BAD_OPTION", `createSampler: logitBias[${key}] must be a number, got ${bias}`);
    }
  }
  return o;
}

function allInvalid(): Error {
  return new Error("sampler: every logit is NaN or -Infinity; there is no token to sample");
}

/** Greedy: the highest logit, ties → lowest id; NaN never wins (cpu.argmaxF32, one kernel scan). */
export function argmax(src: Float32Array): number {
  const best = argmaxF32(src);
  if (best < 0) throw allInvalid();
  return best;
}

/** Max over the first n entries, ignoring NaN; −Infinity when there is none. */
function maxOf(a: Float32Array, n: number): number {
  let m = -Infinity;
  for (let i = 0; i < n; i++) if (a[i]! > m) m = a[i]!;
  return m;
}

/** exp(v − max), with +Infinity logits taking all the mass instead of producing NaN. */
function expShifted(v: number, max: number): number {
  return max === Infinity ? (v === Infinity ? 1 : 0) : Math.exp(v - max);
}

/** llama.cpp's min-p cut-off, clamped so the maximum itself always survives (minP ≥ 1). */
function minPThreshold(max: number, p: number): number {
  return Math.min(max + Math.log(p), max);
}

// Heap over parallel (ids, vals) arrays, ordered worst-first: "worse" = lower logit, or equal
// logit and higher id. Popping the worst to the end (heapsort) leaves the array best-first, with
// ties in ascending id order — deterministic, unlike std::partial_sort.

function worse(ids: Int32Array, vals: Float32Array, a: number, b: number): boolean {
  const va = vals[a]!, vb = vals[b]!;
  return va < vb || (va === vb && ids[a]! > ids[b]!);
}

function swap(ids: Int32Array, vals: Float32Array, a: number, b: number): void {
  const ti = ids[a]!;
  ids[a] = ids[b]!;
  ids[b] = ti;
  const tv = vals[a]!;
  vals[a] = vals[b]!;
  vals[b] = tv;
}

function siftDown(ids: Int32Array, vals: Float32Array, i: number, size: number): void {
  for (;;) {
    const l = 2 * i + 1;
    if (l >= size) return;
    const r = l + 1;
    const c = r < size && worse(ids, vals, r, l) ? r : l;
    if (!worse(ids, vals, c, i)) return;
    swap(ids, vals, i, c);
    i = c;
  }
}

function heapifyWorstFirst(ids: Int32Array, vals: Float32Array, n: number): void {
  for (let i = (n >> 1) - 1; i >= 0; i--) siftDown(ids, vals, i, n);
}

/** Given a worst-first heap of n entries, sort in place so index 0 is the best. */
function heapsortBestFirst(ids: Int32Array, vals: Float32Array, n: number): void {
  for (let end = n - 1; end > 0; end--) {
    swap(ids, vals, 0, end);
    siftDown(ids, vals, 0, end);
  }
}
