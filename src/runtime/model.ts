/**
 * The runtime face of a model: load a GGUF file (mapped read-only, validated), tokenize, run
 * prefill and decode through the architecture's forward pass, sample, and stream text.
 *
 *   const model = await loadModel("models/gemma-3-270m-Q4_K_M.gguf", { threads: 2 });
 *   for await (const piece of model.generate("Once upon a time", { maxTokens: 32 })) process.stdout.write(piece.text);
 *   model.dispose();
 */
import * as cpu from "../backends/cpu";
import { parseGGUF, type GGUFFile } from "../gguf";
import { architectureOf, type Architecture } from "../models/arch";
import { ModelError, type HParams } from "../models/hparams";
import { RunState, type AttentionPath, type StateOptions } from "../models/state";
import { createTokenizer, type Tokenizer } from "../tokenizer";
import type { Tensor } from "../tensor";
import { MappedFile } from "./mapped-file";
import { createSampler, type Sampler, type SamplingOptions } from "./sampling";
import { SpeculativeRun, speculativeTokens, type Forwarder, type SpeculativeOptions, type SpeculativeStats } from "./speculative";

export interface LoadOptions {
  /** Threads for the kernels (default: all cores). */
  threads?: number;
  /** Context length (default: min(training context, 4096)). */
  contextLength?: number;
  /** Most tokens per forward call during prefill (default 512). */
  batchSize?: number;
  /** Rows of logits one forward call can return (default 16: speculative verification, parity tests). */
  maxLogitRows?: number;
  /** KV cache element type (default f16, as llama.cpp). */
  kvType?: "f16" | "f32";
  /** Attention path: "flash" (fused, default) or "naive" (scores materialized; benchmarks and tests). */
  attention?: AttentionPath;
  /**
   * Copy the output head into the 16-row interleaved layout at load (default true, where the
   * CPU build has one for its type: Q8_0/Q4_0 on AVX-512 VNNI). Decode and speculative
   * verification then read the copy: verified rows cost a fraction of a decode step's head.
   * The copy has the tensor's size; the file's pages of the head are then read only by
   * embedding lookups. false keeps every weight in the mapped file.
   */
  packOutputHead?: boolean;
}

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
  maxTokens?: number;
  /** Generation ends before any of these strings; the text returned never contains them. */
  stop?: string[];
  /** Add BOS/EOS per the model's rules (default true). */
  addSpecial?: boolean;
  /** Parse special-token text such as "<start_of_turn>" in the prompt (default true). */
  parseSpecial?: boolean;
  signal?: AbortSignal;
}

export interface GeneratedPiece {
  /** Text completed by this step (may be empty while a multi-byte character is pending). */
  text: string;
  /** The token sampled at this step. */
  token: number;
}

export interface Timings {
  loadMs: number;
  promptTokens: number;
  promptMs: number;
  promptTokensPerSecond: number;
  generatedTokens: number;
  generateMs: number;
  generatedTokensPerSecond: number;
}

export interface GenerateResult {
  text: string;
  tokens: number[];
  finishReason: "stop" | "length" | "eos" | "abort";
  timings: Timings;
  speculative?: SpeculativeStats;
}

export class Model {
  readonly path: string;
  readonly file: GGUFFile;
  readonly hp: HParams;
  readonly arch: Architecture;
  readonly tokenizer: Tokenizer;
  readonly state: RunState;
  readonly loadMs: number;
  /** Timings of the last generation. */
  lastTimings: Timings | undefined;
  readonly #mapped: MappedFile;
  readonly #weights: unknown;
  #stateOptions!: StateOptions;
  readonly #layerSkips = new Map<number, Forwarder>();
  #head: Tensor | undefined;
  #disposed = false;

  constructor(path: string, opts: LoadOptions = {}) {
    const t0 = performance.now();
    if (opts.threads !== undefined) cpu.setThreads(opts.threads);
    this.path = path;
    this.#mapped = new MappedFile(path);
    try {
      this.file = parseGGUF(this.#mapped.bytes, { fileName: path });
      this.arch = architectureOf(this.file);
      this.hp = this.arch.readHParams(this.file);
      this.#weights = this.arch.loadWeights(this.file, this.#mapped.bytes, this.hp);
      this.tokenizer = createTokenizer(this.file.metadata);
      if (this.tokenizer.vocabSize !== this.hp.nVocab) {
        throw new ModelError("VOCAB_MISMATCH", `tokenizer has ${this.tokenizer.vocabSize} tokens but token_embd has ${this.hp.nVocab} rows`, path);
      }
      const nCtx = opts.contextLength ?? Math.min(this.hp.nCtxTrain, 4096);
      if (!Number.isSafeInteger(nCtx) || nCtx < 1) throw new RangeError(`contextLength must be a positive integer, got ${nCtx}`);
      this.#stateOptions = {
        nCtx,
        maxBatch: opts.batchSize ?? 512,
        // 16 rows: speculative verification of up to 15 drafted tokens (~1 MB per row for a 262k vocabulary).
      maxLogitRows: opts.maxLogitRows ?? 16,
        kvType: opts.kvType ?? "f16",
        attention: opts.attention ?? "flash",
        weightTypes: [...new Set(this.arch.tensors(this.#weights).map((t) => t.dtype))],
      };
      this.state = new RunState(this.hp, this.#stateOptions);
      this.#head = this.arch.outputHead(this.#weights);
      if (opts.packOutputHead ?? true) cpu.packRows(this.#head, { fileMapping: this.#mapped.bytes });
    } catch (e) {
      this.state?.dispose();
      if (this.#head) cpu.unpackRows(this.#head);
      this.#mapped.close();
      throw e;
    }
    this.loadMs = performance.now() - t0;
  }

  get contextLength(): number {
    return this.state.nCtx;
  }

  #guard(): void {
    if (this.#disposed) throw new Error(`${this.path}: model used after dispose()`);
  }

  /** Token ids of `text`; by default plain text, no BOS (llama.cpp's add_special=false, parse_special=false). */
  tokenize(text: string, opts: { addSpecial?: boolean; parseSpecial?: boolean } = {}): number[] {
    this.#guard();
    return this.tokenizer.encode(text, { addSpecial: opts.addSpecial ?? false, parseSpecial: opts.parseSpecial ?? false });
  }

  detokenize(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    this.#guard();
    return this.tokenizer.decode([...ids], opts);
  }

  /** Forgets the context (KV cache). */
  reset(): void {
    this.state.truncate(0);
  }

  /**
   * Feeds tokens at the end of the context (in batches) and returns the logits of the last
   * `logitRows` positions of the final batch, as a view valid until the next call.
   */
  eval(tokens: readonly number[] | Int32Array, logitRows = 1): Tensor {
    return this.#evalWith(this.hp, this.state, tokens, logitRows);
  }

  #evalWith(hp: HParams, state: RunState, tokens: readonly number[] | Int32Array, logitRows: number): Tensor {
    this.#guard();
    const ids = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
    if (ids.length === 0) throw new RangeError("eval: no tokens");
    if (state.nPast + ids.length > state.nCtx) {
      throw new ModelError("CONTEXT_FULL", `${state.nPast} tokens in the context + ${ids.length} new ones exceed the context length ${state.nCtx}`, this.path);
    }
    let logits: Tensor | undefined;
    for (let i = 0; i < ids.length; i += state.maxBatch) {
      const chunk = ids.subarray(i, Math.min(ids.length, i + state.maxBatch));
      const last = i + chunk.length === ids.length;
      logits = this.arch.forward(hp, this.#weights, state, chunk, last ? Math.min(logitRows, chunk.length) : 1);
    }
    return logits!;
  }

  /** A draft model must share this model's vocabulary token for token. */
  checkDraft(draft: Model): void {
    const a = this.tokenizer.vocab.tokens;
    const b = draft.tokenizer.vocab.tokens;
    const i = a.length === b.length ? a.findIndex((t, j) => t !== b[j]) : Math.min(a.length, b.length);
    if (a.length !== b.length || i >= 0) {
      throw new ModelError("DRAFT_VOCAB_MISMATCH", `draft model ${draft.path} does not share the vocabulary of ${this.path} (${b.length} vs ${a.length} tokens, first difference at id ${i})`, draft.path);
    }
  }

  /** Whether the output head is read from a packed copy (LoadOptions.packOutputHead). */
  get outputHeadPacked(): boolean {
    return this.#head?.packed != null;
  }

  get nLayer(): number {
    return this.hp.nLayer;
  }

  /**
   * The first `nLayers` layers of this model plus its final norm and output head, with a KV
   * cache of their own: the layer-skip drafter for speculative decoding (created once per depth).
   */
  layerSkip(nLayers: number): Forwarder {
    this.#guard();
    if (!Number.isSafeInteger(nLayers) || nLayers < 1 || nLayers >= this.hp.nLayer) {
      throw new RangeError(`layerSkip: nLayers must be an integer in [1, ${this.hp.nLayer - 1}], got ${nLayers}`);
    }
    let f = this.#layerSkips.get(nLayers);
    if (!f) {
      const hp = { ...this.hp, nLayer: nLayers };
      const state = new RunState(hp, { ...this.#stateOptions, maxLogitRows: 1 });
      f = { hp, state, eval: (tokens, rows = 1) => this.#evalWith(hp, state, tokens, rows) };
      this.#layerSkips.set(nLayers, f);
    }
    return f;
  }

  /** Streams the continuation of `prompt` (text or token ids), piece by piece. */
  async *generate(prompt: string | readonly number[], opts: GenerateOptions = {}): AsyncGenerator<GeneratedPiece, GenerateResult> {
    this.#guard();
    const promptIds = typeof prompt === "string" ? this.tokenizer.encode(prompt, { addSpecial: opts.addSpecial ?? true, parseSpecial: opts.parseSpecial ?? true }) : [...prompt];
    if (promptIds.length === 0) throw new RangeError("generate: the prompt has no tokens");
    if (promptIds.length >= this.state.nCtx) {
      throw new ModelError("PROMPT_TOO_LONG", `the prompt has ${promptIds.length} tokens; the context holds ${this.state.nCtx}`, this.path);
    }
    const maxTokens = Math.min(opts.maxTokens ?? 256, this.state.nCtx - promptIds.length);
    const sampler = createSampler(opts, this.hp.nVocab);
    const stops = (opts.stop ?? []).filter((s) => s.length > 0);
    const holdBack = Math.max(0, ...stops.map((s) => s.length - 1));
    const stream = this.tokenizer.createStreamDecoder();
    const history = [...promptIds]; // prompt + generated: the samplers' penalty window
    const generated: number[] = [];
    let text = "";
    let emitted = 0;
    let finishReason: GenerateResult["finishReason"] = "length";

    const spec = opts.speculative === false ? undefined : (opts.speculative ?? this.#autoSpeculation(sampler));
    if (spec?.draft instanceof Model) this.checkDraft(spec.draft);
    this.reset();
    const t0 = performance.now();
    let t1 = t0;
    const source = spec
      ? speculativeTokens(this, promptIds, sampler, history, spec, () => (t1 = performance.now()))
      : plainTokens(this, promptIds, sampler, history, () => (t1 = performance.now()));
    outer: for (const batch of source) {
      for (const token of batch) {
        if (generated.length >= maxTokens) break outer;
        if (opts.signal?.aborted) {
          finishReason = "abort";
          break outer;
        }
        if (this.tokenizer.isEog(token)) {
          finishReason = "eos";
          break outer;
        }
        generated.push(token);
        text += stream.push(token);
        const stopAt = firstStop(text, stops);
        if (stopAt >= 0) {
          text = text.slice(0, stopAt);
          finishReason = "stop";
          if (text.length > emitted) yield { text: text.slice(emitted), token };
          emitted = text.length;
          break outer;
        }
        const safe = Math.max(emitted, text.length - holdBack);
        yield { text: text.slice(emitted, safe), token };
        emitted = safe;
      }
    }
    if (finishReason !== "stop") {
      text += stream.flush();
      if (text.length > emitted) yield { text: text.slice(emitted), token: generated.at(-1) ?? -1 };
    }
    const t2 = performance.now();
    const timings: Timings = {
      loadMs: this.loadMs,
      promptTokens: promptIds.length,
      promptMs: t1 - t0,
      promptTokensPerSecond: (promptIds.length * 1000) / Math.max(t1 - t0, 1e-6),
      generatedTokens: generated.length,
      generateMs: t2 - t1,
      generatedTokensPerSecond: (generated.length * 1000) / Math.max(t2 - t1, 1e-6),
    };
    this.lastTimings = timings;
    const speculative = source instanceof SpeculativeRun ? source.stats(t2 - t1) : undefined;
    return { text, tokens: generated, finishReason, timings, speculative };
  }

  /** The default speculation: adaptive prompt lookup for greedy decoding (see GenerateOptions.speculative). */
  #autoSpeculation(sampler: Sampler): SpeculativeOptions | undefined {
    if (sampler.options.temperature > 0 || this.state.maxLogitRows < 2) return undefined;
    return { draft: "prompt-lookup", maxDraft: Math.min(10, this.state.maxLogitRows - 1), adaptive: true };
  }

  /** Runs generate to the end and returns the whole result. */
  async complete(prompt: string | readonly number[], opts: GenerateOptions = {}): Promise<GenerateResult> {
    const it = this.generate(prompt, opts);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.state.dispose();
    for (const f of this.#layerSkips.values()) f.state.dispose();
    if (this.#head) cpu.unpackRows(this.#head);
    this.#mapped.close();
  }
}

/** Plain decoding: one forward per token. `onPrefilled` marks the end of the prompt's forward. */
function* plainTokens(model: Model, prompt: number[], sampler: Sampler, history: number[], onPrefilled: () => void): Generator<number[]> {
  let logits = model.eval(prompt);
  onPrefilled();
  for (;;) {
    const token = sampler.sample(logits.f32, history);
    history.push(token);
    yield [token];
    logits = model.eval([token]);
  }
}

function firstStop(text: string, stops: string[]): number {
  let at = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (at < 0 || i < at)) at = i;
  }
  return at;
}

export async function loadModel(path: string, opts: LoadOptions = {}): Promise<Model> {
  return new Model(path, opts);
}
