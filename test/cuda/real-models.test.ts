/**
 * The two real models on a GPU: logits of a prompt CPU vs CUDA, and greedy generation identical
 * on both devices (where the CPU's top-1 is not a near tie). Runs only where a GPU is present
 * (the emulator is too slow for a 262K-token output head); elsewhere it prints why it is skipped.
 */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadModel } from "../../src/index";
import { probeCuda } from "../../src/backends/cuda/driver";
import { nmse } from "../helpers";

const probe = probeCuda();
if (!probe.available) process.stderr.write(`[cuda] ${probe.reason}: real-models.test.ts runs only on a GPU (skipped)\n`);
const MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-Q4_K_M.gguf"].map((f) => join(import.meta.dir, "..", "..", "models", f));
const PROMPT = "The capital of France is";

describe.skipIf(!probe.available)("real models: CPU vs CUDA", () => {
  for (const path of MODELS) {
    if (!existsSync(path)) process.stderr.write(`[cuda] ${path} is missing (scripts/setup.sh fetches it): its GPU comparison is skipped\n`);
    test.skipIf(!existsSync(path))(`${path.split("/").pop()}: prompt logits NMSE < 5e-3, greedy 32 tokens identical`, async () => {
      const onCpu = await loadModel(path, { device: "cpu", contextLength: 256 });
      const onGpu = await loadModel(path, { device: "cuda", contextLength: 256 });
      try {
        expect(onGpu.device.kind).toBe("cuda");
        const ids = onCpu.tokenizer.encode(PROMPT, { addSpecial: true });
        const a = onCpu.createContext();
        const b = onGpu.createContext();
        const la = a.eval(ids).f32.slice();
        const lb = b.eval(ids).f32.slice();
        expect(nmse(lb, la)).toBeLessThan(5e-3);
        const opts = { maxTokens: 32, temperature: 0 };
        const ra = await onCpu.createContext().complete(PROMPT, opts);
        const rb = await onGpu.createContext().complete(PROMPT, opts);
        expect(rb.text).toBe(ra.text);
        a.dispose();
        b.dispose();
      } finally {
        onCpu.dispose();
        onGpu.dispose();
      }
    }, 300_000);
  }
});
