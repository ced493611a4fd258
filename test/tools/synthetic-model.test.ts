/**
 * Synthetic GGUF models (src/tools/synthetic-model.ts): tiny models of every architecture parse
 * back with the metadata and tensors llama.cpp expects, are deterministic in the seed, quantize
 * to what kiln's own dequantizer reads back, carry a valid tokenizer, and — when node-llama-cpp
 * is installed — load in llama.cpp and give finite logits.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as cpu from "../../src/backends/cpu";
import { checkTokenizerMetadata, getArray, getBool, getF32, getString, getU32 } from "../../src/gguf/metadata";
import { parseGGUF, tensorData, type GGUFFile } from "../../src/gguf/reader";
import { GGUFValueType as T, ggmlTypeName } from "../../src/gguf/types";
import { Tensor, dtypeOfId, type DType } from "../../src/tensor";
import {
  makeSyntheticModel,
  resolveHParams,
  useMoreBits,
  weightType,
  writeSyntheticModel,
  type SyntheticArch,
  type SyntheticModelOptions,
  type SyntheticType,
} from "../../src/tools/synthetic-model";
import { CORPUS, makeSyntheticVocab, TokenType } from "../../src/tools/synthetic-vocab";

const ARCHS: SyntheticArch[] = ["llama", "qwen2", "gemma3"];
const TYPES: DType[] = ["f32", "f16", "q8_0", "q4_0", "q4_k", "q5_0", "q6_k"];

const dir = mkdtempSync(join(tmpdir(), "kiln-synth-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cache = new Map<string, GGUFFile & { bytes: Uint8Array }>();
function model(opts: SyntheticModelOptions): GGUFFile & { bytes: Uint8Array } {
  const key = JSON.stringify(opts);
  let m = cache.get(key);
  if (!m) {
    const bytes = makeSyntheticModel(opts).toBytes();
    m = Object.assign(parseGGUF(bytes), { bytes });
    cache.set(key, m);
  }
  return m;
}

/** The tensors llama.cpp's loader wants, written out independently of the generator. */
function expectedTensors(arch: SyntheticArch, tied: boolean): Map<string, number[]> {
  const hp = resolveHParams(arch, "tiny");
  const { nEmbd: e, nFf: f, nVocab: v, headDim: hd } = hp;
  const q = hp.nHead * hd, kv = hp.nHeadKv * hd;
  const m = new Map<string, number[]>([["token_embd.weight", [e, v]], ["output_norm.weight", [e]]]);
  if (!tied) m.set("output.weight", [e, v]);
  for (let i = 0; i < hp.nLayer; i++) {
    const p = `blk.${i}.`;
    m.set(p + "attn_norm.weight", [e]).set(p + "attn_q.weight", [e, q]).set(p + "attn_k.weight", [e, kv]);
    m.set(p + "attn_v.weight", [e, kv]).set(p + "attn_output.weight", [q, e]).set(p + "ffn_norm.weight", [e]);
    m.set(p + "ffn_gate.weight", [e, f]).set(p + "ffn_up.weight", [e, f]).set(p + "ffn_down.weight", [f, e]);
    if (arch === "qwen2") m.set(p + "attn_q.bias", [q]).set(p + "attn_k.bias", [kv]).set(p + "attn_v.bias", [kv]);
    if (arch === "gemma3") {
      m.set(p + "attn_q_norm.weight", [hd]).set(p + "attn_k_norm.weight", [hd]);
      m.set(p + "post_attention_norm.weight", [e]).set(p + "post_ffw_norm.weight", [e]);
    }
  }
  return m;
}

const FALLBACK: Partial<Record<DType, DType>> = { q4_k: "q5_0", q6_k: "q8_0" };

describe.each(ARCHS)("synthetic %s (tiny)", (arch) => {
  const hp = resolveHParams(arch, "tiny");

  test.each(TYPES)("%s: metadata, tensor names, shapes and types", (type) => {
    const f = model({ arch, type, shape: "tiny", seed: 7 });
    const md = f.metadata;
    expect(getString(md, "general.architecture")).toBe(arch);
    expect(getU32(md, "general.file_type")).toBe({ f32: 0, f16: 1, q4_0: 2, q8_0: 7, q5_0: 8, q4_k: 14, q6_k: 18 }[type as "f32"]);
    expect(getU32(md, `${arch}.context_length`)).toBe(hp.nCtx);
    expect(getU32(md, `${arch}.embedding_length`)).toBe(hp.nEmbd);
    expect(getU32(md, `${arch}.block_count`)).toBe(hp.nLayer);
    expect(getU32(md, `${arch}.feed_forward_length`)).toBe(hp.nFf);
    expect(getU32(md, `${arch}.attention.head_count`)).toBe(hp.nHead);
    expect(getU32(md, `${arch}.attention.head_count_kv`)).toBe(hp.nHeadKv);
    expect(getF32(md, `${arch}.attention.layer_norm_rms_epsilon`)).toBeCloseTo(hp.rmsEps, 12);
    expect(getF32(md, `${arch}.rope.freq_base`)).toBe(hp.ropeBase);
    if (arch === "gemma3") {
      expect(hp.nLayer).toBe(6); // layer 5 is global, 0–4 local
      expect(getU32(md, "gemma3.attention.key_length")).toBe(32);
      expect(getU32(md, "gemma3.attention.value_length")).toBe(32);
      expect(getU32(md, "gemma3.attention.sliding_window")).toBe(16);
    } else {
      expect(getU32(md, `${arch}.rope.dimension_count`)).toBe(hp.nEmbd / hp.nHead);
    }
    expect(md.has("general.alignment")).toBe(false);
    expect(f.alignment).toBe(32);

    const want = expectedTensors(arch, arch === "gemma3");
    expect(f.tensors.map((t) => t.name).sort()).toEqual([...want.keys()].sort());
    for (const t of f.tensors) {
      expect(t.dims).toEqual(want.get(t.name)!);
      const dt = dtypeOfId(t.type)!;
      if (t.dims.length === 1) expect(dt).toBe("f32");
      else {
        const misaligned = t.dims[0]! % (type.endsWith("_k") ? 256 : type.startsWith("q") ? 32 : 1) !== 0;
        expect(`${t.name}:${dt}`).toBe(`${t.name}:${misaligned ? FALLBACK[type] : type}`);
      }
    }
    expect(checkTokenizerMetadata(md).nVocab).toBe(hp.nVocab);
  });

  test("same seed → identical bytes; another seed → other weights, same header", () => {
    const a = model({ arch, type: "q4_0", shape: "tiny", seed: 7 });
    const b = makeSyntheticModel({ arch, type: "q4_0", shape: "tiny", seed: 7 }).toBytes();
    expect(Buffer.compare(Buffer.from(a.bytes), Buffer.from(b))).toBe(0);
    const c = model({ arch, type: "q4_0", shape: "tiny", seed: 8 });
    expect(c.bytes.length).toBe(a.bytes.length);
    expect(Buffer.compare(Buffer.from(a.bytes.subarray(0, a.dataOffset)), Buffer.from(c.bytes.subarray(0, c.dataOffset)))).toBe(0);
    for (const t of a.tensors) {
      const other = c.tensorsByName.get(t.name)!;
      expect(Buffer.from(tensorData(a.bytes, t)).equals(Buffer.from(tensorData(c.bytes, other)))).toBe(false);
    }
  });

  test("writeSyntheticModel streams the same bytes as makeSyntheticModel", () => {
    for (const type of ["q4_k", "f16"] as const) {
      const path = join(dir, `${arch}-${type}.gguf`);
      const r = writeSyntheticModel(path, { arch, type, shape: "tiny", seed: 7 });
      const disk = readFileSync(path);
      expect(r.bytes).toBe(disk.length);
      expect(Buffer.compare(disk, Buffer.from(model({ arch, type, shape: "tiny", seed: 7 }).bytes))).toBe(0);
    }
  });

  test("tokenizer metadata", () => {
    const md = model({ arch, type: "q4_0", shape: "tiny", seed: 7 }).metadata;
    const tokens = getArray(md, "tokenizer.ggml.tokens", T.STRING);
    const types = getArray(md, "tokenizer.ggml.token_type", T.INT32);
    expect(new Set(tokens).size).toBe(tokens.length);
    const bos = getU32(md, "tokenizer.ggml.bos_token_id"), eos = getU32(md, "tokenizer.ggml.eos_token_id");
    if (arch === "qwen2") {
      expect(getString(md, "tokenizer.ggml.model")).toBe("gpt2");
      expect(getString(md, "tokenizer.ggml.pre")).toBe("qwen2");
      expect(tokens[bos]).toBe("<|endoftext|>");
      expect(tokens[eos]).toBe("<|im_end|>");
      expect(tokens).toContain("<|im_start|>");
      expect(getBool(md, "tokenizer.ggml.add_bos_token")).toBe(false);
      expect(tokens.slice(0, 256)).toContain("\u0120"); // Ġ: the space byte
      expect(tokens.slice(0, 256)).toContain("\u010a"); // Ċ: newline
      const merges = getArray(md, "tokenizer.ggml.merges", T.STRING);
      expect(merges.length).toBe(tokens.length - 256 - 3);
      expect(merges.slice(0, 3)).toEqual(["Ġ t", "h e", "Ġ a"].slice(0, 3).map((m) => m.replace(/Ġ/g, "\u0120")));
    } else {
      expect(getString(md, "tokenizer.ggml.model")).toBe("llama");
      expect(getArray(md, "tokenizer.ggml.scores", T.FLOAT32).length).toBe(tokens.length);
      const first = tokens.indexOf("<0x00>");
      expect(tokens.slice(first, first + 256).every((t, i) => t === `<0x${i.toString(16).toUpperCase().padStart(2, "0")}>`)).toBe(true);
      expect([...types.slice(first, first + 256)].every((t) => t === TokenType.BYTE)).toBe(true);
      expect(tokens).toContain("\u2581the");
      if (arch === "llama") {
        expect([tokens[0], tokens[bos], tokens[eos]]).toEqual(["<unk>", "<s>", "</s>"]);
        expect(getBool(md, "tokenizer.ggml.add_space_prefix")).toBe(true);
      } else {
        expect([tokens[bos], tokens[eos]]).toEqual(["<bos>", "<eos>"]);
        expect(types[tokens.indexOf("<start_of_turn>")]).toBe(TokenType.CONTROL);
        expect(types[tokens.indexOf("<end_of_turn>")]).toBe(TokenType.CONTROL);
        expect(getBool(md, "tokenizer.ggml.add_bos_token")).toBe(true);
        expect(getBool(md, "tokenizer.ggml.add_space_prefix")).toBe(false);
      }
    }
  });
});

describe("weights", () => {
  function dequant(f: GGUFFile & { bytes: Uint8Array }, name: string): Float32Array {
    const t = f.tensorsByName.get(name)!;
    const dt = dtypeOfId(t.type)!;
    const shape = [t.dims[1]!, t.dims[0]!];
    const out = Tensor.zeros("f32", shape);
    cpu.dequantize(new Tensor(dt, shape, tensorData(f.bytes, t).slice()), out);
    return out.f32;
  }

  test("are ~N(0, 1/fan_in), and every type encodes the same f32 weights", () => {
    const ref = model({ arch: "llama", type: "f32", shape: "tiny", seed: 3 });
    const name = "blk.1.ffn_gate.weight"; // ne0 = 256: every type applies as is
    const w = dequant(ref, name);
    let s = 0, s2 = 0;
    for (const v of w) (s += v), (s2 += v * v);
    const std = Math.sqrt(s2 / w.length - (s / w.length) ** 2);
    expect(Math.abs(s / w.length)).toBeLessThan(0.002);
    expect(std).toBeGreaterThan(0.97 / 16);
    expect(std).toBeLessThan(1.03 / 16);
    // Relative RMS error of each quantization (TS quantizers for q4_1/q5_0/q5_1, kernels otherwise),
    // read back through kiln's dequantizer.
    const bound: Record<SyntheticType, number> = {
      f32: 0, f16: 1e-3, bf16: 5e-3, q8_0: 0.01, q6_k: 0.03, q5_k: 0.06, q5_0: 0.06, q5_1: 0.06,
      q4_k: 0.12, q4_0: 0.12, q4_1: 0.12, q4_k_m: 0.12,
    };
    for (const type of ["f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"] as const) {
      const q = dequant(model({ arch: "llama", type, shape: "tiny", seed: 3 }), name);
      let e2 = 0;
      for (let i = 0; i < w.length; i++) e2 += (q[i]! - w[i]!) ** 2;
      const rel = Math.sqrt(e2 / s2);
      expect(`${type} ${rel < bound[type] ? "ok" : rel}`).toBe(`${type} ok`);
    }
  });

  test("norm weights are 1 ± 0.1 and gemma3's post-norms are scaled up", () => {
    const f = model({ arch: "gemma3", type: "q4_0", shape: "tiny", seed: 7 });
    const vec = (n: string) => new Float32Array(tensorData(f.bytes, f.tensorsByName.get(n)!).slice().buffer);
    for (const v of vec("blk.0.attn_norm.weight")) expect(Math.abs(v - 1)).toBeLessThanOrEqual(0.1 + 1e-6);
    const c = Math.sqrt((2 * 256) / 6);
    for (const v of vec("blk.3.post_ffw_norm.weight")) expect(Math.abs(v / c - 1)).toBeLessThanOrEqual(0.1 + 1e-6);
  });
});

describe("type selection", () => {
  test("use_more_bits and Q4_K_M rules", () => {
    // n = 22 (TinyLlama): i < 2, i >= 19, or (i - 2) % 3 == 2.
    expect([...Array(22).keys()].filter((i) => useMoreBits(i, 22))).toEqual([0, 1, 4, 7, 10, 13, 16, 19, 20, 21]);
    expect(weightType("q4_k_m", "output.weight", 2048, -1, 22, false)).toBe("q6_k");
    expect(weightType("q4_k_m", "token_embd.weight", 2048, -1, 22, false)).toBe("q4_k");
    expect(weightType("q4_k_m", "token_embd.weight", 640, -1, 18, true)).toBe("q8_0"); // gemma-3-270m
    expect(weightType("q4_k_m", "attn_v.weight", 2048, 4, 22, false)).toBe("q6_k");
    expect(weightType("q4_k_m", "attn_v.weight", 2048, 5, 22, false)).toBe("q4_k");
    expect(weightType("q4_k_m", "ffn_down.weight", 5632, 3, 22, false)).toBe("q4_k");
    expect(weightType("q4_k_m", "ffn_down.weight", 640, 3, 22, false)).toBe("q5_0");
    expect(weightType("q4_k_m", "ffn_down.weight", 640, 4, 22, false)).toBe("q8_0");
    expect(weightType("q4_k", "ffn_gate.weight", 640, 0, 2, false)).toBe("q5_0");
    expect(weightType("q5_k", "ffn_gate.weight", 640, 0, 2, false)).toBe("q5_1");
    expect(weightType("q4_0", "ffn_gate.weight", 48, 0, 2, false)).toBe("f16");
  });

  test("q4_k_m file: per-layer types and file_type 15; tied llama has no output.weight", () => {
    const f = model({ arch: "llama", type: "q4_k_m", shape: { nEmbd: 256, nLayer: 8, nHead: 4, nFf: 512, nVocab: 400 }, seed: 1 });
    expect(getU32(f.metadata, "general.file_type")).toBe(15);
    const ty = (n: string) => ggmlTypeName(f.tensorsByName.get(n)!.type);
    expect([...Array(8).keys()].map((i) => ty(`blk.${i}.attn_v.weight`))).toEqual(
      [...Array(8).keys()].map((i) => (useMoreBits(i, 8) ? "Q6_K" : "Q4_K")),
    );
    expect(ty("output.weight")).toBe("Q6_K");
    expect(ty("token_embd.weight")).toBe("Q4_K");
    const tied = model({ arch: "llama", type: "q8_0", shape: "tiny", seed: 1, tiedOutput: true });
    expect(tied.tensorsByName.has("output.weight")).toBe(false);
  });
});

describe("vocabulary", () => {
  test("32000-token vocabularies are valid and distinct", () => {
    for (const flavor of ARCHS) {
      const v = makeSyntheticVocab(flavor, 32000);
      expect(v.tokens.length).toBe(32000);
      expect(new Set(v.tokens).size).toBe(32000);
      expect(v.tokenTypes.length).toBe(32000);
      if (flavor === "qwen2") {
        const set = new Set(v.tokens);
        for (const m of v.merges) {
          const [a, b] = m.split(" ");
          expect(set.has(a!) && set.has(b!) && set.has(a! + b!)).toBe(true);
        }
      }
    }
    expect(CORPUS.length).toBeGreaterThan(2000);
  });
});

// ---------------------------------------------------------------------------------------------
// llama.cpp loads them (the real proof of validity)
// ---------------------------------------------------------------------------------------------

const refPath = join(import.meta.dir, "../../bench/llamacpp.ts");
const haveLlamaCpp = existsSync(join(import.meta.dir, "../../node_modules/node-llama-cpp/package.json")) && existsSync(refPath);
if (!haveLlamaCpp) console.warn("[skip] synthetic models in llama.cpp: node-llama-cpp or bench/llamacpp.ts is absent");

describe.skipIf(!haveLlamaCpp)("llama.cpp loads synthetic models", () => {
  test.each(ARCHS)("%s tiny (q4_0; qwen2 q4_k_m) → finite, non-degenerate logits", async (arch) => {
    const { openReference } = await import(refPath);
    const path = join(dir, `llamacpp-${arch}.gguf`);
    writeSyntheticModel(path, { arch, type: arch === "qwen2" ? "q4_k_m" : "q4_0", shape: "tiny", seed: 11 });
    const ref = await openReference(path, { threads: 2, contextSize: 64 });
    try {
      expect(ref.vocabSize).toBe(600);
      const ids: number[] = ref.tokenize("The capital of France is", { addSpecial: true });
      expect(ids.length).toBeGreaterThan(2);
      expect(ref.detokenize(ids).trim()).toBe("The capital of France is");
      const logits: Float32Array = await ref.lastLogits(ids);
      expect(logits.length).toBe(600);
      let s = 0, s2 = 0;
      for (const v of logits) {
        expect(Number.isFinite(v)).toBe(true);
        s += v;
        s2 += v * v;
      }
      const std = Math.sqrt(s2 / logits.length - (s / logits.length) ** 2);
      expect(std).toBeGreaterThan(0.3);
      expect(std).toBeLessThan(5);
    } finally {
      await ref.close();
    }
  }, 60_000);
});
