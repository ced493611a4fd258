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
import type { Tensor } from "../tensor";
import type { RunState } from "../models/state";
import { createSampler, type Sampler, type SamplingOptions } from "./sampling";

/** Anything that appends tokens to its own KV cache and returns logits (a Model, a layer-skip view). */
export interface Forwarder {
  readonly hp: { nVocab: number };
  readonly state: RunState;
  eval(tokens: readonly number[] | Int32Array, logitRows?: number): Tensor;
}

export interface SpeculativeOptions {
  /** A draft model (same vocabulary), "prompt-lookup", or "layer-skip". */
  draft: Forwarder | "prompt-lookup" | "layer-skip";
  /** Most drafted tokens per step (default 6; at most the target's logit rows − 1). */
  maxDraft?: number;
  /** Fewest drafted tokens per step when adapting (default 1). */
  minDraft?: number;
  /** Adapt the depth to the running acceptance rate (default true). */
  adaptive?: boolean;
  /** A model drafter stops early when its top probability falls below this (default 0.4). */
  minConfidence?: number;
  /** Layer-skip: layers of the target the draft runs (default: half). */
  skipLayers?: number;
  /** Prompt lookup: longest and shortest n-gram to match (default 3 and 1). */
  ngramMax?: number;
  ngramMin?: number;
  /** TEST ONLY: replaces the acceptance probability min(1, p/q); used to show a wrong rule fails the statistics. */
  acceptRule?: (p: number, q: number) => number;
}

export interface SpeculativeStats {
  drafter: string;
  steps: number; // target forwards after the prompt
  drafted: number;
  accepted: number;
  acceptanceRate: number;
  tokensPerTargetForward: number;
  draftTimeShare: number;
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
}

interface Drafter {
  readonly name: string;
  propose(context: readonly number[], max: number): Proposal;
}

/** n-gram lookup: the longest suffix of the context seen earlier predicts what followed it. */
export class PromptLookupDrafter implements Drafter {
  readonly name = "prompt-lookup";
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
        if (tokens.length > 0) return { tokens, dists: tokens.map(() => null) };
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

/** The speculative token source: yields the tokens each target forward settles. */
export class SpeculativeRun implements Iterable<number[]> {
  #steps = 0;
  #drafted = 0;
  #accepted = 0;
  #produced = 0;
  #draftMs = 0;
  #totalMs = 0;

  constructor(
    readonly target: Forwarder,
    readonly prompt: number[],
    readonly sampler: Sampler,
    readonly history: number[],
    readonly drafter: Drafter,
    readonly o: Required<Pick<SpeculativeOptions, "maxDraft" | "minDraft" | "adaptive">> & Pick<SpeculativeOptions, "acceptRule">,
    readonly onPrefilled: () => void,
  ) {}

  *[Symbol.iterator](): Iterator<number[]> {
    const { target, sampler, history } = this;
    const accept = this.o.acceptRule ?? ((p: number, q: number) => Math.min(1, p / q));
    let logits = target.eval(this.prompt);
    this.onPrefilled();
    let pending = sampler.sample(logits.f32, history);
    history.push(pending);
    yield [pending];
    let depth = this.o.maxDraft;
    for (;;) {
      const t0 = performance.now();
      const room = target.state.nCtx - target.state.nPast - 1; // positions left after `pending`
      if (room < 0) return;
      const proposal = this.drafter.propose(history, Math.min(depth, room));
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
      this.#steps++;
      this.#drafted += proposal.tokens.length;
      this.#accepted += kept;
      this.#produced += settled.length;
      this.#draftMs += t1 - t0;
      this.#totalMs += performance.now() - t0;
      if (this.o.adaptive) depth = this.#adapt(depth, kept, proposal.tokens.length);
      yield settled;
    }
  }

  /** Deeper after a fully accepted step, shallower when under half was kept. */
  #adapt(depth: number, kept: number, drafted: number): number {
    if (drafted === 0) return depth;
    if (kept === drafted) return Math.min(this.o.maxDraft, depth + 1);
    if (kept * 2 < drafted) return Math.max(this.o.minDraft, depth - 1);
    return depth;
  }

  stats(generateMs: number): SpeculativeStats {
    return {
      drafter: this.drafter.name,
      steps: this.#steps,
      drafted: this.#drafted,
      accepted: this.#accepted,
      acceptanceRate: this.#drafted ? this.#accepted / this.#drafted : 0,
      tokensPerTargetForward: this.#steps ? this.#produced / this.#steps : 0,
      draftTimeShare: this.#totalMs ? this.#draftMs / this.#totalMs : 0,
      effectiveTokensPerSecond: generateMs > 0 ? ((this.#produced + 1) * 1000) / generateMs : 0,
    };
  }
}

export interface SpeculativeTarget extends Forwarder {
  /** The target's first `nLayers` layers with its own cache (layer-skip drafting). */
  layerSkip(nLayers: number): Forwarder;
  readonly nLayer: number;
}

export function speculativeTokens(target: SpeculativeTarget, prompt: number[], sampler: Sampler, history: number[], o: SpeculativeOptions, onPrefilled: () => void): SpeculativeRun {
  const maxDraft = o.maxDraft ?? 6;
  const rowsAvailable = target.state.maxLogitRows - 1;
  if (!Number.isSafeInteger(maxDraft) || maxDraft < 1 || maxDraft > rowsAvailable) {
    throw new RangeError(`speculative.maxDraft must be an integer in [1, ${rowsAvailable}] (the target returns ${target.state.maxLogitRows} logit rows per forward), got ${maxDraft}`);
  }
  const sampling = sampler.options;
  let drafter: Drafter;
  if (o.draft === "prompt-lookup") drafter = new PromptLookupDrafter(o.ngramMax ?? 3, o.ngramMin ?? 1);
  else if (o.draft === "layer-skip") drafter = new ModelDrafter("layer-skip", target.layerSkip(o.skipLayers ?? Math.max(1, Math.floor(target.nLayer / 2))), sampling, o.minConfidence ?? 0.4);
  else {
    if (o.draft.hp.nVocab !== target.hp.nVocab) throw new RangeError(`speculative: the draft model's vocabulary (${o.draft.hp.nVocab}) differs from the target's (${target.hp.nVocab})`);
    drafter = new ModelDrafter("draft-model", o.draft, sampling, o.minConfidence ?? 0.4);
  }
  return new SpeculativeRun(target, prompt, sampler, history, drafter, { maxDraft, minDraft: o.minDraft ?? 1, adaptive: o.adaptive ?? true, acceptRule: o.acceptRule }, onPrefilled);
}
