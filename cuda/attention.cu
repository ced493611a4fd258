// attention.cu — flash attention over an f16 KV cache, the semantics of kiln's CPU kernel
// (zig-kernels/attention.zig, src/backends/cpu.ts flashAttention):
//
//   query row i (0 ≤ i < nQ) of head h sits at position qpos = qPos0 + i and sees the keys p with
//     p < nKv,  p ≤ qpos (causal),  and qpos − p < window when window > 0 (sliding window);
//   head h reads KV head h / (nHead / nKvHead) (GQA);
//   score s = (q · k) · scale; s = softcap · tanh(s / softcap) when softcap > 0;
//   out = Σ_p softmax(s)_p · v_p, softmax in f32; a row that sees no key gets zeros.
//
// Layouts (element offsets):
//   q   f32  q[i * qRowStride + h * headDim + d]                 (qRowStride ≥ nHead·headDim)
//   k,v f16  k[(p * nKvHead + g) * headDim + d]  (u16 bits; the KV cache [nCtx][nKvHead][headDim])
//   out f32  out[i * outRowStride + h * headDim + d]
//   headDim: a multiple of 8, ≤ 256 (k/v rows are read as 16-byte vectors: k, v 16-byte aligned).
//
// Kernels (all take FlashAttnArgs):
//   kiln_flash_attn_hd64/80/96/128/256 — prefill (FlashAttention-2): a block of 4 warps owns 64
//     query rows of one head; each warp 16 rows. K/V tiles of BC keys go through shared memory;
//     S = Q·Kᵀ and O += P·V run on tensor cores (kiln_mma_16816; Q pre-multiplied by scale and P
//     rounded to f16, accumulation in f32); online softmax in f32 (running max m, sum l per row);
//     tiles no row of the block may see are never loaded, tiles no row of a warp may see are not
//     computed by it, and tiles every row of a warp sees entirely skip the per-element mask.
//     One kernel per head-dim class (HD: 64, 80, 96, 128, 256) so each has its own register
//     budget (one kernel with a switch would carry HD=256's ~200 registers into the HD=64 path);
//     a headDim below its class (e.g. 32, 72, 112, 192) runs zero-padded in the next class up.
//     Dynamic shared memory: flashTileSmemBytes below (the launcher mirrors it): HD ≤ 128 keeps
//     Q's fragments in registers and reuses Q's staging area for K/V (≤ 34 KiB);
//     HD = 256 keeps Q in shared memory beside K/V tiles of 32 keys: 67.6 KiB, over the 48 KiB
//     default, so that launch needs the MAX_DYNAMIC_SHARED_SIZE opt-in (the loader sets it).
//   kiln_flash_attn_split — decode / short batches (flash-decoding): grid (nSplit, nKvHead,
//     ceil(nQ·G / 8)) with G = nHead / nKvHead. A block takes one KV head, keys
//     [s·keysPerSplit, (s+1)·keysPerSplit) and up to 8 (query row, head) pairs of that KV head,
//     so a loaded K/V tile serves the whole GQA group. f32 dot products (no tensor cores), online
//     softmax per pair. nSplit == 1: the block normalizes and writes out directly; otherwise it
//     writes unnormalized partial O plus (m, l) to scratch and kiln_flash_attn_combine merges the
//     splits (log-sum-exp): out = Σ_s e^{m_s − M} O_s / Σ_s e^{m_s − M} l_s.
//   kiln_flash_attn_combine — grid (nQ · nHead), block 128.
//
// Device position (split path, for CUDA graphs: a captured launch replays its argument bytes, so
// what changes every token must be read from device memory): when posDev is non-null,
//   qPos0 = posDev[0], nKv = min(qPos0 + nQ, args.nKv)   (args.nKv: the bound, the cache's rows;
//                                                         args.qPos0 and args.keysPerSplit unused)
//   and the grid's nSplit is fixed (planned by the host from the bound): every split computes
//   keysPerSplit = ceil(ceil(nKv / tile) / nSplit) · tile on the device (fa_split_keys, the
//   launcher's formula), a split whose keys start at or past nKv writes (m = -inf, l = 0, O = 0),
//   and the combine merges only the ceil(nKv / keysPerSplit) live splits. The same arguments and
//   grid therefore serve every position ≤ the bound. The tile kernels ignore posDev (the launcher
//   never sets it for them).
//
// Scratch (split path, f32), nRows = nQ · nHead, row = i · nHead + h:
//   O_s   scratch[(s * nRows + row) * headDim + d]
//   m, l  scratch[nSplit·nRows·headDim + (s * nRows + row) * 2 + {0, 1}]
//
// Reference: the CPU flashAttention (zig-kernels/attention.zig) on the same f16 cache, with derived f16 bounds. Tests: test/cuda/attention.test.ts; test/backends/conformance.test.ts (f64), on the host emulator always and on a GPU when present.
#include "kiln_cuda.cuh"

struct FlashAttnArgs {
  const float* q;
  const u16* k;
  const u16* v;
  float* out;
  float* scratch;    // split path with nSplit > 1; else null
  const i32* posDev; // split path: device position of query row 0 (see above); null = use qPos0/nKv
  i32 nQ;
  i32 nHead;
  i32 nKvHead;
  i32 headDim;
  i32 nKv;           // keys present: positions 0..nKv-1 (with posDev: the bound on nKv)
  i32 qPos0;         // position of query row 0 (unused with posDev)
  i32 window;        // 0 = none
  i32 qRowStride;    // floats between query rows
  i32 outRowStride;  // floats between output rows
  i32 nSplit;        // split path: key splits (1 = write out directly)
  i32 keysPerSplit;  // split path: a multiple of the key tile (unused with posDev)
  float scale;
  float softcap;     // 0 = off
};

// A 16-byte vector: K/V rows move global → shared memory in these.
struct alignas(16) KilnU4 { u32 x, y, z, w; };

KILN_FN float fa_neg_inf() { return kiln_as_float(0xff800000u); }

// Is key p visible to a query at position qpos?
KILN_FN bool fa_visible(const FlashAttnArgs& a, int qpos, int p) {
  return p < a.nKv && p <= qpos && (a.window <= 0 || qpos - p < a.window);
}

KILN_FN float fa_cap(const FlashAttnArgs& a, float s) {
  return a.softcap > 0.0f ? a.softcap * tanhf(s / a.softcap) : s;
}

// First key any query in [qposFirst, qposLast] may see (the window's lower edge).
KILN_FN int fa_key_lo(const FlashAttnArgs& a, int qposFirst) {
  return a.window > 0 ? (qposFirst + 1 - a.window > 0 ? qposFirst + 1 - a.window : 0) : 0;
}
// One past the last key any query up to qposLast may see.
KILN_FN int fa_key_end(const FlashAttnArgs& a, int qposLast) {
  return qposLast + 1 < a.nKv ? qposLast + 1 : a.nKv;
}

// ============================================================================ prefill (tensor cores)

// Rounds p to f16 and back, so the normalizer sums exactly the weights the MMA applies.
KILN_FN float fa_round_f16(float p) { return kiln_f16_to_f32(kiln_f32_to_f16(p)); }

// One 128-thread block: 64 query rows of head blockIdx.y (tiles scheduled last-first: causal
// rows further down see more keys, so the longest blocks start first).
template <int HD, int BC>
KILN_FN void flash_tile(const FlashAttnArgs& a, u32* smem) {
  constexpr int BR = 64, NT = 128;
  constexpr int LD = HD + 8;           // halves per shared row: 16 bytes of padding, no bank conflicts
  constexpr int LDW = LD / 2;          // the same in u32 words
  constexpr bool QREG = HD <= 128;     // Q fragments in registers (else read from shared memory)
  constexpr int NKC = HD / 16;         // k-chunks of the head dimension
  constexpr int NSJ = BC / 8;          // n-tiles of S (8 keys each)
  constexpr int NOD = HD / 8;          // n-tiles of O (8 dims each)
  static_assert(HD % 16 == 0 && BC % 16 == 0, "tile shapes");

  u32* qs = smem;                                    // [BR][LDW]
  u32* ks = QREG ? smem : smem + BR * LDW;           // [BC][LDW], aliases qs when QREG
  u32* vs = ks + BC * LDW;                           // [BC][LDW]

  const int tid = (int)threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int h = (int)blockIdx.y;
  const int kvh = h / (a.nHead / a.nKvHead);
  const int row0 = ((int)gridDim.x - 1 - (int)blockIdx.x) * BR;
  const int hd = a.headDim;

  // Q (scaled, f16) → shared memory; rows past nQ and dims past headDim are zeros.
  for (int i = tid; i < BR * (HD / 2); i += NT) {
    const int r = i / (HD / 2), d = (i % (HD / 2)) * 2;
    float x0 = 0.0f, x1 = 0.0f;
    if (row0 + r < a.nQ && d < hd) {
      const float* src = a.q + (i64)(row0 + r) * a.qRowStride + (i64)h * hd + d;
      x0 = src[0] * a.scale;
      x1 = src[1] * a.scale;
    }
    qs[r * LDW + d / 2] = kiln_pack_f16x2(x0, x1);
  }
  kiln_sync();
  const int wr = warp * 16;                          // the warp's first row within the block
  u32 qf[QREG ? NKC : 1][4];
  if (QREG) {
#pragma unroll
    for (int kc = 0; kc < (QREG ? NKC : 1); ++kc) {
      qf[kc][0] = qs[(wr + g) * LDW + kc * 8 + t];
      qf[kc][1] = qs[(wr + g + 8) * LDW + kc * 8 + t];
      qf[kc][2] = qs[(wr + g) * LDW + kc * 8 + 4 + t];
      qf[kc][3] = qs[(wr + g + 8) * LDW + kc * 8 + 4 + t];
    }
  }

  // Keys the block needs, and those each warp's rows may see.
  const int rowLast = (row0 + BR < a.nQ ? row0 + BR : a.nQ) - 1;
  const int kLo = fa_key_lo(a, a.qPos0 + row0);
  const int kEnd = fa_key_end(a, a.qPos0 + rowLast);
  const int wFirst = row0 + wr;
  const int wLast = (wFirst + 16 < a.nQ ? wFirst + 16 : a.nQ) - 1;
  const bool warpLive = wFirst < a.nQ;
  const int wLo = fa_key_lo(a, a.qPos0 + wFirst);
  const int wEnd = warpLive ? fa_key_end(a, a.qPos0 + wLast) : 0;

  float o[NOD][4];
#pragma unroll
  for (int n = 0; n < NOD; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {fa_neg_inf(), fa_neg_inf()}, l[2] = {0.0f, 0.0f};

  for (int t0 = kLo - kLo % BC; t0 < kEnd; t0 += BC) {
    kiln_sync();  // every warp is done with the previous tile (and, the first time, with qs)
    for (int i = tid; i < BC * (HD / 8); i += NT) {
      const int r = i / (HD / 8), c = (i % (HD / 8)) * 8;
      KilnU4 kv = {0, 0, 0, 0}, vv = {0, 0, 0, 0};
      if (t0 + r < a.nKv && c < hd) {
        const i64 off = ((i64)(t0 + r) * a.nKvHead + kvh) * hd + c;
        kv = *reinterpret_cast<const KilnU4*>(a.k + off);
        vv = *reinterpret_cast<const KilnU4*>(a.v + off);
      }
      *reinterpret_cast<KilnU4*>(ks + r * LDW + c / 2) = kv;
      *reinterpret_cast<KilnU4*>(vs + r * LDW + c / 2) = vv;
    }
    kiln_sync();
    if (t0 + BC <= wLo || t0 >= wEnd) continue;  // nothing of this tile is visible to the warp

    // S = (scale·Q) · Kᵀ, 16 rows × BC keys per warp.
    float s[NSJ][4];
#pragma unroll
    for (int j = 0; j < NSJ; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int kc = 0; kc < NKC; ++kc) {
        u32 af[4];
        if (QREG) {
          af[0] = qf[QREG ? kc : 0][0]; af[1] = qf[QREG ? kc : 0][1];
          af[2] = qf[QREG ? kc : 0][2]; af[3] = qf[QREG ? kc : 0][3];
        } else {
          af[0] = qs[(wr + g) * LDW + kc * 8 + t];
          af[1] = qs[(wr + g + 8) * LDW + kc * 8 + t];
          af[2] = qs[(wr + g) * LDW + kc * 8 + 4 + t];
          af[3] = qs[(wr + g + 8) * LDW + kc * 8 + 4 + t];
        }
        u32 bf[2];
        bf[0] = ks[(j * 8 + g) * LDW + kc * 8 + t];
        bf[1] = ks[(j * 8 + g) * LDW + kc * 8 + 4 + t];
        kiln_mma_16816(s[j], af, bf, s[j]);
      }
    }

    // Softcap, mask (only where some row of the warp misses part of the tile), online softmax.
    const bool whole = t0 + BC <= a.nKv && t0 + BC - 1 <= a.qPos0 + wFirst &&
                       (a.window <= 0 || a.qPos0 + wLast - t0 < a.window);
    float mx[2] = {fa_neg_inf(), fa_neg_inf()};
#pragma unroll
    for (int j = 0; j < NSJ; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = fa_cap(a, s[j][e]);
        if (!whole) {
          const int qpos = a.qPos0 + wFirst + g + (e >= 2 ? 8 : 0);
          if (!fa_visible(a, qpos, t0 + j * 8 + 2 * t + (e & 1))) x = fa_neg_inf();
        }
        s[j][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    }
    float alpha[2], mUse[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], kiln_shfl_xor(mx[i], 1));
      mx[i] = fmaxf(mx[i], kiln_shfl_xor(mx[i], 2));
      const float mNew = fmaxf(m[i], mx[i]);
      mUse[i] = mNew == fa_neg_inf() ? 0.0f : mNew;  // a row with no key yet: p = 0, nothing to rescale
      alpha[i] = expf(m[i] - mUse[i]);               // 0 when m was -inf (then l and o are 0 anyway)
      m[i] = mNew;
    }
    float rowSum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < NSJ; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = fa_round_f16(expf(s[j][e] - mUse[e >> 1]));
        s[j][e] = p;
        rowSum[e >> 1] += p;
      }
    }
    l[0] = l[0] * alpha[0] + rowSum[0];
    l[1] = l[1] * alpha[1] + rowSum[1];
#pragma unroll
    for (int n = 0; n < NOD; ++n) {
      o[n][0] *= alpha[0]; o[n][1] *= alpha[0];
      o[n][2] *= alpha[1]; o[n][3] *= alpha[1];
    }

    // O += P · V: P's accumulator layout is already the A fragment of the next MMA.
#pragma unroll
    for (int kc = 0; kc < BC / 16; ++kc) {
      u32 pf[4];
      pf[0] = kiln_pack_f16x2(s[2 * kc][0], s[2 * kc][1]);
      pf[1] = kiln_pack_f16x2(s[2 * kc][2], s[2 * kc][3]);
      pf[2] = kiln_pack_f16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]);
      pf[3] = kiln_pack_f16x2(s[2 * kc + 1][2], s[2 * kc + 1][3]);
      const int key = kc * 16 + 2 * t;
      const int sh = (g & 1) * 16;
#pragma unroll
      for (int n = 0; n < NOD; ++n) {
        const int w = n * 4 + (g >> 1);
        u32 bf[2];
        bf[0] = ((vs[key * LDW + w] >> sh) & 0xffffu) | (((vs[(key + 1) * LDW + w] >> sh) & 0xffffu) << 16);
        bf[1] = ((vs[(key + 8) * LDW + w] >> sh) & 0xffffu) | (((vs[(key + 9) * LDW + w] >> sh) & 0xffffu) << 16);
        kiln_mma_16816(o[n], pf, bf, o[n]);
      }
    }
  }

  // out = O / l (l summed over the row's four lanes); a row that saw nothing gets zeros.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += kiln_shfl_xor(l[i], 1);
    l[i] += kiln_shfl_xor(l[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = wFirst + g + i * 8;
    if (r >= a.nQ) continue;
    const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    float* dst = a.out + (i64)r * a.outRowStride + (i64)h * hd;
#pragma unroll
    for (int n = 0; n < NOD; ++n) {
      const int d = n * 8 + 2 * t;
      if (d < hd) {
        dst[d] = o[n][i * 2] * inv;
        dst[d + 1] = o[n][i * 2 + 1] * inv;
      }
    }
  }
}

KILN_KERNEL_BOUNDS(kiln_flash_attn_hd64, FlashAttnArgs, 128) {
  KILN_DYNAMIC_SMEM(u32, smem);
  flash_tile<64, 64>(a, smem);
}
KILN_KERNEL_BOUNDS(kiln_flash_attn_hd80, FlashAttnArgs, 128) {
  KILN_DYNAMIC_SMEM(u32, smem);
  flash_tile<80, 64>(a, smem);
}
KILN_KERNEL_BOUNDS(kiln_flash_attn_hd96, FlashAttnArgs, 128) {
  KILN_DYNAMIC_SMEM(u32, smem);
  flash_tile<96, 64>(a, smem);
}
KILN_KERNEL_BOUNDS(kiln_flash_attn_hd128, FlashAttnArgs, 128) {
  KILN_DYNAMIC_SMEM(u32, smem);
  flash_tile<128, 64>(a, smem);
}
KILN_KERNEL_BOUNDS(kiln_flash_attn_hd256, FlashAttnArgs, 128) {
  KILN_DYNAMIC_SMEM(u32, smem);
  flash_tile<256, 32>(a, smem);
}

// ============================================================================ split-KV (decode)

// Pairs (query row, head of the KV head's group) per block, threads, and the key tile:
// 64 keys, 32 for headDim > 128 (shared memory stays under 48 KiB: see the launcher).
#define FA_SPLIT_PAIRS 8
#define FA_SPLIT_THREADS 128
KILN_FN int fa_split_tile(int headDim) { return headDim > 128 ? 32 : 64; }

// Keys per split: nSplit shares of whole tiles (the launcher's formula, which also drops the
// trailing empty splits when it knows nKv; with posDev the grid keeps them).
KILN_FN int fa_split_keys(int nKv, int nSplit, int tk) {
  const int tiles = nKv > 0 ? (nKv + tk - 1) / tk : 1;
  return (tiles + nSplit - 1) / nSplit * tk;
}

// The call's live arguments: with posDev, qPos0, nKv and keysPerSplit come from the device.
KILN_FN FlashAttnArgs fa_live(const FlashAttnArgs& a) {
  FlashAttnArgs b = a;
  if (a.posDev) {
    const i64 pos = a.posDev[0];
    const i64 end = pos + a.nQ;
    b.qPos0 = (i32)pos;
    b.nKv = (i32)(end < 0 ? 0 : end < a.nKv ? end : a.nKv);  // never past the cache
    b.keysPerSplit = fa_split_keys(b.nKv, a.nSplit, fa_split_tile(a.headDim));
  }
  return b;
}

// The split kernel's body, on the live arguments (fa_live).
KILN_FN void fa_split(const FlashAttnArgs& a, u32* smem) {
  constexpr int PB = FA_SPLIT_PAIRS, NT = FA_SPLIT_THREADS;
  constexpr int MAXW = PB * 128 / NT;                // accumulator float2s per thread (headDim ≤ 256)
  const int hd = a.headDim, hp = hd / 2, tk = fa_split_tile(hd);
  const int ldk = hp + 1;                            // K row stride in words: odd, conflict-free dot products
  float* qsm = reinterpret_cast<float*>(smem);       // [PB][hd]
  float* psm = qsm + PB * hd;                        // [PB][tk] scores, then probabilities
  float* alphas = psm + PB * tk;                     // [PB]
  u32* ksm = reinterpret_cast<u32*>(alphas + PB);    // [tk][ldk]
  u32* vsm = ksm + tk * ldk;                         // [tk][hp]

  const int tid = (int)threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int split = (int)blockIdx.x, kvh = (int)blockIdx.y;
  const int G = a.nHead / a.nKvHead;
  const int nPairs = a.nQ * G;
  const int pair0 = (int)blockIdx.z * PB;
  const int np = nPairs - pair0 < PB ? nPairs - pair0 : PB;

  for (int i = tid; i < PB * hd; i += NT) {
    const int p = i / hd, d = i % hd;
    float x = 0.0f;
    if (p < np) {
      const int pi = pair0 + p, qi = pi / G, h = kvh * G + pi % G;
      x = a.q[(i64)qi * a.qRowStride + (i64)h * hd + d];
    }
    qsm[i] = x;
  }

  // Keys of this split that some pair of the block may see.
  const int qiFirst = pair0 / G, qiLast = (pair0 + np - 1) / G;
  int lo = fa_key_lo(a, a.qPos0 + qiFirst), end = fa_key_end(a, a.qPos0 + qiLast);
  const int sLo = split * a.keysPerSplit, sEnd = sLo + a.keysPerSplit;
  lo = lo > sLo ? lo : sLo;
  end = end < sEnd ? end : sEnd;

  // Warp w owns the softmax state of pairs w and w + 4.
  float m[PB / 4], l[PB / 4];
#pragma unroll
  for (int i = 0; i < PB / 4; ++i) { m[i] = fa_neg_inf(); l[i] = 0.0f; }
  float acc[MAXW][2];
#pragma unroll
  for (int w = 0; w < MAXW; ++w) acc[w][0] = acc[w][1] = 0.0f;
  const int nAcc = np * hp;                          // (pair, dim pair) accumulators of the live pairs

  for (int t0 = lo - lo % tk; t0 < end; t0 += tk) {
    kiln_sync();  // previous tile consumed (first time: q staged)
    for (int i = tid; i < tk * (hd / 8); i += NT) {
      const int r = i / (hd / 8), c = (i % (hd / 8)) * 8;
      KilnU4 kv = {0, 0, 0, 0}, vv = {0, 0, 0, 0};
      if (t0 + r < a.nKv) {
        const i64 off = ((i64)(t0 + r) * a.nKvHead + kvh) * hd + c;
        kv = *reinterpret_cast<const KilnU4*>(a.k + off);
        vv = *reinterpret_cast<const KilnU4*>(a.v + off);
      }
      u32* kd = ksm + r * ldk + c / 2;
      kd[0] = kv.x; kd[1] = kv.y; kd[2] = kv.z; kd[3] = kv.w;
      *reinterpret_cast<KilnU4*>(vsm + r * hp + c / 2) = vv;
    }
    kiln_sync();

    // Scores: lanes take consecutive keys of one pair (q read as a broadcast).
    for (int i = tid; i < PB * tk; i += NT) {
      const int p = i / tk, j = i % tk, key = t0 + j;
      float x = fa_neg_inf();
      if (p < np && key >= lo && key < end && fa_visible(a, a.qPos0 + (pair0 + p) / G, key)) {
        const float* qp = qsm + p * hd;
        const u32* kr = ksm + j * ldk;
        float dot = 0.0f;
        for (int w = 0; w < hp; ++w) {
          const u32 kk = kr[w];
          dot += qp[2 * w] * kiln_f16_to_f32((u16)(kk & 0xffffu)) + qp[2 * w + 1] * kiln_f16_to_f32((u16)(kk >> 16));
        }
        x = fa_cap(a, dot * a.scale);
      }
      psm[i] = x;
    }
    kiln_sync();

    // Online softmax: warp w updates pairs w, w + 4 over the tile.
#pragma unroll
    for (int i = 0; i < PB / 4; ++i) {
      const int p = warp + 4 * i;
      float mx = fa_neg_inf();
      for (int j = lane; j < tk; j += 32) mx = fmaxf(mx, psm[p * tk + j]);
      mx = kiln_warp_max(mx);
      const float mNew = fmaxf(m[i], mx);
      const float mUse = mNew == fa_neg_inf() ? 0.0f : mNew;
      const float alpha = expf(m[i] - mUse);
      float sum = 0.0f;
      for (int j = lane; j < tk; j += 32) {
        const float e = expf(psm[p * tk + j] - mUse);
        psm[p * tk + j] = e;
        sum += e;
      }
      sum = kiln_warp_sum(sum);
      l[i] = l[i] * alpha + sum;
      m[i] = mNew;
      if (lane == 0) alphas[p] = alpha;
    }
    kiln_sync();

    // acc[pair][d..d+1] = alpha · acc + Σ_j p_j v_j[d..d+1].
#pragma unroll
    for (int w = 0; w < MAXW; ++w) {
      const int i = tid + w * NT;
      if (i < nAcc) {
        const int p = i / hp, dw = i % hp;
        const float al = alphas[p];
        float a0 = acc[w][0] * al, a1 = acc[w][1] * al;
        const float* pr = psm + p * tk;
        for (int j = 0; j < tk; ++j) {
          const u32 vv = vsm[j * hp + dw];
          a0 += pr[j] * kiln_f16_to_f32((u16)(vv & 0xffffu));
          a1 += pr[j] * kiln_f16_to_f32((u16)(vv >> 16));
        }
        acc[w][0] = a0;
        acc[w][1] = a1;
      }
    }
  }

  // The block's (m, l) per pair → shared memory, so the threads holding a pair's accumulator see them.
  kiln_sync();
  float* msm = psm;            // [PB] reuses the score area
  float* lsm = psm + PB;       // [PB]
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < PB / 4; ++i) { msm[warp + 4 * i] = m[i]; lsm[warp + 4 * i] = l[i]; }
  }
  kiln_sync();
  const int nRows = a.nQ * a.nHead;
  const bool direct = a.nSplit == 1;
#pragma unroll
  for (int w = 0; w < MAXW; ++w) {
    const int i = tid + w * NT;
    if (i < nAcc) {
      const int p = i / hp, dw = i % hp;
      if (p >= np) continue;
      const int pi = pair0 + p, qi = pi / G, h = kvh * G + pi % G;
      if (direct) {
        const float inv = lsm[p] > 0.0f ? 1.0f / lsm[p] : 0.0f;
        float* dst = a.out + (i64)qi * a.outRowStride + (i64)h * hd + 2 * dw;
        dst[0] = acc[w][0] * inv;
        dst[1] = acc[w][1] * inv;
      } else {
        float* dst = a.scratch + ((i64)split * nRows + (i64)qi * a.nHead + h) * hd + 2 * dw;
        dst[0] = acc[w][0];
        dst[1] = acc[w][1];
      }
    }
  }
  if (!direct && tid < np) {
    const int pi = pair0 + tid, qi = pi / G, h = kvh * G + pi % G;
    float* ml = a.scratch + (i64)a.nSplit * nRows * hd + ((i64)split * nRows + (i64)qi * a.nHead + h) * 2;
    ml[0] = msm[tid];
    ml[1] = lsm[tid];
  }
}

KILN_KERNEL_BOUNDS(kiln_flash_attn_split, FlashAttnArgs, FA_SPLIT_THREADS) {
  KILN_DYNAMIC_SMEM(u32, smem);
  fa_split(fa_live(a), smem);
}

// One block per (query row, head): merges the live splits' partials by log-sum-exp (the
// scratch is laid out for the launch's nSplit; with posDev only the first
// ceil(nKv / keysPerSplit) splits hold keys, the others wrote m = -inf, l = 0 and are skipped).
KILN_KERNEL_BOUNDS(kiln_flash_attn_combine, FlashAttnArgs, 128) {
  const FlashAttnArgs b = fa_live(a);
  const int row = (int)blockIdx.x, qi = row / a.nHead, h = row % a.nHead, hd = a.headDim;
  const i64 nRows = (i64)a.nQ * a.nHead;
  const float* ml = a.scratch + (i64)a.nSplit * nRows * hd;
  int live = a.nSplit;
  if (a.posDev) {
    const int used = (b.nKv + b.keysPerSplit - 1) / b.keysPerSplit;
    live = used < live ? used : live;
  }
  float M = fa_neg_inf();
  for (int s = 0; s < live; ++s) M = fmaxf(M, ml[(s * nRows + row) * 2]);
  const float mUse = M == fa_neg_inf() ? 0.0f : M;
  float L = 0.0f;
  for (int s = 0; s < live; ++s) L += ml[(s * nRows + row) * 2 + 1] * expf(ml[(s * nRows + row) * 2] - mUse);
  const float inv = L > 0.0f ? 1.0f / L : 0.0f;
  float* dst = a.out + (i64)qi * a.outRowStride + (i64)h * hd;
  for (int d = (int)threadIdx.x; d < hd; d += (int)blockDim.x) {
    float x = 0.0f;
    for (int s = 0; s < live; ++s) {
      const float w = expf(ml[(s * nRows + row) * 2] - mUse);
      x += w * a.scratch[(s * nRows + row) * hd + d];
    }
    dst[d] = x * inv;
  }
}
