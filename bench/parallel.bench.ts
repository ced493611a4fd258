/**
 * Concurrent sequences, kiln vs llama.cpp: aggregate decode throughput of N streams generated at
 * once from one model — kiln's Batch (continuous batching: one forward per step for all N, what
 * `kiln serve --parallel N` runs) against node-llama-cpp with a context of N sequences, N
 * concurrent evaluations (its batching puts them in one llama_decode per step). Same GGUF file,
 * same threads, same context per sequence; greedy; end-of-generation tokens kept out of both so
 * every stream makes exactly `decode` tokens. Each measurement runs in its own process, the
 * engines alternating rep by rep; figures are medians.
 *
 *   bun bench/parallel.bench.ts [--model PATH]... [--sequences 1,4] [--reps 3] [--prompt 16] [--decode 64] [--threads 2] [--json FILE]
 *
 * Prints per model and N: aggregate tok/s (N × decode ÷ wall time from the first request to the
 * last token), time to first token p50/max over the N streams, and the ratios kiln(N) ÷ kiln(1)
 * and kiln(N) ÷ llama.cpp(N).
 */
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { GEMMA, ensureSynthetic } from "./suite";

interface ChildSpec {
  engine: "kiln" | "llamacpp";
  model: string;
  sequences: number;
  prompt: number;
  decode: number;
  threads: number;
  ctx: number;
}

interface ChildResult {
  engine: string;
  sequences: number;
  tokens: number;
  wall_ms: number;
  tok_s: number;
  ttft_ms: number[];
}

/** N distinct prompts of `len` ordinary tokens (ids from the middle of the vocabulary, seeded). */
function prompts(n: number, len: number, bos: number | null, vocab: number): number[][] {
  let s = 12345;
  const next = () => ((s = (s * 1103515245 + 12345) >>> 0) % 2000) + Math.min(1000, Math.floor(vocab / 4));
  return Array.from({ length: n }, () => [...(bos !== null ? [bos] : []), ...Array.from({ length: len - (bos !== null ? 1 : 0) }, next)]);
}

async function runKiln(spec: ChildSpec): Promise<ChildResult> {
  const { loadModel } = await import("../src/runtime/model");
  const model = await loadModel(spec.model, { threads: spec.threads, contextLength: spec.ctx, device: "cpu" });
  const tk = model.tokenizer;
  const ps = prompts(spec.sequences, spec.prompt, tk.vocab.bos ?? null, model.hp.nVocab);
  const logitBias: Record<number, number> = {};
  for (let t = 0; t < model.hp.nVocab; t++) if (tk.isEog(t)) logitBias[t] = -100;
  const batch = model.createBatch({ sequences: spec.sequences, contextLength: spec.ctx });
  // Warm-up: one short generation per sequence slot.
  await Promise.all(ps.map((p) => new Promise((resolve, reject) => batch.add(p.slice(0, 4), { maxTokens: 2, temperature: 0, logitBias }, { onPiece() {}, onDone: resolve, onError: reject }))));
  const t0 = performance.now();
  const ttft: number[] = [];
  let tokens = 0;
  await Promise.all(ps.map((p) => new Promise((resolve, reject) => {
    let first = true;
    batch.add(p, { maxTokens: spec.decode, temperature: 0, logitBias }, {
      onPiece() {
        if (first) ttft.push(performance.now() - t0);
        first = false;
      },
      onDone: (r) => {
        tokens += r.tokens.length;
        resolve(r);
      },
      onError: reject,
    });
  })));
  const wall = performance.now() - t0;
  batch.dispose();
  model.dispose();
  return { engine: "kiln", sequences: spec.sequences, tokens, wall_ms: wall, tok_s: (tokens * 1000) / wall, ttft_ms: ttft };
}

async function runLlamaCpp(spec: ChildSpec): Promise<ChildResult> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, progressLogs: false, maxThreads: 0, logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: spec.model, gpuLayers: 0, useMmap: true });
  const context = await model.createContext({ contextSize: spec.ctx * spec.sequences, batchSize: 512, sequences: spec.sequences, threads: spec.threads, flashAttention: true });
  const seqs = Array.from({ length: spec.sequences }, () => context.getSequence());
  // Both test models have vocabularies of 32000+ tokens: the same prompts as runKiln's.
  const ps = prompts(spec.sequences, spec.prompt, model.tokens.bos ?? null, 32000);
  const gen = async (i: number, n: number, onFirst?: () => void) => {
    const seq = seqs[i]!;
    await seq.clearHistory();
    let count = 0;
    // yieldEogToken: generation goes on past an end-of-generation token, so every stream makes n tokens.
    for await (const _ of seq.evaluate(ps[i]!.slice(0, n === 2 ? 4 : undefined) as never, { temperature: 0, yieldEogToken: true })) {
      if (count === 0) onFirst?.();
      if (++count >= n) break;
    }
    return count;
  };
  await Promise.all(seqs.map((_, i) => gen(i, 2)));
  const t0 = performance.now();
  const ttft: number[] = [];
  const counts = await Promise.all(seqs.map((_, i) => gen(i, spec.decode, () => ttft.push(performance.now() - t0))));
  const wall = performance.now() - t0;
  const tokens = counts.reduce((a, b) => a + b, 0);
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  return { engine: "llamacpp", sequences: spec.sequences, tokens, wall_ms: wall, tok_s: (tokens * 1000) / wall, ttft_ms: ttft };
}

function child(spec: ChildSpec): ChildResult {
  const r = spawnSync(process.execPath, [import.meta.path, "--child", JSON.stringify(spec)], { encoding: "utf8", maxBuffer: 1 << 24 });
  const line = r.stdout.trim().split("\n").pop() ?? "";
  if (r.status !== 0 || !line.startsWith("{")) throw new Error(`${spec.engine} child failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return JSON.parse(line) as ChildResult;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      child: { type: "string" },
      model: { type: "string", multiple: true },
      sequences: { type: "string", default: "1,4" },
      reps: { type: "string", default: "3" },
      prompt: { type: "string", default: "16" },
      decode: { type: "string", default: "64" },
      threads: { type: "string", default: "2" },
      json: { type: "string" },
    },
  });
  if (values.child) {
    const spec = JSON.parse(values.child) as ChildSpec;
    const r = spec.engine === "kiln" ? await runKiln(spec) : await runLlamaCpp(spec);
    process.stdout.write(JSON.stringify(r) + "\n");
    return;
  }
  const models = values.model ?? [GEMMA, await ensureSynthetic("tinyllama-q4_0.gguf", (s) => console.error(s))];
  const ns = values.sequences!.split(",").map(Number);
  const reps = Number(values.reps);
  const base = { prompt: Number(values.prompt), decode: Number(values.decode), threads: Number(values.threads), ctx: 512 };
  console.log(`CPU: ${cpus()[0]?.model ?? "?"}; ${base.threads} threads; prompt ${base.prompt} tokens, ${base.decode} decoded per stream; ${reps} reps, medians`);
  const out: Record<string, unknown>[] = [];
  for (const model of models) {
    const name = model.split("/").pop()!;
    const agg: Record<string, number> = {};
    for (const n of ns) {
      const res: Record<string, ChildResult[]> = { kiln: [], llamacpp: [] };
      for (let r = 0; r < reps; r++) {
        const order = r % 2 === 0 ? (["kiln", "llamacpp"] as const) : (["llamacpp", "kiln"] as const);
        for (const engine of order) res[engine]!.push(child({ ...base, engine, model, sequences: n }));
      }
      for (const engine of ["kiln", "llamacpp"] as const) {
        const tok = median(res[engine]!.map((x) => x.tok_s));
        const ttfts = res[engine]!.flatMap((x) => x.ttft_ms);
        agg[`${engine}_${n}`] = tok;
        const row = { model: name, engine, sequences: n, tok_s: tok, ttft_p50_ms: median(ttfts), ttft_max_ms: Math.max(...ttfts), runs: res[engine]!.map((x) => Math.round(x.tok_s * 10) / 10) };
        out.push(row);
        console.log(`${name}  ${engine.padEnd(8)} ${String(n).padStart(2)} streams: ${tok.toFixed(1).padStart(7)} tok/s aggregate  TTFT p50 ${row.ttft_p50_ms.toFixed(0)} ms, max ${row.ttft_max_ms.toFixed(0)} ms  (runs ${row.runs.join(", ")})`);
      }
    }
    for (const n of ns.filter((n) => n > 1)) {
      const line = `${name}  ${n} streams: kiln ${(agg[`kiln_${n}`]! / agg.kiln_1!).toFixed(2)}× one stream; llama.cpp ${(agg[`llamacpp_${n}`]! / agg.llamacpp_1!).toFixed(2)}× one stream; kiln ÷ llama.cpp ${(agg[`kiln_${n}`]! / agg[`llamacpp_${n}`]!).toFixed(2)}×`;
      console.log(line);
      out.push({ model: name, sequences: n, kiln_vs_one: agg[`kiln_${n}`]! / agg.kiln_1!, llamacpp_vs_one: agg[`llamacpp_${n}`]! / agg.llamacpp_1!, kiln_vs_llamacpp: agg[`kiln_${n}`]! / agg[`llamacpp_${n}`]! });
    }
  }
  if (values.json) writeFileSync(values.json, JSON.stringify({ cpu: cpus()[0]?.model, date: new Date().toISOString(), ...base, reps, results: out }, null, 2));
}

await main();
