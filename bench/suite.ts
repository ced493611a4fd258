/**
 * The end-to-end benchmark suite: kiln against llama.cpp (node-llama-cpp's prebuilt CPU build,
 * a dev dependency) on the same GGUF files, same threads, same context size, same batch size,
 * flash attention on for both. Every measurement runs in its own child process
 * (bench/worker.ts), alternating the engines rep by rep, so each engine's peak RSS is its own;
 * figures are medians over the reps.
 *
 *   bun run bench                                 # the full default suite (this file's main)
 *   kiln bench [--model PATH]... [--json] [--quick] [--threads N] [--reps N] [--prompts 128,512,2048]
 *              [--decode N] [--long | --no-long] [--long-contexts 512,2048,8192,16384] [--long-model PATH]
 *              [--profile] [--out DIR | --no-write]
 *
 * Per model: load time (to ready: file opened, model and context built, one one-token forward),
 * prefill tok/s and time to first token per prompt length, decode tok/s at short context (after
 * the shortest prompt) and after a 2048-token prompt, peak RSS, every ratio kiln ÷ llama.cpp,
 * and the decode roofline (measured read bandwidth ÷ bytes one decoded token reads). Then the
 * long-context sweep: prefill and decode at 512…16K tokens, flash and naive attention (kiln) /
 * flash on and off (llama.cpp), time and peak RSS. Writes bench/results/bench-<date>.json (and
 * bench-latest.json), report.md and perf-context.svg there; `bun bench/report.ts FILE --docs`
 * turns a results file into docs/performance/<machine kind>.md and the index docs/performance.md.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { basename, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { amxBf16Status, amxStatus, bf16Status, cpuInfo, kiln, loadedLevel, packLayersDefault, prefetchPolicy } from "../src/ffi/library";
import { cpuIdentity, describeCpuIdentity, machineKind } from "./regress";
import { isLocalLayer } from "../src/models/gemma3";
import { describeReread, rereadInHugePages } from "./page-cache";
import type { DecodeProfile } from "../src/runtime/profile";
import { setThreads } from "../src/backends/cpu";
import { NativeBuffer } from "../src/tensor";
import type { WorkerResult, WorkerRunSpec, WorkerSpec } from "./worker";

export const ROOT = resolve(import.meta.dir, "..");
export const MODELS_DIR = join(ROOT, "models");
export const SYNTHETIC_DIR = join(MODELS_DIR, "synthetic");
export const GEMMA = join(MODELS_DIR, "gemma-3-270m-Q4_K_M.gguf");
/** The real instruction-tuned Q4_1 model set-up fetches (the chat model): the suite's Q4_1 figures. */
export const SMOLLM2 = join(MODELS_DIR, "SmolLM2-135M-Instruct.Q4_1.gguf");

/** Synthetic models the default suite uses, and how to make each (scripts/make-synthetic.ts options). */
export const SYNTHETIC: Record<string, { shape: "tinyllama" | "llama2-7b"; type: "q4_0" | "q4_k" | "q8_0" | "bf16"; ctx?: number }> = {
  "tinyllama-q4_0.gguf": { shape: "tinyllama", type: "q4_0" },
  "tinyllama-q4_k.gguf": { shape: "tinyllama", type: "q4_k" },
  "tinyllama-q8_0.gguf": { shape: "tinyllama", type: "q8_0" },
  // Float weights (the AVX512-BF16 prefill, the grouped float decode); 2.1 GiB.
  "tinyllama-bf16.gguf": { shape: "tinyllama", type: "bf16" },
  "llama2-7b-q4_0.gguf": { shape: "llama2-7b", type: "q4_0" },
  "tinyllama-q4_0-ctx32k.gguf": { shape: "tinyllama", type: "q4_0", ctx: 32768 },
};

export class BenchError extends Error {}

// ---------------------------------------------------------------------------------------------
// Result shapes
// ---------------------------------------------------------------------------------------------

/** Flat figures of one engine on one model (medians), keyed like `prefill_tok_s_512`. */
export type Figures = Record<string, number | null>;

export interface RooflinePoint {
  /** Tokens in the KV cache while decoding (mean over the decode steps). */
  context: number;
  weight_bytes: number;
  kv_bytes: number;
  bytes_per_token: number;
  /** bandwidth ÷ bytes per token */
  roofline_tok_s: number;
  kiln_fraction: number | null;
  llamacpp_fraction: number | null;
}

export interface ModelEntry {
  model: string;
  path: string;
  arch: string;
  file_bytes: number;
  n_layer: number;
  n_embd: number;
  n_vocab: number;
  ctx: number;
  batch: number;
  prompts: number[];
  decode_tokens: number;
  reps: number;
  kiln: Figures;
  llamacpp: Figures;
  /** kiln ÷ llama.cpp for every figure (throughputs: > 1 is kiln faster; times and memory: < 1 is kiln better). */
  ratios: Figures;
  /** kiln ÷ llama.cpp decode tok/s at short context. */
  decode_ratio: number | null;
  /** kiln ÷ llama.cpp prefill tok/s at 512 tokens (or the measured prompt nearest to it: prefill_ratio_prompt). */
  prefill_ratio: number | null;
  prefill_ratio_prompt: number;
  /** bandwidth_gbs: the median of the probes beside this model's kept measurements (older results: the run's best probe). */
  roofline: { bandwidth_gbs: number; short: RooflinePoint; long: RooflinePoint | null };
  /** Each rep's pair of measurements, with the bandwidth probes around them (absent in results from before 2026-12-07). */
  pairs?: PairRecord[];
  /** Raw per-rep values of every figure. */
  samples: { kiln: Record<string, (number | null)[]>; llamacpp: Record<string, (number | null)[]> };
  profile: DecodeProfile | null;
  notes: string[];
}

/**
 * One rep: kiln and llama.cpp measured back to back, with libkiln's read-bandwidth probe before,
 * between and after them. This host's bandwidth changes state within seconds (35 vs 65 GB/s at
 * 2 threads on the Zen 4 VMs), so a pair whose probes disagree by more than STATE_SPREAD is
 * measured again (within a budget), to compare the engines at one state where it can; the
 * probes do not always see the state a measurement ran in, so this narrows the mixing only.
 */
export interface PairRecord {
  order: ("kiln" | "llamacpp")[];
  /** Probes before the first, between, and after the second measurement, GB/s. */
  bandwidth_gbs: number[];
  /** Whether the probes agree within STATE_SPREAD (kept anyway when the repeats ran out). */
  one_state: boolean;
  /** Pairs measured and discarded before this one because the bandwidth changed during them. */
  discarded: number;
}

export interface LongRow {
  context: number;
  engine: "kiln" | "llamacpp";
  attention: "flash" | "naive";
  reps: number;
  prefill_tok_s: number | null;
  prefill_ms: number | null;
  decode_tok_s: number | null;
  peak_rss_mb: number | null;
  skipped?: string;
}

export interface LongContextResult {
  model: string;
  path: string;
  decode_tokens: number;
  batch: number;
  rows: LongRow[];
  notes: string[];
}

export interface SuiteResult {
  kind: "kiln-bench";
  version: 1;
  date: string;
  quick: boolean;
  threads: number;
  batch: number;
  /** kind: bench/regress.ts machineKind (which CI baseline applies); features: libkiln's CPU feature bits. */
  machine: { cpu: string; cores: number; mem_total_gb: number; kiln_cpu_level: string; kind?: string; features?: readonly string[]; /** amxStatus().reason: "enabled" or why the AMX prefill kernel is off. */ amx?: string; /** amxBf16Status().reason: the same for BF16 weights' AMX-BF16 prefill. */ amx_bf16?: string; /** bf16Status().reason: the same for BF16 weights' AVX512-BF16 prefill. */ bf16?: string; /** prefetchPolicy().policy: the decode kernels' prefetch hint. */ prefetch?: string; /** packLayersDefault().pack: layer weights read from packed copies (LoadOptions.packLayers). */ pack_layers?: boolean; /** describeCpuIdentity of /proc/cpuinfo: "family 25 model 17 (Zen 4)". */ cpu_id?: string };
  engines: { kiln: string; llamacpp: string };
  bandwidth_gbs: { start: number; end: number; best: number };
  models: ModelEntry[];
  long_context: LongContextResult | null;
  wall_s: number;
  /** Waiting for other processes' load to pass, and measurements that started under load anyway. */
  load?: { waited_s: number; workers: number; retries: number; started_under_load: number };
  notes: string[];
}

// ---------------------------------------------------------------------------------------------
// Small pure helpers (tested in test/bench)
// ---------------------------------------------------------------------------------------------

export function median(xs: readonly (number | null)[]): number | null {
  const v = xs.filter((x): x is number => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  return typeof a === "number" && typeof b === "number" && b > 0 && Number.isFinite(a) ? a / b : null;
}

/**
 * kiln ÷ llama.cpp for every figure both engines have, pair by pair: the median over reps of
 * kiln's rep-i value ÷ llama.cpp's rep-i value (the two measured back to back, at one bandwidth
 * state), not the ratio of two medians that may come from different states.
 */
export function pairedRatios(k: Record<string, readonly (number | null)[]>, l: Record<string, readonly (number | null)[]>): Figures {
  const out: Figures = {};
  for (const key of Object.keys(k)) {
    const lk = l[key];
    if (!lk) continue;
    out[key] = median(k[key]!.map((x, i) => ratio(x, lk[i])));
  }
  return out;
}

/** Probes around one pair whose largest ÷ smallest is at most this saw one bandwidth state. */
export const STATE_SPREAD = 1.2;

/** Whether a pair's probes (GB/s) saw one bandwidth state. */
export function oneState(probes: readonly number[], spread = STATE_SPREAD): boolean {
  const lo = Math.min(...probes);
  return probes.length > 0 && lo > 0 && Math.max(...probes) / lo <= spread;
}

/** The bandwidth beside each engine's measurement in each pair: the mean of the probes before and after it. */
export function workerBandwidths(pairs: readonly PairRecord[]): { kiln: number[]; llamacpp: number[] } {
  const out = { kiln: [] as number[], llamacpp: [] as number[] };
  for (const p of pairs) p.order.forEach((engine, j) => out[engine].push((p.bandwidth_gbs[j]! + p.bandwidth_gbs[j + 1]!) / 2));
  return out;
}

/** The measured prompt nearest to 512 tokens (the headline prefill figure). */
export function headlinePrompt(prompts: readonly number[]): number {
  return [...prompts].sort((a, b) => Math.abs(a - 512) - Math.abs(b - 512) || b - a)[0]!;
}

/** Context size both engines get: room for the longest run, rounded up to 256 (llama.cpp pads to it). */
export function contextFor(runs: readonly WorkerRunSpec[]): number {
  const need = Math.max(...runs.map((r) => r.prompt + r.decode + 1), 64);
  return Math.ceil(need / 256) * 256;
}

export function parseList(v: string | undefined, name: string): number[] | undefined {
  if (v === undefined) return undefined;
  const xs = v.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (xs.length === 0 || xs.some((x) => !Number.isSafeInteger(x) || x < 1)) throw new BenchError(`--${name} must be a comma-separated list of positive integers, got "${v}"`);
  return xs;
}

export function parsePositive(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new BenchError(`--${name} must be a positive integer, got "${v}"`);
  return n;
}

/** The runs of one worker: each prompt from an empty context; decode after the shortest and the ≥2K prompt. */
export function modelRuns(prompts: readonly number[], decode: number): WorkerRunSpec[] {
  const shortest = Math.min(...prompts);
  return prompts.map((p) => ({ prompt: p, decode: p === shortest || p >= 2048 ? decode : 0 }));
}

/** Median figures of one engine from its per-rep worker results. */
export function engineFigures(results: readonly WorkerResult[], prompts: readonly number[]): { figures: Figures; samples: Record<string, (number | null)[]> } {
  const samples: Record<string, (number | null)[]> = { load_ms: [], peak_rss_mb: [] };
  const shortest = Math.min(...prompts);
  const push = (k: string, v: number | null) => (samples[k] ??= []).push(v);
  for (const r of results) {
    push("load_ms", r.load_ms);
    for (const run of r.runs) {
      push(`prefill_tok_s_${run.prompt}`, run.prefill_tok_s);
      push(`ttft_ms_${run.prompt}`, run.ttft_ms);
      if (run.decode > 0 && run.prompt === shortest) {
        push("decode_tok_s_short", run.decode_tok_s);
        push("decode_mean_tok_s_short", run.decode_mean_tok_s);
      }
      if (run.decode > 0 && run.prompt >= 2048) {
        push(`decode_tok_s_${run.prompt}`, run.decode_tok_s);
        push(`decode_mean_tok_s_${run.prompt}`, run.decode_mean_tok_s);
      }
    }
    push("peak_rss_mb", r.peak_rss_bytes / 2 ** 20);
  }
  const figures: Figures = {};
  for (const [k, v] of Object.entries(samples)) figures[k] = median(v);
  return { figures, samples };
}

// ---------------------------------------------------------------------------------------------
// Machine facts: bandwidth and bytes per token
// ---------------------------------------------------------------------------------------------

/** The machine's read bandwidth (GB/s) with `threads` threads: libkiln's probe over `bytes`. */
export function readBandwidthGBs(threads: number, bytes = 1 << 30, reps = 5): number {
  const probe = new BandwidthProbe(threads, bytes);
  try {
    return probe.gbs(reps);
  } finally {
    probe.free();
  }
}

/**
 * libkiln's read-bandwidth probe over a buffer allocated (and faulted in) once, so that probing
 * beside every measurement costs ~60 ms (256 MiB, 3 passes), not the half second a fresh buffer's
 * page faults take.
 */
export class BandwidthProbe {
  private buf: NativeBuffer | null;
  constructor(readonly threads: number, bytes: number) {
    this.buf = new NativeBuffer(bytes);
    this.buf.bytes.fill(1);
  }
  gbs(reps = 3): number {
    if (!this.buf) throw new BenchError("bandwidth probe used after free()");
    setThreads(this.threads);
    return (kiln().kiln_read_bandwidth(this.buf.bytes, this.buf.byteLength, reps) as number) / 1e9;
  }
  free(): void {
    this.buf?.free();
    this.buf = null;
  }
}

export interface ModelFacts {
  arch: string;
  fileBytes: number;
  nLayer: number;
  nEmbd: number;
  nVocab: number;
  nCtxTrain: number;
  /** Bytes of weights one decoded token reads: every block tensor, the output head, the embedding row, the final norm. */
  weightBytesPerToken: number;
  /** KV-cache bytes one decoded token reads at a context of `ctx` tokens (f16 K and V; Gemma's local layers see their window). */
  kvBytesPerToken(ctx: number): number;
  /** Prompt ids: BOS then a tokenized passage repeated, `n` in all. */
  promptIds(n: number): number[];
}

export async function modelFacts(path: string): Promise<ModelFacts> {
  const { loadModel } = await import("../src/runtime/model");
  const m = await loadModel(path, { contextLength: 16, batchSize: 1, maxLogitRows: 1, device: "cpu" });
  try {
    const hp = m.hp;
    const byName = new Map(m.file.tensors.map((t) => [t.name, t]));
    const embd = byName.get("token_embd.weight")!;
    const head = byName.get("output.weight") ?? embd;
    let weights = head.nbytes + embd.nbytes / hp.nVocab;
    for (const t of m.file.tensors) if (t.name.startsWith("blk.") || t.name === "output_norm.weight" || t.name === "rope_freqs.weight") weights += t.nbytes;
    const kvRow = hp.nKvHead * hp.headDim * 2; // f16
    const kvBytesPerToken = (ctx: number) => {
      let b = 0;
      for (let il = 0; il < hp.nLayer; il++) {
        const len = hp.arch === "gemma3" && isLocalLayer(hp, il) ? Math.min(ctx, hp.slidingWindow) : ctx;
        b += 2 * len * kvRow;
      }
      return b;
    };
    const passage = m.tokenize("The history of the printing press begins in the fifteenth century, when movable metal type, oil-based inks and a wooden press were first combined. ");
    if (passage.length === 0) throw new BenchError(`${path}: the benchmark passage tokenizes to nothing`);
    const bos = m.tokenizer.bos;
    const promptIds = (n: number) => {
      const ids: number[] = bos === null || bos === undefined ? [] : [bos];
      while (ids.length < n) ids.push(...passage);
      return ids.slice(0, n);
    };
    return {
      arch: hp.arch, fileBytes: statSync(path).size, nLayer: hp.nLayer, nEmbd: hp.nEmbd, nVocab: hp.nVocab, nCtxTrain: hp.nCtxTrain,
      weightBytesPerToken: weights, kvBytesPerToken, promptIds,
    };
  } finally {
    m.dispose();
  }
}

/** The decode roofline at one context: bandwidth ÷ (weight bytes + KV bytes) per token, and each engine's fraction of it. */
export function rooflinePoint(weightBytes: number, kvBytes: number, context: number, bandwidthGBs: number, kilnTokS: number | null | undefined, llamaTokS: number | null | undefined): RooflinePoint {
  const bytes = weightBytes + kvBytes;
  const roof = (bandwidthGBs * 1e9) / bytes;
  return {
    context,
    weight_bytes: weightBytes,
    kv_bytes: kvBytes,
    bytes_per_token: bytes,
    roofline_tok_s: roof,
    kiln_fraction: typeof kilnTokS === "number" ? kilnTokS / roof : null,
    llamacpp_fraction: typeof llamaTokS === "number" ? llamaTokS / roof : null,
  };
}

/**
 * The decode roofline from per-measurement probes: each measurement's fraction is its tok/s ÷ the
 * roofline at the bandwidth probed beside it (median over reps); roofline_tok_s uses the median
 * probe. A fraction then stays below 100% when the host's bandwidth changes during a run.
 */
export function pairedRooflinePoint(weightBytes: number, kvBytes: number, context: number, kilnTokS: readonly (number | null)[], llamaTokS: readonly (number | null)[], bw: { kiln: readonly number[]; llamacpp: readonly number[] }): RooflinePoint {
  const bytes = weightBytes + kvBytes;
  const fractions = (tok: readonly (number | null)[], gbs: readonly number[]) => median(tok.map((t, i) => (typeof t === "number" && gbs[i]! > 0 ? (t * bytes) / (gbs[i]! * 1e9) : null)));
  const roof = ((median([...bw.kiln, ...bw.llamacpp]) ?? 0) * 1e9) / bytes;
  return { context, weight_bytes: weightBytes, kv_bytes: kvBytes, bytes_per_token: bytes, roofline_tok_s: roof, kiln_fraction: fractions(kilnTokS, bw.kiln), llamacpp_fraction: fractions(llamaTokS, bw.llamacpp) };
}

// ---------------------------------------------------------------------------------------------
// Running workers
// ---------------------------------------------------------------------------------------------

const WORKER = join(import.meta.dir, "worker.ts");

function cpuTimes(): { idle: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  return { idle: (v[3] ?? 0) + (v[4] ?? 0), total: v.reduce((a, b) => a + b, 0) };
}

/** Fraction of the machine's CPU time that was busy over `ms` (while this process sleeps). */
export async function busyFraction(ms = 700): Promise<number> {
  if (!existsSync("/proc/stat")) return 0;
  const a = cpuTimes();
  await Bun.sleep(ms);
  const b = cpuTimes();
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : 0;
}

/** Load from other processes seen before measurements (this is a shared machine). */
export const loadLog = { waitedMs: 0, startedUnderLoad: 0, workers: 0, retries: 0 };

/**
 * Waits (up to `maxWaitMs`) until other processes leave the CPUs mostly idle: on 2 cores a
 * concurrent compile or test run halves kiln's speed and can slow llama.cpp's spinning thread
 * pool a hundredfold, so a measurement started under load measures the load.
 */
export async function waitForQuiet(log: (s: string) => void, maxWaitMs = Number(process.env.KILN_BENCH_QUIET_WAIT_MS ?? 600_000), threshold = 0.3): Promise<void> {
  const t0 = performance.now();
  let said = false;
  loadLog.workers++;
  for (;;) {
    const busy = await busyFraction();
    if (busy < threshold) return;
    const waited = performance.now() - t0;
    if (waited >= maxWaitMs) {
      loadLog.startedUnderLoad++;
      log(`  (machine still ${(busy * 100).toFixed(0)}% busy after ${(waited / 1000).toFixed(0)} s: measuring anyway)`);
      return;
    }
    if (!said) log(`  (other processes keep the CPUs ${(busy * 100).toFixed(0)}% busy: waiting for quiet…)`);
    said = true;
    await Bun.sleep(5000);
    loadLog.waitedMs += 5000;
  }
}

/**
 * Runs one worker. With `log`, waits for a quiet machine first and, when other processes took
 * more than a quarter of the machine's CPU time during the measurement (/proc/stat minus the
 * worker's own CPU time), discards it and measures again (at most twice more).
 */
export async function runWorker(spec: WorkerSpec, timeoutMs = 30 * 60_000, log?: (s: string) => void): Promise<WorkerResult> {
  for (let attempt = 0; ; attempt++) {
    if (log) await waitForQuiet(log);
    const before = existsSync("/proc/stat") ? cpuTimes() : null;
    const { result, cpuMs } = await runWorkerOnce(spec, timeoutMs);
    if (!log || !before) return result;
    const after = cpuTimes();
    const totalMs = ((after.total - before.total) * 1000) / 100; // USER_HZ = 100
    const busyMs = ((after.total - after.idle - (before.total - before.idle)) * 1000) / 100;
    const other = totalMs > 0 ? Math.max(0, busyMs - cpuMs) / totalMs : 0;
    result.other_load = other;
    if (other <= 0.25 || attempt >= 2) {
      if (other > 0.25) loadLog.startedUnderLoad++;
      return result;
    }
    loadLog.retries++;
    log(`  (other processes took ${(other * 100).toFixed(0)}% of the CPUs during that ${spec.engine} measurement: discarded, measuring again)`);
  }
}

async function runWorkerOnce(spec: WorkerSpec, timeoutMs: number): Promise<{ result: WorkerResult; cpuMs: number }> {
  const p = Bun.spawn([process.execPath, WORKER, JSON.stringify(spec)], { stdout: "pipe", stderr: "pipe", cwd: ROOT, env: { ...process.env, KILN_PROFILE: "" } });
  const timer = setTimeout(() => p.kill(), timeoutMs);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  const line = out.trim().split("\n").at(-1) ?? "";
  if (code !== 0 || !line.startsWith("{")) {
    const why = p.signalCode ? `killed by ${p.signalCode}${p.signalCode === "SIGTERM" ? ` (over the ${timeoutMs / 1000} s limit)` : ""}` : `exit code ${code}`;
    throw new BenchError(`${spec.engine} on ${basename(spec.model)} (ctx ${spec.ctx}, ${spec.flash ? "flash" : "no flash"}): worker failed, ${why}: ${err.trim().split("\n").slice(-6).join(" | ")}`);
  }
  const cpuMs = Number(p.resourceUsage()?.cpuTime.total ?? 0n) / 1000;
  return { result: JSON.parse(line) as WorkerResult, cpuMs };
}

/** Fails with a clear message when the dev dependency the llama.cpp side needs is not installed. */
export function requireNodeLlamaCpp(): void {
  try {
    Bun.resolveSync("node-llama-cpp", import.meta.dir);
  } catch {
    throw new BenchError("kiln bench compares against llama.cpp through the dev dependency node-llama-cpp, which is not installed here; run `bash scripts/setup.sh` (or `npm ci`) in a kiln checkout");
  }
}

/** Makes a missing default synthetic model (seeded random weights at a real shape). */
export async function ensureSynthetic(file: string, log: (s: string) => void): Promise<string> {
  const path = join(SYNTHETIC_DIR, file);
  if (existsSync(path)) return path;
  const how = SYNTHETIC[file];
  if (!how) throw new BenchError(`${path} is missing and is not one of the synthetic models kiln bench can make (${Object.keys(SYNTHETIC).join(", ")})`);
  const { resolveHParams, writeSyntheticModel } = await import("../src/tools/synthetic-model");
  mkdirSync(SYNTHETIC_DIR, { recursive: true });
  log(`making ${path} (synthetic ${how.shape} ${how.type}${how.ctx ? `, context ${how.ctx}` : ""})…`);
  const shape = how.ctx ? { ...resolveHParams("llama", how.shape), nCtx: how.ctx } : how.shape;
  const tmp = `${path}.partial`;
  writeSyntheticModel(tmp, { arch: "llama", type: how.type, shape, seed: 0, name: how.ctx ? `synthetic-llama-${how.shape}-${how.type}-ctx${how.ctx}` : undefined });
  const { renameSync } = await import("node:fs");
  renameSync(tmp, path);
  return path;
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

export interface ModelPlan {
  path: string;
  prompts: number[];
  decode: number;
  reps: number;
  notes: string[];
}

export interface LongPlan {
  path: string;
  contexts: number[];
  decode: number;
  /** Naive-attention configurations above this context are skipped (with the reason in the output). */
  naiveMaxContext: number;
  /** Reps at a context (fewer at long contexts). */
  reps: (ctx: number) => number;
}

export interface SuiteOptions {
  models: ModelPlan[];
  threads: number;
  batch: number;
  quick: boolean;
  profile: boolean;
  long: LongPlan | null;
  bandwidthBytes: number;
  log: (s: string) => void;
  /** Called with the result so far after each model and each long-context length (partial saves). */
  onProgress?: (partial: SuiteResult) => void;
  /** An earlier (partial) result: its models and complete long-context lengths are reused, not measured again. */
  resume?: SuiteResult;
  /** Skip the per-model figures (long context only). */
  longOnly?: boolean;
  /** Leave each model file's page cache as it is (default: re-read it in 2 MiB pages, see bench/page-cache.ts). */
  keepPageCache?: boolean;
}

const fmt = (x: number | null | undefined, d = 1) => (typeof x === "number" ? x.toFixed(d) : "—");

/**
 * Measures `reps` pairs, the engines alternating which goes first. With a probe, the bandwidth is
 * probed before, between and after each pair, and a pair whose probes are not one state
 * (oneState) is measured again, at most `reps` times in all; when the repeats run out it is kept
 * and marked. Without a probe, pairs are not recorded.
 */
export async function measurePairs<R>(reps: number, measure: (engine: "kiln" | "llamacpp", rep: number) => Promise<R>, probe: (() => number) | null, log: (s: string) => void): Promise<{ results: { kiln: R[]; llamacpp: R[] }; pairs: PairRecord[] }> {
  const results = { kiln: [] as R[], llamacpp: [] as R[] };
  const pairs: PairRecord[] = [];
  let repeatsLeft = reps;
  for (let rep = 0; rep < reps; rep++) {
    const order = rep % 2 === 0 ? (["kiln", "llamacpp"] as const) : (["llamacpp", "kiln"] as const);
    for (let discarded = 0; ; discarded++) {
      const got: Partial<Record<"kiln" | "llamacpp", R>> = {};
      const probes: number[] = probe ? [probe()] : [];
      for (const engine of order) {
        got[engine] = await measure(engine, rep);
        if (probe) probes.push(probe());
      }
      const same = !probe || oneState(probes);
      const shown = probes.map((x) => fmt(x)).join(" → ");
      if (same || repeatsLeft === 0) {
        if (probe) pairs.push({ order: [...order], bandwidth_gbs: probes, one_state: same, discarded });
        for (const engine of order) results[engine].push(got[engine]!);
        if (probe) log(same ? `  (rep ${rep + 1}: bandwidth ${shown} GB/s)` : `  (the bandwidth changed during rep ${rep + 1} (${shown} GB/s) and no repeats are left: kept, marked)`);
        break;
      }
      repeatsLeft--;
      log(`  (the bandwidth changed during rep ${rep + 1}: ${shown} GB/s; measuring the pair again)`);
    }
  }
  return { results, pairs };
}

export async function runModel(plan: ModelPlan, o: SuiteOptions, bandwidthGBs: number, dir: string, probe?: BandwidthProbe): Promise<ModelEntry> {
  const facts = await modelFacts(plan.path);
  const runs = modelRuns(plan.prompts, plan.decode);
  const ctx = contextFor(runs);
  const idsFile = join(dir, `${basename(plan.path)}.ids.json`);
  writeFileSync(idsFile, JSON.stringify(facts.promptIds(Math.max(...plan.prompts, 32))));
  const notes = [...plan.notes];
  if (!o.keepPageCache) notes.push(describeReread(rereadInHugePages(plan.path)));
  if (ctx > facts.nCtxTrain) notes.push(`context ${ctx} exceeds the model's training context ${facts.nCtxTrain}`);
  const base = { model: plan.path, threads: o.threads, ctx, batch: o.batch, flash: true, idsFile, runs };
  let profile: DecodeProfile | null = null;
  const { results: res, pairs } = await measurePairs(plan.reps, async (engine, rep) => {
    const wantProfile = engine === "kiln" && rep === 0 && o.profile && !profile;
    const r = await runWorker({ ...base, engine, profile: wantProfile ? { prompt: Math.min(...plan.prompts), tokens: 8 } : undefined }, undefined, o.log);
    if (r.profile) profile = r.profile;
    const shortRun = r.runs.find((x) => x.decode > 0);
    o.log(`  ${basename(plan.path)} rep ${rep + 1}/${plan.reps} ${engine.padEnd(8)} load ${fmt(r.load_ms, 0)} ms, prefill ${r.runs.map((x) => `${x.prompt}: ${fmt(x.prefill_tok_s)}`).join(", ")} tok/s, decode ${fmt(shortRun?.decode_tok_s)} tok/s, peak RSS ${fmt(r.peak_rss_bytes / 2 ** 20, 0)} MiB`);
    return r;
  }, probe ? () => probe.gbs() : null, o.log);
  const k = engineFigures(res.kiln, plan.prompts);
  const l = engineFigures(res.llamacpp, plan.prompts);
  const hp = headlinePrompt(plan.prompts);
  const shortest = Math.min(...plan.prompts);
  const long = plan.prompts.find((p) => p >= 2048);
  const bw = probe ? workerBandwidths(pairs) : null;
  const point = (context: number, key: string) =>
    bw
      ? pairedRooflinePoint(facts.weightBytesPerToken, facts.kvBytesPerToken(context), context, k.samples[key] ?? [], l.samples[key] ?? [], bw)
      : rooflinePoint(facts.weightBytesPerToken, facts.kvBytesPerToken(context), context, bandwidthGBs, k.figures[key], l.figures[key]);
  const paired = pairedRatios(k.samples, l.samples);
  if (probe) notes.push(`Bandwidth probed beside every measurement: ${pairs.map((p) => p.bandwidth_gbs.map((x) => fmt(x)).join("→")).join(", ")} GB/s${pairs.some((p) => p.discarded) ? `; ${pairs.reduce((a, p) => a + p.discarded, 0)} pair(s) measured again because it changed during them` : ""}${pairs.some((p) => !p.one_state) ? `; ${pairs.filter((p) => !p.one_state).length} pair(s) kept across a change` : ""}.`);
  return {
    model: basename(plan.path),
    path: plan.path,
    arch: facts.arch,
    file_bytes: facts.fileBytes,
    n_layer: facts.nLayer,
    n_embd: facts.nEmbd,
    n_vocab: facts.nVocab,
    ctx,
    batch: o.batch,
    prompts: plan.prompts,
    decode_tokens: plan.decode,
    reps: plan.reps,
    kiln: k.figures,
    llamacpp: l.figures,
    ratios: paired,
    decode_ratio: paired.decode_tok_s_short ?? null,
    prefill_ratio: paired[`prefill_tok_s_${hp}`] ?? null,
    prefill_ratio_prompt: hp,
    roofline: {
      bandwidth_gbs: bw ? median([...bw.kiln, ...bw.llamacpp])! : bandwidthGBs,
      short: point(shortest + Math.floor(plan.decode / 2), "decode_tok_s_short"),
      long: long === undefined ? null : point(long + Math.floor(plan.decode / 2), `decode_tok_s_${long}`),
    },
    ...(probe ? { pairs } : {}),
    samples: { kiln: k.samples, llamacpp: l.samples },
    profile,
    notes,
  };
}

export async function runLong(plan: LongPlan, o: SuiteOptions, dir: string, onContext?: (partial: LongContextResult) => void): Promise<LongContextResult> {
  const facts = await modelFacts(plan.path);
  const idsFile = join(dir, `${basename(plan.path)}.long-ids.json`);
  writeFileSync(idsFile, JSON.stringify(facts.promptIds(Math.max(...plan.contexts))));
  const notes: string[] = [];
  if (!o.keepPageCache) notes.push(describeReread(rereadInHugePages(plan.path)));
  const rows: LongRow[] = [];
  const configs = [
    { engine: "kiln", flash: true },
    { engine: "llamacpp", flash: true },
    { engine: "kiln", flash: false },
    { engine: "llamacpp", flash: false },
  ] as const;
  for (const context of plan.contexts) {
    const prev = o.resume?.long_context?.model === basename(plan.path) ? o.resume.long_context.rows.filter((x) => x.context === context) : [];
    if (prev.length === configs.length) {
      o.log(`  long context ${context}: reused from the resumed run`);
      rows.push(...prev);
      continue;
    }
    const runs = [{ prompt: context, decode: plan.decode }];
    const ctx = contextFor(runs);
    const reps = plan.reps(context);
    const got = configs.map(() => ({ prefill: [] as number[], ms: [] as number[], decode: [] as (number | null)[], rss: [] as number[], error: "" }));
    for (let rep = 0; rep < reps; rep++) {
      const order = configs.map((_, i) => i);
      if (rep % 2 === 1) order.reverse();
      for (const i of order) {
        const c = configs[i]!;
        if (got[i]!.error) continue;
        if (!c.flash && c.engine === "kiln" && context > plan.naiveMaxContext) {
          got[i]!.error = `not run: naive attention above ${plan.naiveMaxContext} tokens is left out to keep the suite's time down (its prefill takes several times flash's; --naive-max-context N includes it)`;
          continue;
        }
        if (!c.flash && c.engine === "llamacpp" && context > plan.naiveMaxContext) {
          got[i]!.error = `not run: flash attention off above ${plan.naiveMaxContext} tokens is left out to keep the suite's time down (--naive-max-context N includes it)`;
          continue;
        }
        try {
          const r = await runWorker({ engine: c.engine, model: plan.path, threads: o.threads, ctx, batch: o.batch, flash: c.flash, idsFile, runs }, undefined, o.log);
          const run = r.runs[0]!;
          got[i]!.prefill.push(run.prefill_tok_s);
          got[i]!.ms.push(run.ttft_ms);
          got[i]!.decode.push(run.decode_tok_s);
          got[i]!.rss.push(r.peak_rss_bytes / 2 ** 20);
          o.log(`  long context ${context} rep ${rep + 1}/${reps} ${c.engine.padEnd(8)} ${c.flash ? "flash" : "naive"}: prefill ${fmt(run.prefill_tok_s)} tok/s, decode ${fmt(run.decode_tok_s)} tok/s, peak RSS ${fmt(r.peak_rss_bytes / 2 ** 20, 0)} MiB`);
        } catch (e) {
          // A configuration that cannot run (out of memory, over the time limit) is reported, never fatal.
          got[i]!.error = (e as Error).message;
          o.log(`  long context ${context} ${c.engine} ${c.flash ? "flash" : "naive"}: skipped: ${got[i]!.error}`);
        }
      }
    }
    configs.forEach((c, i) => {
      const g = got[i]!;
      rows.push({
        context,
        engine: c.engine,
        attention: c.flash ? "flash" : "naive",
        reps: g.prefill.length,
        prefill_tok_s: median(g.prefill),
        prefill_ms: median(g.ms),
        decode_tok_s: median(g.decode),
        peak_rss_mb: median(g.rss),
        ...(g.error ? { skipped: g.error } : {}),
      });
    });
    onContext?.({ model: basename(plan.path), path: plan.path, decode_tokens: plan.decode, batch: o.batch, rows: [...rows], notes: [...notes] });
  }
  notes.push(`Naive attention (both engines) runs up to ${plan.naiveMaxContext} tokens.`);
  notes.push(`"naive" is kiln's unfused attention (scores materialized; query chunks of at most 256 MiB of scores) and llama.cpp with flash attention off.`);
  return { model: basename(plan.path), path: plan.path, decode_tokens: plan.decode, batch: o.batch, rows, notes };
}

export async function runSuite(o: SuiteOptions): Promise<SuiteResult> {
  requireNodeLlamaCpp();
  const t0 = performance.now();
  const dir = mkdtempSync(join(tmpdir(), "kiln-bench-"));
  let probe: BandwidthProbe | undefined;
  try {
    o.log(`read bandwidth probe (${o.threads} threads)…`);
    const bwStart = Math.max(readBandwidthGBs(o.threads, o.bandwidthBytes), o.resume?.bandwidth_gbs.best ?? 0);
    o.log(`  ${bwStart.toFixed(1)} GB/s`);
    // One buffer for the probes beside every measurement (at most 256 MiB: ~60 ms a probe).
    probe = new BandwidthProbe(o.threads, Math.min(o.bandwidthBytes, 256 * 2 ** 20));
    const entries: { plan: ModelPlan; run: (bw: number) => Promise<ModelEntry> }[] = o.models.map((plan) => ({ plan, run: (bw) => runModel(plan, o, bw, dir, probe) }));
    const models: ModelEntry[] = [];
    let long: LongContextResult | null = null;
    const progress = (bwEnd: number) => o.onProgress?.(assemble(o, models, long, bwStart, bwEnd, t0));
    for (const e of o.longOnly ? [] : entries) {
      const prev = o.resume?.models.find((m) => m.path === e.plan.path && m.prompts.join() === e.plan.prompts.join() && m.decode_tokens === e.plan.decode);
      if (prev) {
        o.log(`${basename(e.plan.path)}: reused from the resumed run (${o.resume!.date})`);
        models.push(prev);
        continue;
      }
      o.log(`${basename(e.plan.path)}: prompts ${e.plan.prompts.join("/")}, ${e.plan.decode} decode tokens, ${e.plan.reps} reps`);
      models.push(await e.run(bwStart));
      progress(bwStart);
    }
    if (o.long) {
      o.log(`long context on ${basename(o.long.path)}: ${o.long.contexts.join(", ")} tokens`);
      long = await runLong(o.long, o, dir, (partial) => {
        long = partial;
        progress(bwStart);
      });
    }
    const bwEnd = readBandwidthGBs(o.threads, o.bandwidthBytes);
    return assemble(o, models, long, bwStart, bwEnd, t0);
  } finally {
    probe?.free();
    rmSync(dir, { recursive: true, force: true });
  }
}

function assemble(o: SuiteOptions, models: ModelEntry[], long: LongContextResult | null, bwStart: number, bwEnd: number, t0: number): SuiteResult {
  {
    const best = Math.max(bwStart, bwEnd);
    // Entries without per-measurement probes (resumed older results) use the best of the run's two
    // probes (the machine's bandwidth, not a noisy moment of it).
    models = models.map((m) => structuredClone(m));
    for (const m of models) {
      if (m.pairs) continue; // probed beside each measurement (runModel)
      m.roofline.bandwidth_gbs = best;
      const re = (p: RooflinePoint, key: string) => rooflinePoint(p.weight_bytes, p.kv_bytes, p.context, best, m.kiln[key], m.llamacpp[key]);
      m.roofline.short = re(m.roofline.short, "decode_tok_s_short");
      const longPrompt = m.prompts.find((p) => p >= 2048);
      if (m.roofline.long && longPrompt) m.roofline.long = re(m.roofline.long, `decode_tok_s_${longPrompt}`);
    }
    let llamaVersion = "node-llama-cpp";
    try {
      llamaVersion = `node-llama-cpp ${JSON.parse(readFileSync(join(ROOT, "node_modules", "node-llama-cpp", "package.json"), "utf8")).version} (prebuilt CPU build)`;
    } catch {}
    const cpuModel = cpus()[0]?.model ?? "unknown CPU";
    const id = existsSync("/proc/cpuinfo") ? cpuIdentity(readFileSync("/proc/cpuinfo", "utf8")) : null;
    return {
      kind: "kiln-bench",
      version: 1,
      date: new Date().toISOString(),
      quick: o.quick,
      threads: o.threads,
      batch: o.batch,
      machine: { cpu: cpuModel, cores: cpus().length, mem_total_gb: totalmem() / 2 ** 30, kiln_cpu_level: loadedLevel(), kind: machineKind(cpuModel, cpuInfo().features), features: cpuInfo().features, amx: amxStatus().reason, amx_bf16: amxBf16Status().reason, bf16: bf16Status().reason, prefetch: prefetchPolicy().policy, pack_layers: packLayersDefault().pack, ...(id ? { cpu_id: describeCpuIdentity(id) } : {}) },
      engines: { kiln: `kiln ${JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version}`, llamacpp: llamaVersion },
      bandwidth_gbs: { start: bwStart, end: bwEnd, best },
      models,
      long_context: long,
      wall_s: (performance.now() - t0) / 1000,
      load: { waited_s: loadLog.waitedMs / 1000, workers: loadLog.workers, retries: loadLog.retries, started_under_load: loadLog.startedUnderLoad },
      notes: [
        ...(o.resume ? [`Resumed from a partial run of ${o.resume.date} (its models and complete long-context lengths are reused).`] : []),
        "Before each measurement the suite waits (up to 10 min) until other processes leave the CPUs under 30% busy, and a measurement during which other processes took over 25% of the CPU time is discarded and repeated (at most twice); `load` counts the repeats and the measurements kept under load anyway.",
        "Each figure is the median over the reps; every measurement is one child process per engine, the engines alternating. Ratios (kiln ÷ llama.cpp) are the median of each rep's pair, the two measured back to back.",
        `The read bandwidth is probed before, between and after each pair (256 MiB, 3 passes); a pair whose probes differ by more than ${Math.round((STATE_SPREAD - 1) * 100)}% (this host’s bandwidth changes state within seconds to minutes) is measured again, at most once per rep in all, and kept anyway when the repeats run out. Each measurement's roofline fraction uses the bandwidth probed beside it.`,
        "Both engines: same file, same threads, same context size and batch size (512), flash attention on, f16 KV cache, greedy decoding.",
        "load_ms: open the file, build model and context, one one-token forward (both engines have then touched every weight).",
        "prefill tok/s = prompt tokens ÷ time to first token (prefill + greedy sample of the first token), from an empty context.",
        "decode tok/s = 1000 ÷ the median time of one greedy decode step (forward + sampling) within a run, robust to bursts of load from other processes on this shared machine; decode_mean_tok_s (steps ÷ their total time) is kept alongside.",
      ],
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

export const BENCH_USAGE = `usage: kiln bench [--model PATH]... [--json] [--quick] [--threads N] [--reps N] [--prompts 128,512,2048]
                  [--decode N] [--batch N] [--long | --no-long] [--long-contexts 512,2048,8192,16384]
                  [--long-model PATH] [--naive-max-context N] [--long-only] [--resume PARTIAL.json]
                  [--profile] [--out DIR | --no-write] [--keep-page-cache]
  default models: ${basename(GEMMA)} and synthetic ${Object.keys(SYNTHETIC).filter((f) => !f.includes("ctx")).join(", ")}
  (--quick: ${basename(GEMMA)} + tinyllama-q4_0.gguf, prompts 128/512, 16 decode tokens, 3 reps, no long context)`;

export interface BenchCli {
  opts: SuiteOptions;
  json: boolean;
  outDir: string | null;
}

/** Parses `kiln bench` arguments and prepares the models (making missing default synthetic ones). */
export async function parseBenchArgs(argv: string[], log: (s: string) => void): Promise<BenchCli> {
  let v;
  try {
    ({ values: v } = parseArgs({
      args: argv,
      options: {
        model: { type: "string", multiple: true }, json: { type: "boolean" }, quick: { type: "boolean" }, threads: { type: "string" },
        reps: { type: "string" }, prompts: { type: "string" }, decode: { type: "string" }, batch: { type: "string" },
        long: { type: "boolean" }, "no-long": { type: "boolean" }, "long-contexts": { type: "string" }, "long-model": { type: "string" },
        profile: { type: "boolean" }, out: { type: "string" }, "no-write": { type: "boolean" },
        "naive-max-context": { type: "string" }, resume: { type: "string" }, "long-only": { type: "boolean" }, "keep-page-cache": { type: "boolean" },
      },
    }));
  } catch (e) {
    throw new BenchError((e as Error).message);
  }
  const quick = v.quick ?? false;
  const threads = parsePositive(v.threads, "threads") ?? 2;
  const batch = parsePositive(v.batch, "batch") ?? 512;
  const repsArg = parsePositive(v.reps, "reps");
  const promptsArg = parseList(v.prompts, "prompts");
  const decode = parsePositive(v.decode, "decode") ?? (quick ? 16 : 32);
  const longContexts = parseList(v["long-contexts"], "long-contexts") ?? [512, 2048, 8192, 16384];
  if (v.long && v["no-long"]) throw new BenchError("--long and --no-long contradict each other");
  const explicit = v.model !== undefined;
  for (const p of v.model ?? []) {
    if (!existsSync(p)) throw new BenchError(`--model ${p}: no such file`);
    if (statSync(p).isDirectory()) throw new BenchError(`--model ${p}: is a directory, not a GGUF file`);
  }
  let paths: string[];
  if (explicit) paths = v.model!.map((p) => resolve(p));
  else {
    if (!existsSync(GEMMA)) throw new BenchError(`${GEMMA} is missing; run \`bash scripts/setup.sh\` (it fetches the default model) or pass --model PATH`);
    const names = quick ? ["tinyllama-q4_0.gguf"] : ["tinyllama-q4_0.gguf", "tinyllama-q4_k.gguf", "tinyllama-q8_0.gguf", "tinyllama-bf16.gguf", "llama2-7b-q4_0.gguf"];
    paths = [GEMMA];
    if (!quick) {
      if (existsSync(SMOLLM2)) paths.push(SMOLLM2);
      else log(`${SMOLLM2} is missing (\`bash scripts/setup.sh\` fetches it): no Q4_1 figures in this run`);
    }
    for (const n of names) paths.push(await ensureSynthetic(n, log));
  }
  const models: ModelPlan[] = paths.map((path) => {
    let prompts = promptsArg ?? (quick ? [128, 512] : [128, 512, 2048]);
    // 3 reps for every model: with 2 the median is their mean, and one run slowed by a
    // neighbour decides the figure (BF16 decode 13.7 and 21.7 tok/s in one run of 2026-12-05).
    const reps = repsArg ?? 3;
    const notes: string[] = [];
    const big = statSync(path).size > 2 * 2 ** 30;
    if (big && !promptsArg && prompts.includes(2048)) {
      prompts = prompts.filter((p) => p < 2048);
      notes.push("over 2 GiB of weights: the 2048-token prompt (and decode after it) is skipped to keep the suite's time down");
    }
    return { path, prompts: [...new Set(prompts)].sort((a, b) => a - b), decode, reps, notes };
  });
  const wantLong = v.long ?? v["long-only"] ?? (!quick && !explicit && !v["no-long"]);
  if (v["long-only"] && v["no-long"]) throw new BenchError("--long-only and --no-long contradict each other");
  let resume: SuiteResult | undefined;
  if (v.resume) {
    const { readResults } = await import("./report");
    try {
      resume = readResults(v.resume);
    } catch (e) {
      throw new BenchError(`--resume: ${(e as Error).message}`);
    }
  }
  let long: LongPlan | null = null;
  if (wantLong && !v["no-long"]) {
    const path = v["long-model"] ? resolve(v["long-model"]) : await ensureSynthetic("tinyllama-q4_0-ctx32k.gguf", log);
    if (!existsSync(path)) throw new BenchError(`--long-model ${path}: no such file`);
    long = { path, contexts: longContexts, decode: 8, naiveMaxContext: parsePositive(v["naive-max-context"], "naive-max-context") ?? 8192, reps: (ctx) => (repsArg !== undefined ? repsArg : ctx <= 2048 ? 2 : 1) };
  }
  const outDir = v["no-write"] ? null : resolve(v.out ?? join(ROOT, "bench", "results"));
  return {
    opts: { models, threads, batch, quick, profile: v.profile ?? (process.env.KILN_PROFILE === "1" || !quick), long, bandwidthBytes: quick ? 256 * 2 ** 20 : 2 ** 30, log, resume, longOnly: v["long-only"] ?? false, keepPageCache: v["keep-page-cache"] ?? false },
    json: v.json ?? false,
    outDir,
  };
}

/** Writes the results JSON (dated and latest), the markdown report and the chart into `dir`. */
export async function writeOutputs(result: SuiteResult, dir: string): Promise<string[]> {
  const { renderChart, renderReport } = await import("./report");
  mkdirSync(dir, { recursive: true });
  const stamp = result.date.slice(0, 19).replace(/[:T]/g, "-");
  const files = [join(dir, `bench-${stamp}.json`), join(dir, "bench-latest.json"), join(dir, "report.md")];
  const json = JSON.stringify(result, null, 2);
  writeFileSync(files[0]!, json);
  writeFileSync(files[1]!, json);
  const chart = renderChart(result);
  if (chart) {
    files.push(join(dir, "perf-context.svg"));
    writeFileSync(files[3]!, chart);
  }
  writeFileSync(files[2]!, renderReport(result, { chartPath: chart ? "perf-context.svg" : null }));
  return files;
}

/** `kiln bench …`: returns the exit code. */
export async function benchMain(argv: string[]): Promise<number> {
  const log = (s: string) => process.stderr.write(s + "\n");
  let cli: BenchCli;
  try {
    cli = await parseBenchArgs(argv, log);
    requireNodeLlamaCpp();
  } catch (e) {
    if (e instanceof BenchError) {
      console.error(`kiln bench: ${e.message}\n${BENCH_USAGE}`);
      return 2;
    }
    throw e;
  }
  try {
    if (cli.outDir) {
      const partial = join(cli.outDir, "bench-partial.json");
      mkdirSync(cli.outDir, { recursive: true });
      cli.opts.onProgress = (r) => writeFileSync(partial, JSON.stringify({ ...r, partial: true }, null, 2));
    }
    const result = await runSuite(cli.opts);
    if (cli.outDir) {
      const files = await writeOutputs(result, cli.outDir);
      log(`wrote ${files.join(", ")}`);
    }
    if (cli.json) process.stdout.write(JSON.stringify(result) + "\n");
    else {
      const { renderReport } = await import("./report");
      process.stdout.write(renderReport(result, { chartPath: null }) + "\n");
    }
    return 0;
  } catch (e) {
    if (e instanceof BenchError) {
      console.error(`kiln bench: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) process.exit(await benchMain(process.argv.slice(2)));
