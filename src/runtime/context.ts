/**
 * A context: one KV cache and the run state of one conversation or generation over a Model's
 * shared, immutable weights. Any number of contexts share one model; each runs one generation
 * at a time (a second call while one runs throws KilnError CONTEXT_BUSY).
 *
 *   const ctx = model.createContext({ contextLength: 2048 });
 *   for await (const { text } of ctx.generate("Once upon a time", { maxTokens: 32 })) process.stdout.write(text);
 *   ctx.dispose();
 *
 * Generation never holds the event loop for longer than one forward call: the loop awaits the
 * event loop between forward calls, and the prompt is evaluated in chunks of `prefillChunk`
 * tokens with a turn of the event loop after each layer of a chunk, so timers, I/O and other
 * requests run while a generation streams, and an AbortSignal fired from any of them ends the
 * generation at its next step (finishReason "abort").
 */
import type { Device } from "../tensor";
import * as cpu from "../backends/cpu";
import { limits } from "../ffi/library";
import { KilnError } from "../errors";
import type { HParams } from "../models/hparams";
import { ModelError } from "../models/hparams";
import { RunState, type AttentionPath, type KvType, type StatePlan, type StateOptions } from "../models/state";
import type { Tensor } from "../tensor";
import type { Tokenizer } from "../tokenizer";
import type { Model, ModelCore } from "./model";
import { compileJsonSchema, type JsonSchema } from "../chat/json-schema";
import { TokenConstraint } from "../chat/constrain";
import { createSampler, type Sampler, type SamplingOptions } from "./sampling";
import { SpeculativeRun, speculativeTokens, type Forwarder, type SpeculativeOptions as DrafterOptions, type SpeculativeStats } from "./speculative";
import { checkThreads, physicalCores } from "./threads";
import { Reply } from "./reply";

/** Options of a context (on `createContext`, or on `loadModel` as the defaults of every context of the model). */
export interface ContextOptions {
  /** KV cache positions (default: min(training context, 4096)). */
  contextLength?: number;
  /** Most tokens per forward call (default 512): the largest prefill chunk, and buffer sizes. */
  batchSize?: number;
  /**
   * Tokens per forward call when generate/evaluate run a prompt (at most batchSize); they
   * return to the event loop after each layer of each call. Default: sized from the model so one
   * layer of a call is about PREFILL_LAYER_FLOPS of matmul work (Gemma 3 270M, SmolLM2: 512
   * tokens; a 1.1B model: 256; a 7B model: 64), see defaultPrefillChunk. Smaller chunks return
   * to the event loop sooner; larger ones prefill faster (docs/tuning.md: measurements). A batch
   * (createBatch) runs each step's forward call whole: its default is defaultBatchPrefillChunk.
   */
  prefillChunk?: number;
  /** Rows of logits one forward call can return (default 16: speculative verification, parity tests). */
  maxLogitRows?: number;
  /**
   * KV cache element type (default f16, as llama.cpp). "q8_0" (llama.cpp's `-ctk q8_0 -ctv q8_0`)
   * stores 34 bytes per 32 values instead of 64, so long-context decode reads about half the
   * KV bytes; flash attention dequantizes it tile by tile. Needs head_dim a multiple of 32.
   */
  kvType?: KvType;
  /** Attention path: "flash" (fused, default) or "naive" (scores materialized; benchmarks and tests). */
  attention?: AttentionPath;
  /** Kernel threads while this context computes (default: the model's `threads`, else physical cores). */
  threads?: number;
  /** Most bytes the KV cache and buffers may take (default 32 GiB, or KILN_MAX_STATE_BYTES). */
  memoryBudget?: number;
  /** Naive attention: largest scores buffer before a batch is split into query chunks (default 256 MiB). */
  naiveScoresBytes?: number;
}

/** Speculative decoding options: prompt lookup, layer-skip, or a draft Model/Context sharing the vocabulary. */
export type SpeculativeOptions = DrafterOptions<Model | Context>;
export type { SpeculativeStats };

/** Options of `generate` and `complete` (sampling options included). */
export interface GenerateOptions extends SamplingOptions {
  /**
   * Speculative decoding: drafted tokens verified in one batched forward; never changes the
   * output distribution. Default: when decoding greedily (temperature 0) and the context returns
   * at least 2 logit rows, prompt lookup with the adaptive depth planner, which drafts only
   * where its measurements say it pays (the tokens are identical either way). `false` turns
   * speculation off. With temperature > 0 it is used only when asked for, and then the text a
   * seed gives depends on how many drafts were made (adaptive depth follows timings): pass
   * `adaptive: false` for seed-reproducible sampled text with speculation.
   */
  speculative?: SpeculativeOptions | false;
  /** Most tokens to generate (default 256; never past the context length). */
  maxTokens?: number;
  /** Generation ends before any of these strings; the text returned never contains them. */
  stop?: string[];
  /** Add BOS/EOS per the model's rules (default true). */
  addSpecial?: boolean;
  /** Parse special-token text such as "<start_of_turn>" in the prompt (default true). */
  parseSpecial?: boolean;
  /** Aborting ends the generation at its next step: the result's finishReason is "abort" (no exception). */
  signal?: AbortSignal;
  /**
   * Keep the longest common prefix of this prompt and the tokens already in the context's KV
   * cache, and evaluate only the rest (llama-server's cache_prompt; chat sessions use it).
   * Default false: the cache is cleared first.
   */
  reuseCache?: boolean;
  /** Render control tokens (e.g. "<end_of_turn>", "<start_of_image>") as their text. Default false, as llama.cpp. */
  renderSpecial?: boolean;
  /**
   * Constrain the output to JSON that validates against this schema (the subset in
   * src/chat/json-schema.ts; an unsupported keyword is a KilnError UNSUPPORTED_SCHEMA). Generation
   * stops when the value is complete (finishReason "stop"); a reply cut by maxTokens says
   * "length" and is not a complete value. Speculation is off while constrained.
   */
  jsonSchema?: JsonSchema;
  /** Constrain the output to any JSON value (jsonSchema takes precedence). */
  json?: boolean;
}

/** One streamed piece of a generation. */
export interface GeneratedPiece {
  /** Text completed by this step (may be empty while a multi-byte character is pending). */
  text: string;
  /** The token sampled at this step. */
  token: number;
}

/** Times and speeds of one generation (`result.timings`, `context.lastTimings`). */
export interface Timings {
  /** How long loading the model took. */
  loadMs: number;
  /** Prompt tokens evaluated by this call (with reuseCache, those after the reused prefix). */
  promptTokens: number;
  /** Prompt tokens found in the KV cache and not evaluated again (reuseCache). */
  cachedTokens: number;
  /** Time to evaluate the prompt (until the first token's logits). */
  promptMs: number;
  /** promptTokens ÷ promptMs. */
  promptTokensPerSecond: number;
  /** Tokens generated. */
  generatedTokens: number;
  /** Time from the first token's logits to the end. */
  generateMs: number;
  /** generatedTokens ÷ generateMs (speculative decoding included). */
  generatedTokensPerSecond: number;
}

/** The whole result of a generation: what `complete` resolves to and `generate` returns. */
export interface GenerateResult {
  /** The generated text (without a stop string that ended it). */
  text: string;
  /** The generated token ids. */
  tokens: number[];
  /** "eos": an end-of-generation token; "stop": a stop string; "length": maxTokens or the context's end; "abort": the signal fired. */
  finishReason: "stop" | "length" | "eos" | "abort";
  /** Prompt and generation times and speeds. */
  timings: Timings;
  /** What speculative decoding did, when it ran. */
  speculative?: SpeculativeStats;
}

/** What a context's buffers cost (reported before they are allocated: Model.contextMemory). */
export interface ContextMemory {
  /** KV cache positions. */
  contextLength: number;
  /** K and V caches of every layer. */
  kvBytes: number;
  /** Activations, scratch and logits. */
  bufferBytes: number;
  /** kvBytes + bufferBytes. */
  totalBytes: number;
  /** The budget it fits in (memoryBudget / KILN_MAX_STATE_BYTES). */
  budgetBytes: number;
}

export function memoryOf(plan: StatePlan): ContextMemory {
  return { contextLength: plan.nCtx, kvBytes: plan.kvBytes, bufferBytes: plan.bufferBytes, totalBytes: plan.totalBytes, budgetBytes: plan.budgetBytes };
}

/** Resolves a context's options against the model: every default filled in, every value checked. */
export function resolveContextOptions(core: ModelCore, o: ContextOptions, threadsDefault: number | undefined, batch = false) {
  const nCtx = o.contextLength ?? Math.min(core.hp.nCtxTrain, 4096);
  if (!Number.isSafeInteger(nCtx) || nCtx < 1) throw new KilnError("BAD_OPTION", `contextLength must be a positive integer, got ${nCtx}`);
  const maxBatch = o.batchSize ?? 512;
  if (!Number.isSafeInteger(maxBatch) || maxBatch < 1) throw new KilnError("BAD_OPTION", `batchSize must be a positive integer, got ${maxBatch}`);
  const prefillChunk = o.prefillChunk ?? (batch ? defaultBatchPrefillChunk(core.flopsPerToken) : defaultPrefillChunk(core.flopsPerToken, core.hp.nLayer));
  if (!Number.isSafeInteger(prefillChunk) || prefillChunk < 1) throw new KilnError("BAD_OPTION", `prefillChunk must be a positive integer, got ${prefillChunk}`);
  const threads = checkThreads(o.threads ?? threadsDefault ?? physicalCores());
  for (const k of ["memoryBudget", "naiveScoresBytes"] as const) {
    const v = o[k];
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) throw new KilnError("BAD_OPTION", `${k} must be a positive integer number of bytes, got ${v}`);
  }
  const state: StateOptions = {
    nCtx,
    maxBatch,
    // 16 rows: speculative verification of up to 15 drafted tokens (~1 MB per row for a 262k vocabulary).
    maxLogitRows: o.maxLogitRows ?? 16,
    kvType: o.kvType ?? "f16",
    attention: o.attention ?? "flash",
    weightTypes: core.weightTypes,
    memoryBudget: o.memoryBudget,
    naiveScoresBytes: o.naiveScoresBytes,
  };
  return { state, threads, prefillChunk: Math.min(prefillChunk, maxBatch) };
}

/**
 * Matmul work of one layer of a prompt-evaluation chunk by default: what a context's prefill
 * does between two turns of the event loop (see ContextOptions.prefillChunk).
 */
export const PREFILL_LAYER_FLOPS = 24e9;
/**
 * Matmul work of one forward call of a batch step by default (createBatch's prefillChunk): a
 * batch step runs its forward call whole.
 */
export const PREFILL_CHUNK_FLOPS = 32e9;
/**
 * Fewest tokens per prefill call by default: below this the batched kernels lose throughput
 * (measured, TinyLlama-shape Q4_0, 2 threads, AMD EPYC: 16 rows 79 tok/s, 32 rows 176,
 * 64 rows 212, 512 rows 216).
 */
export const MIN_PREFILL_CHUNK = 64;

/** flops (a whole call's or one layer's) → tokens: a multiple of 32 in [MIN_PREFILL_CHUNK, 512]. */
const chunkFor = (budget: number, flopsPerToken: number): number => Math.min(512, Math.max(MIN_PREFILL_CHUNK, Math.floor(budget / Math.max(1, flopsPerToken) / 32) * 32));

/**
 * The default prefillChunk of a context for a model whose blocks cost `flopsPerToken` over
 * `nLayer` layers: about PREFILL_LAYER_FLOPS of work per layer (the context returns to the
 * event loop after each layer), a multiple of 32 in [MIN_PREFILL_CHUNK, 512] (Gemma 3 270M
 * and SmolLM2 135M: 512; a 1.1B model: 256; a 7B model: 64). Deterministic in the model,
 * never in timings, so the same file always evaluates a prompt in the same chunks and gives the
 * same logits.
 */
export function defaultPrefillChunk(flopsPerToken: number, nLayer: number): number {
  return chunkFor(PREFILL_LAYER_FLOPS, flopsPerToken / Math.max(1, nLayer));
}

/**
 * The default prefillChunk of a batch (createBatch): about PREFILL_CHUNK_FLOPS of work per
 * step, whose forward call runs whole (Gemma 3 270M: 128 tokens; a 1.1B model: 64).
 */
export function defaultBatchPrefillChunk(flopsPerToken: number): number {
  return chunkFor(PREFILL_CHUNK_FLOPS, flopsPerToken);
}

/** Lets timers, I/O and other tasks run (a macrotask turn, not a microtask). */
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * One KV cache and the run state of one conversation over a Model's shared weights. Any number of
 * contexts share a model; each runs one generation at a time (a second call while one runs throws
 * KilnError CONTEXT_BUSY). Create it with `model.createContext(options)`; dispose it when done.
 */
export class Context {
  /** The model whose weights this context runs. */
  readonly model: Model;
  /** Kernel threads while this context computes. */
  readonly threads: number;
  /** Tokens per forward call when generate evaluates a prompt. */
  readonly prefillChunk: number;
  /**
   * Per-op kernel timings of this context's forward calls while `profiling` is true
   * (`kiln generate --profile`, runtime/profile.ts).
   */
  readonly profiler = new cpu.OpProfiler();
  /** While true, every kernel call of this context is timed into `profiler`. */
  profiling = false;
  /** Timings of the last generation. */
  lastTimings: Timings | undefined;
  /** @internal the KV cache and buffers. */
  readonly state: RunState;
  /** The device its KV cache and activations live on (its model's). */
  get device(): Device {
    return this.state.backend.device;
  }
  readonly #core: ModelCore;
  readonly #options: StateOptions;
  readonly #layerSkips = new Map<number, Forwarder>();
  readonly #draftContexts = new Map<Model, Context>();
  /** What a context never disposed gives back when it is garbage-collected (holds no reference to the context). */
  readonly #owned: { core: ModelCore; token: object; states: RunState[] };
  #busy: string | null = null;
  #disposed = false;
  /** The token ids at KV positions [0, nPast): what reuseCache compares a prompt with. */
  #tokens: number[] = [];

  /** @internal use model.createContext(). */
  constructor(model: Model, core: ModelCore, opts: ContextOptions, threadsDefault: number | undefined) {
    const { state, threads, prefillChunk } = resolveContextOptions(core, opts, threadsDefault);
    this.model = model;
    this.#core = core;
    this.#options = state;
    this.threads = threads;
    this.prefillChunk = prefillChunk;
    this.state = new RunState(core.hp, state, core.backend);
    this.#owned = { core, token: {}, states: [this.state] };
    core.retain(this.#owned.token);
    collected.register(this, this.#owned, this.#owned.token);
  }

  /** The model's hyper-parameters. */
  get hp(): HParams {
    return this.#core.hp;
  }

  /** The model's tokenizer. */
  get tokenizer(): Tokenizer {
    return this.#core.tokenizer;
  }

  /** KV cache positions: prompt and generated tokens together. */
  get contextLength(): number {
    return this.state.nCtx;
  }

  /** Tokens in the KV cache. */
  get nPast(): number {
    return this.state.nPast;
  }

  /** What this context's buffers take. */
  get memory(): ContextMemory {
    return memoryOf(this.state.plan);
  }

  /** Transformer blocks of the model. */
  get nLayer(): number {
    return this.#core.hp.nLayer;
  }

  /** Whether dispose() was called. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /** Whether a generation is running on this context. */
  get busy(): boolean {
    return this.#busy !== null;
  }

  #guard(what: string): void {
    if (this.#disposed) throw new KilnError("DISPOSED", `${what}: this context of ${this.#core.path} was disposed`);
    if (this.#core.released) throw new KilnError("DISPOSED", `${what}: the model ${this.#core.path} was released`);
  }

  #claim(what: string): void {
    this.#guard(what);
    if (this.#busy !== null) {
      throw new KilnError("CONTEXT_BUSY", `${what}: this context is running ${this.#busy}; one generation at a time per context (wait for it, abort it, or use another context: model.createContext())`);
    }
    this.#busy = what;
  }

  /** Forgets the KV cache. */
  reset(): void {
    this.#claim("reset");
    this.state.truncate(0);
    this.#tokens = [];
    this.#busy = null;
  }

  /** Keeps the first `n` positions of the KV cache and forgets the rest (n ≤ nPast). */
  truncate(n: number): void {
    this.#claim("truncate");
    try {
      this.state.truncate(n);
      this.#tokens.length = n;
    } finally {
      this.#busy = null;
    }
  }

  /**
   * Appends tokens to the KV cache (in batchSize chunks, synchronously) and returns the logits of
   * the last `logitRows` positions as a [rows, n_vocab] view into the context's buffer: valid
   * until the next call on this context; after dispose() it reads as empty (never freed memory).
   * For long prompts without blocking the event loop, use `evaluate`.
   */
  eval(tokens: readonly number[] | Int32Array, logitRows = 1): Tensor {
    this.#claim("eval");
    try {
      return this.#evalWith(this.#core.hp, this.state, tokens, logitRows);
    } finally {
      this.#appended(tokens);
      this.#busy = null;
    }
  }

  /**
   * Appends tokens to the KV cache in chunks of `prefillChunk`, returning to the event loop
   * between chunks; resolves to the last position's logits (a view, as eval). A fired `signal`
   * stops between chunks with an AbortError (the cache keeps the chunks already evaluated).
   */
  async evaluate(tokens: readonly number[] | Int32Array, opts: { signal?: AbortSignal } = {}): Promise<Tensor> {
    this.#claim("evaluate");
    try {
      const r = await this.#prefill(toIds(tokens), opts.signal);
      if (r === null) throw opts.signal?.reason ?? new DOMException("evaluate aborted", "AbortError");
      return r;
    } finally {
      if (!this.#disposed) this.#appended(tokens);
      this.#busy = null;
    }
  }

  /** Token ids in the KV cache, positions 0..nPast-1 (a copy). */
  get tokens(): number[] {
    return this.#tokens.slice(0, this.state.nPast);
  }

  /** Records tokens appended by eval/evaluate: as many of them as reached the cache. */
  #appended(tokens: readonly number[] | Int32Array): void {
    for (const t of tokens) this.#tokens.push(t);
    this.#tokens.length = Math.min(this.#tokens.length, this.state.nPast);
  }

  /** One or more forward calls of at most maxBatch tokens; the last `logitRows` rows of logits. */
  #evalWith(hp: HParams, state: RunState, tokens: readonly number[] | Int32Array, logitRows: number): Tensor {
    this.#guard("eval");
    const ids = toIds(tokens);
    if (ids.length === 0) throw new KilnError("BAD_OPTION", "eval: no tokens");
    this.#checkRoom(state, ids.length);
    let logits: Tensor | undefined;
    for (let i = 0; i < ids.length; i += state.maxBatch) {
      const chunk = ids.subarray(i, Math.min(ids.length, i + state.maxBatch));
      const last = i + chunk.length === ids.length;
      logits = this.#forward(hp, state, chunk, last ? Math.min(logitRows, chunk.length) : 1);
    }
    return logits!;
  }

  #checkRoom(state: RunState, n: number): void {
    if (state.nPast + n > state.nCtx) {
      throw new ModelError("CONTEXT_FULL", `${state.nPast} tokens in the context + ${n} new ones exceed the context length ${state.nCtx}`, this.#core.path);
    }
  }

  /** One forward call with this context's thread count and profiler. */
  #forward(hp: HParams, state: RunState, ids: Int32Array, logitRows: number): Tensor {
    const core = this.#core;
    return this.#compute(() => core.arch.forward(hp, core.weights, state, ids, logitRows));
  }

  /** Kernel work with this context's thread count and profiler (set again each time: other contexts run in between). */
  #compute<T>(f: () => T): T {
    cpu.useThreads(this.threads);
    return cpu.withProfiler(this.profiling ? this.profiler : null, f);
  }

  /**
   * Prefill in chunks of prefillChunk tokens, with a turn of the event loop after each layer of
   * each chunk (so a turn waits for one layer, not a whole forward call); null when aborted. An
   * abort between two layers drops that chunk: the cache keeps the chunks before it, and its
   * positions are not appended (they are written again by whatever comes next).
   */
  async #prefill(ids: Int32Array, signal: AbortSignal | undefined): Promise<Tensor | null> {
    if (ids.length === 0) throw new KilnError("BAD_OPTION", "evaluate: no tokens");
    const state = this.state;
    this.#checkRoom(state, ids.length);
    const core = this.#core;
    let logits: Tensor | undefined;
    for (let i = 0; i < ids.length; i += this.prefillChunk) {
      if (signal?.aborted) return null;
      const steps = core.arch.forwardSteps(core.hp, core.weights, state, ids.subarray(i, Math.min(ids.length, i + this.prefillChunk)), 1);
      for (;;) {
        const r = this.#compute(() => steps.next());
        if (r.done) {
          logits = r.value;
          break;
        }
        await yieldToEventLoop();
        this.#guard("generate");
        if (signal?.aborted) return null;
      }
    }
    return logits!;
  }

  /**
   * The first `nLayers` layers of the model plus its final norm and output head, with a KV
   * cache of their own: the layer-skip drafter for speculative decoding (created once per depth).
   */
  layerSkip(nLayers: number): Forwarder {
    this.#guard("layerSkip");
    const hp0 = this.#core.hp;
    if (!Number.isSafeInteger(nLayers) || nLayers < 1 || nLayers >= hp0.nLayer) {
      throw new KilnError("BAD_OPTION", `layerSkip: nLayers (the layers the drafter runs) must be an integer in [1, ${hp0.nLayer - 1}], got ${nLayers}`);
    }
    let f = this.#layerSkips.get(nLayers);
    if (!f) {
      const hp = { ...hp0, nLayer: nLayers };
      const state = new RunState(hp, { ...this.#options, maxLogitRows: 1 }, this.#core.backend);
      this.#owned.states.push(state);
      f = { hp, state, eval: (tokens, rows = 1) => this.#evalWith(hp, state, tokens, rows) };
      this.#layerSkips.set(nLayers, f);
    }
    return f;
  }

  /** Streams the continuation of `prompt` (text or token ids), piece by piece, from an empty cache. */
  async *generate(prompt: string | readonly number[], opts: GenerateOptions = {}): AsyncGenerator<GeneratedPiece, GenerateResult> {
    this.#claim("generate");
    let borrowed: Context | null = null;
    let history: number[] | null = null;
    try {
      const core = this.#core;
      const tokenizer = core.tokenizer;
      const promptIds = typeof prompt === "string" ? tokenizer.encode(prompt, { addSpecial: opts.addSpecial ?? true, parseSpecial: opts.parseSpecial ?? true }) : [...prompt];
      if (promptIds.length === 0) throw new KilnError("BAD_OPTION", "generate: the prompt has no tokens");
      for (const t of promptIds) if (!Number.isInteger(t) || t < 0 || t >= core.hp.nVocab) throw new KilnError("BAD_OPTION", `generate: prompt token id ${t} outside the vocabulary [0, ${core.hp.nVocab})`);
      if (promptIds.length >= this.state.nCtx) {
        throw new ModelError("PROMPT_TOO_LONG", `the prompt has ${promptIds.length} tokens; the context holds ${this.state.nCtx}`, core.path);
      }
      const maxTokensOpt = opts.maxTokens ?? 256;
      if (!Number.isSafeInteger(maxTokensOpt) || maxTokensOpt < 0) throw new KilnError("BAD_OPTION", `maxTokens must be a non-negative integer, got ${maxTokensOpt}`);
      const maxTokens = Math.min(maxTokensOpt, this.state.nCtx - promptIds.length);
      const sampler = createSampler(opts, core.hp.nVocab);
      history = [...promptIds]; // prompt + generated: the samplers' penalty window (and, up to nPast, the cache)
      const constraint = opts.jsonSchema !== undefined || opts.json ? new TokenConstraint(compileJsonSchema(opts.jsonSchema ?? true), tokenizer) : null;
      const reply = new Reply(tokenizer, { maxTokens, stop: opts.stop, renderSpecial: opts.renderSpecial, constraint });
      if (constraint && opts.speculative) throw new KilnError("BAD_OPTION", "speculative: not available with jsonSchema/json (constrained decoding samples one token at a time)");
      const requested = opts.speculative === false || constraint ? undefined : (opts.speculative ?? this.#autoSpeculation(sampler));
      let spec: DrafterOptions | undefined;
      if (requested) {
        // A JavaScript caller may pass anything: name the shapes accepted rather than fail inside.
        if (typeof requested !== "object") {
          throw new KilnError("BAD_OPTION", `speculative must be false or an options object such as { draft: "prompt-lookup" }, got ${JSON.stringify(requested)}`);
        }
        const d = requested.draft;
        if (d === "prompt-lookup" || d === "layer-skip") spec = { ...requested, draft: d };
        else if (!(d instanceof Context) && typeof (d as Partial<Model> | null)?.createContext !== "function") {
          throw new KilnError("BAD_OPTION", `speculative.draft must be "prompt-lookup", "layer-skip", a Model or a Context, got ${typeof d === "string" ? JSON.stringify(d) : typeof d}`);
        } else {
          const draftCtx = this.#draftContext(d);
          if (this.#draftContexts.get(draftCtx.model) !== draftCtx) {
            draftCtx.#claim("speculative drafting");
            borrowed = draftCtx;
          }
          spec = { ...requested, draft: draftCtx.#forwarder() };
        }
      }
      const signal = opts.signal;
      // reuseCache: keep the longest common prefix with the cache (at least one token is evaluated, for its logits).
      let cached = 0;
      if (opts.reuseCache) {
        const limit = Math.min(this.state.nPast, this.#tokens.length, promptIds.length - 1);
        while (cached < limit && this.#tokens[cached] === promptIds[cached]) cached++;
      }
      this.state.truncate(cached);
      this.#tokens.length = cached;
      const t0 = performance.now();
      let t1 = t0;
      let source: Iterable<number[]> | null = null;
      let first: Tensor | null | undefined;
      if (maxTokens > 0) {
        first = await this.#prefill(Int32Array.from(promptIds.slice(cached)), signal);
        t1 = performance.now();
        if (first !== null) {
          const self = this.#forwarder();
          const target = { ...self, nLayer: this.nLayer, layerSkip: (n: number) => this.layerSkip(n) };
          source = spec ? speculativeTokens(target, first, sampler, history, spec) : plainTokens(self, first, sampler, history, constraint);
        }
      }
      if (source) {
        const it = source[Symbol.iterator]();
        outer: for (let step = 0; !reply.done; step++) {
          if (step > 0) {
            // Between forward calls: let timers and I/O run, then honour an abort or a dispose.
            await yieldToEventLoop();
            this.#guard("generate");
          }
          if (signal?.aborted) {
            reply.end("abort");
            break;
          }
          const r = it.next();
          if (r.done) break;
          for (const token of r.value) {
            const piece = reply.push(token);
            if (piece !== null) yield { text: piece, token };
            if (reply.done) break outer;
            if (signal?.aborted) {
              reply.end("abort");
              break outer;
            }
          }
        }
      } else if (first === null) reply.end("abort");
      const rest = reply.flush();
      if (rest.length > 0) yield { text: rest, token: reply.tokens.at(-1) ?? -1 };
      const { text, tokens: generated, finishReason } = reply;
      const t2 = performance.now();
      const timings: Timings = {
        loadMs: core.loadMs,
        promptTokens: promptIds.length - cached,
        cachedTokens: cached,
        promptMs: t1 - t0,
        promptTokensPerSecond: ((promptIds.length - cached) * 1000) / Math.max(t1 - t0, 1e-6),
        generatedTokens: generated.length,
        generateMs: t2 - t1,
        generatedTokensPerSecond: (generated.length * 1000) / Math.max(t2 - t1, 1e-6),
      };
      this.lastTimings = timings;
      const speculative = source instanceof SpeculativeRun ? source.stats(t2 - t1) : undefined;
      return { text, tokens: generated, finishReason, timings, speculative };
    } finally {
      // The cache holds the prompt and every generated token evaluated so far (rejected drafts were rolled back).
      if (!this.#disposed) this.#tokens = history ? history.slice(0, this.state.nPast) : this.#tokens.slice(0, this.state.nPast);
      if (borrowed) borrowed.#busy = null;
      this.#busy = null;
    }
  }

  /** Runs generate to the end and returns the whole result. */
  async complete(prompt: string | readonly number[], opts: GenerateOptions = {}): Promise<GenerateResult> {
    const it = this.generate(prompt, opts);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  /** The default speculation: adaptive prompt lookup for greedy decoding (see GenerateOptions.speculative). */
  #autoSpeculation(sampler: Sampler): SpeculativeOptions | undefined {
    // A verification batch (drafts + 1 rows) must fit the logit rows and the kernels' batch-invariant range.
    const rows = Math.min(this.state.maxLogitRows, limits().maxInvariantRows);
    if (sampler.options.temperature > 0 || rows < 2) return undefined;
    return { draft: "prompt-lookup", maxDraft: Math.min(10, rows - 1), adaptive: true };
  }

  /** The context a draft runs in: a Context as given, or one this context creates for a Model and owns. */
  #draftContext(d: Model | Context): Context {
    const ctx = d instanceof Context ? d : this.#ownedDraftContext(d);
    this.#checkDraft(ctx);
    if (ctx === this) throw new KilnError("BAD_OPTION", "speculative.draft: a context cannot draft for itself");
    return ctx;
  }

  #ownedDraftContext(m: Model): Context {
    let c = this.#draftContexts.get(m);
    if (!c || c.disposed) {
      c = m.createContext({ contextLength: this.contextLength, maxLogitRows: 1, threads: this.threads });
      this.#draftContexts.set(m, c);
    }
    return c;
  }

  /** A draft must share this model's vocabulary token for token. */
  #checkDraft(draft: Context): void {
    draft.#guard("speculative.draft");
    const a = this.#core.tokenizer.vocab.tokens;
    const b = draft.#core.tokenizer.vocab.tokens;
    const i = a.length === b.length ? a.findIndex((t, j) => t !== b[j]) : Math.min(a.length, b.length);
    if (a.length !== b.length || i >= 0) {
      throw new ModelError("DRAFT_VOCAB_MISMATCH", `draft model ${draft.#core.path} does not share the vocabulary of ${this.#core.path} (${b.length} vs ${a.length} tokens, first difference at id ${i})`, draft.#core.path);
    }
  }

  /** This context as a drafter's target/draft: forward calls that skip the busy check (the generation holds it). */
  #forwarder(): Forwarder {
    return { hp: this.#core.hp, state: this.state, eval: (tokens, rows = 1) => this.#evalWith(this.#core.hp, this.state, tokens, rows) };
  }

  /** Frees the KV cache and buffers (and draft contexts this context created). Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    collected.unregister(this.#owned.token);
    for (const c of this.#draftContexts.values()) c.dispose();
    this.#draftContexts.clear();
    this.#layerSkips.clear();
    releaseOwned(this.#owned);
  }

  /** Same as dispose(): lets `using` dispose it at the end of a block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Frees a context's buffers and drops its hold on the model's weights. */
function releaseOwned(o: { core: ModelCore; token: object; states: RunState[] }): void {
  for (const s of o.states) s.dispose();
  o.states.length = 0;
  o.core.release(o.token);
}

/** A context that is never disposed still gives its memory back once it is garbage-collected. */
const collected = new FinalizationRegistry(releaseOwned);

function toIds(tokens: readonly number[] | Int32Array): Int32Array {
  return tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
}

/** Plain decoding: one forward per token after the prefilled prompt; a constraint masks each step's logits. */
function* plainTokens(ctx: Forwarder, prefilled: Tensor, sampler: Sampler, history: number[], constraint: TokenConstraint | null = null): Generator<number[]> {
  let logits = prefilled;
  for (;;) {
    if (constraint) constraint.mask(logits.f32); // the logits buffer is the context's scratch: masking in place is fine
    const token = sampler.sample(logits.f32, history);
    constraint?.accept(token);
    history.push(token);
    yield [token];
    logits = ctx.eval([token]);
  }
}
