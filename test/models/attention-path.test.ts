/**
 * The naive attention path (LoadOptions.attention = "naive": scores materialized in a buffer
 * preallocated in RunState, batches split into query chunks when it would be too large) gives
 * the logits of the flash path on tiny synthetic models: prefill (several logit rows) and decode.
 * (Summation order differs, which can flip an 8-bit activation rounding: NMSE < 1e-3, as the
 * chunked-prefill test in test/runtime/generate.test.ts allows.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel } from "../../src/runtime/model";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";
import { nmse } from "../helpers";

const dir = mkdtempSync(join(tmpdir(), "kiln-attn-"));
const paths: Record<string, string> = {};
beforeAll(() => {
  for (const arch of ["llama", "qwen2", "gemma3"] as const) {
    paths[arch] = join(dir, `${arch}.gguf`);
    writeSyntheticModel(paths[arch]!, { arch, type: "q8_0", shape: "tiny", seed: 5 });
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ids = Array.from({ length: 48 }, (_, i) => 3 + ((i * 53) % 590));

async function run(path: string, attention: "flash" | "naive", naiveScoresBytes?: number): Promise<{ prefill: Float32Array; decode: Float32Array[]; chunk: number }> {
  const m = await loadModel(path, { threads: 2, contextLength: 128, batchSize: 32, maxLogitRows: 8, attention, naiveScoresBytes });
  try {
    const prefill = m.eval(ids, 8).f32.slice();
    const decode: Float32Array[] = [];
    for (const t of [7, 11, 13]) decode.push(m.eval([t]).f32.slice());
    return { prefill, decode, chunk: m.defaultContext.state.naiveQueryChunk };
  } finally {
    m.dispose();
  }
}

for (const arch of ["llama", "qwen2", "gemma3"] as const) {
  describe(`${arch}: naive attention = flash attention`, () => {
    test("whole batches", async () => {
      const flash = await run(paths[arch]!, "flash");
      const naive = await run(paths[arch]!, "naive");
      expect(naive.chunk).toBe(32);
      expect(nmse(naive.prefill, flash.prefill)).toBeLessThan(1e-3);
      for (let i = 0; i < 3; i++) expect(nmse(naive.decode[i]!, flash.decode[i]!)).toBeLessThan(1e-3);
    });

    test("query chunks (a scores budget smaller than one batch)", async () => {
      const flash = await run(paths[arch]!, "flash");
      const naive = await run(paths[arch]!, "naive", 5 * 4 * 128 * 4); // 5 query rows × 4 heads × 128 keys
      expect(naive.chunk).toBe(5);
      expect(nmse(naive.prefill, flash.prefill)).toBeLessThan(1e-3);
      for (let i = 0; i < 3; i++) expect(nmse(naive.decode[i]!, flash.decode[i]!)).toBeLessThan(1e-3);
    });
  });
}

test("an unknown attention path is a clear error", async () => {
  await expect(loadModel(paths.llama!, { contextLength: 32, attention: "fast" as never })).rejects.toThrow(/attention must be "flash" or "naive"/);
});
