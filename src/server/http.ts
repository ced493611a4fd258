/**
 * kiln serve's HTTP layer: an OpenAI-compatible API on Bun.serve.
 *
 *   POST /v1/chat/completions   POST /v1/completions   (streaming as SSE, or one JSON reply)
 *   GET  /v1/models             GET  /health           GET /metrics
 *
 * Routes, body limits, auth, CORS and the response shapes live here; running a request is the
 * Engine's (engine.ts). Every client error is an OpenAI-shaped `{ error }` with a 4xx status and
 * the server keeps serving; a client that leaves aborts its generation within one step.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { KvType } from "../models/state";
import type { Model } from "../runtime/model";
import { loadModel } from "../runtime/model";
import { BatchEngine, type Engine, type Generation } from "./engine";
import { WorkerEngine } from "./worker-engine";
import { ApiError, LIMITS, errorBody, finishReason, parseBody, parseCompletionRequest, usage, type CompletionRequest } from "./openai";

/** Options of startServer (and the flags of `kiln serve`). */
export interface ServerOptions {
  /** A loaded model (the caller disposes it) or a GGUF path (loaded here, disposed by stop()). */
  model: Model | string;
  /** Default 127.0.0.1: loopback only unless asked. */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** Requests generated at once, batched into one forward per step (default 1). */
  parallel?: number;
  /** Requests that may wait for a slot (default 8); beyond, 429. */
  queue?: number;
  /** Context length of each slot. */
  contextLength?: number;
  /** Kernel threads of the model it loads (default: physical cores). */
  threads?: number;
  /** KV cache element type of the model it loads (default f16; "q8_0" halves long-context KV bytes). */
  kvType?: KvType;
  /** With a key, every /v1 request needs `Authorization: Bearer KEY`. */
  apiKey?: string;
  /** An origin allowed by CORS ("*" for any); default none (no CORS headers). */
  cors?: string;
  /**
   * Where inference runs when `model` is a path: "worker" (default) loads the model in a Bun
   * Worker, so the HTTP thread never waits on a kernel; "inline" runs it on this thread between
   * steps. A loaded Model always runs inline (it cannot move to another thread).
   */
  inference?: "worker" | "inline";
  /** Replace the engine (tests); default a BatchEngine over the model, in a worker for a path. */
  engine?: Engine;
}

/** A server startServer started. */
export interface RunningServer {
  /** Its base address, e.g. http://127.0.0.1:8080 (the API is under /v1). */
  url: string;
  /** The port it listens on (the one picked when port 0 was asked). */
  port: number;
  /** What runs requests: stats() gives the /metrics counters. */
  engine: Engine;
  /** Ends every generation, frees the model it loaded, and closes the port. */
  stop(): Promise<void>;
}

/** The chat page at / (src/server/chat-page.html, shipped in the package), read once. */
let page: Promise<string> | null = null;
const chatPage = () => (page ??= Bun.file(new URL("./chat-page.html", import.meta.url)).text());

const sha256 = (s: string) => createHash("sha256").update(s).digest();

/**
 * Starts kiln's OpenAI-compatible HTTP server (docs/server.md): /v1/chat/completions,
 * /v1/completions, /v1/models, /health, /metrics and the chat page at /. Resolves once it
 * listens; `stop()` ends it.
 */
export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const engineOptions = { parallel: opts.parallel, queue: opts.queue, contextLength: opts.contextLength };
  let engine: Engine;
  let owned: Model | undefined;
  if (opts.engine) engine = opts.engine;
  else if (typeof opts.model === "string" && (opts.inference ?? "worker") === "worker") {
    engine = await WorkerEngine.create(opts.model, { ...engineOptions, threads: opts.threads, kvType: opts.kvType });
  } else {
    owned = typeof opts.model === "string" ? await loadModel(opts.model, { threads: opts.threads, contextLength: opts.contextLength, kvType: opts.kvType }) : undefined;
    try {
      engine = new BatchEngine(owned ?? (opts.model as Model), engineOptions);
    } catch (e) {
      owned?.dispose();
      throw e;
    }
  }
  const keyHash = opts.apiKey !== undefined ? sha256(opts.apiKey) : undefined;
  const cors: Record<string, string> = opts.cors
    ? { "access-control-allow-origin": opts.cors, "access-control-allow-headers": "authorization, content-type", "access-control-allow-methods": "GET, POST, OPTIONS", vary: "origin" }
    : {};
  const json = (status: number, body: unknown, extra: Record<string, string> = {}) =>
    new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...cors, ...extra } });
  const fail = (e: ApiError) => json(e.status, errorBody(e), e.status === 429 ? { "retry-after": "1" } : {});

  const authorized = (req: Request): boolean => {
    if (!keyHash) return true;
    const h = req.headers.get("authorization") ?? "";
    const m = /^Bearer (.+)$/.exec(h);
    // Equal-length hashes: the comparison takes the same time whatever the key's length or content.
    return m !== null && timingSafeEqual(sha256(m[1]!), keyHash);
  };

  async function handle(req: Request): Promise<Response> {
    const { pathname } = new URL(req.url);
    if (req.method === "OPTIONS" && opts.cors) return new Response(null, { status: 204, headers: cors });
    if (pathname === "/health" && req.method === "GET") return json(200, { status: "ok" });
    if (pathname === "/" && req.method === "GET") {
      // The page is public; what it asks of /v1 needs the key like any client.
      return new Response(await chatPage(), { headers: { "content-type": "text/html; charset=utf-8", "content-security-policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'", ...cors } });
    }
    if (pathname === "/metrics" && req.method === "GET") return json(200, engine.stats());
    if (!pathname.startsWith("/v1/")) throw new ApiError(404, `no route ${req.method} ${pathname}`, "invalid_request_error", null, "not_found");
    if (!authorized(req)) throw new ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)", "invalid_request_error", null, "invalid_api_key");
    if (pathname === "/v1/models" && req.method === "GET") {
      return json(200, { object: "list", data: [{ id: engine.modelId, object: "model", created: 0, owned_by: "kiln" }] });
    }
    const kind = pathname === "/v1/chat/completions" ? "chat" : pathname === "/v1/completions" ? "text" : null;
    if (!kind) throw new ApiError(404, `no route ${req.method} ${pathname}`, "invalid_request_error", null, "not_found");
    if (req.method !== "POST") throw new ApiError(405, `${pathname} takes POST`);
    const body = parseBody(await readBody(req));
    const r = parseCompletionRequest(body, kind, engine.contextLength);
    if (r.model !== undefined && r.model !== engine.modelId) {
      throw new ApiError(404, `The model "${r.model.slice(0, 200)}" does not exist; this server has "${engine.modelId}"`, "invalid_request_error", "model", "model_not_found");
    }
    const gen = await engine.start(r, req.signal);
    return r.stream ? stream(r, gen, req.signal) : await whole(r, gen);
  }

  /** Reads the body up to LIMITS.bodyBytes; 413 past it (by Content-Length or by counting). */
  async function readBody(req: Request): Promise<Uint8Array> {
    const declared = Number(req.headers.get("content-length") ?? "0");
    const tooLarge = () => new ApiError(413, `the request body is larger than ${LIMITS.bodyBytes} bytes`, "invalid_request_error", null, "request_too_large");
    if (declared > LIMITS.bodyBytes) throw tooLarge();
    if (!req.body) return new Uint8Array(0);
    const chunks: Uint8Array[] = [];
    let n = 0;
    for await (const c of req.body as unknown as AsyncIterable<Uint8Array>) {
      n += c.byteLength;
      if (n > LIMITS.bodyBytes) throw tooLarge();
      chunks.push(c);
    }
    const out = new Uint8Array(n);
    let o = 0;
    for (const c of chunks) out.set(c, (o += c.byteLength) - c.byteLength);
    return out;
  }

  const ids = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;

  async function whole(r: CompletionRequest, gen: Generation): Promise<Response> {
    let res = await gen.next();
    while (!res.done) res = await gen.next();
    const v = res.value;
    const u = usage(v.timings.promptTokens, v.timings.cachedTokens, v.tokens.length);
    const created = Math.floor(Date.now() / 1000);
    const fr = finishReason(v.finishReason);
    if (r.kind === "chat") {
      return json(200, {
        id: `chatcmpl-${ids()}`, object: "chat.completion", created, model: engine.modelId,
        choices: [{ index: 0, message: { role: "assistant", content: v.text, refusal: null }, logprobs: null, finish_reason: fr }], usage: u,
      });
    }
    return json(200, { id: `cmpl-${ids()}`, object: "text_completion", created, model: engine.modelId, choices: [{ index: 0, text: v.text, logprobs: null, finish_reason: fr }], usage: u });
  }

  function stream(r: CompletionRequest, gen: Generation, signal: AbortSignal): Response {
    const id = r.kind === "chat" ? `chatcmpl-${ids()}` : `cmpl-${ids()}`;
    const created = Math.floor(Date.now() / 1000);
    const object = r.kind === "chat" ? "chat.completion.chunk" : "text_completion";
    const enc = new TextEncoder();
    const chunk = (delta: string | null, fr: string | null, role = false) => {
      const choice = r.kind === "chat"
        ? { index: 0, delta: delta === null ? {} : role ? { role: "assistant", content: delta } : { content: delta }, logprobs: null, finish_reason: fr }
        : { index: 0, text: delta ?? "", logprobs: null, finish_reason: fr };
      return { id, object, created, model: engine.modelId, choices: [choice] };
    };
    const sse = (o: unknown) => enc.encode(`data: ${typeof o === "string" ? o : JSON.stringify(o)}\n\n`);
    let first = true;
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        try {
          let res = await gen.next();
          // A piece with no text (a character still incomplete) sends nothing: read on, since a
          // pull that enqueues nothing is not called again for the pending read.
          while (!res.done && res.value.text.length === 0 && !first) res = await gen.next();
          if (!res.done) {
            c.enqueue(sse(chunk(res.value.text, null, first)));
            first = false;
            return;
          }
          const v = res.value;
          if (v.finishReason === "abort" || signal.aborted) return c.close();
          c.enqueue(sse(chunk(null, finishReason(v.finishReason))));
          if (r.includeUsage) c.enqueue(sse({ id, object, created, model: engine.modelId, choices: [], usage: usage(v.timings.promptTokens, v.timings.cachedTokens, v.tokens.length) }));
          c.enqueue(sse("[DONE]"));
          c.close();
        } catch (e) {
          // Headers are sent: the error goes in the stream, OpenAI's way.
          const err = e instanceof ApiError ? e : new ApiError(500, (e as Error).message ?? String(e), "server_error");
          c.enqueue(sse(errorBody(err)));
          c.close();
        }
      },
      async cancel() {
        // The client left: return the generator (its finally aborts the context and frees the slot).
        await gen.return(undefined as never);
      },
    }, { highWaterMark: 0 });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", ...cors } });
  }

  let server: ReturnType<typeof Bun.serve>;
  try {
    server = serve();
  } catch (e) {
    await engine.close();
    owned?.dispose();
    throw e;
  }
  const host = server.hostname!.includes(":") ? `[${server.hostname}]` : server.hostname;
  return {
    url: `http://${host}:${server.port}`,
    port: server.port!,
    engine,
    async stop() {
      await engine.close();
      await server.stop(true);
      owned?.dispose();
    },
  };

  function serve() {
    return Bun.serve({
      hostname: opts.host ?? "127.0.0.1",
      port: opts.port ?? 8080,
      // Our own limit (LIMITS.bodyBytes) answers 413 in OpenAI's shape; Bun's cuts off anything far past it.
      maxRequestBodySize: LIMITS.bodyBytes * 2,
      idleTimeout: 0,
      async fetch(req) {
        try {
          return await handle(req);
        } catch (e) {
          if (e instanceof ApiError) return fail(e);
          console.error("kiln serve: internal error:", e);
          return fail(new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, "server_error"));
        }
      },
      error(e) {
        return fail(new ApiError(500, `internal error: ${e.message}`, "server_error"));
      },
    });
  }
}
