/**
 * kiln's own generator of malformed GGUF files, one per item of the hardening checklist
 * (/work/shared/notes/gguf-hardening.md, sections A–D). Each case starts from a small valid
 * file written by GGUFWriter and patches the bytes of one field (located through
 * `writer.layout()`), or is written by hand where the writer cannot express it.
 */
import type { GGUFErrorCode } from "../../src/gguf/errors";
import type { ParseOptions } from "../../src/gguf/reader";
import { GGMLType, GGUFValueType as T } from "../../src/gguf/types";
import { GGUFWriter, type WriterLayout } from "../../src/gguf/writer";

export interface CraftedCase {
  /** Checklist item and a short name, e.g. "A02 BAD_VERSION_0". */
  id: string;
  code: GGUFErrorCode;
  /** A substring the error's `field` must contain. */
  field: string;
  bytes: Uint8Array;
  opts?: ParseOptions;
}

export interface CraftedSplitCase {
  id: string;
  /** Shards, each a valid file on its own. */
  shards: Uint8Array[];
  /** Expected code from validateSplit, or null when the set is consistent. */
  code: "SPLIT_INCONSISTENT" | null;
}

const U64_MAX = (1n << 64n) - 1n;

// ---------------------------------------------------------------------------------------------
// The valid base file
// ---------------------------------------------------------------------------------------------

function fill(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Three tensors (F32 2-D, Q8_0, F32 4-D) and a few KVs of different kinds. */
export function baseWriter(extra?: (w: GGUFWriter) => void, unchecked = false): GGUFWriter {
  const w = new GGUFWriter({ unchecked });
  w.addKV("general.architecture", T.STRING, "llama");
  w.addKV("general.name", T.STRING, "crafted");
  w.addKV("test.u32", T.UINT32, 7);
  w.addArray("test.arr", T.UINT32, new Uint32Array([1, 2, 3]));
  w.addArray("test.strs", T.STRING, ["a", "bc"]);
  extra?.(w);
  w.addTensor("tok.f32", [8, 2], GGMLType.F32, fill(64, 1));
  w.addTensor("q8", [64, 1], GGMLType.Q8_0, fill(68, 2));
  w.addTensor("four", [2, 2, 2, 2], GGMLType.F32, fill(64, 3));
  return w;
}

export function baseFile(): Uint8Array {
  return baseWriter().toBytes();
}

type Patch = (b: Uint8Array, v: DataView, l: WriterLayout) => void;

/** Writes `w`'s file, then applies `patch` to its bytes. */
function patched(patch: Patch, w: GGUFWriter = baseWriter()): Uint8Array {
  const b = w.toBytes();
  patch(b, new DataView(b.buffer), w.layout());
  return b;
}

const kv = (l: WriterLayout, key: string) => l.kvs.find((k) => k.key === key)!;
const ti = (l: WriterLayout, name: string) => l.tensors.find((t) => t.name === name)!;
const setU32 = (v: DataView, at: number, x: number) => v.setUint32(at, x, true);
const setU64 = (v: DataView, at: number, x: bigint | number) => v.setBigUint64(at, BigInt.asUintN(64, BigInt(x)), true);

/** A header + one KV whose key is `key` and whose body is raw bytes; for cases built by hand. */
function rawFile(nTensors: bigint, nKV: bigint, body: Uint8Array): Uint8Array {
  const b = new Uint8Array(24 + body.length);
  const v = new DataView(b.buffer);
  b.set([0x47, 0x47, 0x55, 0x46]);
  setU32(v, 4, 3);
  setU64(v, 8, nTensors);
  setU64(v, 16, nKV);
  b.set(body, 24);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

export function craftedCases(): CraftedCase[] {
  const cases: CraftedCase[] = [];
  const add = (id: string, code: GGUFErrorCode, field: string, bytes: Uint8Array, opts?: ParseOptions) =>
    cases.push({ id, code, field, bytes, opts });
  const base = baseFile();

  // A. Header
  add("A01 HEADER_BAD_MAGIC", "HEADER_BAD_MAGIC", "header.magic", patched((b) => b.set([0x47, 0x47, 0x55, 0x58], 0)));
  add("A01 empty file", "HEADER_BAD_MAGIC", "header.magic", new Uint8Array(0));
  add("A01 3-byte file", "HEADER_BAD_MAGIC", "header.magic", base.slice(0, 3));
  add("A01 short file (20 bytes)", "HEADER_TRUNCATED", "header", base.slice(0, 20));
  add("A02 BAD_VERSION_0", "BAD_VERSION", "header.version", patched((_, v) => setU32(v, 4, 0)));
  add("A02 BAD_VERSION_1", "BAD_VERSION", "header.version", patched((_, v) => setU32(v, 4, 1)));
  add("A02 BAD_VERSION_FUTURE", "BAD_VERSION", "header.version", patched((_, v) => setU32(v, 4, 4)));
  add("A02 big-endian version", "ENDIANNESS", "header.version", patched((_, v) => v.setUint32(4, 3, false)));
  add("A03 BAD_N_TENSORS negative", "BAD_N_TENSORS", "header.n_tensors", patched((_, v) => setU64(v, 8, 1n << 63n)));
  add("A03 BAD_N_TENSORS > bytes", "BAD_N_TENSORS", "header.n_tensors", patched((_, v) => setU64(v, 8, 1_000_000)));
  add("A03 BAD_N_TENSORS over maxTensors", "BAD_N_TENSORS", "header.n_tensors", base, { maxTensors: 2 });
  add("A03 BAD_N_KV -1", "BAD_N_KV", "header.n_kv", patched((_, v) => setU64(v, 16, U64_MAX)));
  add("A03 BAD_N_KV > bytes", "BAD_N_KV", "header.n_kv", patched((_, v) => setU64(v, 16, 1_000_000)));

  // B. Metadata
  const name = (l: WriterLayout) => kv(l, "general.name");
  add("B01 KV_EMPTY_KEY", "KV_EMPTY_KEY", "kv[1].key", patched((_, v, l) => setU64(v, name(l).offset, 0)));
  add("B01 KV_BAD_KEY_SIZE > 65535", "KV_BAD_KEY_SIZE", "kv[1].key", patched((_, v, l) => setU64(v, name(l).offset, 70_000)));
  add("B01 KV_BAD_KEY_SIZE past end", "KV_BAD_KEY_SIZE", "kv[1].key", patched((_, v, l) => setU64(v, name(l).offset, 60_000)));
  add("B01 KV_BAD_KEY_SIZE 2^64-1", "KV_BAD_KEY_SIZE", "kv[1].key", patched((_, v, l) => setU64(v, name(l).offset, U64_MAX)));
  add("B01 non-ASCII key", "KV_KEY_NOT_ASCII", "kv[1].key", patched((b, _, l) => (b[name(l).offset + 9] = 0xc3)));
  add("B01 control byte in key", "KV_KEY_NOT_ASCII", "kv[1].key", patched((b, _, l) => (b[name(l).offset + 9] = 0x00)));
  add("B02 KV_DUPLICATE_KEY", "KV_DUPLICATE_KEY", '"general.name"',
    baseWriter((w) => w.addKV("general.name", T.STRING, "again"), true).toBytes());
  add("B03 KV_BAD_TYPE 13", "KV_BAD_TYPE", '"test.u32".type', patched((_, v, l) => setU32(v, kv(l, "test.u32").typeOffset, 13)));
  add("B03 KV_BAD_TYPE 2^32-1", "KV_BAD_TYPE", '"test.u32".type', patched((_, v, l) => setU32(v, kv(l, "test.u32").typeOffset, 0xffffffff)));
  add("B03 array elem type 200", "KV_BAD_TYPE", '"test.arr".elem_type', patched((_, v, l) => setU32(v, kv(l, "test.arr").valueOffset, 200)));
  add("B03 nested array", "KV_NESTED_ARRAY", '"test.arr".elem_type', patched((_, v, l) => setU32(v, kv(l, "test.arr").valueOffset, T.ARRAY)));
  add("B03 bool byte 2", "KV_BAD_BOOL", '"test.flag"',
    patched((b, _, l) => (b[kv(l, "test.flag").valueOffset] = 2), baseWriter((w) => w.addKV("test.flag", T.BOOL, true))));
  add("B04 string length 2^64-1", "KV_STRING_TOO_LONG", '"general.name".length', patched((_, v, l) => setU64(v, name(l).valueOffset, U64_MAX)));
  add("B04 string past end", "KV_STRING_TOO_LONG", '"general.name".length',
    patched((b, v, l) => setU64(v, name(l).valueOffset, b.length - name(l).valueOffset - 8 + 1)));
  add("B04 string over maxStringBytes", "KV_STRING_TOO_LONG", '"general.architecture".length', base, { maxStringBytes: 4 });
  add("B04 string in array past end", "KV_STRING_TOO_LONG", '"test.strs"[1].length',
    patched((_, v, l) => setU64(v, kv(l, "test.strs").valueOffset + 12 + 9, 1n << 40n)));
  add("B05 array count over 2^30", "KV_ARRAY_TOO_LONG", '"test.arr".count', patched((_, v, l) => setU64(v, kv(l, "test.arr").valueOffset + 4, 1n << 31n)));
  add("B05 array count x elem size > bytes", "KV_ARRAY_TOO_LONG", '"test.arr".count', patched((_, v, l) => setU64(v, kv(l, "test.arr").valueOffset + 4, 1n << 29n)));
  add("B05 string array count x 8 > bytes", "KV_ARRAY_TOO_LONG", '"test.strs".count', patched((_, v, l) => setU64(v, kv(l, "test.strs").valueOffset + 4, 1n << 28n)));
  add("B06 token-array bomb, default budget", "METADATA_TOO_LARGE", '"tokenizer.ggml.tokens"', tokenBomb(3_000_000));
  add("B06 budget exceeded by string text", "METADATA_TOO_LARGE", '"tokenizer.ggml.tokens"',
    baseWriter((w) => w.addArray("tokenizer.ggml.tokens", T.STRING, Array.from({ length: 20_000 }, (_, i) => `token-${i}`.padEnd(40, "x")))).toBytes(),
    { maxMetadataBytes: 1 << 20 });
  for (const a of [0, 3, 2 << 20]) {
    add(`B07 KV_BAD_ALIGN ${a}`, "KV_BAD_ALIGN", "general.alignment", withAlignment(T.UINT32, a));
  }
  add("B07 KV_WRONG_TYPE_ALIGN u64", "KV_WRONG_TYPE_ALIGN", "general.alignment", withAlignment(T.UINT64, 32n));
  add("B07 KV_WRONG_TYPE_ALIGN string", "KV_WRONG_TYPE_ALIGN", "general.alignment", withAlignment(T.STRING, "32"));
  add("B07 KV_WRONG_TYPE_ALIGN i32", "KV_WRONG_TYPE_ALIGN", "general.alignment", withAlignment(T.INT32, 32));

  // C. Tensor infos
  const tensorWith = (f: (w: GGUFWriter) => void) => {
    const w = baseWriter(undefined, true);
    f(w);
    return w.toBytes();
  };
  add("C01 TENSORS_BAD_NAME_SIZE empty", "TENSOR_BAD_NAME", "tensor[3].name", tensorWith((w) => w.addTensor("", [4], GGMLType.F32, fill(16, 0))));
  add("C01 TENSORS_BAD_NAME_SIZE 64", "TENSOR_BAD_NAME", "tensor[3].name", tensorWith((w) => w.addTensor("n".repeat(64), [4], GGMLType.F32, fill(16, 0))));
  add("C01 name length 2^64-1", "TENSOR_BAD_NAME", "tensor[0].name", patched((_, v, l) => setU64(v, ti(l, "tok.f32").infoOffset, U64_MAX)));
  add("C01 name not UTF-8", "TENSOR_BAD_NAME", "tensor[1].name", patched((b, _, l) => (b[ti(l, "q8").infoOffset + 8] = 0xff)));
  add("C01 name control byte", "TENSOR_BAD_NAME", "tensor[1].name", patched((b, _, l) => (b[ti(l, "q8").infoOffset + 9] = 0x0a)));
  add("C01 DUPLICATE_NAME", "TENSOR_DUPLICATE_NAME", '"q8"', tensorWith((w) => w.addTensor("q8", [64, 1], GGMLType.Q8_0, fill(68, 2))));
  add("C02 BAD_N_DIMS 0", "TENSOR_BAD_N_DIMS", '"q8".n_dims', patched((_, v, l) => setU32(v, ti(l, "q8").nDimsOffset, 0)));
  add("C02 BAD_N_DIMS 5", "TENSOR_BAD_N_DIMS", '"q8".n_dims', patched((_, v, l) => setU32(v, ti(l, "q8").nDimsOffset, 5)));
  add("C03 ZERO_DIM", "TENSOR_BAD_SHAPE", '"tok.f32".ne[1]', patched((_, v, l) => setU64(v, ti(l, "tok.f32").neOffset + 8, 0)));
  add("C03 BAD_SHAPE negative", "TENSOR_BAD_SHAPE", '"tok.f32".ne[0]', patched((_, v, l) => setU64(v, ti(l, "tok.f32").neOffset, -8n)));
  add("C04 NE_TOO_BIG product", "TENSOR_NE_TOO_BIG", '"four".ne[2]',
    patched((_, v, l) => [0, 1, 2, 3].forEach((d) => setU64(v, ti(l, "four").neOffset + 8 * d, 1n << 20n))));
  add("C04 NE_TOO_BIG single dim", "TENSOR_NE_TOO_BIG", '"tok.f32".ne[0]', patched((_, v, l) => setU64(v, ti(l, "tok.f32").neOffset, 1n << 60n)));
  // 2^32 · 2^32 wraps to 0 in 64-bit arithmetic: the multiply-then-check bug of issue #27203.
  add("C04 NE_TOO_BIG u64 wrap to 0", "TENSOR_NE_TOO_BIG", '"four".ne[1]',
    patched((_, v, l) => [1n << 32n, 1n << 32n, 1n, 1n].forEach((n, d) => setU64(v, ti(l, "four").neOffset + 8 * d, n))));
  add("C05 BAD_TYPE unknown", "TENSOR_BAD_TYPE", '"q8".type', patched((_, v, l) => setU32(v, ti(l, "q8").typeOffset, 40)));
  add("C05 BAD_TYPE 2^32-1", "TENSOR_BAD_TYPE", '"q8".type', patched((_, v, l) => setU32(v, ti(l, "q8").typeOffset, 0xffffffff)));
  add("C05 BAD_TYPE removed Q4_2", "TENSOR_BAD_TYPE", '"q8".type', patched((_, v, l) => setU32(v, ti(l, "q8").typeOffset, 4)));
  add("C05 unsupported Q2_K", "TENSOR_UNSUPPORTED_TYPE", '"q2k".type', tensorWith((w) => w.addTensor("q2k", [256, 2], GGMLType.Q2_K, fill(168, 4))));
  add("C05 unsupported IQ2_XXS", "TENSOR_UNSUPPORTED_TYPE", '"q8".type', patched((_, v, l) => setU32(v, ti(l, "q8").typeOffset, GGMLType.IQ2_XXS)));
  add("C06 ne0 not multiple of block", "TENSOR_BLOCK_MISALIGNED", '"q8".ne[0]', patched((_, v, l) => setU64(v, ti(l, "q8").neOffset, 40)));
  add("C06 ne0 = 1 for Q8_0", "TENSOR_BLOCK_MISALIGNED", '"q8".ne[0]', patched((_, v, l) => setU64(v, ti(l, "q8").neOffset, 1)));
  add("C07 NBYTES_TOO_BIG", "TENSOR_NBYTES_TOO_BIG", '"tok.f32"',
    patched((_, v, l) => { setU64(v, ti(l, "tok.f32").neOffset, 1n << 26n); setU64(v, ti(l, "tok.f32").neOffset + 8, 1n << 26n); }));
  add("C08 BAD_OFFSET misaligned", "TENSOR_BAD_OFFSET", '"q8".offset', patched((_, v, l) => setU64(v, ti(l, "q8").offsetOffset, 64 + 1)));
  add("C08 BAD_OFFSET 2^64-32", "TENSOR_BAD_OFFSET", '"q8".offset', patched((_, v, l) => setU64(v, ti(l, "q8").offsetOffset, -32n)));

  // D. Data section
  add("D01 offset gap", "TENSOR_OFFSET_MISMATCH", '"q8".offset', patched((_, v, l) => setU64(v, ti(l, "q8").offsetOffset, 64 + 32)));
  add("D01 offset overlap", "TENSOR_OFFSET_MISMATCH", '"q8".offset', patched((_, v, l) => setU64(v, ti(l, "q8").offsetOffset, 32)));
  add("D01 offset alias", "TENSOR_OFFSET_MISMATCH", '"four".offset', patched((_, v, l) => setU64(v, ti(l, "four").offsetOffset, 0)));
  add("D02 padding overflow", "TENSOR_NBYTES_TOO_BIG", '"tok.f32"',
    patched((_, v, l) => { setU64(v, ti(l, "tok.f32").neOffset, (1n << 51n) - 1n); setU64(v, ti(l, "tok.f32").neOffset + 8, 1); }));
  add("D03 DATA_NOT_ENOUGH_DATA (truncated)", "DATA_TRUNCATED", '"four".data', base.slice(0, base.length - 10));
  add("D03 data section missing", "DATA_TRUNCATED", '"tok.f32".data', base.slice(0, ti(baseWriter().layout(), "tok.f32").dataOffset));
  add("D03 huge last tensor", "DATA_TRUNCATED", '"four".data',
    patched((_, v, l) => { setU64(v, ti(l, "four").neOffset, 1n << 20n); setU64(v, ti(l, "four").neOffset + 8, 1n << 20n); }));
  add("D04 region smaller than rows", "TENSOR_OFFSET_MISMATCH", '"q8".offset', patched((_, v, l) => setU64(v, ti(l, "tok.f32").neOffset + 8, 3)));

  // D05 single-file split keys
  const split = (f: (w: GGUFWriter) => void) => baseWriter(f).toBytes();
  add("D05 split.count = 0", "SPLIT_INCONSISTENT", "split.count", split((w) => w.addKV("split.count", T.UINT16, 0).addKV("split.no", T.UINT16, 0)));
  add("D05 split.no >= split.count", "SPLIT_INCONSISTENT", "split.no", split((w) => w.addKV("split.count", T.UINT16, 2).addKV("split.no", T.UINT16, 2)));
  add("D05 split.no without split.count", "SPLIT_INCONSISTENT", "split.count", split((w) => w.addKV("split.no", T.UINT16, 0)));
  add("D05 split.count without split.no", "SPLIT_INCONSISTENT", "split.no", split((w) => w.addKV("split.count", T.UINT16, 2)));
  add("D05 split.count is a string", "SPLIT_INCONSISTENT", "split.count", split((w) => w.addKV("split.count", T.STRING, "2").addKV("split.no", T.UINT16, 0)));
  add("D05 split.tensors.count < n_tensors", "SPLIT_INCONSISTENT", "split.tensors.count",
    split((w) => w.addKV("split.count", T.UINT16, 2).addKV("split.no", T.UINT16, 0).addKV("split.tensors.count", T.INT32, 2)));
  add("D05 single shard, wrong tensors.count", "SPLIT_INCONSISTENT", "split.tensors.count",
    split((w) => w.addKV("split.count", T.UINT16, 1).addKV("split.no", T.UINT16, 0).addKV("split.tensors.count", T.INT32, 5)));

  // Fixed-size fields running past the end.
  // (The counts are lowered so the header's minimum-size check, A03, does not fire first.)
  const eof = base.slice(0, kv(baseWriter().layout(), "test.u32").valueOffset + 2);
  new DataView(eof.buffer).setBigUint64(8, 0n, true);
  add("EOF inside a KV value", "UNEXPECTED_EOF", '"test.u32".value', eof);
  return cases;
}

/** A file whose only KV is a string array of `n` empty strings: 8n bytes, ~3x that decoded. */
function tokenBomb(n: number): Uint8Array {
  const key = new TextEncoder().encode("tokenizer.ggml.tokens");
  const body = new Uint8Array(8 + key.length + 4 + 4 + 8 + 8 * n);
  const v = new DataView(body.buffer);
  setU64(v, 0, key.length);
  body.set(key, 8);
  let p = 8 + key.length;
  setU32(v, p, T.ARRAY);
  setU32(v, p + 4, T.STRING);
  setU64(v, p + 8, n);
  return rawFile(0n, 1n, body);
}

function withAlignment(type: T, value: number | bigint | string): Uint8Array {
  return baseWriter((w) => w.addKV("general.alignment", type, value), true).toBytes();
}

// ---------------------------------------------------------------------------------------------
// D05: sets of shards
// ---------------------------------------------------------------------------------------------

function shard(no: number, count: number, total: number, tensors: string[]): Uint8Array {
  const w = new GGUFWriter();
  w.addKV("general.architecture", T.STRING, "llama");
  w.addKV("split.no", T.UINT16, no).addKV("split.count", T.UINT16, count).addKV("split.tensors.count", T.INT32, total);
  tensors.forEach((name, i) => w.addTensor(name, [4], GGMLType.F32, fill(16, i)));
  return w.toBytes();
}

export function craftedSplitCases(): CraftedSplitCase[] {
  return [
    { id: "D05 consistent 2 shards", shards: [shard(0, 2, 3, ["a", "b"]), shard(1, 2, 3, ["c"])], code: null },
    { id: "D05 consistent, given out of order", shards: [shard(1, 2, 3, ["c"]), shard(0, 2, 3, ["a", "b"])], code: null },
    { id: "D05 missing shard", shards: [shard(0, 2, 3, ["a", "b"])], code: "SPLIT_INCONSISTENT" },
    { id: "D05 split.no twice", shards: [shard(0, 2, 3, ["a", "b"]), shard(0, 2, 3, ["c"])], code: "SPLIT_INCONSISTENT" },
    { id: "D05 split.count disagrees", shards: [shard(0, 2, 3, ["a", "b"]), shard(1, 3, 3, ["c"])], code: "SPLIT_INCONSISTENT" },
    { id: "D05 tensors.count disagrees", shards: [shard(0, 2, 3, ["a", "b"]), shard(1, 2, 4, ["c"])], code: "SPLIT_INCONSISTENT" },
    { id: "D05 tensors.count != sum", shards: [shard(0, 2, 5, ["a", "b"]), shard(1, 2, 5, ["c"])], code: "SPLIT_INCONSISTENT" },
    { id: "D05 tensor in two shards", shards: [shard(0, 2, 4, ["a", "b"]), shard(1, 2, 4, ["a", "c"])], code: "SPLIT_INCONSISTENT" },
  ];
}
