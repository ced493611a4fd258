/**
 * Valid files round-trip: GGUFWriter → parseGGUF gives back every metadata value with its GGUF
 * type, and every tensor's bytes at an aligned, in-bounds offset. Also the typed getters, the
 * tokenizer-table checks, the type table and the writer's own refusals.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GGUFError } from "../../src/gguf/errors";
import {
  checkTokenizerMetadata, getArray, getBool, getF32, getFloat, getI32, getInt, getString, getU32, getU64, getValue,
} from "../../src/gguf/metadata";
import { parseGGUF, tensorData, type GGUFFile } from "../../src/gguf/reader";
import {
  GGMLType, GGML_TYPES, GGUFValueType as T, SUPPORTED_GGML_TYPES, rowBytes, tensorBytes,
} from "../../src/gguf/types";
import { GGUFWriter } from "../../src/gguf/writer";
import { rng } from "../helpers";

function randomBytes(n: number, seed: number): Uint8Array {
  const r = rng(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (r() * 256) | 0;
  return b;
}

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof GGUFError) return e.code;
    throw e;
  }
  return "no error";
}

describe("metadata round trip", () => {
  const w = new GGUFWriter();
  w.addKV("u8", T.UINT8, 255).addKV("i8", T.INT8, -128).addKV("u16", T.UINT16, 65535).addKV("i16", T.INT16, -32768);
  w.addKV("u32", T.UINT32, 0xffffffff).addKV("i32", T.INT32, -0x80000000).addKV("f32", T.FLOAT32, 1.5);
  w.addKV("f64", T.FLOAT64, Math.PI).addKV("u64", T.UINT64, (1n << 64n) - 1n).addKV("i64", T.INT64, -(1n << 63n));
  w.addKV("t", T.BOOL, true).addKV("f", T.BOOL, false);
  w.addKV("s", T.STRING, "héllo ▁wörld 🙂").addKV("empty", T.STRING, "");
  w.addArray("a.u8", T.UINT8, [0, 1, 255]).addArray("a.i8", T.INT8, new Int8Array([-1, 2]));
  w.addArray("a.u16", T.UINT16, [1, 65535]).addArray("a.i16", T.INT16, [-2, 3]);
  w.addArray("a.u32", T.UINT32, [4, 5]).addArray("a.i32", T.INT32, new Int32Array([-6, 7]));
  w.addArray("a.f32", T.FLOAT32, new Float32Array([0.25, -1e30])).addArray("a.f64", T.FLOAT64, [1e-300]);
  w.addArray("a.u64", T.UINT64, [1n, (1n << 64n) - 1n]).addArray("a.i64", T.INT64, new BigInt64Array([-5n]));
  w.addArray("a.bool", T.BOOL, [true, false, true]).addArray("a.str", T.STRING, ["", "x", "ünï"]);
  w.addArray("a.empty", T.FLOAT32, []);
  const f = parseGGUF(w.toBytes());
  const m = f.metadata;

  test("scalars keep value and type", () => {
    const want: [string, number, unknown][] = [
      ["u8", T.UINT8, 255], ["i8", T.INT8, -128], ["u16", T.UINT16, 65535], ["i16", T.INT16, -32768],
      ["u32", T.UINT32, 0xffffffff], ["i32", T.INT32, -0x80000000], ["f32", T.FLOAT32, 1.5], ["f64", T.FLOAT64, Math.PI],
      ["u64", T.UINT64, (1n << 64n) - 1n], ["i64", T.INT64, -(1n << 63n)], ["t", T.BOOL, true], ["f", T.BOOL, false],
      ["s", T.STRING, "héllo ▁wörld 🙂"], ["empty", T.STRING, ""],
    ];
    for (const [k, type, value] of want) {
      expect(m.get(k)!.type).toBe(type as never);
      expect(m.get(k)!.value).toEqual(value as never);
    }
    expect([...m.keys()].slice(0, 3)).toEqual(["u8", "i8", "u16"]); // file order
  });

  test("arrays come back as typed arrays of the element type", () => {
    const want: [string, number, unknown][] = [
      ["a.u8", T.UINT8, new Uint8Array([0, 1, 255])], ["a.i8", T.INT8, new Int8Array([-1, 2])],
      ["a.u16", T.UINT16, new Uint16Array([1, 65535])], ["a.i16", T.INT16, new Int16Array([-2, 3])],
      ["a.u32", T.UINT32, new Uint32Array([4, 5])], ["a.i32", T.INT32, new Int32Array([-6, 7])],
      ["a.f32", T.FLOAT32, new Float32Array([0.25, -1e30])], ["a.f64", T.FLOAT64, new Float64Array([1e-300])],
      ["a.u64", T.UINT64, new BigUint64Array([1n, (1n << 64n) - 1n])], ["a.i64", T.INT64, new BigInt64Array([-5n])],
      ["a.bool", T.BOOL, [true, false, true]], ["a.str", T.STRING, ["", "x", "ünï"]], ["a.empty", T.FLOAT32, new Float32Array(0)],
    ];
    for (const [k, elemType, value] of want) {
      const v = m.get(k)!;
      expect(v.type).toBe(T.ARRAY);
      if (v.type !== T.ARRAY) continue;
      expect(v.elemType).toBe(elemType as never);
      expect(v.value).toEqual(value as never);
      expect(v.value.constructor).toBe((value as object).constructor);
    }
  });

  test("typed getters", () => {
    expect(getU32(m, "u32")).toBe(0xffffffff);
    expect(getI32(m, "i32")).toBe(-0x80000000);
    expect(getF32(m, "f32")).toBe(1.5);
    expect(getU64(m, "u64")).toBe((1n << 64n) - 1n);
    expect(getBool(m, "t")).toBe(true);
    expect(getString(m, "s")).toBe("héllo ▁wörld 🙂");
    expect(getFloat(m, "f64")).toBe(Math.PI);
    expect(getInt(m, "u8")).toBe(255);
    expect(codeOf(() => getInt(m, "i64"))).toBe("KV_BAD_VALUE"); // -2^63 is not a safe integer
    expect(getArray(m, "a.f32", T.FLOAT32)).toBeInstanceOf(Float32Array);
    expect(getArray(m, "a.str", T.STRING)[2]).toBe("ünï");
    expect(getU32(m, "missing", 32)).toBe(32);
    expect(getValue(m, "u8").type).toBe(T.UINT8);
  });

  test("getters throw GGUFError naming the key when missing or wrong-typed", () => {
    expect(codeOf(() => getU32(m, "missing"))).toBe("KV_MISSING");
    expect(codeOf(() => getU32(m, "i32"))).toBe("KV_WRONG_TYPE");
    expect(codeOf(() => getString(m, "u8"))).toBe("KV_WRONG_TYPE");
    expect(codeOf(() => getArray(m, "a.f32", T.INT32))).toBe("KV_WRONG_TYPE");
    expect(codeOf(() => getArray(m, "u8"))).toBe("KV_WRONG_TYPE");
    expect(codeOf(() => getInt(m, "f32"))).toBe("KV_WRONG_TYPE");
    expect(codeOf(() => getFloat(m, "u32"))).toBe("KV_WRONG_TYPE");
    try {
      getU32(m, "s");
    } catch (e) {
      expect((e as GGUFError).message).toContain('kv "s"');
      expect((e as GGUFError).message).toContain("expected u32, got string");
      expect((e as GGUFError).offset).toBe(m.get("s")!.offset);
    }
  });
});

/** Every type kiln supports, each in 1..4 dims, with random bytes. */
function allTypesWriter(alignment?: number, extraTypes: number[] = []): { w: GGUFWriter; data: Map<string, Uint8Array> } {
  const w = new GGUFWriter(alignment === undefined ? {} : { alignment });
  w.addKV("general.architecture", T.STRING, "llama");
  const data = new Map<string, Uint8Array>();
  let seed = 1;
  for (const type of [...SUPPORTED_GGML_TYPES, ...extraTypes]) {
    const info = GGML_TYPES.get(type)!;
    for (let nd = 1; nd <= 4; nd++) {
      const dims = [info.blockSize * (1 + (seed % 3)), 3, 2, 1].slice(0, nd);
      const bytes = randomBytes(tensorBytes(type, dims), seed++);
      const name = `${info.name}.${nd}d`;
      w.addTensor(name, dims, type, bytes);
      data.set(name, bytes);
    }
  }
  return { w, data };
}

function checkTensors(f: GGUFFile, bytes: Uint8Array, data: Map<string, Uint8Array>): void {
  expect(f.tensors.length).toBe(data.size);
  expect(f.dataOffset % f.alignment).toBe(0);
  for (const t of f.tensors) {
    expect(t.offset % f.alignment).toBe(0);
    expect(t.offset - f.dataOffset).toBe(t.relOffset);
    expect(t.nbytes).toBe(tensorBytes(t.type, t.dims));
    expect(t.offset + t.nbytes).toBeLessThanOrEqual(bytes.length);
    expect(tensorData(bytes, t)).toEqual(data.get(t.name)!);
    expect(f.tensorsByName.get(t.name)).toBe(t);
  }
}

describe("tensor round trip", () => {
  for (const alignment of [undefined, 1, 64, 4096]) {
    test(`all supported types, dims 1-4, alignment ${alignment ?? "default"}`, () => {
      const { w, data } = allTypesWriter(alignment);
      const bytes = w.toBytes();
      const f = parseGGUF(bytes);
      expect(f.alignment).toBe(alignment ?? 32);
      expect(f.version).toBe(3);
      checkTensors(f, bytes, data);
      const t = f.tensorsByName.get("Q4_K.3d")!;
      expect(t.typeName).toBe("Q4_K");
      expect(t.dims.length).toBe(3);
    });
  }

  test("known-but-unsupported types parse with allowUnsupportedTypes", () => {
    const extra = [...GGML_TYPES.values()].filter((i) => !i.supported && i.blockSize > 0).map((i) => i.id);
    const { w, data } = allTypesWriter(undefined, extra);
    const bytes = w.toBytes();
    expect(codeOf(() => parseGGUF(bytes))).toBe("TENSOR_UNSUPPORTED_TYPE");
    checkTensors(parseGGUF(bytes, { allowUnsupportedTypes: true }), bytes, data);
  });

  test("GGUF v2 headers are read like v3", () => {
    const w = new GGUFWriter({ version: 2 });
    w.addKV("k", T.UINT32, 1).addTensor("t", [4], GGMLType.F32, new Float32Array([1, 2, 3, 4]));
    const f = parseGGUF(w.toBytes());
    expect(f.version).toBe(2);
    expect(new Float32Array(tensorData(w.toBytes(), f.tensors[0]!).slice().buffer)).toEqual(new Float32Array([1, 2, 3, 4]));
  });

  test("a file with no tensors and no KVs", () => {
    const bytes = new GGUFWriter().toBytes();
    expect(bytes.length).toBe(32); // header, padded to the data section
    const f = parseGGUF(bytes);
    expect(f.tensors).toEqual([]);
    expect(f.metadata.size).toBe(0);
    expect(parseGGUF(bytes.subarray(0, 24)).dataOffset).toBe(32); // unpadded end is fine with no data
  });

  test("a view into a larger buffer (as an mmap window) parses the same", () => {
    const { w, data } = allTypesWriter();
    const bytes = w.toBytes();
    const big = new Uint8Array(bytes.length + 13);
    big.set(bytes, 7);
    const view = big.subarray(7, 7 + bytes.length);
    checkTensors(parseGGUF(view), view, data);
  });

  test("write(path) streams the same bytes as toBytes()", () => {
    const dir = mkdtempSync(join(tmpdir(), "kiln-gguf-"));
    try {
      const { w } = allTypesWriter(64);
      const path = join(dir, "m.gguf");
      const n = w.write(path);
      const onDisk = new Uint8Array(readFileSync(path));
      expect(onDisk.length).toBe(n);
      expect(onDisk).toEqual(w.toBytes() as Uint8Array<ArrayBuffer>);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test("writer is fast for large tensors (single copy)", () => {
    const w = new GGUFWriter();
    const big = new Uint8Array(256 << 20);
    w.addTensor("big", [big.length / 4], GGMLType.F32, big);
    const t0 = performance.now();
    const bytes = w.toBytes();
    const ms = performance.now() - t0;
    expect(bytes.length).toBe(64 + big.length);
    expect(parseGGUF(bytes).tensors[0]!.offset).toBe(64);
    expect(ms).toBeLessThan(2000); // sanity only
  });
});

describe("writer refuses what the reader would reject (unless unchecked)", () => {
  const w = () => new GGUFWriter();
  const f32 = (n: number) => new Uint8Array(4 * n);
  test.each([
    ["empty key", () => w().addKV("", T.UINT32, 1)],
    ["non-ASCII key", () => w().addKV("kéy", T.UINT32, 1)],
    ["duplicate key", () => w().addKV("k", T.UINT32, 1).addKV("k", T.UINT32, 2)],
    ["u8 out of range", () => w().addKV("k", T.UINT8, 256)],
    ["non-integer u32", () => w().addKV("k", T.UINT32, 1.5)],
    ["u64 negative", () => w().addKV("k", T.UINT64, -1n)],
    ["string as number", () => w().addKV("k", T.STRING, 5)],
    ["nested array", () => w().addArray("k", T.ARRAY, [])],
    ["bad alignment kv", () => w().addKV("general.alignment", T.UINT64, 32n)],
    ["bad alignment option", () => new GGUFWriter({ alignment: 3 })],
    ["empty name", () => w().addTensor("", [4], GGMLType.F32, f32(4))],
    ["long name", () => w().addTensor("x".repeat(64), [4], GGMLType.F32, f32(4))],
    ["duplicate name", () => w().addTensor("t", [4], GGMLType.F32, f32(4)).addTensor("t", [4], GGMLType.F32, f32(4))],
    ["5 dims", () => w().addTensor("t", [1, 1, 1, 1, 4], GGMLType.F32, f32(4))],
    ["zero dim", () => w().addTensor("t", [4, 0], GGMLType.F32, f32(0))],
    ["removed type", () => w().addTensor("t", [4], 4, f32(4))],
    ["ne0 not whole blocks", () => w().addTensor("t", [16], GGMLType.Q8_0, new Uint8Array(17))],
    ["wrong data length", () => w().addTensor("t", [4], GGMLType.F32, f32(5))],
  ])("%s", (_, f) => {
    expect(codeOf(f)).toBe("WRITER_INVALID");
  });
});

describe("ggml type table", () => {
  test("block layouts of kiln's types match the notes / src/tensor.ts", () => {
    const want: Record<string, [number, number]> = {
      F32: [1, 4], F16: [1, 2], BF16: [1, 2], Q4_0: [32, 18], Q4_1: [32, 20], Q5_0: [32, 22], Q5_1: [32, 24],
      Q8_0: [32, 34], Q4_K: [256, 144], Q5_K: [256, 176], Q6_K: [256, 210],
    };
    const got = Object.fromEntries(SUPPORTED_GGML_TYPES.map((id) => {
      const i = GGML_TYPES.get(id)!;
      return [i.name, [i.blockSize, i.typeSize]];
    }));
    expect(got).toEqual(want);
    expect(SUPPORTED_GGML_TYPES).toEqual([0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30]);
    expect(GGML_TYPES.get(GGMLType.Q8_K)!.typeSize).toBe(292);
    expect(GGML_TYPES.get(GGMLType.Q2_K)!.supported).toBe(false);
  });

  test("rowBytes / tensorBytes are exact and checked", () => {
    expect(rowBytes(GGMLType.Q4_K, 4096)).toBe(16 * 144);
    expect(tensorBytes(GGMLType.Q8_0, [4096, 11008])).toBe(128 * 34 * 11008);
    expect(tensorBytes(GGMLType.F16, [3, 5, 7, 2])).toBe(2 * 3 * 5 * 7 * 2);
    expect(codeOf(() => rowBytes(GGMLType.Q4_0, 33))).toBe("TENSOR_BLOCK_MISALIGNED");
    expect(codeOf(() => rowBytes(99, 32))).toBe("TENSOR_BAD_TYPE");
    expect(codeOf(() => tensorBytes(GGMLType.F32, [2 ** 26, 2 ** 26]))).toBe("TENSOR_NBYTES_TOO_BIG");
    expect(codeOf(() => tensorBytes(GGMLType.F32, [2 ** 53]))).toBe("TENSOR_BAD_SHAPE");
  });
});

describe("tokenizer-table checks (E06–E08 helpers)", () => {
  const tokens = ["<unk>", "<s>", "</s>", "<0x0A>", "a", "b", "ab"];
  function meta(edit?: (w: GGUFWriter) => void, skip: string[] = []) {
    const w = new GGUFWriter();
    const add = (k: string, f: () => void) => skip.includes(k) || f();
    add("tokens", () => w.addArray("tokenizer.ggml.tokens", T.STRING, tokens));
    add("scores", () => w.addArray("tokenizer.ggml.scores", T.FLOAT32, new Float32Array(tokens.length)));
    add("types", () => w.addArray("tokenizer.ggml.token_type", T.INT32, new Int32Array([2, 3, 3, 6, 1, 1, 1])));
    add("merges", () => w.addArray("tokenizer.ggml.merges", T.STRING, ["a b"]));
    add("bos", () => w.addKV("tokenizer.ggml.bos_token_id", T.UINT32, 1));
    add("pad", () => w.addKV("tokenizer.ggml.padding_token_id", T.INT32, -1));
    edit?.(w);
    return parseGGUF(w.toBytes()).metadata;
  }
  test("a consistent table passes", () => {
    expect(checkTokenizerMetadata(meta()).nVocab).toBe(7);
  });
  test.each([
    ["tokens missing", meta(undefined, ["tokens"]), "KV_MISSING"],
    ["scores wrong element type", meta((w) => w.addArray("tokenizer.ggml.scores", T.FLOAT64, new Float64Array(7)), ["scores"]), "KV_WRONG_TYPE"],
    ["scores wrong length", meta((w) => w.addArray("tokenizer.ggml.scores", T.FLOAT32, new Float32Array(6)), ["scores"]), "TOKENIZER_INVALID"],
    ["token_type as u8", meta((w) => w.addArray("tokenizer.ggml.token_type", T.UINT8, new Uint8Array(7)), ["types"]), "KV_WRONG_TYPE"],
    ["bos out of range", meta((w) => w.addKV("tokenizer.ggml.bos_token_id", T.UINT32, 7), ["bos"]), "TOKENIZER_INVALID"],
    ["eos negative", meta((w) => w.addKV("tokenizer.ggml.eos_token_id", T.INT32, -2)), "TOKENIZER_INVALID"],
    ["byte token not <0xNN>", meta((w) => w.addArray("tokenizer.ggml.token_type", T.INT32, new Int32Array([2, 3, 3, 6, 6, 1, 1])), ["types"]), "TOKENIZER_INVALID"],
    ["merge of unknown token", meta((w) => w.addArray("tokenizer.ggml.merges", T.STRING, ["a c"]), ["merges"]), "TOKENIZER_INVALID"],
    ["charsmap too short", meta((w) => w.addArray("tokenizer.ggml.precompiled_charsmap", T.UINT8, [1, 2])), "TOKENIZER_INVALID"],
    ["charsmap trie past end", meta((w) => w.addArray("tokenizer.ggml.precompiled_charsmap", T.UINT8, [0, 1, 0, 0, 9])), "TOKENIZER_INVALID"],
  ])("%s", (_, m, code) => {
    expect(codeOf(() => checkTokenizerMetadata(m))).toBe(code);
  });
});
