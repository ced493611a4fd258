/**
 * The engine behind kiln serve: what runs a validated request. The HTTP layer (http.ts) knows only
 * the `Engine` interface; two implement it:
 *
 * - BatchEngine (here): `parallel` sequences of one Batch (src/runtime/batch.ts) over one model —
 *   every step is ONE forward call carrying the next token of every running request and a chunk
 *   of a waiting prompt (continuous batching). A request takes a free sequence or waits in a
 *   bounded FIFO queue; past the queue it is refused (ApiError 429). Sequences reuse their cache:
 *   a follow-up sharing a prefix with a sequence's last request (a chat's next turn) evaluates
 *   only the new tokens.
 * - WorkerEngine (worker-engine.ts): a BatchEngine in a Bun Worker, so the HTTP thread never
 *   waits on a kernel. What `kiln serve` runs.
 */
import { KilnError } from "../errors";
import type { Batch, SequenceHandle } from "../runtime/batch";
import type { GeneratedPiece, GenerateResult } from "../runtime/context";
import type { Model } from "../runtime/model";
import { ApiError, type CompletionRequest } from "./openai";

/** A started generation: the first piece is already made (errors before it become HTTP statuses). */
export type Generation = AsyncGenerator<GeneratedPiece, GenerateResult>;

/** The /metrics counters. */
export interface EngineStats {
  /** Sequences generated at once (--parallel). */
  slots: number;
  /** Of them, generating now. */
  slotsBusy: number;
  /** Requests waiting for a slot now, and the most that may wait (--queue). */
  queueLength: number;
  /** The most requests that may wait (--queue). */
  queueMax: number;
  /** Requests received, and those refused with 429. */
  requests: number;
  /** Requests refused with 429 (the queue was full). */
  rejected: number;
  /** Tokens generated, prompt tokens evaluated, and prompt tokens reused from a slot's cache. */
  tokensGenerated: number;
  /** Prompt tokens evaluated. */
  promptTokens: number;
  /** Prompt tokens reused from a slot's cache. */
  cachedTokens: number;
  /** Forward calls run, and the rows (tokens) they carried: rows/steps is the mean batch. */
  steps: number;
  /** Rows (tokens) the forward calls carried. */
  rows: number;
}

/** What runs a validated request for the HTTP layer (BatchEngine, or WorkerEngine around it). */
export interface Engine {
  /** The id /v1/models lists and requests may name. */
  readonly modelId: string;
  /** Tokens one sequence may hold (prompt + reply). */
  readonly contextLength: number;
  /**
   * Tokenizes and checks the request, waits for room (ApiError 429 when the queue is full), and
   * starts generating. Resolves once the first piece exists. The generation ends within one step
   * of `signal` firing, and its room is freed when the generator finishes or is returned.
   */
  start(req: CompletionRequest, signal: AbortSignal): Promise<Generation>;
  /** The counters /metrics serves. */
  stats(): EngineStats;
  /** Aborts every generation and waiter and frees the engine's memory. */
  close(): Promise<void>;
}

export interface EngineOptions {
  /** Requests generated at once, each a sequence of one batch (default 1). */
  parallel?: number;
  /** Requests that may wait for a sequence; more are refused with 429 (default 8). */
  queue?: number;
  /** Positions of each sequence (default: the model's default context length). */
  contextLength?: number;
  /** The id clients see (default: the model file's basename). */
  modelId?: string;
}

/** Upper bounds on the options: a server never allocates without limit. */
export const ENGINE_LIMITS = { parallel: 64, queue: 4096 } as const;

export function checkEngineOptions(opts: EngineOptions): { parallel: number; queue: number } {
  const parallel = opts.parallel ?? 1;
  const queue = opts.queue ?? 8;
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > ENGINE_LIMITS.parallel) throw new KilnError("BAD_OPTION", `parallel must be an integer in [1, ${ENGINE_LIMITS.parallel}], got ${parallel}`);
  if (!Number.isInteger(queue) || queue < 0 || queue > ENGINE_LIMITS.queue) throw new KilnError("BAD_OPTION", `queue must be an integer in [0, ${ENGINE_LIMITS.queue}], got ${queue}`);
  return { parallel, queue };
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
  signal: AbortSignal;
  onAbort: () => void;
}

/**
 * Pieces of one request as they are made (by the batch, or by the worker's messages), read by
 * its Generation: the one hand-over between a producer's callbacks and the HTTP side's pulls.
 */
export class GenerationChannel {
  readonly pieces: GeneratedPiece[] = [];
  result: GenerateResult | null = null;
  error: unknown = null;
  #wake: (() => void) | null = null;

  push(p: GeneratedPiece): void {
    this.pieces.push(p);
    this.#notify();
  }

  finish(r: GenerateResult): void {
    this.result = r;
    this.#notify();
  }

  fail(e: unknown): void {
    this.error = e;
    this.#notify();
  }

  get ended(): boolean {
    return this.result !== null || this.error !== null;
  }

  /** Resolves when something arrives (or already has). */
  wait(): Promise<void> {
    if (this.pieces.length > 0 || this.ended) return Promise.resolve();
    return new Promise((resolve) => (this.#wake = resolve));
  }

  /**
   * Waits for the first piece (or the end), then hands out the Generation. An error before any
   * piece is thrown here, so it becomes an HTTP status rather than an error inside a stream.
   * `cleanup` runs once the generation is finished or abandoned.
   */
  async start(cleanup: () => void): Promise<Generation> {
    await this.wait();
    if (this.error !== null && this.pieces.length === 0) {
      cleanup();
      throw this.error;
    }
    return this.#read(cleanup);
  }

  async *#read(cleanup: () => void): Generation {
    try {
      for (;;) {
        const p = this.pieces.shift();
        if (p) {
          yield p;
          continue;
        }
        if (this.error !== null) throw this.error;
        if (this.result) return this.result;
        await this.wait();
      }
    } finally {
      // A consumer that returns early (a client that left) ends the request through cleanup.
      cleanup();
    }
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }
}

export class BatchEngine implements Engine {
  readonly modelId: string;
  readonly contextLength: number;
  readonly #model: Model;
  readonly #batch: Batch;
  readonly #parallel: number;
  readonly #queue: Waiter[] = [];
  readonly #queueMax: number;
  readonly #running = new Set<SequenceHandle>();
  #busy = 0;
  #closed = false;
  #requests = 0;
  #rejected = 0;
  #generated = 0;
  #promptTokens = 0;
  #cachedTokens = 0;

  constructor(model: Model, opts: EngineOptions = {}) {
    const { parallel, queue } = checkEngineOptions(opts);
    this.#model = model;
    this.#parallel = parallel;
    this.#queueMax = queue;
    this.modelId = opts.modelId ?? model.path.split(/[\\/]/).pop()!;
    this.#batch = model.createBatch({ sequences: parallel, contextLength: opts.contextLength });
    this.contextLength = this.#batch.contextLength;
  }

  stats(): EngineStats {
    return {
      slots: this.#parallel,
      slotsBusy: this.#busy,
      queueLength: this.#queue.length,
      queueMax: this.#queueMax,
      requests: this.#requests,
      rejected: this.#rejected,
      tokensGenerated: this.#generated,
      promptTokens: this.#promptTokens,
      cachedTokens: this.#cachedTokens,
      steps: this.#batch.steps,
      rows: this.#batch.rows,
    };
  }

  /** The prompt's token ids: a chat rendered by the model's template, or the text as given. */
  #promptIds(req: CompletionRequest): number[] {
    const tk = this.#model.tokenizer;
    if (req.kind === "text") return tk.encode(req.prompt!, { addSpecial: true, parseSpecial: true });
    try {
      return this.#model.chatPromptTokens(req.messages!);
    } catch (e) {
      if (e instanceof KilnError && e.code === "CHAT_TEMPLATE") throw new ApiError(400, `${this.modelId}: ${e.message}`, "invalid_request_error", "messages", "chat_template");
      throw e;
    }
  }

  async start(req: CompletionRequest, signal: AbortSignal): Promise<Generation> {
    if (this.#closed) throw new ApiError(503, "the server is shutting down", "server_error");
    this.#requests++;
    const ids = this.#promptIds(req);
    if (ids.length >= this.contextLength) {
      throw new ApiError(400, `the prompt is ${ids.length} tokens; the context holds ${this.contextLength} (prompt and reply together)`, "invalid_request_error", req.kind === "chat" ? "messages" : "prompt", "context_length_exceeded");
    }
    await this.#acquire(signal);
    const ch = new GenerationChannel();
    let handle: SequenceHandle;
    try {
      if (this.#closed) throw new ApiError(503, "the server is shutting down", "server_error");
      if (signal.aborted) throw new ApiError(499, "the client closed the request", "client_closed");
      handle = this.#batch.add(ids, { ...req.options, reuseCache: true }, {
        onPiece: (p) => {
          this.#generated++;
          ch.push(p);
        },
        onDone: (r) => {
          this.#promptTokens += r.timings.promptTokens;
          this.#cachedTokens += r.timings.cachedTokens;
          ch.finish(r);
          this.#release(handle);
        },
        onError: (e) => {
          ch.fail(toApiError(e));
          this.#release(handle);
        },
      });
    } catch (e) {
      this.#release(null);
      throw toApiError(e);
    }
    this.#running.add(handle);
    const cancel = () => this.#batch.cancel(handle);
    signal.addEventListener("abort", cancel, { once: true });
    // Returned early, the sequence ends at the next step.
    return ch.start(() => {
      signal.removeEventListener("abort", cancel);
      if (!ch.ended) cancel();
    });
  }

  #acquire(signal: AbortSignal): Promise<void> {
    if (this.#busy < this.#parallel && this.#queue.length === 0) {
      this.#busy++;
      return Promise.resolve();
    }
    if (this.#queue.length >= this.#queueMax) {
      this.#rejected++;
      return Promise.reject(new ApiError(429, `all ${this.#parallel} slots are busy and the queue (${this.#queueMax}) is full; retry later`, "rate_limit_exceeded", null, "server_busy"));
    }
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        resolve, reject, signal,
        onAbort: () => {
          const i = this.#queue.indexOf(w);
          if (i >= 0) this.#queue.splice(i, 1);
          reject(new ApiError(499, "the client closed the request", "client_closed"));
        },
      };
      if (signal.aborted) return w.onAbort();
      signal.addEventListener("abort", w.onAbort, { once: true });
      this.#queue.push(w);
    });
  }

  /** A request's sequence is free again: the next waiter takes it (the count stays), or the count drops. */
  #release(handle: SequenceHandle | null): void {
    if (handle) this.#running.delete(handle);
    const w = this.#queue.shift();
    if (w && !this.#closed) {
      w.signal.removeEventListener("abort", w.onAbort);
      w.resolve();
    } else this.#busy--;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#queue.splice(0)) {
      w.signal.removeEventListener("abort", w.onAbort);
      w.reject(new ApiError(503, "the server is shutting down", "server_error"));
    }
    for (const h of this.#running) this.#batch.cancel(h);
    // Running sequences end at the next step; then the batch's memory goes.
    await this.#batch.idle();
    this.#batch.dispose();
  }
}

/** A library error a request caused, as a 400; anything else stays an internal error (500). */
export function toApiError(e: unknown): unknown {
  if (e instanceof ApiError) return e;
  if (e instanceof KilnError) {
    const param = e.code === "BAD_SCHEMA" || e.code === "UNSUPPORTED_SCHEMA" ? "response_format" : null;
    if (["BAD_OPTION", "PROMPT_TOO_LONG", "CONTEXT_FULL", "BAD_SCHEMA", "UNSUPPORTED_SCHEMA", "CHAT_TEMPLATE"].includes(e.code)) {
      return new ApiError(400, e.message, "invalid_request_error", param, e.code.toLowerCase());
    }
  }
  return e;
}
