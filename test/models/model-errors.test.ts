/**
 * Model-semantics checks (hardening note section E): files that parse as GGUF but do not
 * describe a model kiln can run are refused at load with an error naming the key or tensor —
 * before any kernel sees them. Each case rewrites a valid synthetic model with one defect.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GGUFValueType, GGUFWriter, parseGGUF, tensorData } from "../../src/gguf";
import { loadModel } from "../../src/runtime/model";
import { syntheticModelBytes } from "../../src/tools/synthetic-model";

const dir = mkdtempSync(join(tmpdir(), "kiln-model-errors-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Edit {
  set?: Record<string, [number, unknown]>;
  drop?: string[];
  dropTensor?: string;
  reshape?: [string, number[]];
}

/** A copy of a valid tiny model with one defect. */
function defective(arch: "llama" | "gemma3", edit: Edit): string {
  const bytes = syntheticModelBytes({ arch, type: "q8_0", shape: "tiny", seed: 5 });
  const f = parseGGUF(bytes);
  const w = new GGUFWriter({ unchecked: true });
  for (const [k, v] of f.metadata) {
    if (edit.drop?.includes(k) || edit.set?.[k]) continue;
    if (v.type === GGUFValueType.ARRAY) w.addKV(k, v.type, v.value as never, v.elemType);
    else w.addKV(k, v.type, v.value as never);
  }
  for (const [k, [type, value]] of Object.entries(edit.set ?? {})) w.addKV(k, type as never, value as never);
  for (const t of f.tensors) {
    if (t.name === edit.dropTensor) continue;
    let dims = t.dims;
    let data = tensorData(bytes, t);
    if (edit.reshape?.[0] === t.name) {
      dims = edit.reshape[1];
      data = new Uint8Array((data.byteLength / t.nelements) * dims.reduce((a, b) => a * b, 1));
    }
    w.addTensor(t.name, dims, t.type, data);
  }
  const path = join(dir, `${arch}-${Math.random().toString(36).slice(2)}.gguf`);
  writeFileSync(path, w.toBytes());
  return path;
}

const U32 = GGUFValueType.UINT32;
const F32 = GGUFValueType.FLOAT32;
const STR = GGUFValueType.STRING;

const cases: [string, "llama" | "gemma3", Edit, RegExp][] = [
  ["E01 architecture missing", "llama", { drop: ["general.architecture"] }, /general\.architecture/],
  ["E01 architecture unsupported", "llama", { set: { "general.architecture": [STR, "mamba"] } }, /architecture "mamba" is not supported/],
  ["E02 block_count does not match the blk.N tensors", "llama", { set: { "llama.block_count": [U32, 3] } }, /block_count is 3 but the file has tensors for 2 blocks/],
  ["E02 block_count out of range", "llama", { set: { "llama.block_count": [U32, 100000] } }, /llama\.block_count = 100000 is outside/],
  ["E03 head_count not a multiple of head_count_kv", "llama", { set: { "llama.attention.head_count_kv": [U32, 3] } }, /head_count 4 is not a multiple of head_count_kv 3/],
  ["E03 zero heads", "llama", { set: { "llama.attention.head_count": [U32, 0] } }, /head_count = 0 is outside/],
  ["E03 rope dims beyond head_dim", "llama", { set: { "llama.rope.dimension_count": [U32, 1000] } }, /rope\.dimension_count = 1000 is outside/],
  ["E04 epsilon not positive", "llama", { set: { "llama.attention.layer_norm_rms_epsilon": [F32, -1] } }, /layer_norm_rms_epsilon = -1 must be finite and > 0/],
  ["E04 freq_base NaN", "gemma3", { set: { "gemma3.rope.freq_base": [F32, NaN] } }, /rope\.freq_base = NaN must be finite/],
  ["E04 hyper-parameter of the wrong type", "llama", { set: { "llama.embedding_length": [STR, "256"] } }, /llama\.embedding_length/],
  ["E05 required tensor missing", "llama", { dropTensor: "blk.1.ffn_down.weight" }, /required tensor blk\.1\.ffn_down\.weight .* is missing/],
  ["E05 tensor with the wrong shape", "gemma3", { reshape: ["blk.0.attn_k_norm.weight", [16]] }, /blk\.0\.attn_k_norm\.weight has dims \[16\], expected \[32\]/],
  ["E06 token_embd rows ≠ vocabulary size", "llama", { reshape: ["token_embd.weight", [256, 599]] }, /token_embd\.weight has dims \[256, 599\], expected \[256, 600\]/],
  ["E07 special token id out of range", "llama", { set: { "tokenizer.ggml.eos_token_id": [U32, 999999] } }, /eos_token_id/],
];

describe("model files that parse but cannot run are refused with a named error", () => {
  for (const [name, arch, edit, message] of cases) {
    test(name, async () => {
      const path = defective(arch, edit);
      await expect(loadModel(path)).rejects.toThrow(message);
    });
  }

  test("E10 a context whose KV cache exceeds the memory budget is refused before allocation", async () => {
    const path = defective("llama", {});
    await expect(loadModel(path, { contextLength: 100000, memoryBudget: 1 << 20 })).rejects.toThrow(/needs .* GiB .* over the .* budget/);
    const m = await loadModel(path, { contextLength: 64 });
    try {
      expect(() => m.createContext({ contextLength: 100000, memoryBudget: 1 << 20 })).toThrow(/needs .* GiB .* over the .* budget/);
      expect(() => m.contextMemory({ contextLength: 100000, memoryBudget: 1 << 20 })).toThrow(/CONTEXT_TOO_LARGE/);
    } finally {
      m.dispose();
    }
  });
});
