/**
 * LoadOptions.device: "cpu" never touches a driver, "auto" falls back to the CPU without one,
 * "cuda" without a GPU is a clear KilnError naming what is missing, and a malformed device is
 * refused by name. (On a GPU machine, "auto" and "cuda" load onto cuda:0.)
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";
import { loadModel } from "../../src/index";
import { probeCuda } from "../../src/backends/cuda/driver";
import { parseDevice } from "../../src/backends/select";
import { KilnError } from "../../src/errors";

// A small synthetic model (kiln's writer), so the test needs no downloaded file.
const dir = mkdtempSync(join(tmpdir(), "kiln-device-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const SMOL = join(dir, "llama-q8_0.gguf");
writeSyntheticModel(SMOL, { arch: "llama", type: "q8_0", shape: "tiny", seed: 1 });
const gpu = probeCuda().available;

describe("LoadOptions.device", () => {
  test("cpu: the model, its contexts and batches and its tensors are on the CPU", async () => {
    const m = await loadModel(SMOL, { device: "cpu", contextLength: 64 });
    try {
      expect(m.device).toEqual({ kind: "cpu", index: 0 });
      const ctx = m.createContext();
      expect(ctx.device).toEqual({ kind: "cpu", index: 0 });
      expect(ctx.state.logits.device.kind).toBe("cpu");
      ctx.dispose();
    } finally {
      m.dispose();
    }
  });

  test(`auto: ${gpu ? "cuda:0 (a GPU is present)" : "the CPU when no driver is found"}`, async () => {
    const m = await loadModel(SMOL, { device: "auto", contextLength: 64 });
    try {
      expect(m.device.kind).toBe(gpu ? "cuda" : "cpu");
    } finally {
      m.dispose();
    }
  });

  test.skipIf(gpu)("cuda without a driver: KilnError CUDA naming libcuda.so.1, nothing left open", async () => {
    const e = await loadModel(SMOL, { device: "cuda" }).catch((x) => x);
    expect(e).toBeInstanceOf(KilnError);
    expect(e.code).toBe("CUDA");
    expect(e.message).toContain("libcuda.so.1");
    expect(e.message).toContain('"cuda"');
  });

  test("a malformed device is refused by name", async () => {
    const e = await loadModel(SMOL, { device: "gpu" as never }).catch((x) => x);
    expect(e).toBeInstanceOf(KilnError);
    expect(e.code).toBe("BAD_OPTION");
    expect(e.message).toContain('"gpu"');
    expect(parseDevice("cuda:3")).toEqual({ kind: "cuda", index: 3 });
    expect(() => parseDevice("cuda:x")).toThrow(/cuda:<ordinal>/);
  });
});
