/**
 * kiln serve as `kiln serve` runs it: the model in a Worker, --parallel sequences batched into one
 * forward per step. Batched replies equal each request served alone (greedy); /health answers
 * while every sequence generates; and a load test — 16 streaming clients against --parallel 4
 * --queue 8 for a fixed number of requests, some leaving mid-stream — where every non-429
 * response is complete and well-formed, nothing but 429 fails, RSS stays flat from the first
 * hundred requests to the last, and the slots are free within a second of the last client.
 * Bounded in requests and time; loopback only.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type RunningServer } from "../../src/server/http";
import { WorkerEngine } from "../../src/server/worker-engine";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";

const SMOL = join(import.meta.dir, "..", "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf");
const have = existsSync(SMOL);
if (!have) console.warn(`load.test.ts: ${SMOL} is missing (run scripts/setup.sh); skipped`);

const T = 120_000;

interface StreamResult {
  status: number;
  text: string;
  ttftMs: number;
  finish: string | null;
  usage: { completion_tokens: number; prompt_tokens: number } | null;
  chunks: number;
  aborted: boolean;
}

/** One streaming chat request over raw fetch; every SSE event is parsed and checked. */
function streamChat(url: string, content: string, maxTokens: number, abortAfterChunks = 0): Promise<StreamResult> {
  return streamRequest(url, "chat", { messages: [{ role: "user", content }], max_tokens: maxTokens }, abortAfterChunks);
}

async function streamRequest(url: string, kind: "chat" | "text", body: object, abortAfterChunks = 0): Promise<StreamResult> {
  const ac = new AbortController();
  const t0 = performance.now();
  const r = await fetch(`${url}/v1/${kind === "chat" ? "chat/completions" : "completions"}`, {
    method: "POST",
    signal: ac.signal,
    body: JSON.stringify({ ...body, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  const out: StreamResult = { status: r.status, text: "", ttftMs: -1, finish: null, usage: null, chunks: 0, aborted: false };
  if (r.status !== 200) {
    const body = (await r.json()) as { error?: { type?: string } };
    if (!body.error?.type) throw new Error(`status ${r.status} without an OpenAI error body`);
    return out;
  }
  const reader = r.body!.getReader();
  const dec = new TextDecoder();
  let buf = "";
  let done = false;
  while (!done) {
    const { value, done: end } = await reader.read();
    if (end) break;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith("data: ")) throw new Error(`malformed SSE event: ${JSON.stringify(ev)}`);
      const data = ev.slice(6);
      if (data === "[DONE]") {
        done = true;
        break;
      }
      const o = JSON.parse(data) as { object: string; choices: { delta?: { content?: string }; text?: string; finish_reason: string | null }[]; usage?: { completion_tokens: number; prompt_tokens: number }; error?: unknown };
      if (o.error) throw new Error(`error in stream: ${data}`);
      if (o.object !== (kind === "chat" ? "chat.completion.chunk" : "text_completion")) throw new Error(`unexpected object ${o.object}`);
      if (o.usage) out.usage = o.usage;
      const c = o.choices[0];
      if (c) {
        if (out.ttftMs < 0) out.ttftMs = performance.now() - t0;
        out.text += (kind === "chat" ? c.delta?.content : c.text) ?? "";
        if (c.finish_reason) out.finish = c.finish_reason;
        out.chunks++;
        if (abortAfterChunks > 0 && out.chunks >= abortAfterChunks) {
          ac.abort();
          out.aborted = true;
          await reader.cancel().catch(() => {});
          return out;
        }
      }
    }
  }
  return out;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

describe("kiln serve batches concurrent requests (synthetic llama, Q8_0)", () => {
  const dir = mkdtempSync(join(tmpdir(), "kiln-serve-batch-"));
  const path = join(dir, "llama.gguf");
  let server: RunningServer;
  beforeAll(async () => {
    writeSyntheticModel(path, { arch: "llama", type: "q8_0", shape: "tiny", seed: 3 });
    server = await startServer({ model: path, port: 0, parallel: 4, queue: 4, contextLength: 256 });
  }, T);
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }, T);

  test("the engine runs in a worker; four concurrent replies equal each served alone, from shared forward calls", async () => {
    expect(server.engine).toBeInstanceOf(WorkerEngine);
    // Prompts of at most 5 tokens, BOS first (cached after the first request): every forward
    // carries at most 16 rows, the batch-invariant
    // kernels' range (matmul.max_invariant_rows), so alone and batched rows take the same
    // arithmetic. (Past it, prefill takes faster kernels that sum in another order, as llama.cpp's do.)
    const prompts = ["hello", "the cat", "a dog", "my hat"];
    const alone: StreamResult[] = [];
    for (const prompt of prompts) alone.push(await streamRequest(server.url, "text", { prompt, max_tokens: 24 }));
    for (const r of alone) expect(r.usage!.prompt_tokens).toBeLessThanOrEqual(5);
    const before = server.engine.stats();
    const together = await Promise.all(prompts.map((prompt) => streamRequest(server.url, "text", { prompt, max_tokens: 24 })));
    await Bun.sleep(50); // the worker's stats follow its last message
    const after = server.engine.stats();
    expect(together.map((r) => r.text)).toEqual(alone.map((r) => r.text));
    expect(together.map((r) => r.usage!.completion_tokens)).toEqual(alone.map((r) => r.usage!.completion_tokens));
    expect(new Set(alone.map((r) => r.text)).size).toBe(4);
    // Several sequences per forward: the steps carried more than one row each on average.
    expect((after.rows - before.rows) / (after.steps - before.steps)).toBeGreaterThan(1.5);
  }, T);
});

describe.skipIf(!have)("kiln serve with inference in a worker, continuous batching (SmolLM2)", () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer({ model: SMOL, port: 0, parallel: 4, queue: 8, contextLength: 512 });
  }, T);
  afterAll(async () => {
    await server?.stop();
  }, T);

  test("/health answers while every sequence generates", async () => {
    const streams = [1, 2, 3, 4].map((i) => streamChat(server.url, `Write a long story about dragon number ${i}.`, 160));
    while (server.engine.stats().slotsBusy < 4) await Bun.sleep(2);
    const lat: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      const r = await fetch(`${server.url}/health`);
      expect(r.status).toBe(200);
      lat.push(performance.now() - t0);
      await Bun.sleep(5);
    }
    // Every probe came back while the four were still generating.
    expect(server.engine.stats().slotsBusy).toBe(4);
    const rs = await Promise.all(streams);
    for (const r of rs) expect(r.usage!.completion_tokens).toBeGreaterThan(0);
    console.log(`/health under 4 generating sequences: p50 ${pct(lat, 50).toFixed(1)} ms, max ${Math.max(...lat).toFixed(1)} ms (30 probes)`);
  }, T);

  test("load: 16 streaming clients, --parallel 4 --queue 8, 320 requests, some leaving mid-stream", async () => {
    const CLIENTS = 16;
    const REQUESTS = 320;
    let issued = 0;
    const results: StreamResult[] = [];
    const rss: number[] = [];
    const t0 = performance.now();
    const client = async (c: number) => {
      while (issued < REQUESTS) {
        const k = issued++;
        const leave = k % 10 === 7 ? 2 : 0; // every tenth request leaves after two chunks
        const r = await streamChat(server.url, `Question ${k % 7}: what is ${c} + ${k % 5}?`, 12, leave);
        results.push(r);
        rss.push(process.memoryUsage().rss);
        if (r.status === 429) await Bun.sleep(250); // back off, as a client told Retry-After would (less than its 1 s, to keep the queue full)
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
    const wall = performance.now() - t0;
    // The slots of clients that left are free within a second of the last response.
    const tIdle = performance.now();
    while (server.engine.stats().slotsBusy > 0 || server.engine.stats().queueLength > 0) {
      if (performance.now() - tIdle > 1000) throw new Error(`slots still busy a second after the last client: ${JSON.stringify(server.engine.stats())}`);
      await Bun.sleep(5);
    }
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    expect(ok.length + refused.length).toBe(REQUESTS); // nothing but 200 and 429
    expect(ok.length).toBeGreaterThan(REQUESTS / 4);
    for (const r of ok) {
      if (r.aborted) continue;
      expect(r.finish).not.toBeNull();
      expect(r.usage).not.toBeNull();
      expect(r.usage!.completion_tokens).toBeGreaterThan(0);
      expect(r.usage!.completion_tokens).toBeLessThanOrEqual(12);
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const first = mean(rss.slice(0, 100));
    const last = mean(rss.slice(-100));
    const tokens = ok.reduce((a, r) => a + (r.usage?.completion_tokens ?? r.chunks), 0);
    const ttft = ok.map((r) => r.ttftMs).filter((x) => x >= 0);
    console.log(
      `load: ${REQUESTS} requests from ${CLIENTS} clients in ${(wall / 1000).toFixed(1)} s: ${ok.length} served (${ok.filter((r) => r.aborted).length} left mid-stream), ` +
        `${refused.length} × 429; TTFT p50 ${pct(ttft, 50).toFixed(0)} ms p99 ${pct(ttft, 99).toFixed(0)} ms; ${(tokens / (wall / 1000)).toFixed(0)} tok/s aggregate; ` +
        `RSS first 100 ${(first / 2 ** 20).toFixed(0)} MiB, last 100 ${(last / 2 ** 20).toFixed(0)} MiB`,
    );
    // Flat: no growth with the number of requests served (a leak of even one KV region per request would show).
    expect(last - first).toBeLessThan(48 * 2 ** 20);
  }, T);
});
