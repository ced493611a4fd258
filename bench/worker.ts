/**
 * One engine, one process: the measuring half of the benchmark suite (bench/suite.ts spawns it
 * with the project's bun, one process per engine per repetition, so VmHWM is that engine's peak
 * RSS alone).
 *
 *   bun bench/worker.ts '<WorkerSpec as JSON>'
 *
 * Loads the model (kiln, or llama.cpp through node-llama-cpp), makes it ready (one one-token
 * forward: both engines have then touched every weight), warms up, runs each prompt from an
 * empty context (prefill, first token, then greedy decode steps), optionally profiles one decode
 * token per op (kiln), and prints one JSON line (WorkerResult) on stdout.
 */
import { readFileSync } from "node:fs";

export interface WorkerRunSpec {
  /** Prompt tokens, prefilled from an empty context. */
  prompt: number;
  /** Greedy decode steps after the first token (0: time to first token only). */
  decode: number;
}

export interface WorkerSpec {
  engine: "kiln" | "llamacpp";
  model: string;
  threads: number;
  /** Context size (KV cache positions), the same for both engines. */
  ctx: number;
  /** Most tokens per forward call (kiln batchSize, llama.cpp n_batch = n_ubatch). */
  batch: number;
  /** Flash attention (kiln: fused kernel; false = the naive path). */
  flash: boolean;
  /** JSON file holding the prompt token ids (at least the longest prompt). */
  idsFile: string;
  runs: WorkerRunSpec[];
  /** kiln only: per-op profile of decode steps after a prompt of this many tokens. */
  profile?: { prompt: number; tokens: number };
}

export interface WorkerRunResult {
  prompt: number;
  /** Prefill + first token (greedy sample included), ms. */
  ttft_ms: number;
  prefill_tok_s: number;
  decode: number;
  /** Wall time of all decode steps. */
  decode_ms: number;
  /**
   * 1000 ÷ the median step time: robust to a burst of load from another process on a shared
   * machine, which would otherwise dominate a short mean. (decode_mean_tok_s: decode ÷ decode_ms.)
   */
  decode_tok_s: number | null;
  decode_mean_tok_s: number | null;
}

export interface WorkerResult {
  engine: "kiln" | "llamacpp";
  /** Open the file, build the model and context, one one-token forward. */
  load_ms: number;
  runs: WorkerRunResult[];
  /** VmHWM of this process at the end, bytes. */
  peak_rss_bytes: number;
  /** VmRSS right after loading, bytes. */
  rss_after_load_bytes: number;
  profile?: import("../src/runtime/profile").DecodeProfile;
  /** Set by the suite: share of the machine's CPU time other processes used during this measurement. */
  other_load?: number;
}

function procStatus(key: "VmHWM" | "VmRSS"): number {
  const m = readFileSync("/proc/self/status", "utf8").match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"));
  if (!m) throw new Error(`bench worker: no ${key} in /proc/self/status`);
  return Number(m[1]) * 1024;
}

export function checkSpec(spec: WorkerSpec): void {
  if (spec.engine !== "kiln" && spec.engine !== "llamacpp") throw new Error(`bench worker: engine must be kiln or llamacpp, got ${JSON.stringify(spec.engine)}`);
  for (const k of ["threads", "ctx", "batch"] as const) {
    if (!Number.isSafeInteger(spec[k]) || spec[k] < 1) throw new Error(`bench worker: ${k} must be a positive integer, got ${spec[k]}`);
  }
  for (const r of spec.runs) {
    if (!Number.isSafeInteger(r.prompt) || r.prompt < 1 || !Number.isSafeInteger(r.decode) || r.decode < 0) throw new Error(`bench worker: bad run ${JSON.stringify(r)}`);
    if (r.prompt + r.decode + 1 > spec.ctx) throw new Error(`bench worker: a ${r.prompt}-token prompt + ${r.decode + 1} tokens exceed the context size ${spec.ctx}`);
  }
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (!arg) throw new Error("usage: bun bench/worker.ts '<spec json>'");
  const spec = JSON.parse(arg) as WorkerSpec;
  checkSpec(spec);
  const ids = JSON.parse(readFileSync(spec.idsFile, "utf8")) as number[];
  const longest = Math.max(32, ...spec.runs.map((r) => r.prompt), spec.profile?.prompt ?? 0);
  if (ids.length < longest) throw new Error(`bench worker: ${spec.idsFile} has ${ids.length} ids, ${longest} needed`);
  const warm = ids.slice(0, Math.min(32, spec.ctx - 4));
  const runs: WorkerRunResult[] = [];
  let loadMs: number;
  let rssAfterLoad: number;
  let profile: WorkerResult["profile"];

  if (spec.engine === "kiln") {
    const { loadModel } = await import("../src/runtime/model");
    const t0 = performance.now();
    const model = await loadModel(spec.model, { threads: spec.threads, contextLength: spec.ctx, batchSize: spec.batch, prefillChunk: spec.batch, maxLogitRows: 1, attention: spec.flash ? "flash" : "naive", device: "cpu" });
    model.eval([ids[0]!]);
    model.reset();
    loadMs = performance.now() - t0;
    rssAfterLoad = procStatus("VmRSS");
    // The library's own generate loop (it awaits the event loop between forward calls), greedy,
    // no speculation; the prompt is evaluated in forward calls of the suite's batch size, as
    // llama.cpp's n_batch. TTFT: call → first token; steps: the gaps between later tokens.
    const ctx = model.defaultContext;
    const generate = async (prompt: number[], decode: number) => {
      const t0 = performance.now();
      let t = t0;
      let ttft = 0;
      const steps: number[] = [];
      let n = 0;
      for await (const _ of ctx.generate(prompt, { maxTokens: decode + 1, temperature: 0, speculative: false })) {
        const now = performance.now();
        if (n === 0) ttft = now - t0;
        else steps.push(now - t);
        t = now;
        if (++n === decode + 1) break; // one piece per token (a trailing flush piece is not a step)
      }
      return { ttft, steps };
    };
    await generate(warm, 2);
    for (const r of spec.runs) {
      const g = await generate(ids.slice(0, r.prompt), r.decode);
      runs.push(runResult(r, g.ttft, g.steps));
    }
    if (spec.profile) {
      const { profileDecode } = await import("../src/runtime/profile");
      profile = profileDecode(model.defaultContext, ids.slice(0, spec.profile.prompt), spec.profile.tokens);
    }
    model.dispose();
  } else {
    const { openReference } = await import("./llamacpp");
    const t0 = performance.now();
    // openReference ends with a one-token probe forward (it reads the vocabulary size from it).
    const ref = await openReference(spec.model, { threads: spec.threads, contextSize: spec.ctx, batchSize: spec.batch, flashAttention: spec.flash });
    loadMs = performance.now() - t0;
    rssAfterLoad = procStatus("VmRSS");
    // Greedy decoding as bench/llamacpp.ts's greedy(), with each step timed.
    const { sequence } = ref.raw;
    const greedyNext = { generateNext: { token: true, options: { temperature: 0 } } };
    const step = async (input: readonly number[]): Promise<number> => {
      const items = input.map((id, i) => (i === input.length - 1 ? [id, greedyNext] : id)) as Parameters<typeof sequence.controlledEvaluate>[0];
      const out = (await sequence.controlledEvaluate(items)) as ({ next: { token?: number | null } } | undefined)[];
      const tok = out[input.length - 1]?.next.token;
      if (tok == null || tok < 0) throw new Error("bench worker: llama.cpp sampling failed");
      return tok;
    };
    const generate = async (prompt: number[], decode: number) => {
      await sequence.clearHistory();
      const t0 = performance.now();
      let tok = await step(prompt);
      const t1 = performance.now();
      const steps: number[] = [];
      for (let i = 0; i < decode; i++) {
        const t = performance.now();
        tok = await step([tok]);
        steps.push(performance.now() - t);
      }
      return { ttft: t1 - t0, steps };
    };
    await generate(warm, 2);
    for (const r of spec.runs) {
      const g = await generate(ids.slice(0, r.prompt), r.decode);
      runs.push(runResult(r, g.ttft, g.steps));
    }
    await ref.close();
  }
  const out: WorkerResult = { engine: spec.engine, load_ms: loadMs, runs, peak_rss_bytes: procStatus("VmHWM"), rss_after_load_bytes: rssAfterLoad, profile };
  process.stdout.write(JSON.stringify(out) + "\n");
}

function runResult(r: WorkerRunSpec, ttft: number, steps: number[]): WorkerRunResult {
  const decodeMs = steps.reduce((a, b) => a + b, 0);
  const sorted = [...steps].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const medianStep = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return {
    prompt: r.prompt,
    ttft_ms: ttft,
    prefill_tok_s: (r.prompt * 1000) / ttft,
    decode: r.decode,
    decode_ms: decodeMs,
    decode_tok_s: steps.length > 0 ? 1000 / medianStep : null,
    decode_mean_tok_s: steps.length > 0 ? (steps.length * 1000) / decodeMs : null,
  };
}

if (import.meta.main) {
  main().then(
    () => process.exit(0),
    (e) => {
      process.stderr.write(`bench worker: ${(e as Error).stack ?? e}\n`);
      process.exit(1);
    },
  );
}
