/**
 * Continuous batching: several sequences over one model and one KV cache (one region of
 * `contextLength` positions per sequence), advanced together. Each step is ONE forward call that
 * carries the next token of every decoding sequence plus a chunk of a waiting prompt, so one pass
 * over the weights serves every user: where a memory-bound decoder gains most.
 *
 *   const batch = model.createBatch({ sequences: 4, contextLength: 2048 });
 *   const seq = batch.add(promptIds, { maxTokens: 64 }, { onPiece: (p) => ..., onDone: (r) => ... });
 *   // the batch runs itself: a forward per step, a turn of the event loop between steps
 *   batch.cancel(seq);    // ends it at the next step (finishReason "abort")
 *   batch.dispose();
 *
 * Prompts are evaluated `prefillChunk` tokens per step (all waiting prompts together, oldest
 * first), so running streams keep receiving a token every step while a long prompt is read.
 * A sequence keeps its tokens in its region after it ends: a new request whose prompt shares a
 * prefix with them (a chat's next turn) takes that sequence and evaluates only the rest.
 * Speculative decoding is not used here: the batch already shares each weight read.
 */
import type { Device } from "../tensor";
import * as cpu from "../backends/cpu";
import { TokenConstraint } from "../chat/constrain";
import { compileJsonSchema } from "../chat/json-schema";
import { KilnError } from "../errors";
import type { SeqPart } from "../models/common";
import { ModelError } from "../models/hparams";
import { RunState } from "../models/state";
import { resolveContextOptions, type ContextOptions, type GeneratedPiece, type GenerateOptions, type GenerateResult, type Timings } from "./context";
import type { Model, ModelCore } from "./model";
import { Reply } from "./reply";
import { createSampler, type Sampler } from "./sampling";

/** Options of `model.createBatch`: the number of sequences and the context options each one gets. */
export interface BatchOptions extends Omit<ContextOptions, "maxLogitRows"> {
  /** Sequences generated at once (default 4, at most BATCH_LIMITS.sequences). */
  sequences?: number;
}

/** The most a Batch takes. */
export const BATCH_LIMITS = {
  /** Sequences in one batch. */
  sequences: 64,
} as const;

/** What a sequence's owner hears: pieces as they are sampled, then the result or an error. */
export interface SequenceListener {
  /** A piece of text, as it is sampled. */
  onPiece(piece: GeneratedPiece): void;
  /** The sequence ended: its whole result (finishReason "abort" after cancel or dispose). */
  onDone(result: GenerateResult): void;
  /** The sequence failed (a forward call or its sampler threw); nothing more comes. */
  onError(error: unknown): void;
}

/** Options of one sequence: sampling, limits, stop strings, JSON constraints (speculation does not apply). */
export type SequenceOptions = Omit<GenerateOptions, "speculative" | "signal" | "addSpecial" | "parseSpecial">;

/** A running sequence, as `add` returns it. */
export interface SequenceHandle {
  /** Its region of the KV cache, 0..sequences-1. */
  readonly seq: number;
}

interface Running extends SequenceHandle {
  seq: number;
  listener: SequenceListener;
  sampler: Sampler;
  constraint: TokenConstraint | null;
  reply: Reply;
  /** Prompt then generated tokens: the penalty window; up to the region's nPast, what its cache holds. */
  history: number[];
  /** Prompt tokens not yet evaluated, from `next`. */
  prompt: Int32Array;
  next: number;
  /** The sampled token waiting to be evaluated (decode phase), or -1. */
  pending: number;
  cached: number;
  aborted: boolean;
  t0: number;
  t1: number;
}

/** A batch that is never disposed still gives its KV cache and its hold on the weights back once collected. */
const collected = new FinalizationRegistry(({ core, token, state }: { core: ModelCore; token: object; state: RunState }) => {
  state.dispose();
  core.release(token);
});

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Continuous batching: several sequences over one model and one KV cache (a region of
 * `contextLength` positions each), advanced together, one forward call per step for all of them.
 * Create it with `model.createBatch({ sequences })`; `add` starts a sequence, the batch runs
 * itself between turns of the event loop.
 */
export class Batch {
  /** The model it runs. */
  readonly model: Model;
  /** Sequences it runs at once. */
  readonly sequences: number;
  /** Positions of each sequence (prompt + reply). */
  readonly contextLength: number;
  /** Prompt tokens evaluated per step, all waiting prompts together. */
  readonly prefillChunk: number;
  /** Kernel threads while it computes. */
  readonly threads: number;
  /** Forward calls run so far, and the rows they carried (tests and /metrics). */
  steps = 0;
  /** Rows (tokens) the forward calls carried: rows ÷ steps is the mean batch. */
  rows = 0;
  /** Per-op kernel timings of this batch's steps while `profiling` is true (plus "sample"). */
  readonly profiler = new cpu.OpProfiler();
  /** While true, every kernel call of a step is timed into `profiler`. */
  profiling = false;
  /** @internal */
  readonly state: RunState;
  /** The device its KV cache and activations live on (its model's). */
  get device(): Device {
    return this.state.backend.device;
  }
  readonly #core: ModelCore;
  readonly #token = {};
  /** Per region: the token ids its cache holds (positions 0..nPast-1), and who runs in it. */
  readonly #cached: number[][];
  readonly #running: (Running | null)[];
  /** Per-step scratch, sized once: token ids (maxBatch), the parts (one object per sequence), members. */
  readonly #ids: Int32Array;
  readonly #partOf: SeqPart[];
  readonly #parts: SeqPart[] = [];
  readonly #members: Running[] = [];
  #loop: Promise<void> | null = null;
  #disposed = false;

  /** @internal use model.createBatch(). */
  constructor(model: Model, core: ModelCore, opts: BatchOptions, threadsDefault: number | undefined) {
    const sequences = opts.sequences ?? 4;
    if (!Number.isSafeInteger(sequences) || sequences < 1 || sequences > BATCH_LIMITS.sequences) {
      throw new KilnError("BAD_OPTION", `sequences must be an integer in [1, ${BATCH_LIMITS.sequences}], got ${sequences}`);
    }
    const { state, threads, prefillChunk } = resolveContextOptions(core, { ...opts, maxLogitRows: sequences }, threadsDefault, true);
    if (state.maxBatch < sequences) throw new KilnError("BAD_OPTION", `batchSize ${state.maxBatch} is below sequences ${sequences}: one step carries a token of every sequence`);
    this.model = model;
    this.#core = core;
    this.sequences = sequences;
    this.contextLength = state.nCtx;
    this.threads = threads;
    // A step carries up to `sequences` decode rows besides the prompt chunk.
    this.prefillChunk = Math.max(1, Math.min(prefillChunk, state.maxBatch - sequences));
    this.state = new RunState(core.hp, { ...state, nSeq: sequences }, core.backend);
    core.retain(this.#token);
    collected.register(this, { core, token: this.#token, state: this.state }, this.#token);
    this.#cached = Array.from({ length: sequences }, () => []);
    this.#running = Array.from({ length: sequences }, () => null);
    this.#ids = new Int32Array(this.state.maxBatch);
    this.#partOf = Array.from({ length: sequences }, (_, seq) => ({ seq, n: 0 }));
  }

  /** Sequences generating now. */
  get active(): number {
    return this.#running.filter((r) => r !== null).length;
  }

  /** Whether `add` would find a free sequence. */
  get hasRoom(): boolean {
    return !this.#disposed && this.#running.some((r) => r === null);
  }

  /** Whether dispose() was called. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Starts generating the continuation of `prompt` (token ids, BOS included as the caller
   * wants) in a free sequence: the one whose cache shares the longest prefix with it. Throws
   * (nothing started) on a bad option, a prompt that does not fit, or when every sequence is busy.
   */
  add(prompt: readonly number[], opts: SequenceOptions, listener: SequenceListener): SequenceHandle {
    if (this.#disposed) throw new KilnError("DISPOSED", "batch.add: the batch was disposed");
    const hp = this.#core.hp;
    if (prompt.length === 0) throw new KilnError("BAD_OPTION", "batch.add: the prompt has no tokens");
    for (const t of prompt) if (!Number.isInteger(t) || t < 0 || t >= hp.nVocab) throw new KilnError("BAD_OPTION", `batch.add: prompt token id ${t} outside the vocabulary [0, ${hp.nVocab})`);
    if (prompt.length >= this.contextLength) {
      throw new ModelError("PROMPT_TOO_LONG", `the prompt has ${prompt.length} tokens; each sequence holds ${this.contextLength}`, this.#core.path);
    }
    const maxTokensOpt = opts.maxTokens ?? 256;
    if (!Number.isSafeInteger(maxTokensOpt) || maxTokensOpt < 0) throw new KilnError("BAD_OPTION", `maxTokens must be a non-negative integer, got ${maxTokensOpt}`);
    const sampler = createSampler(opts, hp.nVocab);
    const constraint = opts.jsonSchema !== undefined || opts.json ? new TokenConstraint(compileJsonSchema(opts.jsonSchema ?? true), this.#core.tokenizer) : null;
    const maxTokens = Math.min(maxTokensOpt, this.contextLength - prompt.length);

    // The free region whose cache shares the longest prefix (at least one token is evaluated, for its logits).
    let seq = -1;
    let cached = -1;
    for (let i = 0; i < this.sequences; i++) {
      if (this.#running[i]) continue;
      let n = 0;
      if (opts.reuseCache) {
        const c = this.#cached[i]!;
        const limit = Math.min(c.length, prompt.length - 1);
        while (n < limit && c[n] === prompt[n]) n++;
      }
      if (n > cached) [seq, cached] = [i, n];
    }
    if (seq < 0) throw new KilnError("CONTEXT_BUSY", `batch.add: all ${this.sequences} sequences are generating`);
    this.state.truncate(cached, seq);
    this.#cached[seq]!.length = cached;
    const r: Running = {
      seq, listener, sampler, constraint,
      reply: new Reply(this.#core.tokenizer, { maxTokens, stop: opts.stop, renderSpecial: opts.renderSpecial, constraint }),
      history: [...prompt],
      prompt: Int32Array.from(prompt.slice(cached)),
      next: 0,
      pending: -1,
      cached,
      aborted: false,
      t0: performance.now(),
      t1: 0,
    };
    this.#running[seq] = r;
    this.#loop ??= this.#run().finally(() => (this.#loop = null));
    return r;
  }

  /** Ends a sequence at the next step (finishReason "abort"); its region is free after that. */
  cancel(h: SequenceHandle): void {
    const r = this.#running[h.seq];
    if (r === h) r.aborted = true;
  }

  /** Resolves when no sequence is running. */
  async idle(): Promise<void> {
    while (this.#loop) await this.#loop;
  }

  async #run(): Promise<void> {
    // Starts on the next turn: sequences added in the same tick share the first forward.
    await yieldToEventLoop();
    while (!this.#disposed && this.#running.some((r) => r !== null)) {
      this.step();
      // Between forward calls: new requests, cancels and I/O get their turn.
      await yieldToEventLoop();
    }
  }

  /**
   * One step: ends aborted and finished sequences, then runs one forward over every decoding
   * sequence's pending token and up to prefillChunk prompt tokens, and samples where a prompt is
   * complete. Returns whether a forward ran. (The batch calls this itself; tests call it too.)
   */
  step(): boolean {
    for (const r of this.#running) {
      if (!r) continue;
      if (r.aborted) r.reply.end("abort");
      if (r.reply.done) this.#finish(r);
    }
    // The step's rows, in buffers kept across steps (the decode loop allocates nothing per token).
    const parts = this.#parts;
    const members = this.#members;
    const ids = this.#ids;
    parts.length = 0;
    members.length = 0;
    let rows = 0;
    const add = (r: Running, n: number) => {
      const part = this.#partOf[r.seq]!;
      part.n = n;
      parts.push(part);
      members.push(r);
    };
    // Decoding sequences first: one row each.
    for (const r of this.#running) {
      if (!r || r.pending < 0) continue;
      add(r, 1);
      ids[rows++] = r.pending;
    }
    // Then prompts, oldest first (added earliest), within the step's prefill budget.
    let budget = this.prefillChunk;
    while (budget > 0) {
      let oldest: Running | null = null;
      for (const r of this.#running) if (r && r.pending < 0 && r.next < r.prompt.length && !members.includes(r) && (!oldest || r.t0 < oldest.t0)) oldest = r;
      if (!oldest) break;
      const n = Math.min(budget, oldest.prompt.length - oldest.next);
      add(oldest, n);
      ids.set(oldest.prompt.subarray(oldest.next, oldest.next + n), rows);
      rows += n;
      oldest.next += n;
      budget -= n;
    }
    if (parts.length === 0) return false;
    const core = this.#core;
    let logits;
    try {
      cpu.useThreads(this.threads);
      logits = cpu.withProfiler(this.profiling ? this.profiler : null, () => core.arch.forward(core.hp, core.weights, this.state, ids.subarray(0, rows), 1, parts));
    } catch (e) {
      // Nothing of this step reached a cache consistently: every member ends with the error.
      for (const r of members) this.#fail(r, e);
      return true;
    }
    this.steps++;
    this.rows += rows;
    const vocab = core.hp.nVocab;
    const all = logits.f32;
    const ts = performance.now();
    members.forEach((r, i) => {
      const row = all.subarray(i * vocab, (i + 1) * vocab);
      if (r.pending >= 0) r.pending = -1;
      else if (r.next < r.prompt.length) return; // more prompt to read: this row's logits are not needed
      else r.t1 = performance.now();
      if (r.aborted) return;
      try {
        if (r.constraint) r.constraint.mask(row); // the row is this step's scratch: masking in place is fine
        const token = r.sampler.sample(row, r.history);
        r.constraint?.accept(token);
        r.history.push(token);
        const piece = r.reply.push(token);
        if (piece !== null) r.listener.onPiece({ text: piece, token });
        if (!r.reply.done) r.pending = token;
      } catch (e) {
        this.#fail(r, e);
      }
    });
    if (this.profiling) this.profiler.record("sample", ts);
    for (const r of members) if (this.#running[r.seq] === r && (r.reply.done || r.aborted) && r.pending < 0) {
      if (r.aborted) r.reply.end("abort");
      this.#finish(r);
    }
    return true;
  }

  #finish(r: Running): void {
    this.#running[r.seq] = null;
    const nPast = this.state.seqs[r.seq]!.nPast;
    this.#cached[r.seq] = r.history.slice(0, nPast);
    const rest = r.reply.flush();
    const t2 = performance.now();
    const t1 = r.t1 || t2;
    if (rest.length > 0) this.#deliver(() => r.listener.onPiece({ text: rest, token: r.reply.tokens.at(-1) ?? -1 }));
    const promptTokens = r.history.length - r.reply.tokens.length - r.cached;
    const n = r.reply.tokens.length;
    const timings: Timings = {
      loadMs: this.#core.loadMs,
      promptTokens,
      cachedTokens: r.cached,
      promptMs: t1 - r.t0,
      promptTokensPerSecond: (promptTokens * 1000) / Math.max(t1 - r.t0, 1e-6),
      generatedTokens: n,
      generateMs: t2 - t1,
      generatedTokensPerSecond: (n * 1000) / Math.max(t2 - t1, 1e-6),
    };
    this.#deliver(() => r.listener.onDone({ text: r.reply.text, tokens: r.reply.tokens, finishReason: r.reply.finishReason, timings }));
  }

  #fail(r: Running, e: unknown): void {
    if (this.#running[r.seq] !== r) return;
    this.#running[r.seq] = null;
    // What this sequence's region holds is unknown now: nothing is reused from it.
    this.state.truncate(0, r.seq);
    this.#cached[r.seq] = [];
    this.#deliver(() => r.listener.onError(e));
  }

  /** A listener that throws must not stop the other sequences: its error is rethrown outside the step. */
  #deliver(f: () => void): void {
    try {
      f();
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  }

  /**
   * Frees the KV cache and buffers. Running sequences end with finishReason "abort" first.
   * Idempotent.
   */
  dispose(): void {
    if (this.#disposed) return;
    for (const r of this.#running) if (r) {
      r.reply.end("abort");
      this.#finish(r);
    }
    this.#disposed = true;
    collected.unregister(this.#token);
    this.state.dispose();
    this.#core.release(this.#token);
  }

  /** Same as dispose(): lets `using` dispose it at the end of a block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
