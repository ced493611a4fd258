/**
 * Flash attention launchers (cuda/attention.cu): q [nQ][nHead][headDim] f32 over the first nKv
 * rows of an f16 KV cache k/v [kvRowCapacity][nKvHead][headDim] into out [nQ][nHead][headDim]
 * f32, with the CPU kernel's semantics (src/backends/cpu.ts flashAttention): causal from
 * qPos0, GQA, sliding window, scale, softcap; a row that sees no key gets zeros.
 *
 * Two paths:
 *   - "tile" (prefill, nQ > SPLIT_MAX_ROWS): kiln_flash_attn_hd{64,80,96,128,256}, 64 query rows
 *     of one head per block, tensor-core MMAs with Q and P rounded to f16 (outputs differ from
 *     the f32 CPU kernel by ~1e-3 relative; see test/cuda/attention.test.ts);
 *   - "split" (decode, nQ ≤ SPLIT_MAX_ROWS): kiln_flash_attn_split over key chunks (f32 dot
 *     products, a K/V tile shared by the GQA group) + kiln_flash_attn_combine. More than one
 *     split needs a scratch buffer of splitScratchBytes(...) bytes, allocated once per context;
 *     without one the call runs a single split (correct, slower on long contexts).
 *
 * CUDA graphs (decode captured once, replayed every token): a captured launch replays its
 * argument bytes, so the position must come from device memory. With `posDev` (an i32 on the
 * device: the position of query row 0), the split path reads qPos0 = posDev[0] and
 * nKv = qPos0 + nQ on the device, and the launch no longer depends on them: the split count is
 * fixed by kvRowCapacity (graphSplits; size the scratch with
 * splitScratchBytes(nQ, nHead, headDim, graphSplits(...))) and every split finds its own keys.
 * The options' nKv and qPos0 are then still validated but never reach the kernel (the args carry
 * kvRowCapacity as the bound on nKv, so a stray position cannot read past the cache), so one
 * capture serves every position with posDev[0] + nQ ≤ kvRowCapacity.
 */
import { KilnError } from "../../../errors";
import { type DeviceBuffer, type DeviceRuntime, expectBytes, expectInt, KernelArgs } from "../runtime";

const OP = "flashAttention";

/** Query rows up to which "auto" takes the split (flash-decoding) path. */
export const SPLIT_MAX_ROWS = 8;
/** Most key splits one call uses (splitScratchBytes' default). */
export const MAX_SPLITS = 64;
/** Head dims the kernels take: multiples of 8 up to this. */
export const MAX_HEAD_DIM = 256;
/** Blocks the split path aims for (about two per SM on the largest GPUs). */
const TARGET_BLOCKS = 256;
/** (query row, head) pairs per split block (FA_SPLIT_PAIRS in attention.cu). */
const SPLIT_PAIRS = 8;
const THREADS = 128;
const TILE_ROWS = 64;

export interface FlashAttentionOptions {
  nQ: number;
  nHead: number;
  nKvHead: number;
  headDim: number;
  /** Keys present: positions 0..nKv-1 of the cache. */
  nKv: number;
  /** Position of query row 0 (row i sees keys p ≤ qPos0 + i). */
  qPos0: number;
  /** Sliding window, 0 = none: key p visible to a query at q only if q − p < window. */
  window: number;
  scale: number;
  /** 0 = none; else score = softcap · tanh(score / softcap). */
  softcap: number;
  /** Rows the k/v cache buffers hold (their n_ctx): nKv must not exceed it. */
  kvRowCapacity: number;
  /** Floats between query rows of q (default nHead·headDim: packed). */
  qRowStride?: number;
  /** Floats between rows of out (default nHead·headDim). */
  outRowStride?: number;
  /** Which kernel: "auto" (default) picks by nQ; tests force "tile" or "split". */
  path?: "auto" | "tile" | "split";
  /**
   * Split path: the number of key splits (default: planned from nKv, capped by the scratch; with
   * posDev, graphSplits(...) and never capped: the scratch must hold them).
   */
  nSplit?: number;
  /**
   * Device position for graph capture: an i32 (≥ 4 bytes, 4-byte aligned) holding qPos0, read
   * by the kernels at run time (see the module doc). Requires the split path ("split", or "auto"
   * with nQ ≤ SPLIT_MAX_ROWS). nKv and qPos0 above are then validated but ignored.
   */
  posDev?: DeviceBuffer | null;
}

/** The prefill kernel's head-dim class for headDim: the smallest one ≥ headDim. */
function tileClass(headDim: number): 64 | 80 | 96 | 128 | 256 {
  for (const c of [64, 80, 96, 128, 256] as const) if (headDim <= c) return c;
  throw new KilnError("SHAPE", `${OP}: headDim ${headDim} > ${MAX_HEAD_DIM}`);
}

/**
 * Dynamic shared memory of the prefill kernel (flash_tile in attention.cu): rows of HD + 8
 * halves; HD ≤ 128: max(Q 64 rows, K + V 64 rows each) (Q's area is reused); HD = 256: Q 64
 * rows + K, V 32 rows each = 67,584 bytes, over the 48 KiB default (the loader's launch opts in).
 */
export function tileSharedBytes(headDim: number): number {
  const hd = tileClass(headDim);
  const rowBytes = (hd + 8) * 2;
  return hd <= 128 ? Math.max(TILE_ROWS, 2 * 64) * rowBytes : (TILE_ROWS + 2 * 32) * rowBytes;
}

/** Keys per tile of the split kernel (fa_split_tile in attention.cu). */
function splitTile(headDim: number): number {
  return headDim > 128 ? 32 : 64;
}

/** Dynamic shared memory of the split kernel: q, scores, alphas (f32), K (padded) and V tiles. */
export function splitSharedBytes(headDim: number): number {
  const tk = splitTile(headDim);
  const hp = headDim / 2;
  return 4 * (SPLIT_PAIRS * headDim + SPLIT_PAIRS * tk + SPLIT_PAIRS + tk * (hp + 1) + tk * hp);
}

/** Scratch bytes the split path needs for nSplit splits: partial O, m and l per (row, head, split). */
export function splitScratchBytes(nQ: number, nHead: number, headDim: number, nSplit = MAX_SPLITS): number {
  return nSplit * nQ * nHead * (headDim + 2) * 4;
}

/** Key splits for a split-path call: enough blocks to fill the GPU, at least a tile of keys each. */
export function planSplits(nQ: number, nHead: number, nKvHead: number, headDim: number, nKv: number): number {
  const blocks = nKvHead * Math.ceil((nQ * (nHead / nKvHead)) / SPLIT_PAIRS);
  const tiles = Math.max(1, Math.ceil(nKv / splitTile(headDim)));
  return Math.max(1, Math.min(MAX_SPLITS, tiles, Math.ceil(TARGET_BLOCKS / blocks)));
}

/**
 * The fixed split count of a posDev (graph) launch: planned for a full cache of kvRowCapacity
 * rows, so it never depends on the position. The scratch must hold it:
 * splitScratchBytes(nQ, nHead, headDim, graphSplits(...)) bytes (none when it is 1).
 */
export function graphSplits(nQ: number, nHead: number, nKvHead: number, headDim: number, kvRowCapacity: number): number {
  return planSplits(nQ, nHead, nKvHead, headDim, kvRowCapacity);
}

function expectRange(what: string, n: number, min: number, max: number): void {
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new KilnError("SHAPE", `${OP}: ${what} must be an integer in [${min}, ${max}], got ${n}`);
}

/**
 * Attention of q over the first nKv rows of the f16 caches k/v into out (see the module doc).
 * Validates every size against the buffers before launching; throws a KilnError naming the
 * field or buffer otherwise.
 */
export function flashAttention(
  rt: DeviceRuntime,
  q: DeviceBuffer,
  k: DeviceBuffer,
  v: DeviceBuffer,
  out: DeviceBuffer,
  o: FlashAttentionOptions,
  scratch?: DeviceBuffer | null,
): void {
  const { nQ, nHead, nKvHead, headDim, nKv, qPos0, window, scale, softcap, kvRowCapacity } = o;
  expectInt(OP, "nQ", nQ, 1);
  expectInt(OP, "nHead", nHead, 1);
  expectInt(OP, "nKvHead", nKvHead, 1);
  if (nHead % nKvHead !== 0) throw new KilnError("SHAPE", `${OP}: nHead ${nHead} is not a multiple of nKvHead ${nKvHead}`);
  expectInt(OP, "headDim", headDim, 8);
  if (headDim % 8 !== 0 || headDim > MAX_HEAD_DIM) throw new KilnError("SHAPE", `${OP}: headDim ${headDim} must be a multiple of 8 and ≤ ${MAX_HEAD_DIM}`);
  expectInt(OP, "kvRowCapacity", kvRowCapacity, 1);
  expectInt(OP, "nKv", nKv, 0);
  if (nKv > kvRowCapacity) throw new KilnError("SHAPE", `${OP}: nKv ${nKv} exceeds kvRowCapacity ${kvRowCapacity} (the cache's rows)`);
  expectInt(OP, "qPos0", qPos0, 0);
  expectInt(OP, "qPos0 + nQ", qPos0 + nQ, 1);
  expectInt(OP, "window", window, 0);
  if (!Number.isFinite(scale)) throw new KilnError("SHAPE", `${OP}: scale must be finite, got ${scale}`);
  if (!Number.isFinite(softcap) || softcap < 0) throw new KilnError("SHAPE", `${OP}: softcap must be finite and ≥ 0, got ${softcap}`);
  const width = nHead * headDim;
  const qRowStride = o.qRowStride ?? width;
  const outRowStride = o.outRowStride ?? width;
  expectInt(OP, "qRowStride", qRowStride, width);
  expectInt(OP, "outRowStride", outRowStride, width);
  expectBytes(OP, "q", q, ((nQ - 1) * qRowStride + width) * 4);
  expectBytes(OP, "out", out, ((nQ - 1) * outRowStride + width) * 4);
  const kvBytes = kvRowCapacity * nKvHead * headDim * 2;
  expectBytes(OP, "k cache", k, kvBytes);
  expectBytes(OP, "v cache", v, kvBytes);
  for (const [what, b, align] of [["q", q, 4], ["out", out, 4], ["k cache", k, 16], ["v cache", v, 16]] as const) {
    if (b.ptr % align !== 0) throw new KilnError("SHAPE", `${OP}: ${what} (${b.label}) must be ${align}-byte aligned`);
  }
  const outEnd = out.ptr + ((nQ - 1) * outRowStride + width) * 4;
  if (out.ptr < q.ptr + ((nQ - 1) * qRowStride + width) * 4 && q.ptr < outEnd) {
    throw new KilnError("SHAPE", `${OP}: out (${out.label}) overlaps q (${q.label})`);
  }

  const path = o.path ?? "auto";
  const split = path === "split" || (path === "auto" && nQ <= SPLIT_MAX_ROWS);
  const posDev = o.posDev ?? null;
  if (posDev) {
    expectBytes(OP, "posDev", posDev, 4);
    if (posDev.ptr % 4 !== 0) throw new KilnError("SHAPE", `${OP}: posDev (${posDev.label}) must be 4-byte aligned`);
    if (!split) {
      throw new KilnError("SHAPE", `${OP}: posDev (${posDev.label}) needs the split path ("split", or "auto" with nQ ≤ ${SPLIT_MAX_ROWS}); got path "${path}" with nQ ${nQ}`);
    }
  }
  // With posDev the kernel reads the position from the device: the args carry the bound on nKv
  // (kvRowCapacity) and no position, so they are the same for every position.
  const args = (nSplit: number, keysPerSplit: number, scratchBuf: DeviceBuffer | null) =>
    new KernelArgs()
      .ptr(q).ptr(k).ptr(v).ptr(out).ptr(scratchBuf).ptr(posDev)
      .i32(nQ).i32(nHead).i32(nKvHead).i32(headDim).i32(posDev ? kvRowCapacity : nKv).i32(posDev ? 0 : qPos0).i32(window)
      .i32(qRowStride).i32(outRowStride).i32(nSplit).i32(posDev ? 0 : keysPerSplit)
      .f32(scale).f32(softcap)
      .bytes();

  if (!split) {
    const hd = tileClass(headDim);
    rt.launch(`kiln_flash_attn_hd${hd}`, [Math.ceil(nQ / TILE_ROWS), nHead, 1], [THREADS, 1, 1], tileSharedBytes(headDim), args(0, 0, null));
    return;
  }

  const pairBlocks = Math.ceil((nQ * (nHead / nKvHead)) / SPLIT_PAIRS);
  if (pairBlocks > 65535) throw new KilnError("SHAPE", `${OP}: nQ ${nQ} × ${nHead / nKvHead} heads per KV head is too many rows for the split path`);
  const tile = splitTile(headDim);
  let nSplit: number;
  let keysPerSplit = 0;
  if (posDev) {
    // Fixed by the capacity: the grid must not depend on the position; the device sizes the splits.
    nSplit = o.nSplit ?? graphSplits(nQ, nHead, nKvHead, headDim, kvRowCapacity);
    expectInt(OP, "nSplit", nSplit, 1);
  } else {
    nSplit = o.nSplit ?? planSplits(nQ, nHead, nKvHead, headDim, nKv);
    expectInt(OP, "nSplit", nSplit, 1);
    // Planned splits are capped by what the scratch holds (none: one split, written directly).
    if (o.nSplit === undefined) nSplit = Math.max(1, Math.min(nSplit, Math.floor((scratch?.byteLength ?? 0) / splitScratchBytes(nQ, nHead, headDim, 1))));
    // Keys per split: whole tiles; trailing splits that would get no key are dropped.
    const tiles = Math.max(1, Math.ceil(nKv / tile));
    keysPerSplit = Math.ceil(tiles / nSplit) * tile;
    nSplit = Math.max(1, Math.ceil(nKv / keysPerSplit));
  }
  let scratchBuf: DeviceBuffer | null = null;
  if (nSplit > 1) {
    const why = posDev ? ` (posDev: the splits are fixed by kvRowCapacity ${kvRowCapacity}, graphSplits)` : "";
    if (!scratch) throw new KilnError("SHAPE", `${OP}: ${nSplit} splits need a scratch buffer of ${splitScratchBytes(nQ, nHead, headDim, nSplit)} bytes${why}`);
    expectBytes(OP, "scratch", scratch, splitScratchBytes(nQ, nHead, headDim, nSplit));
    if (scratch.ptr % 8 !== 0) throw new KilnError("SHAPE", `${OP}: scratch (${scratch.label}) must be 8-byte aligned`);
    scratchBuf = scratch;
  }
  const a = args(nSplit, keysPerSplit, scratchBuf);
  rt.launch("kiln_flash_attn_split", [nSplit, nKvHead, pairBlocks], [THREADS, 1, 1], splitSharedBytes(headDim), a);
  if (nSplit > 1) rt.launch("kiln_flash_attn_combine", [nQ * nHead, 1, 1], [THREADS, 1, 1], 0, a);
}
