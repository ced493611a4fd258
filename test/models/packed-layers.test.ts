/**
 * LoadOptions.packLayers: the layers' Q8_0/Q4_0/Q5_0/Q4_K matmul weights read from packed copies
 * (zig-kernels/packed.zig) give the logits of the weights read in place, within rounding — prefill
 * (batches beyond 16 rows: the AMX kernel with its tiles from the copy where AMX is enabled, else
 * packed.zig's own kernel) and decode (one row) — and speculative decoding over them still
 * reproduces plain decoding token for token. Where the build has no packed layout, nothing is
 * packed and the option changes nothing.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel } from "../../src";
import { Tensor } from "../../src/tensor";
import * as cpu from "../../src/backends/cpu";
import { amxStatus, packLayersDefault } from "../../src/ffi/library";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";
import { nmse, rng } from "../helpers";

const dir = mkdtempSync(join(tmpdir(), "kiln-packed-layers-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("packed layer weights (LoadOptions.packLayers)", () => {
  const packable = (type: "q8_0" | "q4_0" | "q5_0" | "q4_k") => cpu.packUnsupportedReason(Tensor.zeros(type, [16, 256])) === null;

  test("the default is the CPU's (or KILN_PACK_LAYERS') choice, and says which; never packing where the build has no packed layouts", () => {
    const d = packLayersDefault();
    expect(typeof d.pack).toBe("boolean");
    expect(d.source).toBe(process.env.KILN_PACK_LAYERS === undefined ? "cpu" : "env");
    // The baseline library (an old CPU of a packing family may load it) has no packed layouts.
    if (d.source === "cpu" && !packable("q4_0")) expect(d.pack).toBe(false);
  });
  for (const type of ["q8_0", "q4_0", "q5_0", "q4_k"] as const) {
    test(`llama ${type}: logits within rounding of the weights read in place; speculative decoding unchanged`, async () => {
      const path = join(dir, `llama-${type}.gguf`);
      writeSyntheticModel(path, { arch: "llama", type, shape: "tiny", seed: 11 });
      const opts = { threads: 2, contextLength: 256, maxLogitRows: 16 } as const;
      const packed = await loadModel(path, { ...opts, packLayers: true });
      const inPlace = await loadModel(path, { ...opts, packLayers: false });
      try {
        // tiny: 2 layers × q, k, v, output, gate, up, down; every shape a multiple of 16 rows
        // (Q4_K: ffn_down's 640 columns are no whole 256-element blocks, so the file has it in
        // Q5_0, which AMX also keeps in place).
        const want = type === "q4_k" ? (packable("q4_k") ? 12 : 0) + (packable("q5_0") ? 2 : 0) : packable(type) ? 14 : 0;
        expect(packed.packedLayerWeights).toBe(want);
        expect(inPlace.packedLayerWeights).toBe(0);
        if (packable(type)) process.stderr.write(`[packed-layers] ${type}: prefill on ${amxStatus().enabled ? "AMX (tiles from the copy)" : "packed.zig's kernel"}\n`);
        const r = rng(5);
        const ids = [1, ...Array.from({ length: 39 }, () => 3 + Math.floor(r() * 500))];
        // Prefill of 40 rows (the batched path), then 6 decode steps of one row each.
        const a: number[] = [...packed.eval(ids, 16).f32];
        const b: number[] = [...inPlace.eval(ids, 16).f32];
        for (let i = 0; i < 6; i++) {
          const t = 3 + Math.floor(r() * 500);
          a.push(...packed.eval([t], 1).f32);
          b.push(...inPlace.eval([t], 1).f32);
        }
        // Only the float summation order differs (integer block sums are exact in both), but a
        // difference of one rounding can move an activation across an 8-bit quantization step in
        // the next layer: ~1e-4 measured on this model where that happens (Xeon EMR, KILN_AMX=0),
        // 0 to 1e-13 where it does not. The parity bound against llama.cpp (synthetic-parity:
        // 2e-3) holds; a wrong scale, zero point or row order in the copy is O(1).
        expect(nmse(a, b)).toBeLessThan(2e-3);
        packed.reset();
        const prompt = ids.slice(0, 12);
        const plain = await packed.complete(prompt, { maxTokens: 24, temperature: 0, speculative: false });
        // Every step drafts (layer-skip, not adaptive): verification batches of up to 5 rows.
        const spec = await packed.complete(prompt, { maxTokens: 24, temperature: 0, speculative: { draft: "layer-skip", draftLayers: 1, maxDraft: 4, adaptive: false } });
        expect(spec.speculative?.drafted).toBeGreaterThan(0);
        expect(spec.tokens).toEqual(plain.tokens);
      } finally {
        packed.dispose();
        inPlace.dispose();
      }
    }, 60_000);
  }
});
