/**
 * End-to-end speed, kiln vs llama.cpp (node-llama-cpp's prebuilt CPU build) on the same GGUF
 * file, same thread count, same process, interleaved runs, medians:
 *
 *   bun bench/e2e.bench.ts [--model PATH]... [--threads N] [--prompt-tokens N] [--decode-tokens N] [--reps N]
 *                          [--keep-page-cache]
 *
 * Default models: the real Gemma 3 270M Q4_K_M and any synthetic models in models/synthetic/.
 * Prefill = one forward over an N-token prompt; decode = greedy one-token steps after it. kiln
 * runs on the CPU (device "cpu"), as the reference does: on a GPU machine "auto" would take the
 * GPU and compare it with llama.cpp's CPU build (as this bench once did on an H200's host).
 * Each model file is first re-read into the page cache in 2 MiB pages (bench/page-cache.ts; both
 * engines map that page cache) unless --keep-page-cache. Writes bench/results/e2e-<date>.json.
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadModel } from "../src/runtime/model";
import { argmax } from "../src/runtime/sampling";
import { openReference } from "./llamacpp";
import { describeReread, rereadInHugePages } from "./page-cache";

const { values: o } = parseArgs({
  options: {
    model: { type: "string", multiple: true }, threads: { type: "string" }, "prompt-tokens": { type: "string" },
    "decode-tokens": { type: "string" }, reps: { type: "string" }, "flash-attention": { type: "boolean" }, "keep-page-cache": { type: "boolean" },
  },
});
const threads = Number(o.threads ?? 2);
const promptTokens = Number(o["prompt-tokens"] ?? 128);
const decodeTokens = Number(o["decode-tokens"] ?? 32);
const reps = Number(o.reps ?? 3);
const root = join(import.meta.dir, "..");
const synthetic = join(root, "models", "synthetic");
const models = o.model ?? [
  join(root, "models", "gemma-3-270m-Q4_K_M.gguf"),
  ...(existsSync(synthetic) ? readdirSync(synthetic).filter((f) => f.endsWith(".gguf")).sort().map((f) => join(synthetic, f)) : []),
].filter(existsSync);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** A prompt of exactly n ids: the tokenized passage repeated, BOS first. */
function promptIds(tokenize: (s: string) => number[], bos: number | null, n: number): number[] {
  const passage = tokenize("The history of the printing press begins in the fifteenth century, when movable metal type, oil-based inks and a wooden press were first combined. ");
  const ids = bos === null ? [] : [bos];
  while (ids.length < n) ids.push(...passage);
  return ids.slice(0, n);
}

const results: Record<string, unknown>[] = [];
for (const path of models) {
  if (!o["keep-page-cache"]) console.log(`${path.split("/").at(-1)}: ${describeReread(rereadInHugePages(path))}`);
  const kiln = await loadModel(path, { threads, contextLength: promptTokens + decodeTokens + 8, device: "cpu" });
  const ref = await openReference(path, { threads, contextSize: promptTokens + decodeTokens + 8, flashAttention: o["flash-attention"] ?? true });
  const ids = promptIds((s) => ref.tokenize(s), ref.bos, promptTokens);
  const k = { prefill: [] as number[], decode: [] as number[] };
  const r = { prefill: [] as number[], decode: [] as number[] };
  let kilnTokens: number[] = [];
  let refTokens: number[] = [];
  for (let rep = 0; rep < reps; rep++) {
    // kiln
    kiln.reset();
    let t0 = performance.now();
    let logits = kiln.eval(ids);
    let t1 = performance.now();
    kilnTokens = [];
    for (let i = 0; i < decodeTokens; i++) {
      const tok = argmax(logits.f32);
      kilnTokens.push(tok);
      logits = kiln.eval([tok]);
    }
    const t2 = performance.now();
    k.prefill.push((ids.length * 1000) / (t1 - t0));
    k.decode.push((decodeTokens * 1000) / (t2 - t1));
    // llama.cpp
    refTokens = await ref.greedy(ids, decodeTokens + 1);
    const lt = ref.lastTimings!;
    r.prefill.push((lt.promptTokens * 1000) / lt.prefillMs);
    r.decode.push((lt.decodeTokens * 1000) / lt.decodeMs);
  }
  const row = {
    model: path.split("/").at(-1),
    threads,
    promptTokens,
    decodeTokens,
    kiln: { prefillTokS: median(k.prefill), decodeTokS: median(k.decode), loadMs: kiln.loadMs },
    llamacpp: { prefillTokS: median(r.prefill), decodeTokS: median(r.decode), loadMs: ref.loadMs },
    prefillRatio: median(k.prefill) / median(r.prefill),
    decodeRatio: median(k.decode) / median(r.decode),
    sameGreedyTokens: kilnTokens.slice(0, 8).join(",") === refTokens.slice(0, 8).join(","),
  };
  results.push(row);
  console.log(`${row.model}: prefill ${row.kiln.prefillTokS.toFixed(1)} vs ${row.llamacpp.prefillTokS.toFixed(1)} tok/s (${row.prefillRatio.toFixed(2)}×), decode ${row.kiln.decodeTokS.toFixed(1)} vs ${row.llamacpp.decodeTokS.toFixed(1)} tok/s (${row.decodeRatio.toFixed(2)}×), load ${row.kiln.loadMs.toFixed(0)} vs ${row.llamacpp.loadMs.toFixed(0)} ms`);
  kiln.dispose();
  await ref.close();
}

const dir = join(import.meta.dir, "results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `e2e-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.json`);
writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), results }, null, 2));
console.log(`wrote ${file}`);
