/**
 * Typed metadata getters, and tokenizer-table checks (hardening note E06–E08) offered to the
 * tokenizer/model layers. Every getter throws a GGUFError naming the key (and the file and the
 * KV's offset) when the key is missing or has the wrong GGUF type: a model file that stores
 * `block_count` as a string must fail loudly, not become NaN.
 */
import { GGUFError } from "./errors";
import { integerValue, type GGUFMetadata } from "./reader";
import { GGUFValueType, valueTypeName, type GGUFArray, type GGUFValue } from "./types";

type VT = typeof GGUFValueType;

function where(meta: GGUFMetadata, key: string, v?: GGUFValue) {
  return { field: `kv "${key}"`, offset: v?.offset, file: meta.fileName };
}

function typeOf(v: GGUFValue): string {
  return v.type === GGUFValueType.ARRAY ? `array of ${valueTypeName(v.elemType)}` : valueTypeName(v.type);
}

function wrongType(meta: GGUFMetadata, key: string, v: GGUFValue, want: string): never {
  throw new GGUFError("KV_WRONG_TYPE", `expected ${want}, got ${typeOf(v)}`, where(meta, key, v));
}

/** The raw value; throws KV_MISSING if absent. */
export function getValue(meta: GGUFMetadata, key: string): GGUFValue {
  const v = meta.get(key);
  if (v === undefined) throw new GGUFError("KV_MISSING", "required key is missing", where(meta, key));
  return v;
}

/** A scalar of exactly `type`; `fallback` (if given) is returned when the key is absent. */
function getScalar<T>(meta: GGUFMetadata, key: string, type: number, fallback: T | undefined): T {
  const v = meta.get(key);
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new GGUFError("KV_MISSING", `required ${valueTypeName(type)} key is missing`, where(meta, key));
  }
  if (v.type !== type) wrongType(meta, key, v, valueTypeName(type));
  return v.value as T;
}

export const getU8 = (m: GGUFMetadata, k: string, fallback?: number) => getScalar<number>(m, k, GGUFValueType.UINT8, fallback);
export const getU32 = (m: GGUFMetadata, k: string, fallback?: number) => getScalar<number>(m, k, GGUFValueType.UINT32, fallback);
export const getI32 = (m: GGUFMetadata, k: string, fallback?: number) => getScalar<number>(m, k, GGUFValueType.INT32, fallback);
export const getF32 = (m: GGUFMetadata, k: string, fallback?: number) => getScalar<number>(m, k, GGUFValueType.FLOAT32, fallback);
export const getF64 = (m: GGUFMetadata, k: string, fallback?: number) => getScalar<number>(m, k, GGUFValueType.FLOAT64, fallback);
export const getU64 = (m: GGUFMetadata, k: string, fallback?: bigint) => getScalar<bigint>(m, k, GGUFValueType.UINT64, fallback);
export const getI64 = (m: GGUFMetadata, k: string, fallback?: bigint) => getScalar<bigint>(m, k, GGUFValueType.INT64, fallback);
export const getBool = (m: GGUFMetadata, k: string, fallback?: boolean) => getScalar<boolean>(m, k, GGUFValueType.BOOL, fallback);
export const getString = (m: GGUFMetadata, k: string, fallback?: string) => getScalar<string>(m, k, GGUFValueType.STRING, fallback);

/**
 * Any integer type, as a safe JS number. Converters disagree on u32 vs i32 vs u64 for the same
 * hyperparameter, so model code reads counts through this.
 */
export function getInt(meta: GGUFMetadata, key: string, fallback?: number): number {
  const v = meta.get(key);
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new GGUFError("KV_MISSING", "required integer key is missing", where(meta, key));
  }
  const n = integerValue(v);
  if (n === undefined) {
    if (v.type === GGUFValueType.UINT64 || v.type === GGUFValueType.INT64) {
      throw new GGUFError("KV_BAD_VALUE", `${v.value} is outside the safe integer range`, where(meta, key, v));
    }
    wrongType(meta, key, v, "an integer");
  }
  return n;
}

/** f32 or f64, as a number. */
export function getFloat(meta: GGUFMetadata, key: string, fallback?: number): number {
  const v = meta.get(key);
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new GGUFError("KV_MISSING", "required float key is missing", where(meta, key));
  }
  if (v.type !== GGUFValueType.FLOAT32 && v.type !== GGUFValueType.FLOAT64) wrongType(meta, key, v, "f32 or f64");
  return v.value;
}

/** Element type → the JS array that holds it (e.g. FLOAT32 → Float32Array). */
type ArrayByElem = { [A in GGUFArray as A["elemType"]]: A["value"] };
type ArrayOf<E> = E extends keyof ArrayByElem ? ArrayByElem[E] : never;

/** An array, optionally of exactly `elemType`. */
export function getArray<E extends GGUFValueType>(meta: GGUFMetadata, key: string, elemType: E): ArrayOf<E>;
export function getArray(meta: GGUFMetadata, key: string): GGUFArray["value"];
export function getArray(meta: GGUFMetadata, key: string, elemType?: number): GGUFArray["value"] {
  const v = getValue(meta, key);
  if (v.type !== GGUFValueType.ARRAY) wrongType(meta, key, v, elemType === undefined ? "an array" : `array of ${valueTypeName(elemType)}`);
  if (elemType !== undefined && v.elemType !== elemType) wrongType(meta, key, v, `array of ${valueTypeName(elemType)}`);
  return v.value;
}

/** An optional array: undefined when absent, else as getArray. */
export function getArrayOpt<E extends GGUFValueType>(meta: GGUFMetadata, key: string, elemType: E): ArrayOf<E> | undefined {
  if (!meta.has(key)) return undefined;
  return getArray(meta, key, elemType);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer tables (E06–E08): the checks that need only metadata
// ---------------------------------------------------------------------------------------------

const SPECIAL_ID_KEYS = [
  "bos", "eos", "unknown", "seperator", "padding", "cls", "mask", "eot", "eom",
  "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep",
].map((k) => `tokenizer.ggml.${k}_token_id`);

/** llama.cpp's token type ids; BYTE tokens must spell `<0xNN>`. */
const TOKEN_TYPE_BYTE = 6;
const BYTE_TOKEN = /^<0x[0-9A-Fa-f]{2}>$/;

function tokFail(meta: GGUFMetadata, key: string, detail: string, v?: GGUFValue): never {
  throw new GGUFError("TOKENIZER_INVALID", detail, where(meta, key, v));
}

/**
 * E06: `tokens` is a non-empty string array; `scores` (f32), `token_type` (i32) and
 * `suppress_tokens` (i32 ids) have the right element type and length.
 * E07: every special-token id present is in [0, n_vocab) or -1 (stored as i32 -1 or u32 2^32-1).
 * E08: BYTE tokens are `<0xNN>`; each merge is two existing tokens; `precompiled_charsmap` is
 * internally bounded.
 * Checks that need tensors (n_vocab = token_embd.ne[1]) or defaults belong to the model layer.
 */
export function checkTokenizerMetadata(meta: GGUFMetadata): { nVocab: number } {
  const tokensKey = "tokenizer.ggml.tokens";
  const tokens = getArray(meta, tokensKey, GGUFValueType.STRING);
  const n = tokens.length;
  if (n < 1) tokFail(meta, tokensKey, "token list is empty", meta.get(tokensKey));

  const sameLength = (key: string, elemType: VT["FLOAT32"] | VT["INT32"]) => {
    const a = getArrayOpt(meta, key, elemType);
    if (a && a.length !== n) tokFail(meta, key, `has ${a.length} entries but there are ${n} tokens`, meta.get(key));
    return a;
  };
  sameLength("tokenizer.ggml.scores", GGUFValueType.FLOAT32);
  const types = sameLength("tokenizer.ggml.token_type", GGUFValueType.INT32) as Int32Array | undefined;

  const suppress = getArrayOpt(meta, "tokenizer.ggml.suppress_tokens", GGUFValueType.INT32);
  suppress?.forEach((id, i) => {
    if (id < 0 || id >= n) tokFail(meta, "tokenizer.ggml.suppress_tokens", `entry ${i} = ${id} is not a token id in [0, ${n})`);
  });

  for (const key of SPECIAL_ID_KEYS) {
    if (!meta.has(key)) continue;
    const id = getInt(meta, key);
    if (id !== -1 && id !== 0xffffffff && (id < 0 || id >= n)) tokFail(meta, key, `token id ${id} is not in [0, ${n}) and not -1`, meta.get(key));
  }

  if (types) {
    for (let i = 0; i < n; i++) {
      if (types[i] === TOKEN_TYPE_BYTE && !BYTE_TOKEN.test(tokens[i]!)) {
        tokFail(meta, tokensKey, `token ${i} has type BYTE but text ${JSON.stringify(tokens[i])} is not <0xNN>`);
      }
    }
  }
  checkMerges(meta, tokens);
  checkCharsmap(meta);
  return { nVocab: n };
}

function checkMerges(meta: GGUFMetadata, tokens: string[]): void {
  const key = "tokenizer.ggml.merges";
  const merges = getArrayOpt(meta, key, GGUFValueType.STRING);
  if (!merges) return;
  const vocab = new Set(tokens);
  for (let i = 0; i < merges.length; i++) {
    const m = merges[i]!;
    const sp = m.indexOf(" ", 1); // as llama.cpp: a token may itself start with a space
    if (sp < 0 || !vocab.has(m.slice(0, sp)) || !vocab.has(m.slice(sp + 1))) {
      tokFail(meta, key, `merge ${i} ${JSON.stringify(m)} is not two existing tokens separated by a space`, meta.get(key));
    }
  }
}

/** SentencePiece's precompiled_charsmap: u32 trie size, then the trie, then the normalized text. */
function checkCharsmap(meta: GGUFMetadata): void {
  const key = "tokenizer.ggml.precompiled_charsmap";
  if (!meta.has(key)) return;
  const v = meta.get(key)!;
  if (v.type !== GGUFValueType.ARRAY || (v.elemType !== GGUFValueType.UINT8 && v.elemType !== GGUFValueType.INT8)) {
    wrongType(meta, key, v, "array of u8");
  }
  const b = new Uint8Array(v.value.buffer, v.value.byteOffset, v.value.byteLength);
  if (b.length < 4) tokFail(meta, key, `is ${b.length} bytes, shorter than its 4-byte header`, v);
  const trie = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0, true);
  if (trie > b.length - 4 || trie % 4 !== 0) tokFail(meta, key, `trie size ${trie} does not fit in ${b.length - 4} bytes (or is not a multiple of 4)`, v);
}
