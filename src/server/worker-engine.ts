/**
 * WorkerEngine: a BatchEngine (engine.ts) running in a Bun Worker (worker.ts), behind the same
 * Engine interface. The model, its KV cache and every kernel call live on the worker's thread;
 * the HTTP thread only parses requests and writes bytes, so /health and /metrics answer in
 * milliseconds while every sequence generates, and a slow client never delays a step.
 *
 * Messages (structured clones): main → worker `init`, `start {id, req}`, `cancel {id}`, `close`;
 * worker → main `ready`, `fatal`, `piece {id, piece}`, `done {id, result}`, `error {id, error}`,
 * `stats`, `closed`.
 */
import { KilnError } from "../errors";
import type { KvType } from "../models/state";
import type { GeneratedPiece, GenerateResult } from "../runtime/context";
import { GenerationChannel, type Engine, type EngineOptions, type EngineStats, type Generation } from "./engine";
import { ApiError, type CompletionRequest } from "./openai";

export interface WorkerEngineOptions extends EngineOptions {
  /** Kernel threads of the worker's model (default: physical cores). */
  threads?: number;
  /** KV cache element type (default f16). */
  kvType?: KvType;
}

/** An error as it crosses the thread boundary. */
export interface WireError {
  status: number;
  message: string;
  type: string;
  param: string | null;
  code: string | null;
}

export type ToWorker =
  | { t: "init"; path: string; options: WorkerEngineOptions }
  | { t: "start"; id: number; req: CompletionRequest }
  | { t: "cancel"; id: number }
  | { t: "close" };

export type FromWorker =
  | { t: "ready"; modelId: string; contextLength: number; stats: EngineStats }
  | { t: "fatal"; message: string; code: string | null }
  | { t: "piece"; id: number; piece: GeneratedPiece }
  | { t: "done"; id: number; result: GenerateResult }
  | { t: "error"; id: number; error: WireError }
  | { t: "stats"; stats: EngineStats }
  | { t: "closed" };


export class WorkerEngine implements Engine {
  readonly modelId: string;
  readonly contextLength: number;
  readonly #worker: Worker;
  readonly #pending = new Map<number, GenerationChannel>();
  #stats: EngineStats;
  #nextId = 1;
  #closed: Promise<void> | null = null;
  #onClosed: (() => void) | null = null;

  private constructor(worker: Worker, ready: Extract<FromWorker, { t: "ready" }>) {
    this.#worker = worker;
    this.modelId = ready.modelId;
    this.contextLength = ready.contextLength;
    this.#stats = ready.stats;
    worker.onmessage = (ev: MessageEvent<FromWorker>) => this.#receive(ev.data);
  }

  /** Starts the worker and loads the model there; rejects with the load error (KilnError) if it fails. */
  static async create(path: string, options: WorkerEngineOptions = {}): Promise<WorkerEngine> {
    const worker = new Worker(new URL("./worker.ts", import.meta.url).href);
    const ready = await new Promise<Extract<FromWorker, { t: "ready" }>>((resolve, reject) => {
      worker.onmessage = (ev: MessageEvent<FromWorker>) => {
        const m = ev.data;
        if (m.t === "ready") resolve(m);
        else if (m.t === "fatal") reject(new KilnError((m.code as never) ?? "LIBRARY", m.message));
      };
      worker.onerror = (e) => reject(new KilnError("LIBRARY", `kiln serve: the inference worker failed to start: ${e.message}`));
      worker.postMessage({ t: "init", path, options } satisfies ToWorker);
    }).catch((e) => {
      worker.terminate();
      throw e;
    });
    return new WorkerEngine(worker, ready);
  }

  stats(): EngineStats {
    return { ...this.#stats };
  }

  #receive(m: FromWorker): void {
    switch (m.t) {
      case "stats":
        this.#stats = m.stats;
        return;
      case "closed":
        this.#onClosed?.();
        return;
      case "piece":
      case "done":
      case "error": {
        const ch = this.#pending.get(m.id);
        if (!ch) return;
        if (m.t === "piece") ch.push(m.piece);
        else if (m.t === "done") ch.finish(m.result);
        else ch.fail(new ApiError(m.error.status, m.error.message, m.error.type, m.error.param, m.error.code));
        return;
      }
    }
  }

  async start(req: CompletionRequest, signal: AbortSignal): Promise<Generation> {
    if (this.#closed) throw new ApiError(503, "the server is shutting down", "server_error");
    const id = this.#nextId++;
    const ch = new GenerationChannel();
    this.#pending.set(id, ch);
    const cancel = () => this.#worker.postMessage({ t: "cancel", id } satisfies ToWorker);
    signal.addEventListener("abort", cancel, { once: true });
    this.#worker.postMessage({ t: "start", id, req } satisfies ToWorker);
    return ch.start(() => {
      signal.removeEventListener("abort", cancel);
      if (!ch.ended) cancel();
      this.#pending.delete(id);
    });
  }

  /** Ends every generation, frees the model in the worker, and stops the worker. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const closed = new Promise<void>((resolve) => {
        this.#onClosed = resolve;
        // A worker stuck in a kernel is terminated after 10 s; the timer never outlives the close.
        timer = setTimeout(resolve, 10_000);
      });
      this.#worker.postMessage({ t: "close" } satisfies ToWorker);
      await closed;
      clearTimeout(timer);
      this.#worker.terminate();
      for (const ch of this.#pending.values()) if (!ch.ended) ch.fail(new ApiError(503, "the server is shutting down", "server_error"));
    })();
    return this.#closed;
  }
}
