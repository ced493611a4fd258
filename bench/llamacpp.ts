/**
 * llama.cpp as a reference implementation for tests and benchmarks — dev only, never imported by src/.
 *
 * Wraps node-llama-cpp (a devDependency, pinned) running in-process under Bun: its N-API addon and the
 * prebuilt CPU binaries from `@node-llama-cpp/linux-x64` load fine in Bun. We always ask for
 * `gpu: false, build: "never", skipDownload: true`, so it never tries to build or fetch llama.cpp
 * (nothing but the npm registry is reachable here); package.json's `config.nodeLlamaCppPostinstall: "skip"`
 * keeps `npm ci` from trying either.
 *
 * Semantics follow llama.cpp's C API:
 * - `tokenize(text, { addSpecial: false, parseSpecial: false })` is `llama_tokenize(..., add_special, parse_special)`;
 *   with `addSpecial` the BOS/EOS the vocab asks for (`add_bos_token` / `add_eos_token`) are added around it.
 * - `logits(ids)` evaluates `ids` from an empty KV cache in one batch and returns the raw output logits
 *   (full vocab, pre-sampling) after every position, as llama.cpp computes them for `batch.logits[i] = true`.
 * - `greedy(promptIds, n)` prefills the prompt, then decodes one token at a time with llama.cpp's greedy
 *   sampler (argmax). It generates exactly `n` tokens unless `stopAtEog` is set.
 */
import {
  getLlama,
  LlamaLogLevel,
  type ControlledEvaluateInputItem,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import { parseGGUF } from "../src/gguf";
import { MappedFile } from "../src/runtime/mapped-file";

/**
 * The weight types llama.cpp's AMX kernels compute (ggml-cpu's `qtype_has_amx_kernels`). On an
 * Intel Xeon with AMX the prebuilt node-llama-cpp (3.22.1, its sapphirerapids variant) computed
 * batched Q4_1 prefill wrongly (SmolLM2: "L'Étoile, la Marseillaise," where batch 1 says "The
 * capital of France is Paris."), so its batched path is not a reference there for these types.
 */
export const LLAMACPP_AMX_TYPES: ReadonlySet<string> = new Set(["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]);

/**
 * The batch size a parity test should give the reference for a model file: 1 where the host CPU
 * has AMX-INT8 and the file has a matrix of a type llama.cpp's AMX path computes (its batch-1
 * path is trustworthy everywhere), else undefined (the whole prompt in one batch). `features`:
 * the host's, as kiln's cpuInfo() reports them.
 */
export function referenceBatchSize(modelPath: string, features: readonly string[]): number | undefined {
  if (!features.includes("amx_int8")) return undefined;
  const mf = new MappedFile(modelPath);
  try {
    const file = parseGGUF(mf.bytes, { fileName: modelPath, allowUnsupportedTypes: true });
    return file.tensors.some((t) => t.dims.length >= 2 && LLAMACPP_AMX_TYPES.has(t.typeName)) ? 1 : undefined;
  } finally {
    mf.close();
  }
}

export interface ReferenceOptions {
  /** Threads for evaluation (exact: the Llama instance is created with no thread cap). Default: 2. */
  threads?: number;
  /** KV-cache size in tokens. Default: 1024. */
  contextSize?: number;
  /** Max tokens per decode call; defaults to contextSize so a prompt is prefilled in one batch. */
  batchSize?: number;
  /** llama.cpp flash attention on/off. Default: false. */
  flashAttention?: boolean;
  /** Keep the full KV cache for sliding-window layers (Gemma 3). Default: false, as llama.cpp. */
  swaFullCache?: boolean;
  /** llama.cpp log level forwarded to stderr. Default: "error". */
  logLevel?: "disabled" | "fatal" | "error" | "warn" | "info" | "log" | "debug";
}

export interface Timings {
  /**
   * Tokens fed in the first decode call (prompt), and wall time of that call incl. sampling. For `logits()` this
   * includes reading every requested position's full-vocab logits back (node-llama-cpp sorts and boxes them:
   * ~20–40 ms per position for a 262k vocab), so time prefill with `greedy(prompt, 1)` instead.
   */
  promptTokens: number;
  prefillMs: number;
  /** Tokens produced by one-token decode calls after the prompt, and their total wall time. */
  decodeTokens: number;
  decodeMs: number;
}

export interface LlamaReference {
  readonly modelPath: string;
  readonly vocabSize: number;
  readonly bos: number | null;
  readonly eos: number | null;
  readonly threads: number;
  readonly contextSize: number;
  readonly flashAttention: boolean;
  /** Load time of the model file in ms (getLlama + loadModel + createContext). */
  readonly loadMs: number;
  /** Timings of the last `logits`/`lastLogits`/`greedy` call. */
  readonly lastTimings: Timings | null;
  tokenize(text: string, opts?: { addSpecial?: boolean; parseSpecial?: boolean }): number[];
  detokenize(ids: readonly number[], opts?: { special?: boolean }): string;
  isEog(id: number): boolean;
  /** Raw logits after each position of `ids` (evaluated from an empty cache); `positions` limits which. */
  logits(ids: readonly number[], opts?: { positions?: readonly number[] }): Promise<Float32Array[]>;
  /** Raw logits after the last position only. */
  lastLogits(ids: readonly number[]): Promise<Float32Array>;
  /** Greedy (argmax) continuation of `promptIds`: exactly `n` new tokens, or fewer with `stopAtEog`. */
  greedy(promptIds: readonly number[], n: number, opts?: { stopAtEog?: boolean }): Promise<number[]>;
  /** The underlying node-llama-cpp objects, for benchmarks that need more. */
  readonly raw: { llama: Llama; model: LlamaModel; context: LlamaContext; sequence: LlamaContextSequence };
  close(): Promise<void>;
}

const LEVELS: Record<NonNullable<ReferenceOptions["logLevel"]>, LlamaLogLevel> = {
  disabled: LlamaLogLevel.disabled,
  fatal: LlamaLogLevel.fatal,
  error: LlamaLogLevel.error,
  warn: LlamaLogLevel.warn,
  info: LlamaLogLevel.info,
  log: LlamaLogLevel.log,
  debug: LlamaLogLevel.debug,
};

type TokenLogits = { next: { token?: number | null; logits?: Map<number, number> } } | undefined;

export async function openReference(modelPath: string, opts: ReferenceOptions = {}): Promise<LlamaReference> {
  const threads = opts.threads ?? 2;
  const contextSize = opts.contextSize ?? 1024;
  const batchSize = opts.batchSize ?? contextSize;
  const flashAttention = opts.flashAttention ?? false;
  const t0 = performance.now();
  const llama = await getLlama({
    gpu: false,
    build: "never",
    skipDownload: true,
    usePrebuiltBinaries: true,
    progressLogs: false,
    maxThreads: 0, // no cap: the context's `threads` is then the exact thread count
    logLevel: LEVELS[opts.logLevel ?? "error"],
  });
  let model: LlamaModel | undefined;
  let context: LlamaContext | undefined;
  try {
    model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true });
    context = await model.createContext({
      contextSize,
      batchSize,
      sequences: 1,
      threads,
      flashAttention,
      swaFullCache: opts.swaFullCache ?? false,
    });
  } catch (e) {
    await context?.dispose();
    await model?.dispose();
    await llama.dispose();
    throw e;
  }
  const loadMs = performance.now() - t0;
  const m = model;
  const ctx = context;
  const sequence = ctx.getSequence();
  let lastTimings: Timings | null = null;
  // One sequence, one KV cache: overlapping calls (e.g. a timed-out test still running) would interleave their
  // decodes and corrupt each other, so every evaluating call runs under this queue.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn, fn);
    queue = run.catch(() => {});
    return run;
  };
  // node-llama-cpp exposes no n_vocab; a one-token probe (which also warms the context up) gives it.
  let nVocab = 0;

  const checkIds = (ids: readonly number[], extra = 0) => {
    if (ids.length === 0) throw new Error("llamacpp reference: empty token list");
    if (ids.length + extra > contextSize)
      throw new Error(`llamacpp reference: ${ids.length}+${extra} tokens exceed contextSize ${contextSize}`);
    for (const id of ids)
      if (!Number.isInteger(id) || id < 0 || (nVocab > 0 && id >= nVocab))
        throw new Error(`llamacpp reference: bad token id ${id}`);
  };

  const toDense = (map: Map<number, number>): Float32Array => {
    const out = new Float32Array(nVocab > 0 ? nVocab : map.size);
    for (const [tok, v] of map) out[tok] = v;
    return out;
  };

  async function evalWithLogits(ids: readonly number[], positions: ReadonlySet<number>): Promise<Float32Array[]> {
    checkIds(ids);
    await sequence.clearHistory();
    const input = ids.map(
      (id, i): ControlledEvaluateInputItem =>
        positions.has(i) ? [id as Token, { generateNext: { logits: true } }] : (id as Token),
    );
    const t = performance.now();
    const out = (await sequence.controlledEvaluate(input)) as TokenLogits[];
    lastTimings = { promptTokens: ids.length, prefillMs: performance.now() - t, decodeTokens: 0, decodeMs: 0 };
    const res: Float32Array[] = [];
    for (let i = 0; i < ids.length; i++) {
      if (!positions.has(i)) continue;
      const l = out[i]?.next.logits;
      if (!l) throw new Error(`llamacpp reference: no logits for position ${i}`);
      res.push(toDense(l));
    }
    return res;
  }

  try {
    const [probe] = await evalWithLogits([m.tokens.bos ?? 0], new Set([0]));
    nVocab = probe!.length;
    await sequence.clearHistory();
    lastTimings = null;
  } catch (e) {
    sequence.dispose();
    await ctx.dispose();
    await m.dispose();
    await llama.dispose();
    throw e;
  }

  const ref: LlamaReference = {
    modelPath,
    vocabSize: nVocab,
    bos: m.tokens.bos ?? null,
    eos: m.tokens.eos ?? null,
    threads,
    contextSize,
    flashAttention,
    loadMs,
    get lastTimings() {
      return lastTimings;
    },
    raw: { llama, model: m, context: ctx, sequence },

    tokenize(text, o = {}) {
      const ids = [...m.tokenize(text, o.parseSpecial ?? false)];
      if (o.addSpecial) {
        if (m.tokens.shouldPrependBosToken && m.tokens.bos != null) ids.unshift(m.tokens.bos);
        if (m.tokens.shouldAppendEosToken && m.tokens.eos != null) ids.push(m.tokens.eos);
      }
      return ids;
    },

    detokenize(ids, o = {}) {
      return m.detokenize(ids as readonly number[] as readonly Token[], o.special ?? false);
    },

    isEog(id) {
      return m.isEogToken(id as Token);
    },

    logits(ids, o = {}) {
      const positions = new Set(o.positions ?? ids.map((_, i) => i));
      for (const p of positions)
        if (!Number.isInteger(p) || p < 0 || p >= ids.length) throw new Error(`llamacpp reference: bad position ${p}`);
      return serial(() => evalWithLogits(ids, positions));
    },

    async lastLogits(ids) {
      const [l] = await serial(() => evalWithLogits(ids, new Set([ids.length - 1])));
      return l!;
    },

    greedy(promptIds, n, o = {}) {
      return serial(() => greedyImpl(promptIds, n, o));
    },

    async close() {
      await queue;
      sequence.dispose();
      await ctx.dispose();
      await m.dispose();
      await llama.dispose();
    },
  };

  async function greedyImpl(promptIds: readonly number[], n: number, o: { stopAtEog?: boolean }): Promise<number[]> {
    checkIds(promptIds, n);
    await sequence.clearHistory();
    const greedyNext = { generateNext: { token: true, options: { temperature: 0 } } };
    const step = async (ids: readonly number[]): Promise<number> => {
      const input = ids.map(
      (id, i): ControlledEvaluateInputItem => (i === ids.length - 1 ? [id as Token, greedyNext] : (id as Token)),
    );
      const out = (await sequence.controlledEvaluate(input)) as TokenLogits[];
      const tok = out[ids.length - 1]?.next.token;
      if (tok == null || tok < 0) throw new Error("llamacpp reference: sampling failed");
      return tok;
    };
    const gen: number[] = [];
    const t = performance.now();
    let tok = n > 0 ? await step(promptIds) : -1;
    const prefillMs = performance.now() - t;
    const t1 = performance.now();
    while (gen.length < n) {
      gen.push(tok);
      if ((o.stopAtEog && m.isEogToken(tok as Token)) || gen.length === n) break;
      tok = await step([tok]);
    }
    lastTimings = {
      promptTokens: promptIds.length,
      prefillMs,
      decodeTokens: Math.max(0, gen.length - 1),
      decodeMs: performance.now() - t1,
    };
    return gen;
  }
  return ref;
}
