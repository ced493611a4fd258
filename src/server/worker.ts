/**
 * The inference thread of kiln serve (see worker-engine.ts): loads the model, runs a
 * BatchEngine, and streams each request's pieces back to the HTTP thread.
 */
import { KilnError } from "../errors";
import { loadModel, type Model } from "../runtime/model";
import { BatchEngine } from "./engine";
import { ApiError } from "./openai";
import type { FromWorker, ToWorker, WireError } from "./worker-engine";

declare const self: Worker;

let model: Model | null = null;
let engine: BatchEngine | null = null;
const running = new Map<number, AbortController>();
const post = (m: FromWorker) => self.postMessage(m);
const postStats = () => engine && post({ t: "stats", stats: engine.stats() });

function wire(e: unknown): WireError {
  if (e instanceof ApiError) return { status: e.status, message: e.message, type: e.type, param: e.param, code: e.code };
  return { status: 500, message: `internal error: ${(e as Error)?.message ?? String(e)}`, type: "server_error", param: null, code: null };
}

async function run(id: number, req: Extract<ToWorker, { t: "start" }>["req"]): Promise<void> {
  const abort = new AbortController();
  running.set(id, abort);
  try {
    const gen = await engine!.start(req, abort.signal);
    postStats();
    for (;;) {
      const r = await gen.next();
      if (r.done) {
        post({ t: "done", id, result: r.value });
        break;
      }
      post({ t: "piece", id, piece: r.value });
    }
  } catch (e) {
    post({ t: "error", id, error: wire(e) });
  } finally {
    running.delete(id);
    postStats();
  }
}

self.onmessage = async (ev: MessageEvent<ToWorker>) => {
  const m = ev.data;
  switch (m.t) {
    case "init":
      try {
        model = await loadModel(m.path, { threads: m.options.threads, contextLength: m.options.contextLength, kvType: m.options.kvType });
        engine = new BatchEngine(model, m.options);
        post({ t: "ready", modelId: engine.modelId, contextLength: engine.contextLength, stats: engine.stats() });
      } catch (e) {
        model?.dispose();
        post({ t: "fatal", message: (e as Error)?.message ?? String(e), code: e instanceof KilnError ? e.code : null });
      }
      return;
    case "start":
      if (!engine) return post({ t: "error", id: m.id, error: wire(new ApiError(503, "the model is not loaded", "server_error")) });
      void run(m.id, m.req);
      return;
    case "cancel":
      running.get(m.id)?.abort();
      return;
    case "close":
      for (const a of running.values()) a.abort();
      await engine?.close();
      model?.dispose();
      engine = null;
      model = null;
      post({ t: "closed" });
      return;
  }
};
