/**
 * The engine behind kiln serve: what runs a validated request. The HTTP layer (http.ts) knows only
 * the `Engine` interface, so a later engine — continuous batching of all sequences in one forward,
 * in a Worker — replaces `SlotEngine` without touching the routes.
 *
 * SlotEngine, the first engine: `parallel` slots, each its own Context (its own KV cache) made
 * from one Model; a request takes a free slot or waits in a bounded FIFO queue; past the queue it
 * is refused (ApiError 429). Each slot generates with reuseCache, so a follow-up request sharing a
 * prefix with the slot's last one (a chat's next turn) evaluates only the new tokens.
 */
import { KilnError } from "../errors";
import type { Context, GeneratedPiece, GenerateOptions, GenerateResult } from "../runtime/context";
import type { Model } from "../runtime/model";
import { ApiError, type CompletionRequest } from "./openai";

/** A started generation: the first piece is already made (errors before it become HTTP statuses). */
export type Generation = AsyncGenerator<GeneratedPiece, GenerateResult>;

export interface EngineStats {
  slots: number;
  slotsBusy: number;
  queueLength: number;
  queueMax: number;
  requests: number;
  rejected: number;
  tokensGenerated: number;
  promptTokens: number;
  cachedTokens: number;
}

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
  stats(): EngineStats;
  /** Aborts every generation and waiter and frees the contexts. */
  close(): Promise<void>;
}

export interface SlotEngineOptions {
  /** Concurrent generations, each in its own context (default 1). */
  parallel?: number;
  /** Requests that may wait for a slot; more are refused with 429 (default 8). */
  queue?: number;
  /** Context length of each slot (default: the model's default). */
  contextLength?: number;
  /** The id clients see (default: the model file's basename). */
  modelId?: string;
}

/** Upper bounds on the options: a server never allocates without limit. */
export const ENGINE_LIMITS = { parallel: 64, queue: 4096 } as const;

interface Slot {
  index: number;
  context: Context;
  busy: boolean;
}

interface Waiter {
  resolve: (s: Slot) => void;
  reject: (e: unknown) => void;
  signal: AbortSignal;
  onAbort: () => void;
}

export class SlotEngine implements Engine {
  readonly modelId: string;
  readonly contextLength: number;
  readonly #model: Model;
  readonly #slots: Slot[];
  readonly #queue: Waiter[] = [];
  readonly #queueMax: number;
  readonly #running = new Set<AbortController>();
  #closed = false;
  #requests = 0;
  #rejected = 0;
  #generated = 0;
  #promptTokens = 0;
  #cachedTokens = 0;

  constructor(model: Model, opts: SlotEngineOptions = {}) {
    const parallel = opts.parallel ?? 1;
    const queue = opts.queue ?? 8;
    if (!Number.isInteger(parallel) || parallel < 1 || parallel > ENGINE_LIMITS.parallel) throw new KilnError("BAD_OPTION", `parallel must be an integer in [1, ${ENGINE_LIMITS.parallel}], got ${parallel}`);
    if (!Number.isInteger(queue) || queue < 0 || queue > ENGINE_LIMITS.queue) throw new KilnError("BAD_OPTION", `queue must be an integer in [0, ${ENGINE_LIMITS.queue}], got ${queue}`);
    this.#model = model;
    this.#queueMax = queue;
    this.modelId = opts.modelId ?? model.path.split(/[\\/]/).pop()!;
    this.#slots = [];
    try {
      for (let i = 0; i < parallel; i++) this.#slots.push({ index: i, context: model.createContext({ contextLength: opts.contextLength }), busy: false });
    } catch (e) {
      for (const s of this.#slots) s.context.dispose();
      throw e;
    }
    this.contextLength = this.#slots[0]!.context.contextLength;
  }

  stats(): EngineStats {
    return {
      slots: this.#slots.length,
      slotsBusy: this.#slots.filter((s) => s.busy).length,
      queueLength: this.#queue.length,
      queueMax: this.#queueMax,
      requests: this.#requests,
      rejected: this.#rejected,
      tokensGenerated: this.#generated,
      promptTokens: this.#promptTokens,
      cachedTokens: this.#cachedTokens,
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
    const slot = await this.#acquire(signal);
    const abort = new AbortController();
    const onAbort = () => abort.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    this.#running.add(abort);
    const release = () => {
      signal.removeEventListener("abort", onAbort);
      this.#running.delete(abort);
      this.#release(slot);
    };
    let it: Generation;
    let first: IteratorResult<GeneratedPiece, GenerateResult>;
    try {
      const opts: GenerateOptions = { ...req.options, signal: abort.signal, reuseCache: true, addSpecial: false, parseSpecial: true };
      it = slot.context.generate(ids, opts);
      first = await it.next();
    } catch (e) {
      release();
      throw toApiError(e);
    }
    return this.#run(it, first, release);
  }

  async *#run(it: Generation, first: IteratorResult<GeneratedPiece, GenerateResult>, release: () => void): Generation {
    try {
      let r = first;
      while (!r.done) {
        this.#generated++;
        yield r.value;
        r = await it.next();
      }
      this.#promptTokens += r.value.timings.promptTokens;
      this.#cachedTokens += r.value.timings.cachedTokens;
      return r.value;
    } finally {
      // The consumer returned early (a client that left): end the context's generation too.
      await it.return(undefined as never).catch(() => {});
      release();
    }
  }

  #acquire(signal: AbortSignal): Promise<Slot> {
    const free = this.#slots.find((s) => !s.busy);
    if (free && this.#queue.length === 0) {
      free.busy = true;
      return Promise.resolve(free);
    }
    if (this.#queue.length >= this.#queueMax) {
      this.#rejected++;
      return Promise.reject(new ApiError(429, `all ${this.#slots.length} slots are busy and the queue (${this.#queueMax}) is full; retry later`, "rate_limit_exceeded", null, "server_busy"));
    }
    return new Promise<Slot>((resolve, reject) => {
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

  #release(slot: Slot): void {
    const w = this.#queue.shift();
    if (w && !this.#closed) {
      w.signal.removeEventListener("abort", w.onAbort);
      w.resolve(slot); // handed over: stays busy
    } else slot.busy = false;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#queue.splice(0)) {
      w.signal.removeEventListener("abort", w.onAbort);
      w.reject(new ApiError(503, "the server is shutting down", "server_error"));
    }
    for (const a of this.#running) a.abort();
    // Give running generations their one step to stop before the contexts go.
    for (let i = 0; i < 200 && this.#slots.some((s) => s.busy); i++) await Bun.sleep(10);
    for (const s of this.#slots) s.context.dispose();
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
