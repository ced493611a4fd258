/**
 * How long a generation holds the event loop, and what yielding costs.
 *
 *   bun bench/responsiveness.bench.ts [--model PATH] [--threads N] [--prompt 512] [--decode 200] [--reps 3]
 *
 * 1. Prefill chunk sweep: a `--prompt`-token prompt evaluated by `context.evaluate` at each
 *    prefillChunk, with a 1 ms interval timer running: prompt tok/s and the longest gap between
 *    timer ticks (= the longest stretch the event loop was held).
 * 2. Decode: `context.generate` (greedy, no speculation) for `--decode` tokens with the timer
 *    running: tok/s, the longest and p99 timer gaps; then the same tokens from a synchronous
 *    loop of `eval` + argmax (no yields): the cost of yielding, as a ratio of medians.
 * 3. Abort latency: an AbortSignal fired by a timer mid-decode; time from abort() to the
 *    generation's return, and the steps taken after it.
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { cpus } from "node:os";
import { loadModel } from "../src/runtime/model";
import { argmax } from "../src/runtime/sampling";

const { values: o } = parseArgs({
  options: {
    model: { type: "string" },
    threads: { type: "string" },
    prompt: { type: "string" },
    decode: { type: "string" },
    reps: { type: "string" },
    chunks: { type: "string" },
  },
});
const path = o.model ?? join(import.meta.dir, "..", "models", "gemma-3-270m-Q4_K_M.gguf");
const threads = Number(o.threads ?? 2);
const promptLen = Number(o.prompt ?? 512);
const decode = Number(o.decode ?? 200);
const reps = Number(o.reps ?? 3);
const chunks = (o.chunks ?? "32,64,128,256,512").split(",").map(Number);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

let tickCount = 0;

/** Runs fn with a 1 ms interval timer; returns fn's result and the gaps between ticks (ms). */
async function withTicker<T>(fn: () => Promise<T>): Promise<{ value: T; gaps: number[] }> {
  const gaps: number[] = [];
  let last = performance.now();
  tickCount = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    gaps.push(now - last);
    last = now;
    tickCount++;
  }, 1);
  try {
    const value = await fn();
    gaps.push(performance.now() - last);
    return { value, gaps };
  } finally {
    clearInterval(timer);
  }
}

const model = await loadModel(path, { threads, contextLength: Math.max(1024, promptLen + decode + 16), maxLogitRows: 1, device: "cpu" });
const text = "The river rises in the mountains and flows north through forests, towns and wide farmland before it reaches the sea. ";
let ids = model.tokenize(text.repeat(Math.ceil((promptLen * 6) / text.length)), { addSpecial: false });
ids = [...model.tokenize("", { addSpecial: true }), ...ids].slice(0, promptLen);
console.log(`responsiveness: ${path.split("/").at(-1)}, ${threads} threads, ${cpus()[0]?.model ?? "unknown CPU"}; prompt ${ids.length} tokens, decode ${decode}, ${reps} reps (medians)`);

console.log("\nprefill chunk  prompt tok/s  longest event-loop gap (ms)");
for (const chunk of chunks) {
  const tps: number[] = [];
  const gaps: number[] = [];
  for (let r = 0; r < reps; r++) {
    const ctx = model.createContext({ prefillChunk: chunk, batchSize: Math.max(512, chunk) });
    const t0 = performance.now();
    const { gaps: g } = await withTicker(() => ctx.evaluate(ids));
    tps.push((ids.length * 1000) / (performance.now() - t0));
    gaps.push(Math.max(...g));
    ctx.dispose();
  }
  console.log(`${String(chunk).padStart(13)}  ${median(tps).toFixed(0).padStart(12)}  ${median(gaps).toFixed(1).padStart(27)}`);
}

const ctx = model.createContext();
const short = ids.slice(0, 64);
const yielding: number[] = [];
const sync: number[] = [];
const maxGaps: number[] = [];
const p99Gaps: number[] = [];
for (let r = 0; r < reps; r++) {
  // generate: the library path (awaits the event loop between forward calls).
  let ticksAtFirstToken = 0;
  const { value: tps, gaps: all } = await withTicker(async () => {
    let t1 = 0;
    let n = 0;
    for await (const _ of ctx.generate(short, { maxTokens: decode, temperature: 0, speculative: false })) {
      if (n++ === 0) {
        t1 = performance.now();
        ticksAtFirstToken = tickCount;
      }
    }
    return ((n - 1) * 1000) / (performance.now() - t1);
  });
  const gaps = all.slice(ticksAtFirstToken + 1); // decode only: the gap in progress at the first token spans the prompt
  yielding.push(tps);
  maxGaps.push(Math.max(...gaps));
  p99Gaps.push(pct(gaps, 0.99));
  // The same tokens, synchronously: eval + argmax in a loop, never yielding.
  ctx.reset();
  let tok = argmax(ctx.eval(short).f32);
  const t1 = performance.now();
  for (let i = 1; i < decode; i++) tok = argmax(ctx.eval([tok]).f32);
  sync.push(((decode - 1) * 1000) / (performance.now() - t1));
}
console.log(`\ndecode (generate, yielding)   ${median(yielding).toFixed(1)} tok/s; event-loop gap between tokens longest ${median(maxGaps).toFixed(1)} ms, p99 ${median(p99Gaps).toFixed(1)} ms`);
console.log(`decode (sync eval loop)       ${median(sync).toFixed(1)} tok/s`);
console.log(`generate ÷ sync loop          ${(median(yielding) / median(sync)).toFixed(3)} (the generate loop also runs the sampler, stream decoder and stop checks)`);
// One turn of the event loop, as generate takes between forward calls, alone.
const turns: number[] = [];
for (let r = 0; r < 5; r++) {
  const t0 = performance.now();
  for (let i = 0; i < 1000; i++) await new Promise<void>((resolve) => setImmediate(resolve));
  turns.push((performance.now() - t0) / 1000);
}
const turnMs = median(turns);
console.log(`one event-loop turn           ${(turnMs * 1000).toFixed(1)} µs = ${((turnMs * median(yielding)) / 10).toFixed(3)}% of a decode step at ${median(yielding).toFixed(1)} tok/s`);

const latencies: number[] = [];
const after: number[] = [];
for (let r = 0; r < reps; r++) {
  const ac = new AbortController();
  let firedAt = 0;
  let stepsAtAbort = 0;
  let steps = 0;
  setTimeout(() => {
    firedAt = performance.now();
    stepsAtAbort = steps;
    ac.abort();
  }, 150);
  const it = ctx.generate(short, { maxTokens: 100000 > ctx.contextLength ? ctx.contextLength - short.length - 1 : 100000, temperature: 0, speculative: false, signal: ac.signal });
  for (;;) {
    const x = await it.next();
    if (x.done) break;
    steps++;
  }
  latencies.push(performance.now() - firedAt);
  after.push(steps - stepsAtAbort);
}
console.log(`abort: generation returned ${median(latencies).toFixed(1)} ms after abort() (median; max ${Math.max(...latencies).toFixed(1)}), ${Math.max(...after)} step(s) after it at most`);
ctx.dispose();
model.dispose();
