/**
 * Speculative decoding that never changes what the target model would output.
 *
 * Each step a drafter proposes up to k tokens; the target runs the pending token plus the k
 * drafts in ONE batched forward (its weights are read once for k+1 positions) and accepts
 * drafts by the rejection-sampling rule of Leviathan et al. (2023) / Chen et al. (2023):
 * draft d, drawn from the draft's distribution q, is kept with probability min(1, p(d)/q(d));
 * on rejection the next token is drawn from normalize(max(0, p − q)); when every draft is kept
 * a bonus token is drawn from the target's next distribution. p and q are the final
 * distributions after every one of kiln's sampling transforms (penalties, top-k/p, min-p,
 * temperature), computed by the same sampler code. At temperature 0 both are point masses, so
 * this is exactly "keep drafts while they equal the target's argmax". Rejected positions are
 * rolled back from the KV caches (RunState.truncate), so later tokens never see them.
 *
 * Drafters: a second model sharing the vocabulary, prompt lookup (n-gram match against the
 * context), and layer-skip (the target's own first layers plus its output head).
 */
import { KilnError } from "../errors";
import { limits } from "../ffi/library";
import type { Tensor } from "../tensor";
import type { RunState } from "../models/state";
import { createSampler, type Sampler, type SamplingOptions } from "./sampling";

/** Anything that appends tokens to its own KV cache and returns logits (a Context, a layer-skip view). */
export interface Forwarder {
  readonly hp: { nVocab: number };
  readonly state: RunState;
  eval(tokens: readonly number[] | Int32Array, logitRows?: number): Tensor;
}

export interface SpeculativeOptions<Draft = Forwarder> {
  /**
   * What drafts: "prompt-lookup" (n-grams of the context), "layer-skip" (the target's own first
   * layers), or a draft model sharing the target's vocabulary (a Model, whose context the target
   * context creates and owns, or a Context of it, which must be idle).
   */
  draft: Draft | "prompt-lookup" | "layer-skip";
  /** Most drafted tokens per step (default 6; at most the target's logit rows − 1). */
  maxDraft?: number;
  /** Fewest drafted tokens in a step that drafts at all (default 1). */
  minDraft?: number;
  /**
   * Choose each step's depth from measured costs (default true): the depth, 0 (a plain step)
   * included, that maximizes expected tokens per millisecond given the running acceptance rate,
   * the measured cost of a target forward of each size and the draft's cost per token. With
   * false, every step drafts up to maxDraft.
   */
  adaptive?: boolean;
  /** A model drafter stops early when its top probability falls below this (default 0.4). */
  minConfidence?: number;
  /** Layer-skip: how many of the target's first layers the drafter runs (the rest are skipped; default: half). */
  draftLayers?: number;
  /** Prompt lookup: longest and shortest n-gram to match (default 3 and 1). */
  ngramMax?: number;
  ngramMin?: number;
  /** TEST ONLY: replaces the acceptance probability min(1, p/q); used to show a wrong rule fails the statistics. */
  acceptRule?: (p: number, q: number) => number;
}

/** What speculative decoding did in one generation (`result.speculative`). */
export interface SpeculativeStats {
  /** The drafter: "prompt-lookup", "layer-skip" or "draft-model". */
  drafter: string;
  /** Target forward calls after the prompt. */
  steps: number; // target forwards after the prompt
  /** Of them, those that verified at least one drafted token (the others were plain steps). */
  draftingSteps: number; // of which verified at least one drafted token (the others were plain steps)
  /** Tokens drafted. */
  drafted: number;
  /** Drafted tokens accepted. */
  accepted: number;
  /** accepted ÷ drafted. */
  acceptanceRate: number;
  /** Tokens produced per target forward call (1 without speculation). */
  tokensPerTargetForward: number;
  /** Share of the generation's time spent drafting. */
  draftTimeShare: number;
  /** Measured: the per-token acceptance rate at which one drafted token breaks even (see DepthPlanner). */
  breakEvenAcceptance: number | null;
  /** Generated tokens per second of the whole generation, drafting included. */
  effectiveTokensPerSecond: number;
}

/** A sparse distribution copied out of the sampler's reusable buffers. */
interface Dist {
  ids: Int32Array;
  probs: Float32Array;
}

function copyDist(d: { ids: Int32Array; probs: Float32Array; n: number }): Dist {
  return { ids: d.ids.slice(0, d.n), probs: d.probs.slice(0, d.n) };
}

function probOf(d: Dist, id: number): number {
  for (let i = 0; i < d.ids.length; i++) if (d.ids[i] === id) return d.probs[i]!;
  return 0;
}

/** Draws from normalize(max(0, p − q)); q = null is a point mass at `rejected`. Falls back to p. */
function drawResidual(p: Dist, q: Dist | null, rejected: number, u: number): number {
  const r = new Float64Array(p.ids.length);
  let total = 0;
  for (let i = 0; i < p.ids.length; i++) {
    const id = p.ids[i]!;
    const qv = q ? probOf(q, id) : id === rejected ? 1 : 0;
    r[i] = Math.max(0, p.probs[i]! - qv);
    total += r[i]!;
  }
  if (!(total > 0)) return drawFrom(p, u);
  let acc = 0;
  for (let i = 0; i < r.length; i++) {
    acc += r[i]! / total;
    if (u < acc) return p.ids[i]!;
  }
  return p.ids[p.ids.length - 1]!;
}

function drawFrom(p: Dist, u: number): number {
  let acc = 0;
  for (let i = 0; i < p.ids.length; i++) {
    acc += p.probs[i]!;
    if (u < acc) return p.ids[i]!;
  }
  return p.ids[p.ids.length - 1]!;
}

/** What a drafter proposes: tokens, and per token the draft's distribution (null = deterministic). */
interface Proposal {
  tokens: number[];
  dists: (Dist | null)[];
  /** Which kind of proposal this is (prompt lookup: the matched n-gram length); acceptance is tracked per kind. */
  kind?: string;
}

interface Drafter {
  readonly name: string;
  /** Drafting costs next to nothing (prompt lookup): propose the most, then the planner trims. */
  readonly free: boolean;
  propose(context: readonly number[], max: number): Proposal;
}

/** n-gram lookup: the longest suffix of the context seen earlier predicts what followed it. */
export class PromptLookupDrafter implements Drafter {
  readonly name = "prompt-lookup";
  readonly free = true;
  constructor(readonly ngramMax = 3, readonly ngramMin = 1) {}

  propose(context: readonly number[], max: number): Proposal {
    const n = context.length;
    for (let g = Math.min(this.ngramMax, n - 1); g >= this.ngramMin; g--) {
      // Most recent earlier occurrence of the last g tokens.
      for (let start = n - g - 1; start >= 0; start--) {
        let match = true;
        for (let j = 0; j < g && match; j++) match = context[start + j] === context[n - g + j];
        if (!match) continue;
        const tokens = context.slice(start + g, Math.min(n, start + g + max));
        if (tokens.length > 0) return { tokens, dists: tokens.map(() => null), kind: `${g}-gram` };
      }
    }
    return { tokens: [], dists: [] };
  }
}

/**
 * A model drafter (a second model, or the target's first layers): keeps its own KV cache in
 * step with the accepted context, drafts by sampling its own distribution (argmax at
 * temperature 0), and stops early when its confidence drops.
 */
export class ModelDrafter implements Drafter {
  readonly free = false;
  #cached: number[] = [];
  readonly #sampler: Sampler;

  constructor(
    readonly name: string,
    readonly model: Forwarder,
    sampling: SamplingOptions,
    readonly minConfidence: number,
  ) {
    // Its own RNG stream (seeded from the target's seed when there is one).
    this.#sampler = createSampler({ ...sampling, seed: sampling.seed === undefined ? undefined : (sampling.seed ^ 0x5bd1e995) >>> 0 }, model.hp.nVocab);
  }

  propose(context: readonly number[], max: number): Proposal {
    // Roll the draft's cache back to the longest prefix it shares with the context.
    let keep = 0;
    while (keep < this.#cached.length && keep < context.length - 1 && this.#cached[keep] === context[keep]) keep++;
    this.model.state.truncate(keep);
    this.#cached.length = keep;
    const room = this.model.state.nCtx - context.length;
    max = Math.min(max, room);
    if (max <= 0) return { tokens: [], dists: [] };
    let logits = this.model.eval(context.slice(keep));
    this.#cached.push(...context.slice(keep));
    const history = [...context];
    const out: Proposal = { tokens: [], dists: [] };
    for (let i = 0; i < max; i++) {
      const q = copyDist(this.#sampler.distribution(logits.f32, history));
      if (i > 0 && confidence(logits.f32) < this.minConfidence) break;
      const token = q.ids.length === 1 ? q.ids[0]! : drawFrom(q, this.#sampler.random());
      out.tokens.push(token);
      out.dists.push(q);
      history.push(token);
      if (i + 1 < max) {
        logits = this.model.eval([token]);
        this.#cached.push(token);
      }
    }
    return out;
  }
}

/** The top token's softmax probability (one pass for the max, one for the sum). */
function confidence(logits: Float32Array): number {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > m) m = logits[i]!;
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i]! - m);
  return 1 / z;
}

/**
 * Chooses each step's draft depth k from measurements, so speculation runs only where it pays.
 *
 * Acceptance: α_i, the probability that draft i is accepted given drafts 0..i−1 were, tracked
 * per draft position and per proposal kind (prompt lookup: the matched n-gram length) with
 * exponential forgetting. Per position because acceptance is bursty: inside a copied passage
 * long runs are accepted whole, so a single rate would under-draft there. A step drafting k
 * tokens then settles E(k) = 1 + α_0 + α_0·α_1 + … tokens (the +1 is the target's own token).
 * Cost: T(k + 1), the measured time of a target forward and its acceptance checks over k + 1
 * rows, plus k times the draft's measured cost per token (d); see forwardMs for sizes not yet
 * measured.
 * k = argmax E(k) / cost(k) over {0} ∪ [minDraft, limit]; k = 0 is a plain decode step.
 * Break-even for one draft: α_0 = (T(2) + d) / T(1) − 1 (above 1, drafting can never pay).
 * Probing: after a run of plain steps, one step drafts min(2, limit) so a changed acceptance
 * rate is noticed; the run doubles (8 up to 256 steps) each time a probe does not pay, and no
 * probe is made while the break-even rate is above 1.
 */
export class DepthPlanner {
  /** Recent verify times per forward size (ms); the estimate is their median (these hosts are noisy). */
  readonly #samples: number[][] = [];
  readonly #forwardMs: (number | undefined)[] = [];
  #observed = 0;
  #draftMsPerToken: number | undefined;
  readonly #accepts = new Map<string, { tried: Float64Array; ok: Float64Array }>();
  #plainRun = 0;
  #probeEvery = 8;
  #probing = false;
  static readonly decay = 0.9;

  constructor(
    readonly maxDraft: number,
    readonly minDraft: number,
    /** Prior per-token acceptance (with the weight of two observed drafts). */
    readonly priorAlpha = 0.5,
  ) {}

  /** α_i for a kind of proposal: position i's decayed acceptance, shrunk toward the kind's overall rate. */
  alpha(kind = "", i = 0): number {
    const a = this.#accepts.get(kind);
    if (!a) return this.priorAlpha;
    let tried = 0;
    let ok = 0;
    for (let j = 0; j < a.tried.length; j++) {
      tried += a.tried[j]!;
      ok += a.ok[j]!;
    }
    const overall = (ok + 2 * this.priorAlpha) / (tried + 2);
    return (a.ok[i]! + 2 * overall) / (a.tried[i]! + 2);
  }

  /**
   * Estimated time of a target forward over n rows (ms), or undefined before any was measured:
   * the median of its recent measurements, else linear between the nearest measured sizes, else
   * beyond the largest one at the last measured segment's slope. The cost is not linear in n
   * (the second row costs more than the tenth: one row is memory-bound, several are
   * compute-bound), so the last segment, not a line through all, extrapolates.
   */
  forwardMs(n: number): number | undefined {
    const t = this.#forwardMs;
    if (!t.some((x) => x !== undefined)) return undefined;
    // A forward over more rows never costs less: an estimate is capped by every larger measured size.
    let cap = Infinity;
    for (let m = t.length - 1; m >= n; m--) if (t[m] !== undefined) cap = Math.min(cap, t[m]!);
    return Math.min(cap, this.#rawMs(n));
  }

  #rawMs(n: number): number {
    const t = this.#forwardMs;
    if (t[n] !== undefined) return t[n]!;
    let lo = n - 1;
    while (lo >= 1 && t[lo] === undefined) lo--;
    let hi = n + 1;
    while (hi < t.length && t[hi] === undefined) hi++;
    if (lo < 1) return t[hi]!; // nothing smaller measured: the next larger size bounds it
    if (hi < t.length) return t[lo]! + ((t[hi]! - t[lo]!) * (n - lo)) / (hi - lo);
    // Beyond the largest measured size: the slope of the last measured segment (rows past the
    // first few cost alike), or 0.3·T(1) per row while only one size is known.
    let prev = lo - 1;
    while (prev >= 1 && t[prev] === undefined) prev--;
    const slope = prev >= 1 ? Math.max(0, (t[lo]! - t[prev]!) / (lo - prev)) : 0.3 * t[lo]!;
    return t[lo]! + slope * (n - lo);
  }

  /**
   * The acceptance rate at which drafting one token breaks even with a plain step:
   * (T(2) + d) / T(1) − 1, or undefined before T(1) is measured.
   */
  breakEvenAcceptance(draftMsPerToken = this.#draftMsPerToken ?? 0): number | undefined {
    const t1 = this.forwardMs(1);
    if (t1 === undefined) return undefined;
    return (this.forwardMs(2)! + draftMsPerToken) / t1 - 1;
  }

  /**
   * The depth for the next step: 0 (plain step) or a value in [minDraft, limit]. `free`: the
   * draft costs nothing (prompt lookup); otherwise the measured cost per drafted token counts.
   */
  choose(limit: number, kind = "", free = false): number {
    limit = Math.min(limit, this.maxDraft);
    if (limit < this.minDraft) return 0;
    const t1 = this.forwardMs(1);
    if (t1 === undefined) return 0; // measure plain steps first
    if (!free && this.#draftMsPerToken === undefined) return limit; // then one drafting step
    const d = free ? 0 : this.#draftMsPerToken!;
    let best = 0;
    let bestRate = 1 / t1;
    let expected = 1;
    let reach = 1; // probability that draft k is reached (all before it accepted)
    for (let k = 1; k <= limit; k++) {
      reach *= this.alpha(kind, k - 1);
      expected += reach;
      if (k < this.minDraft) continue;
      const rate = expected / (this.forwardMs(k + 1)! + k * d);
      if (rate > bestRate) {
        best = k;
        bestRate = rate;
      }
    }
    this.#probing = false;
    if (best > 0) {
      this.#probeEvery = 8;
      return best;
    }
    if (this.#plainRun >= this.#probeEvery && this.breakEvenAcceptance(d)! < 1) {
      this.#probing = true;
      return Math.max(this.minDraft, Math.min(2, limit));
    }
    return 0;
  }

  /** Records one step: rows in the target forward, its time, and the drafts' fate. */
  observe(rows: number, verifyMs: number, drafted: number, kept: number, draftMs: number, kind = ""): void {
    // The first step after prefill runs cold (caches, JIT): its time says little about the rest.
    if (this.#observed++ > 0) {
      const xs = (this.#samples[rows] ??= []);
      xs.push(verifyMs);
      if (xs.length > 7) xs.shift();
      this.#forwardMs[rows] = [...xs].sort((a, b) => a - b)[xs.length >> 1];
    }
    this.#plainRun = drafted === 0 ? this.#plainRun + 1 : 0;
    if (drafted === 0) return;
    if (this.#probing) {
      this.#probing = false;
      const t1 = this.forwardMs(1)!;
      if ((kept + 1) / (verifyMs + draftMs) < 1 / t1) this.#probeEvery = Math.min(256, this.#probeEvery * 2);
    }
    const per = draftMs / drafted;
    this.#draftMsPerToken = this.#draftMsPerToken === undefined ? per : 0.7 * this.#draftMsPerToken + 0.3 * per;
    let a = this.#accepts.get(kind);
    if (!a) this.#accepts.set(kind, (a = { tried: new Float64Array(this.maxDraft), ok: new Float64Array(this.maxDraft) }));
    for (let i = 0; i < a.tried.length; i++) {
      a.tried[i]! *= DepthPlanner.decay;
      a.ok[i]! *= DepthPlanner.decay;
    }
    // Drafts 0..kept were tested (kept accepted, then one rejected unless all were kept).
    for (let i = 0; i < Math.min(drafted, kept + 1); i++) {
      a.tried[i]! += 1;
      if (i < kept) a.ok[i]! += 1;
    }
  }
}

/** The speculative token source: yields the tokens each target forward settles. */
export class SpeculativeRun implements Iterable<number[]> {
  #steps = 0;
  #drafted = 0;
  #accepted = 0;
  #produced = 0;
  #draftMs = 0;
  #totalMs = 0;
  #draftingSteps = 0;
  readonly planner: DepthPlanner;

  constructor(
    readonly target: Forwarder,
    /** Logits of the prompt's last position (the caller prefilled the prompt). */
    readonly prefilled: Tensor,
    readonly sampler: Sampler,
    readonly history: number[],
    readonly drafter: Drafter,
    readonly o: Required<Pick<SpeculativeOptions, "maxDraft" | "minDraft" | "adaptive">> & Pick<SpeculativeOptions, "acceptRule">,
  ) {
    this.planner = new DepthPlanner(o.maxDraft, o.minDraft);
  }

  *[Symbol.iterator](): Iterator<number[]> {
    const { target, sampler, history } = this;
    const accept = this.o.acceptRule ?? ((p: number, q: number) => Math.min(1, p / q));
    let pending = sampler.sample(this.prefilled.f32, history);
    history.push(pending);
    yield [pending];
    const planner = this.planner;
    for (;;) {
      const t0 = performance.now();
      const room = target.state.nCtx - target.state.nPast - 1; // positions left after `pending`
      if (room < 0) return;
      const limit = Math.min(this.o.maxDraft, room);
      let proposal: Proposal;
      if (!this.o.adaptive) proposal = this.drafter.propose(history, limit);
      else if (this.drafter.free) {
        // Free drafts: propose the most, then keep the depth the planner picks for this kind.
        proposal = this.drafter.propose(history, limit);
        const k = planner.choose(proposal.tokens.length, proposal.kind ?? "", true);
        proposal = { tokens: proposal.tokens.slice(0, k), dists: proposal.dists.slice(0, k), kind: proposal.kind };
      } else {
        const k = planner.choose(limit);
        proposal = k > 0 ? this.drafter.propose(history, k) : { tokens: [], dists: [] };
      }
      const t1 = performance.now();
      const batch = [pending, ...proposal.tokens];
      const base = target.state.nPast;
      const rows = target.eval(batch, batch.length);
      const V = target.hp.nVocab;
      const settled: number[] = [];
      let kept = 0;
      let next = -1;
      for (let i = 0; i < proposal.tokens.length; i++) {
        const p = copyDist(sampler.distribution(rows.f32.subarray(i * V, (i + 1) * V), history));
        const d = proposal.tokens[i]!;
        const q = proposal.dists[i] ?? null;
        const qd = q ? probOf(q, d) : 1;
        if (qd > 0 && sampler.random() < accept(probOf(p, d), qd)) {
          settled.push(d);
          history.push(d);
          kept++;
          continue;
        }
        next = drawResidual(p, q, d, sampler.random());
        break;
      }
      if (next < 0) next = sampler.sample(rows.f32.subarray(kept * V, (kept + 1) * V), history);
      // Roll back the rejected drafts: the cache keeps `pending` and the accepted drafts.
      target.state.truncate(base + 1 + kept);
      history.push(next);
      settled.push(next);
      pending = next;
      const t2 = performance.now();
      this.#steps++;
      if (proposal.tokens.length > 0) this.#draftingSteps++;
      this.#drafted += proposal.tokens.length;
      this.#accepted += kept;
      this.#produced += settled.length;
      this.#draftMs += t1 - t0;
      this.#totalMs += t2 - t0;
      planner.observe(batch.length, t2 - t1, proposal.tokens.length, kept, t1 - t0, proposal.kind ?? "");
      yield settled;
    }
  }

  stats(generateMs: number): SpeculativeStats {
    return {
      drafter: this.drafter.name,
      steps: this.#steps,
      draftingSteps: this.#draftingSteps,
      drafted: this.#drafted,
      accepted: this.#accepted,
      acceptanceRate: this.#drafted ? this.#accepted / this.#drafted : 0,
      tokensPerTargetForward: this.#steps ? this.#produced / this.#steps : 0,
      draftTimeShare: this.#totalMs ? this.#draftMs / this.#totalMs : 0,
      breakEvenAcceptance: this.planner.breakEvenAcceptance() ?? null,
      effectiveTokensPerSecond: generateMs > 0 ? ((this.#produced + 1) * 1000) / generateMs : 0,
    };
  }
}

export interface SpeculativeTarget extends Forwarder {
  /** The target's first `nLayers` layers with its own cache (layer-skip drafting). */
  layerSkip(nLayers: number): Forwarder;
  readonly nLayer: number;
}

/** A speculative token source over `target`, whose prompt is in its KV cache with `prefilled` the last position's logits. */
export function speculativeTokens(target: SpeculativeTarget, prefilled: Tensor, sampler: Sampler, history: number[], o: SpeculativeOptions): SpeculativeRun {
  if ("skipLayers" in o) throw new KilnError("BAD_OPTION", "speculative.skipLayers was renamed draftLayers (the number of the target's first layers the drafter runs)");
  const maxDraft = o.maxDraft ?? 6;
  // A verification batch is k + 1 rows; beyond maxInvariantRows rows the matmul and attention
  // kernels sum in another order than decode (zig-kernels: max_invariant_rows, max_invariant_queries).
  const maxInvariantBatch = limits().maxInvariantRows;
  const rowsAvailable = Math.min(target.state.maxLogitRows, maxInvariantBatch) - 1;
  if (!Number.isSafeInteger(maxDraft) || maxDraft < 1 || maxDraft > rowsAvailable) {
    throw new KilnError("BAD_OPTION", `speculative.maxDraft must be an integer in [1, ${rowsAvailable}] (a verification batch of k + 1 rows must fit the target's ${target.state.maxLogitRows} logit rows and the kernels' ${maxInvariantBatch}-row batch-invariant limit), got ${maxDraft}`);
  }
  const sampling = sampler.options;
  let drafter: Drafter;
  if (o.draft === "prompt-lookup") drafter = new PromptLookupDrafter(o.ngramMax ?? 3, o.ngramMin ?? 1);
  else if (o.draft === "layer-skip") drafter = new ModelDrafter("layer-skip", target.layerSkip(o.draftLayers ?? Math.max(1, Math.floor(target.nLayer / 2))), sampling, o.minConfidence ?? 0.4);
  else {
    if (o.draft.hp.nVocab !== target.hp.nVocab) throw new KilnError("BAD_OPTION", `speculative: the draft model's vocabulary (${o.draft.hp.nVocab}) differs from the target's (${target.hp.nVocab})`);
    drafter = new ModelDrafter("draft-model", o.draft, sampling, o.minConfidence ?? 0.4);
  }
  return new SpeculativeRun(target, prefilled, sampler, history, drafter, { maxDraft, minDraft: o.minDraft ?? 1, adaptive: o.adaptive ?? true, acceptRule: o.acceptRule });
}
