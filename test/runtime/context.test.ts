/**
 * The library contract of Model and Context: contexts share a model's weights and keep their own
 * KV caches; one generation at a time per context (CONTEXT_BUSY); use after dispose throws
 * DISPOSED and never touches freed memory; the mapping lives until the model and its last
 * context are gone; loading changes nothing process-wide; the profiler belongs to a context.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KilnError } from "../../src/errors";
import { getThreads, setThreads } from "../../src/backends/cpu";
import { loadModel } from "../../src/runtime/model";
import { Context, defaultBatchPrefillChunk, defaultPrefillChunk } from "../../src/runtime/context";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";
import { nmse } from "../helpers";

const dir = mkdtempSync(join(tmpdir(), "kiln-ctx-"));
const path = join(dir, "llama.gguf");
let copies = 0;
/** A file of its own (the same model), so a mapping check sees only this test's mappings. */
function ownCopy(): string {
  const p = join(dir, `copy-${copies++}.gguf`);
  copyFileSync(path, p);
  return p;
}
beforeAll(() => writeSyntheticModel(path, { arch: "llama", type: "q8_0", shape: "tiny", seed: 5 }));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const prompt = [1, 17, 29, 31, 44, 5, 8, 90];
const greedy = { maxTokens: 24, temperature: 0, speculative: false as const };

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<string | undefined> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(KilnError);
    return (e as KilnError).code;
  }
  return undefined;
}

const mapped = (file: string) => readFileSync("/proc/self/maps", "utf8").includes(file);

describe("contexts", () => {
  test("contexts share the weights, keep their own caches: interleaved generations equal each alone", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    try {
      const solo = await model.createContext().complete(prompt, greedy);
      const other = [1, 60, 61, 62, 3];
      const soloOther = await model.createContext().complete(other, greedy);
      const a = model.createContext();
      const b = model.createContext();
      const [ra, rb] = await Promise.all([a.complete(prompt, greedy), b.complete(other, greedy)]);
      expect(ra.tokens).toEqual(solo.tokens);
      expect(rb.tokens).toEqual(soloOther.tokens);
      expect(ra.tokens).not.toEqual(rb.tokens);
    } finally {
      model.dispose();
    }
  });

  test("a second generation on a busy context throws CONTEXT_BUSY and the first is unharmed", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    try {
      const ctx = model.createContext();
      const alone = await ctx.complete(prompt, greedy);
      const first = ctx.complete(prompt, greedy);
      // The first call holds the context from its first step; the second is refused at once.
      await Bun.sleep(0);
      expect(ctx.busy).toBe(true);
      expect(await codeOf(ctx.complete([1, 2, 3], greedy))).toBe("CONTEXT_BUSY");
      expect(await codeOf(() => ctx.eval([1, 2]))).toBe("CONTEXT_BUSY");
      expect(await codeOf(() => ctx.reset())).toBe("CONTEXT_BUSY");
      const r = await first;
      expect(r.tokens).toEqual(alone.tokens);
      expect(ctx.busy).toBe(false);
      // Free again: a new generation runs.
      expect((await ctx.complete(prompt, greedy)).tokens).toEqual(alone.tokens);
      // The same holds through the model's default context.
      const p1 = model.complete(prompt, greedy);
      await Bun.sleep(0);
      expect(await codeOf(model.complete(prompt, greedy))).toBe("CONTEXT_BUSY");
      expect((await p1).tokens).toEqual(alone.tokens);
    } finally {
      model.dispose();
    }
  });

  test("breaking out of a stream frees the context", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    try {
      const ctx = model.createContext();
      let n = 0;
      for await (const _ of ctx.generate(prompt, greedy)) if (++n === 3) break;
      expect(ctx.busy).toBe(false);
      expect((await ctx.complete(prompt, { ...greedy, maxTokens: 2 })).tokens.length).toBe(2);
    } finally {
      model.dispose();
    }
  });

  test("memory is reported before allocation and matches what the context takes", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    try {
      const planned = model.contextMemory({ contextLength: 48, kvType: "f32" });
      const ctx = model.createContext({ contextLength: 48, kvType: "f32" });
      expect(ctx.memory).toEqual(planned);
      expect(planned.kvBytes).toBe(2 * model.hp.nLayer * 48 * model.hp.nKvHead * model.hp.headDim * 4);
      expect(planned.totalBytes).toBe(planned.kvBytes + planned.bufferBytes);
    } finally {
      model.dispose();
    }
  });

  test("bad options are KilnError BAD_OPTION naming the option", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    try {
      for (const [opts, name] of [
        [{ contextLength: 0 }, "contextLength"],
        [{ batchSize: 1.5 }, "batchSize"],
        [{ threads: 0 }, "threads"],
        [{ prefillChunk: -1 }, "prefillChunk"],
        [{ kvType: "q2" }, "kvType"],
      ] as const) {
        let err: unknown;
        try {
          model.createContext(opts as never);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(KilnError);
        expect((err as KilnError).code).toBe("BAD_OPTION");
        expect((err as Error).message).toContain(name);
      }
      await expect(loadModel(path, { threads: 1000 })).rejects.toThrow(/threads/);
    } finally {
      model.dispose();
    }
  });
});

describe("dispose", () => {
  test("every call after dispose throws DISPOSED; views handed out earlier read as empty, never freed memory", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    const logits = model.eval(prompt);
    const row = logits.f32; // a typed array over the context's buffer
    expect(row.length).toBe(model.hp.nVocab);
    const ctx = model.createContext();
    ctx.dispose();
    model.dispose();
    // The crash: `const l = model.eval(ids); model.dispose(); l.f32[0]` (was exit 139).
    expect(row.length).toBe(0);
    expect(row[0]).toBeUndefined();
    expect(await codeOf(() => logits.f32[0])).toBe("DISPOSED");
    expect(await codeOf(() => model.eval(prompt))).toBe("DISPOSED");
    expect(await codeOf(model.complete(prompt, greedy))).toBe("DISPOSED");
    expect(await codeOf(() => model.createContext())).toBe("DISPOSED");
    expect(await codeOf(() => model.tokenize("hi"))).toBe("DISPOSED");
    expect(await codeOf(() => ctx.eval(prompt))).toBe("DISPOSED");
    expect(await codeOf(ctx.complete(prompt, greedy))).toBe("DISPOSED");
    const it = model.generate(prompt, greedy);
    expect(await codeOf(it.next())).toBe("DISPOSED");
    model.dispose(); // idempotent
    ctx.dispose();
  });

  test("the same after dispose in a fresh process: exits cleanly (no segfault)", () => {
    const script = `
      import { loadModel } from ${JSON.stringify(join(import.meta.dir, "../../src/index.ts"))};
      const model = await loadModel(${JSON.stringify(path)}, { threads: 2, contextLength: 64 });
      const l = model.eval([1, 2, 3]);
      const f = l.f32;
      model.dispose();
      let code = "none";
      try { l.f32[0]; } catch (e) { code = e.code; }
      console.log(JSON.stringify({ first: f[0] ?? null, code }));
    `;
    const r = Bun.spawnSync([process.execPath, "-e", script], { stderr: "pipe" });
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout.toString())).toEqual({ first: null, code: "DISPOSED" });
  });

  test("the file stays mapped while a context lives, and is unmapped when the model and its last context are gone", async () => {
    const path = ownCopy();
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    const ctx = model.createContext();
    const want = (await ctx.complete(prompt, greedy)).tokens;
    expect(mapped(path)).toBe(true);
    model.dispose();
    expect(mapped(path)).toBe(true);
    expect((await ctx.complete(prompt, greedy)).tokens).toEqual(want); // the context still works
    ctx.dispose();
    expect(mapped(path)).toBe(false);
  });

  test("`using` disposes a context at the end of its block", async () => {
    const path = ownCopy();
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    let kept: Context;
    {
      using ctx = model.createContext();
      kept = ctx;
      expect(ctx.disposed).toBe(false);
    }
    expect(kept.disposed).toBe(true);
    model.dispose();
    expect(mapped(path)).toBe(false);
  });

  test("dispose during a generation ends it with DISPOSED at its next step", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    const ctx = model.createContext();
    const it = ctx.generate(prompt, greedy);
    await it.next();
    ctx.dispose();
    expect(await codeOf(it.next())).toBe("DISPOSED");
    model.dispose();
  });

  test("a context that is never disposed gives its memory back when collected", async () => {
    const path = ownCopy();
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    (() => {
      model.createContext().eval(prompt);
    })();
    model.dispose();
    for (let i = 0; i < 20 && mapped(path); i++) {
      Bun.gc(true);
      await Bun.sleep(10);
    }
    expect(mapped(path)).toBe(false);
  });
});

describe("nothing process-wide", () => {
  test("loading a model leaves the kernel pool's thread count alone; each context computes with its own", async () => {
    setThreads(1);
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    try {
      expect(getThreads()).toBe(1);
      const one = model.createContext({ threads: 1 });
      const two = model.createContext();
      expect(two.threads).toBe(2);
      const a = await one.complete(prompt, greedy);
      const b = await two.complete(prompt, greedy);
      expect(a.tokens).toEqual(b.tokens); // greedy output does not depend on the thread count
    } finally {
      model.dispose();
    }
  });

  test("the profiler belongs to a context: another context's ops are not counted", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 64 });
    try {
      const a = model.createContext();
      const b = model.createContext();
      a.profiling = true;
      b.eval(prompt);
      expect(a.profiler.snapshot()).toEqual([]);
      a.eval(prompt);
      const ops = a.profiler.snapshot();
      expect(ops.find((o) => o.op === "attention")?.calls).toBe(model.hp.nLayer);
      expect(b.profiler.snapshot()).toEqual([]);
    } finally {
      model.dispose();
    }
  });
});

describe("never blocks the event loop for longer than one forward call", () => {
  const gemma270m = { flops: 2 * 18 * (640 * 1024 + 2 * 640 * 256 + 1024 * 640 + 3 * 640 * 2048), layers: 18 };
  const tinyllama = { flops: 2 * 22 * (2 * 2048 * 2048 + 2 * 2048 * 256 + 3 * 2048 * 5632), layers: 22 };
  const llama7b = { flops: 2 * 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008), layers: 32 };

  test("the default prefill chunk follows the model's work per token and layer, in [64, 512], a multiple of 32", () => {
    expect(defaultPrefillChunk(gemma270m.flops, gemma270m.layers)).toBe(512);
    expect(defaultPrefillChunk(tinyllama.flops, tinyllama.layers)).toBe(256);
    expect(defaultPrefillChunk(llama7b.flops, llama7b.layers)).toBe(64);
    expect(defaultPrefillChunk(1, 1)).toBe(512);
    expect(defaultPrefillChunk(1e12, 1)).toBe(64);
    for (const f of [1e6, 3e7, 1e8, 4e8, 9e8]) for (const l of [1, 7, 30]) expect(defaultPrefillChunk(f, l) % 32).toBe(0);
    // A batch runs a step's forward call whole: its default is per call.
    expect(defaultBatchPrefillChunk(gemma270m.flops)).toBe(128);
    expect(defaultBatchPrefillChunk(tinyllama.flops)).toBe(64);
  });

  /** Counts turns of the event loop (a setImmediate chain) until stopped, or until onTurn(turns) returns false. */
  const turnCounter = (onTurn: (turns: number) => boolean = () => true) => {
    let turns = 0;
    let on = true;
    const spin = () => {
      if (!on) return;
      on = onTurn(++turns);
      setImmediate(spin);
    };
    setImmediate(spin);
    return { turns: () => turns, stop: () => void (on = false) };
  };

  test("a prompt's evaluation returns to the event loop after each layer, with the logits of one forward call", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 256, prefillChunk: 64 });
    try {
      const ids = Array.from({ length: 40 }, (_, i) => 1 + ((i * 7) % 90));
      const ctx = model.createContext();
      const counter = turnCounter();
      const stepped = (await ctx.evaluate(ids)).f32.slice();
      counter.stop();
      // One chunk of 40 tokens: without the per-layer turns the counter would see at most one.
      expect(counter.turns()).toBeGreaterThanOrEqual(model.hp.nLayer);
      expect(ctx.nPast).toBe(40);
      const whole = model.createContext();
      expect(stepped).toEqual(whole.eval(ids).f32.slice()); // the same forward call, bit for bit
    } finally {
      model.dispose();
    }
  });

  test("an abort between two layers drops that chunk and keeps the cache consistent", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 256, prefillChunk: 16 });
    try {
      const ids = Array.from({ length: 40 }, (_, i) => 1 + ((i * 5) % 90));
      const ctx = model.createContext();
      const ac = new AbortController();
      // Aborted in the middle of the second chunk (two layers into it): the first chunk stays.
      turnCounter((turns) => {
        if (turns === model.hp.nLayer + 2) ac.abort();
        return !ac.signal.aborted;
      });
      await expect(ctx.evaluate(ids, { signal: ac.signal })).rejects.toThrow(/abort/i);
      expect(ctx.nPast).toBe(16);
      expect(ctx.tokens).toEqual(ids.slice(0, 16));
      // The dropped chunk's half-written cache rows are written again: the same logits as a fresh context.
      const rest = (await ctx.evaluate(ids.slice(16))).f32.slice();
      const fresh = (await model.createContext().evaluate(ids)).f32.slice();
      expect(rest).toEqual(fresh);
    } finally {
      model.dispose();
    }
  });

  test("two contexts' prefills interleave layer by layer and each gets its own logits", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 256, prefillChunk: 24 });
    try {
      const a = Array.from({ length: 50 }, (_, i) => 1 + ((i * 3) % 90));
      const b = Array.from({ length: 37 }, (_, i) => 2 + ((i * 11) % 80));
      const [ca, cb] = [model.createContext(), model.createContext()];
      const [la, lb] = await Promise.all([ca.evaluate(a).then((t) => t.f32.slice()), cb.evaluate(b).then((t) => t.f32.slice())]);
      const alone = model.createContext();
      expect(la).toEqual((await alone.evaluate(a)).f32.slice());
      alone.reset();
      expect(lb).toEqual((await alone.evaluate(b)).f32.slice());
      expect(la).not.toEqual(lb);
    } finally {
      model.dispose();
    }
  });

  test("a timer fires between decode steps and an abort from a timer ends generation at its next step", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 256, prefillChunk: 8 });
    try {
      const ctx = model.createContext();
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      const ac = new AbortController();
      let abortedAt = 0;
      let steps = 0;
      const it = ctx.generate(Array.from({ length: 40 }, (_, i) => 1 + i), { maxTokens: 200, temperature: 0.8, seed: 1, signal: ac.signal });
      let r;
      for (;;) {
        r = await it.next();
        if (r.done) break;
        // A timer armed at step 5 (not at a fixed time: a fast machine decodes 200 tokens in
        // under 30 ms) fires only if generate returns to the event loop between steps.
        if (++steps === 5) {
          setTimeout(() => {
            abortedAt = steps;
            ac.abort();
          }, 0);
        }
      }
      clearInterval(timer);
      expect(ticks).toBeGreaterThan(0);
      expect(r.value.finishReason).toBe("abort");
      expect(steps - abortedAt).toBeLessThanOrEqual(1); // honoured within one step
      expect(r.value.tokens.length).toBeLessThan(200);
    } finally {
      model.dispose();
    }
  });

  test("an abort during the prompt's evaluation stops between chunks", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 256, prefillChunk: 4 });
    try {
      const ctx = model.createContext();
      const ac = new AbortController();
      ac.abort();
      const r = await ctx.complete(Array.from({ length: 100 }, (_, i) => 1 + i), { maxTokens: 10, signal: ac.signal });
      expect(r.finishReason).toBe("abort");
      expect(r.tokens).toEqual([]);
      expect(ctx.nPast).toBeLessThanOrEqual(4);
      // evaluate(): the same, as an AbortError.
      const ac2 = new AbortController();
      const p = ctx.evaluate(Array.from({ length: 100 }, (_, i) => 1 + i), { signal: ac2.signal });
      ac2.abort();
      await expect(p).rejects.toThrow(/abort/i);
      expect(ctx.busy).toBe(false);
    } finally {
      model.dispose();
    }
  });

  test("chunked evaluation gives the logits of one-shot evaluation", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 256, prefillChunk: 5, maxLogitRows: 1 });
    try {
      const ids = Array.from({ length: 37 }, (_, i) => 1 + ((i * 7) % 90));
      const a = model.createContext();
      const b = model.createContext();
      const chunked = (await a.evaluate(ids)).f32.slice();
      // The same forward calls made by hand: bit for bit.
      let byHand = new Float32Array();
      for (let i = 0; i < ids.length; i += 5) byHand = b.eval(ids.slice(i, i + 5)).f32.slice();
      expect(chunked).toEqual(byHand);
      // One-shot evaluation sums in another order (batched kernels): close, not bitwise.
      b.reset();
      const oneShot = b.eval(ids).f32.slice();
      expect(nmse(chunked, oneShot)).toBeLessThan(1e-3);
      expect(a.nPast).toBe(37);
    } finally {
      model.dispose();
    }
  });
});

describe("reuseCache and control tokens", () => {
  test("reuseCache evaluates only what follows the common prefix, and gives the same tokens", async () => {
    const model = await loadModel(path, { threads: 2, contextLength: 128 });
    try {
      const ctx = model.createContext();
      const first = await ctx.complete(prompt, greedy);
      // The cache holds the prompt and every generated token but the last (sampled, never evaluated).
      expect(ctx.tokens).toEqual([...prompt, ...first.tokens.slice(0, -1)]);
      const next = [...prompt, ...first.tokens, 7, 9];
      const reused = await ctx.complete(next, { ...greedy, reuseCache: true });
      expect(reused.timings.cachedTokens).toBe(prompt.length + first.tokens.length - 1);
      expect(reused.timings.promptTokens).toBe(3);
      // The fresh context runs the prompt in forward calls of at most 16 tokens, as the reused one
      // did (8 prompt tokens, then 1, then 3): batches above 16 rows take the prefill kernels
      // (AMX, interleaved), which sum in another order, and a random tiny model's near-ties then
      // pick other tokens (seen on an Intel AMX machine). Same kernels, same tokens, bit for bit.
      const fresh = await model.createContext({ prefillChunk: 16 }).complete(next, greedy);
      expect(fresh.timings.cachedTokens).toBe(0);
      expect(reused.tokens).toEqual(fresh.tokens);
      // A prompt that diverges early keeps only the shared prefix; one equal to the cache re-evaluates its last token.
      const diverged = await ctx.complete([...prompt.slice(0, 3), 50, 51], { ...greedy, reuseCache: true });
      expect(diverged.timings.cachedTokens).toBe(3);
      ctx.reset();
      expect(ctx.tokens).toEqual([]);
      const again = await ctx.complete(prompt, { ...greedy, reuseCache: true });
      expect(again.timings.cachedTokens).toBe(0);
      ctx.truncate(prompt.length);
      const same = await ctx.complete(prompt, { ...greedy, reuseCache: true });
      expect(same.timings.cachedTokens).toBe(prompt.length - 1);
      expect(same.tokens).toEqual(again.tokens);
    } finally {
      model.dispose();
    }
  });
});
