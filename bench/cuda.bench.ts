/**
 * The CUDA backend's decode and prefill speed on synthetic models at real shapes (kiln's GGUF
 * writer: TinyLlama 1.1B, Llama-2-7B; --model for any file), next to the device's measured copy
 * bandwidth: decode reads every weight once per token, so weight bytes ÷ step time ÷ bandwidth
 * is the fraction of the memory system a decode step uses (issue 13's target: ≥ 60% on 7B).
 *
 *   bun bench/cuda.bench.ts [--shape tinyllama|llama2-7b|tiny] [--type q4_0] [--model PATH]
 *                           [--prompt 512] [--steps 32] [--emulator]
 *
 * --emulator runs it on the host emulator (tiny shapes only: a smoke test of the code path, the
 * figures mean nothing). Without a GPU and without --emulator it says so and exits 0.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseGGUF } from "../src/gguf";
import { architectureOf } from "../src/models/arch";
import { RunState } from "../src/models/state";
import { MappedFile } from "../src/runtime/mapped-file";
import { writeSyntheticModel } from "../src/tools/synthetic-model";
import { CudaBackend } from "../src/backends/cuda/backend";
import { EmulatorRuntime } from "../src/backends/cuda/emulator";
import { CudaRuntime, probeCuda } from "../src/backends/cuda/driver";
import { copyF32 } from "../src/backends/cuda/kernels/copy";
import type { DeviceRuntime } from "../src/backends/cuda/runtime";
import type { DType } from "../src/tensor";

const { values } = parseArgs({
  options: {
    shape: { type: "string", default: "tinyllama" },
    type: { type: "string", default: "q4_0" },
    model: { type: "string" },
    prompt: { type: "string", default: "512" },
    steps: { type: "string", default: "32" },
    emulator: { type: "boolean", default: false },
  },
});

let rt: DeviceRuntime;
if (values.emulator) rt = new EmulatorRuntime();
else {
  const p = probeCuda();
  if (!p.available) {
    console.log(`no GPU (${p.reason}): nothing to measure; --emulator runs the code path on the host`);
    process.exit(0);
  }
  rt = new CudaRuntime(0);
}

/** Device copy bandwidth (read + write bytes per second) over a buffer far larger than L2. */
function copyBandwidth(): number {
  const n = values.emulator ? 1 << 16 : 1 << 28; // 1 GiB of f32 on a GPU
  const src = rt.alloc(n * 4, "bandwidth src");
  const dst = rt.alloc(n * 4, "bandwidth dst");
  copyF32(rt, src, dst, n);
  rt.synchronize();
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    copyF32(rt, src, dst, n);
    rt.synchronize();
    times.push(performance.now() - t0);
  }
  rt.free(src);
  rt.free(dst);
  const ms = times.sort((a, b) => a - b)[2]!;
  return (2 * n * 4) / (ms / 1e3);
}

let path = values.model;
if (!path) {
  const dir = join(import.meta.dir, "..", "models", "synthetic");
  mkdirSync(dir, { recursive: true });
  path = join(dir, `cuda-bench-${values.shape}-${values.type}.gguf`);
  if (!(await Bun.file(path).exists())) writeSyntheticModel(path, { arch: "llama", type: values.type as DType, shape: values.shape as "tinyllama", seed: 1 });
}

const mf = new MappedFile(path);
const file = parseGGUF(mf.bytes, { fileName: path });
const arch = architectureOf(file);
const hp = arch.readHParams(file);
const host = arch.loadWeights(file, mf.bytes, hp);
const tensors = arch.tensors(host);
const weightBytes = tensors.reduce((a, t) => a + t.byteLength, 0);
const backend = new CudaBackend(rt);
type StepMs = { record: number; launch: number; wait: number };
type Profile = { byKernel: Map<string, number>; graphMs: number } | null;
let graphStats: { lastStepMs: StepMs } | undefined;
let profileStep: ((reps?: number) => Profile) | undefined;
const createOps = backend.createOps.bind(backend);
backend.createOps = (s) => {
  const ops = createOps(s) as unknown as { graphStats: { lastStepMs: StepMs }; profileGraphStep: (reps?: number) => Profile };
  graphStats = ops.graphStats;
  profileStep = ops.profileGraphStep.bind(ops);
  return ops as unknown as ReturnType<typeof createOps>;
};
const t0 = performance.now();
const w = backend.placeWeights(host);
rt.synchronize();
const uploadMs = performance.now() - t0;
const nPrompt = Math.min(Number(values.prompt), values.emulator ? 16 : 1 << 14);
const steps = values.emulator ? 2 : Number(values.steps);
const state = new RunState(hp, { nCtx: nPrompt + steps + 8, maxBatch: nPrompt, maxLogitRows: 1, kvType: "f16", weightTypes: [...new Set(tensors.map((t) => t.dtype))] }, backend);
const prompt = Int32Array.from({ length: nPrompt }, (_, i) => 1 + ((i * 7919) % (hp.nVocab - 1)));

const bw = copyBandwidth();
// Warm-up: the first calls compile (or load cached) kernels; then the measured prefill.
arch.forward(hp, w, state, prompt, 1);
arch.forward(hp, w, state, Int32Array.of(1), 1);
state.truncate(0);
rt.synchronize();
const p0 = performance.now();
arch.forward(hp, w, state, prompt, 1);
const prefillMs = performance.now() - p0;
const stepMs: number[] = [];
const parts: StepMs[] = [];
for (let i = 0; i < steps; i++) {
  const s0 = performance.now();
  arch.forward(hp, w, state, Int32Array.of(2 + i), 1);
  stepMs.push(performance.now() - s0);
  if (graphStats && backend.graphs) parts.push({ ...graphStats.lastStepMs });
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;
const decodeMs = median(stepMs);
console.log(`${path.split("/").pop()} on ${backend.description}`);
console.log(`weights ${(weightBytes / 2 ** 20).toFixed(0)} MiB uploaded in ${uploadMs.toFixed(0)} ms; device copy bandwidth ${(bw / 1e9).toFixed(0)} GB/s`);
console.log(`prefill ${nPrompt} tokens: ${prefillMs.toFixed(1)} ms (${((nPrompt / prefillMs) * 1e3).toFixed(0)} tok/s)`);
console.log(`decode: ${decodeMs.toFixed(3)} ms/token median of ${steps} (${(1e3 / decodeMs).toFixed(0)} tok/s); weight bytes per step / time = ${(weightBytes / (decodeMs / 1e3) / 1e9).toFixed(0)} GB/s = ${((weightBytes / (decodeMs / 1e3) / bw) * 100).toFixed(0)}% of the measured copy bandwidth`);
if (parts.length > 0) {
  const [rec, lau, wai] = (["record", "launch", "wait"] as const).map((k) => median(parts.map((p) => p[k])));
  console.log(`decode step parts (medians): host records the launches ${rec!.toFixed(3)} ms, graph launch ${lau!.toFixed(3)} ms, wait for the logits ${wai!.toFixed(3)} ms; the rest (forward's host work outside the backend) ${(decodeMs - rec! - lau! - wai!).toFixed(3)} ms`);
  const prof = profileStep?.(5);
  if (prof) {
    const total = [...prof.byKernel.values()].reduce((a, b) => a + b, 0);
    console.log(`graph replay alone ${prof.graphMs.toFixed(3)} ms; kernels one at a time with a synchronize each ${total.toFixed(3)} ms:`);
    for (const [k, v] of [...prof.byKernel].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`  ${k.padEnd(40)} ${v.toFixed(3)} ms`);
  }
} else console.log("decode steps launched kernel by kernel (KILN_CUDA_GRAPHS=0)");
state.dispose();
backend.dispose();
rt.dispose();
mf.close();
