/**
 * Whole models on the CUDA backend vs the CPU backend: the same synthetic GGUF file (kiln's
 * writer, seeded weights) run through each architecture's forward pass on the CPU and on
 * CudaBackend over every device runtime (the host emulator always; a GPU when one is present).
 * Prefill (tensor-core matmul + tile flash attention), decode (mat-vec + split-KV attention) and
 * a two-sequence batch (per-sequence spans, the gathered output rows) are all exercised.
 *
 * The two backends round differently by design: the CPU quantizes activations to 8-bit blocks
 * for quantized weights, the CUDA mat-vec reads them in f32 and the tensor-core paths in f16. So
 * logits are compared by NMSE, and a top-1 that differs must be a near tie on the CPU side.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseGGUF } from "../../src/gguf";
import { architectureOf } from "../../src/models/arch";
import { RunState } from "../../src/models/state";
import { MappedFile } from "../../src/runtime/mapped-file";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";
import { CudaBackend } from "../../src/backends/cuda/backend";
import { CPU_BACKEND } from "../../src/backends/cpu-backend";
import type { Backend } from "../../src/backends/backend";
import type { DType } from "../../src/tensor";
import { nmse, rng } from "../helpers";
import { testRuntimes } from "./runtimes";

const dir = mkdtempSync(join(tmpdir(), "kiln-cuda-model-"));
const runtimes = await testRuntimes(import.meta.file);
afterAll(() => {
  for (const { rt } of runtimes) rt.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Small shapes so the emulator (every GPU thread a fiber) runs a case in seconds. */
const SHAPE = { nVocab: 400, nEmbd: 128, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 256, headDim: 32 };
const CASES: [arch: "llama" | "qwen2" | "gemma3", type: DType | "q4_k_m", bound: number][] = [
  ["llama", "q8_0", 5e-3],
  ["llama", "q4_k_m", 5e-3],
  ["qwen2", "q4_0", 5e-3],
  ["gemma3", "q4_k_m", 5e-3],
];
const TIE_LOGITS = 0.1;
let worstSeen = 0;
const argmax = (a: Float32Array) => a.reduce((m, v, i) => (v > a[m]! ? i : m), 0);

interface Run {
  /** Logits of the prefill's last 3 rows, then of each decode step. */
  rows: Float32Array[];
  /** Logits of the two-sequence batch step, one row per sequence. */
  batch: Float32Array[];
}

function run(path: string, backend: Backend, prompt: number[], decode: number[]): Run {
  const mf = new MappedFile(path);
  try {
    const file = parseGGUF(mf.bytes, { fileName: path });
    const arch = architectureOf(file);
    const hp = arch.readHParams(file);
    const host = arch.loadWeights(file, mf.bytes, hp);
    const w = backend.placeWeights(host);
    const weightTypes = [...new Set(arch.tensors(host).map((t) => t.dtype))];
    const state = new RunState(hp, { nCtx: 64, maxBatch: 24, maxLogitRows: 24, kvType: "f16", weightTypes, nSeq: 2 }, backend);
    try {
      const rows: Float32Array[] = [];
      const take = (logits: { f32: Float32Array }, n: number) => {
        for (let i = 0; i < n; i++) rows.push(logits.f32.slice(i * hp.nVocab, (i + 1) * hp.nVocab));
      };
      take(arch.forward(hp, w, state, Int32Array.from(prompt), 3), 3);
      for (const t of decode) take(arch.forward(hp, w, state, Int32Array.of(t), 1), 1);
      // Sequence 1: its own 5-token prompt next to sequence 0's next token, in one call.
      const batchLogits = arch.forward(hp, w, state, Int32Array.from([decode[0]!, ...prompt.slice(0, 5)]), 1, [{ seq: 0, n: 1 }, { seq: 1, n: 5 }]);
      const batch = [0, 1].map((i) => batchLogits.f32.slice(i * hp.nVocab, (i + 1) * hp.nVocab));
      return { rows, batch };
    } finally {
      state.dispose();
      if (backend !== CPU_BACKEND) backend.dispose();
    }
  } finally {
    mf.close();
  }
}

function compare(got: Float32Array[], want: Float32Array[], bound: number): void {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => {
    const w = want[i]!;
    expect(g.every(Number.isFinite)).toBe(true);
    const e = nmse(g, w);
    worstSeen = Math.max(worstSeen, e);
    expect(e).toBeLessThan(bound);
    const margin = w[argmax(w)]! - w[argmax(g)]!;
    expect(margin).toBeLessThan(TIE_LOGITS);
  });
}

for (const { name, rt } of runtimes) {
  describe(`whole model, CPU vs CUDA backend on ${name}`, () => {
    for (const [arch, type, bound] of CASES) {
      test(`${arch} ${type}: prefill, decode and a two-sequence batch agree with the CPU (NMSE < ${bound})`, () => {
        const path = join(dir, `${arch}-${type}.gguf`);
        writeSyntheticModel(path, { arch, type, shape: SHAPE, seed: 11 });
        const r = rng(arch.length * 7 + type.length);
        const prompt = [1, ...Array.from({ length: 19 }, () => 3 + Math.floor(r() * 300))];
        const decode = [5, 17, 40];
        const want = run(path, CPU_BACKEND, prompt, decode);
        const got = run(path, new CudaBackend(rt), prompt, decode);
        worstSeen = 0;
        compare(got.rows, want.rows, bound);
        compare(got.batch, want.batch, bound);
        process.stderr.write(`[cuda] ${name} ${arch} ${type}: worst logits NMSE vs CPU ${worstSeen.toExponential(2)}\n`);
      }, 300_000);
    }

    test("decode steps as graphs: captured once, replayed, the same logits as launching each kernel", () => {
      const path = join(dir, "llama-q4_0-graphs.gguf");
      writeSyntheticModel(path, { arch: "llama", type: "q4_0", shape: SHAPE, seed: 5 });
      const prompt = [1, 9, 30, 77, 120, 4, 8, 15, 16, 23];
      const decode = [5, 17, 40, 41, 99, 3];
      const graphs = new CudaBackend(rt, { graphs: true });
      let stats: { replays: number; captures: number } | undefined;
      const make = graphs.createOps.bind(graphs);
      graphs.createOps = (s) => {
        const ops = make(s);
        stats = (ops as unknown as { graphStats: typeof stats }).graphStats;
        return ops;
      };
      const got = run(path, graphs, prompt, decode);
      const want = run(path, new CudaBackend(rt, { graphs: false }), prompt, decode);
      // One capture at the first decode step, replays after (the batch step has two spans: direct).
      expect({ captures: stats?.captures, replays: stats?.replays }).toEqual({ captures: 1, replays: decode.length - 1 });
      // The graph's attention splits the keys for the whole cache, the direct one for the keys
      // present: the same math in another summation order.
      got.rows.forEach((g, i) => expect(nmse(g, want.rows[i]!)).toBeLessThan(1e-9));
      compare(got.batch, want.batch, 1e-9);
    }, 300_000);

    test("weights staged in steps are the ones placed: each tensor uploaded once, a tied head shared", () => {
      const path = join(dir, "llama-q8_0-stage.gguf");
      writeSyntheticModel(path, { arch: "llama", type: "q8_0", shape: SHAPE, seed: 3 });
      const mf = new MappedFile(path);
      const be = new CudaBackend(rt);
      try {
        const file = parseGGUF(mf.bytes, { fileName: path });
        const arch = architectureOf(file);
        const hp = arch.readHParams(file);
        const host = arch.loadWeights(file, mf.bytes, hp);
        const tensors = arch.tensors(host);
        let allocs = 0;
        const alloc = rt.alloc.bind(rt);
        rt.alloc = (n, label) => (allocs++, alloc(n, label));
        try {
          [...be.stageWeights(tensors)];
          const staged = allocs;
          const w = be.placeWeights(host) as typeof host & { output: unknown; token_embd: unknown };
          expect(allocs).toBe(staged);
          expect(staged).toBe(new Set(tensors).size);
          if ((host as { output: unknown }).output === (host as { token_embd: unknown }).token_embd) expect(w.output).toBe(w.token_embd);
        } finally {
          rt.alloc = alloc;
        }
      } finally {
        be.dispose();
        mf.close();
      }
    });

    test("teeth: a backend that skips RoPE on the device is caught by the same comparison", () => {
      const path = join(dir, "llama-q8_0-teeth.gguf");
      writeSyntheticModel(path, { arch: "llama", type: "q8_0", shape: SHAPE, seed: 11 });
      const prompt = [1, 9, 30, 77, 120, 4, 8, 15, 16, 23, 42, 100];
      const want = run(path, CPU_BACKEND, prompt, [5]);
      const broken = new CudaBackend(rt);
      const make = broken.createOps.bind(broken);
      broken.createOps = (s) => Object.assign(make(s), { rope() {} });
      const got = run(path, broken, prompt, [5]);
      const worst = Math.max(...got.rows.map((g, i) => nmse(g, want.rows[i]!)));
      expect(worst).toBeGreaterThan(5e-3);
    }, 300_000);
  });
}
