/**
 * Bounded mutation fuzzing: ~2000 mutants (byte flips, "interesting" values written over real
 * field offsets, truncations, insertions/deletions) of several valid files. Each parse must
 * either succeed with every tensor range inside the file, or throw a GGUFError: never another
 * exception type, never a hang. Seeded, so a failure names the iteration to replay.
 */
import { expect, test } from "bun:test";
import { GGUFError } from "../../src/gguf/errors";
import { parseGGUF, type ParseOptions } from "../../src/gguf/reader";
import { GGMLType, GGUFValueType as T } from "../../src/gguf/types";
import { GGUFWriter } from "../../src/gguf/writer";
import { rng } from "../helpers";
import { baseWriter } from "./crafted";

// KILN_FUZZ_ITERS=1000000 for a deep run; the default keeps `bun test` fast.
const ITERATIONS = Number(process.env.KILN_FUZZ_ITERS ?? 2000);
const TIME_CAP_MS = process.env.KILN_FUZZ_ITERS ? 600_000 : 4000;

/** Seed files and the offsets of their fields (the most productive places to mutate). */
function seeds(): { bytes: Uint8Array; fields: number[] }[] {
  const writers: GGUFWriter[] = [baseWriter()];

  const tok = new GGUFWriter({ alignment: 64 });
  tok.addKV("general.architecture", T.STRING, "llama").addKV("llama.block_count", T.UINT32, 1);
  tok.addArray("tokenizer.ggml.tokens", T.STRING, ["<s>", "</s>", "a", "b", "ab", "▁x"]);
  tok.addArray("tokenizer.ggml.scores", T.FLOAT32, new Float32Array(6));
  tok.addArray("tokenizer.ggml.token_type", T.INT32, new Int32Array(6));
  tok.addArray("flags", T.BOOL, [true, false]).addKV("u64", T.UINT64, 7n).addKV("f64", T.FLOAT64, 0.5);
  tok.addTensor("token_embd.weight", [32, 6], GGMLType.Q4_0, new Uint8Array(18 * 6));
  tok.addTensor("blk.0.ffn_down.weight", [256, 2], GGMLType.Q6_K, new Uint8Array(210 * 2));
  writers.push(tok);

  const split = new GGUFWriter({ alignment: 16 });
  split.addKV("split.no", T.UINT16, 0).addKV("split.count", T.UINT16, 2).addKV("split.tensors.count", T.INT32, 5);
  split.addTensor("a", [3], GGMLType.F32, new Uint8Array(12)).addTensor("b", [2, 2, 2], GGMLType.BF16, new Uint8Array(16));
  writers.push(split);

  return writers.map((w) => {
    const l = w.layout();
    const fields = [4, 8, 16, ...l.kvs.flatMap((k) => [k.offset, k.typeOffset, k.valueOffset, k.valueOffset + 4]),
      ...l.tensors.flatMap((t) => [t.infoOffset, t.nDimsOffset, t.neOffset, t.neOffset + 8, t.typeOffset, t.offsetOffset])];
    return { bytes: w.toBytes(), fields };
  });
}

const INTERESTING = [0n, 1n, 2n, 3n, 4n, 5n, 7n, 8n, 9n, 12n, 13n, 31n, 32n, 33n, 63n, 64n, 255n, 256n, 0x7fffn, 0xffffn,
  0x7fffffffn, 0xffffffffn, 1n << 32n, 1n << 53n, (1n << 53n) + 1n, 1n << 62n, 1n << 63n, (1n << 64n) - 1n, (1n << 64n) - 32n];

function mutate(src: Uint8Array, fields: number[], r: () => number): Uint8Array {
  const pick = (n: number) => Math.floor(r() * n);
  let b = src.slice();
  const rounds = 1 + pick(3);
  for (let k = 0; k < rounds; k++) {
    const at = r() < 0.6 ? fields[pick(fields.length)]! : pick(b.length);
    switch (pick(6)) {
      case 0: // flip random bits
        if (at < b.length) b[at] = b[at]! ^ (1 << pick(8));
        break;
      case 1: // an interesting u64 over a field
      case 2: {
        if (at + 8 > b.length) break;
        new DataView(b.buffer).setBigUint64(at, INTERESTING[pick(INTERESTING.length)]!, true);
        break;
      }
      case 3: // an interesting u32
        if (at + 4 > b.length) break;
        new DataView(b.buffer).setUint32(at, Number(INTERESTING[pick(INTERESTING.length)]! & 0xffffffffn), true);
        break;
      case 4: // truncate
        b = b.slice(0, pick(b.length + 1));
        break;
      case 5: { // delete or insert a few bytes (shifts everything after)
        const n = 1 + pick(8);
        const i = Math.min(at, b.length);
        b = r() < 0.5 ? new Uint8Array([...b.subarray(0, i), ...b.subarray(Math.min(b.length, i + n))])
          : new Uint8Array([...b.subarray(0, i), ...Array.from({ length: n }, () => pick(256)), ...b.subarray(i)]);
        break;
      }
    }
  }
  return b;
}

test(`fuzz: ${ITERATIONS} mutants parse cleanly or throw GGUFError`, () => {
  const r = rng(0x6b696c6e);
  const files = seeds();
  for (const f of files) expect(() => parseGGUF(f.bytes)).not.toThrow();
  const start = performance.now();
  const codes = new Map<string, number>();
  let ok = 0;
  let i = 0;
  for (; i < ITERATIONS && performance.now() - start < TIME_CAP_MS; i++) {
    const seed = files[i % files.length]!;
    const bytes = mutate(seed.bytes, seed.fields, r);
    const opts: ParseOptions = r() < 0.2 ? { maxMetadataBytes: 256 + Math.floor(r() * 4096) } : {};
    try {
      const f = parseGGUF(bytes, opts);
      ok++;
      for (const t of f.tensors) {
        expect(t.offset).toBeGreaterThanOrEqual(f.dataOffset);
        expect(t.offset + t.nbytes).toBeLessThanOrEqual(bytes.length);
        expect(t.nbytes).toBeGreaterThan(0);
      }
    } catch (e) {
      if (!(e instanceof GGUFError)) {
        throw new Error(`iteration ${i}: ${e instanceof Error ? e.stack : e}`);
      }
      codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
    }
  }
  const ms = performance.now() - start;
  console.log(`fuzz: ${i} mutants in ${ms.toFixed(0)} ms; ${ok} parsed; errors:`, Object.fromEntries([...codes].sort((a, b) => b[1] - a[1])));
  expect(i).toBeGreaterThanOrEqual(Math.min(ITERATIONS, 500));
  expect(codes.size).toBeGreaterThan(10); // the mutations reach many different checks
}, TIME_CAP_MS + 5000);
