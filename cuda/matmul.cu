// matmul.cu — prefill / verification matrix products on the tensor cores:
// out[r·ldo + j] = W[j, :] · x[r·ldx + :] for r < m activation rows (m > 8; the mat-vec in
// matvec.cu serves m ≤ 8) and j < n weight rows, W in its GGUF block layout (dequant.cuh).
// Launcher: src/backends/cuda/kernels/matmul.ts (matmul).
//
// A block of 4 warps computes a KMM_BM × KMM_BN (64 × 64) tile of out. For each KMM_BK (64)
// slice of k:
//   * the tile loader (32 elements of x and of W per thread) converts the x tile f32 → f16 and
//     dequantizes the W tile (dequant.cuh's exact f32 values, then rounded to f16) into one of
//     two shared-memory buffers, rows padded to 72 halves so the fragment loads below hit 32
//     distinct banks; the global loads of the NEXT slice are issued right after the barrier
//     into registers, so they are in flight while this slice's MMAs run;
//   * kiln_sync (one per slice: the buffers alternate); each warp owns a 32 × 32 sub-tile: per
//     16-wide k step it builds two A
//     fragments (x rows, m16 × k16) and four B fragments (B = Wᵀ, k16 × n8, so B[kk][nn] is
//     W[nn][kk]: a W row of the tile is a B column, and the fragment's k pairs are adjacent
//     halves of that row) as kiln_cuda.cuh documents, and issues 8 kiln_mma_16816 (f16 inputs,
//     f32 accumulators); kiln_sync.
// Edges: rows of x beyond m and rows of W beyond n load as zeros and their outputs are not
// stored; k is a whole number of the type's blocks (32 or 256) for the quantized types, and any
// k for f32/f16/bf16; 16-element pieces at or beyond k (and float elements beyond it) load as
// zeros.
//
// Precision: x and the dequantized weights are rounded to f16 (11-bit significands, relative
// error ≤ 2^-11 each) and the products summed in f32, so an output's error is about 2^-11 of
// the root-sum-square of its terms (NMSE around 1e-7 for random data), the usual precision of
// tensor-core prefill (llama.cpp's cuBLAS path converts to f16 the same way). f32 weights take
// the same f16 path. Values beyond ±65504 become ±inf in f16: activations and dequantized
// weights of that size are not expected in the models kiln runs (the inputs are normalized).
//
// Reference: an f64 product of the CPU-dequantized weights. Tests: test/cuda/matmul.test.ts; test/backends/conformance.test.ts, on the host emulator always and on a GPU when present.
#include "dequant.cuh"

#define KMM_BM 64
#define KMM_BN 64
#define KMM_BK 64
#define KMM_THREADS 128
// Shared-memory row stride in u32 words (two f16 each): 32 words of data + 4 of padding. The
// fragment loads read word (row0 + g)·36 + t + c for g < 8, t < 4: 36g + t ≡ 4g + t (mod 32)
// covers 32 distinct banks.
#define KMM_LD 36
#define KMM_TILE_WORDS (KMM_BM * KMM_LD)
// 16-element pieces per thread per operand: (64 rows × 64 k) / 16 / 128 threads.
#define KMM_PIECES 2

// x elements e0..e0+15 of one row, the loads only (XV: 16-byte loads allowed), and their f32
// values; elements at or beyond k are 0.
struct KmmXRaw { float v[16]; };
template <bool XV>
KILN_FN void kmm_fetch_x(const float* row, i64 e0, i64 k, KmmXRaw& r) {
#if defined(KILN_DEVICE_BUILD)
  if (XV && e0 + 16 <= k) {
    const float4* p = reinterpret_cast<const float4*>(row + e0);
    #pragma unroll
    for (int v = 0; v < 4; v++) {
      const float4 f = p[v];
      r.v[4 * v] = f.x; r.v[4 * v + 1] = f.y; r.v[4 * v + 2] = f.z; r.v[4 * v + 3] = f.w;
    }
    return;
  }
#endif
  #pragma unroll
  for (int i = 0; i < 16; i++) r.v[i] = e0 + i < k ? row[e0 + i] : 0.0f;
}

// Each thread fills row lr = tid / 2 of both tiles, k pieces 2·(tid % 2) + {0, 1} (32 contiguous
// elements). The loads for slice k0 go to registers first (fetch), are converted and stored to
// shared memory later (stash), so the next slice's global loads overlap this slice's MMAs.
template <int ID, bool XV>
struct KmmLoader {
  using R = KdqRow16<ID>;
  const float* xrow;
  const u8* wrow;
  bool xIn, wIn, vec;
  i64 k;
  int lr, lh;
  KmmXRaw xr[KMM_PIECES];
  typename R::Raw wr[KMM_PIECES];
};

template <int ID, bool XV>
KILN_FN void kmm_fetch(KmmLoader<ID, XV>& ld, i64 k0) {
  #pragma unroll
  for (int q = 0; q < KMM_PIECES; q++) {
    const i64 e0 = k0 + 16 * (KMM_PIECES * ld.lh + q);
    if (ld.xIn) kmm_fetch_x<XV>(ld.xrow, e0, ld.k, ld.xr[q]);
    if (ld.wIn) KdqRow16<ID>::fetch(ld.wrow, e0, ld.k, ld.vec, ld.wr[q]);
  }
}

struct alignas(16) KmmU4 { u32 x, y, z, w; };

template <int ID, bool XV>
KILN_FN void kmm_stash(const KmmLoader<ID, XV>& ld, i64 k0, u32* As, u32* Bs) {
  #pragma unroll
  for (int q = 0; q < KMM_PIECES; q++) {
    const i64 e0 = k0 + 16 * (KMM_PIECES * ld.lh + q);
    const int off = ld.lr * KMM_LD + 8 * (KMM_PIECES * ld.lh + q);
    // A piece is 8 words stored as two 16-byte writes (off is a multiple of 4 words: rows of
    // KMM_LD = 36 words, pieces of 8): word-by-word stores would hit only 8 banks per warp.
    alignas(16) u32 xw[8];
    alignas(16) u32 ww[8];
    #pragma unroll
    for (int i = 0; i < 8; i++) xw[i] = ld.xIn ? kiln_pack_f16x2(ld.xr[q].v[2 * i], ld.xr[q].v[2 * i + 1]) : 0u;
    if (ld.wIn) {
      float y[16];
      KdqRow16<ID>::convert(ld.wr[q], e0, ld.k, y);
      #pragma unroll
      for (int i = 0; i < 8; i++) ww[i] = kiln_pack_f16x2(y[2 * i], y[2 * i + 1]);
    } else {
      #pragma unroll
      for (int i = 0; i < 8; i++) ww[i] = 0u;
    }
    KmmU4* ad = reinterpret_cast<KmmU4*>(As + off);
    KmmU4* bd = reinterpret_cast<KmmU4*>(Bs + off);
    const KmmU4* xs = reinterpret_cast<const KmmU4*>(xw);
    const KmmU4* ws = reinterpret_cast<const KmmU4*>(ww);
    ad[0] = xs[0];
    ad[1] = xs[1];
    bd[0] = ws[0];
    bd[1] = ws[1];
  }
}

// smem: two buffers of [As | Bs], each KMM_TILE_WORDS u32: As the x tile [BM rows][BK k], Bs the
// W tile [BN rows][BK k], f16 pairs. Double-buffered, so one kiln_sync per k slice suffices:
// slice s + 2 is stored into buffer s % 2 only after the barrier of slice s + 1, which every
// warp passes only after its MMAs on slice s.
template <int ID, bool XV>
KILN_FN void kmm_tile(const LinearArgs& a, u32* smem) {
  const int tid = (int)threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int wm = warp >> 1, wn = warp & 1;  // the warp's 32 × 32 sub-tile
  const int m0 = (int)blockIdx.y * KMM_BM, n0 = (int)blockIdx.x * KMM_BN;
  const i64 k = a.k;
  const i64 rb = kdq_row_bytes<ID>(k);
  const u8* W = static_cast<const u8*>(a.w);

  KmmLoader<ID, XV> ld;
  ld.k = k;
  ld.lr = tid >> 1;
  ld.lh = tid & 1;
  ld.xIn = m0 + ld.lr < a.m;
  ld.wIn = n0 + ld.lr < a.n;
  ld.xrow = a.x + (i64)(m0 + ld.lr) * a.ldx;
  ld.wrow = W + (i64)(n0 + ld.lr) * rb;
  // Float rows as 16-byte words: every row start 16-byte aligned.
  ld.vec = KdqIsFloat<ID>::value && ((u64)W & 15u) == 0 && (rb & 15) == 0;

  float acc[2][4][4];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++)
      for (int c = 0; c < 4; c++) acc[i][j][c] = 0.0f;

  kmm_fetch(ld, 0);
  int buf = 0;
  for (i64 k0 = 0; k0 < k; k0 += KMM_BK, buf ^= 1) {
    u32* As = smem + buf * 2 * KMM_TILE_WORDS;
    u32* Bs = As + KMM_TILE_WORDS;
    kmm_stash(ld, k0, As, Bs);
    kiln_sync();
    if (k0 + KMM_BK < k) kmm_fetch(ld, k0 + KMM_BK);  // in flight during the MMAs below

    for (int kk = 0; kk < KMM_BK / 2; kk += 8) {  // 16 halves = 8 words per MMA k step
      u32 af[2][4], bf[4][2];
      for (int i = 0; i < 2; i++) {
        const u32* r0 = As + (32 * wm + 16 * i + g) * KMM_LD + kk + t;
        const u32* r1 = r0 + 8 * KMM_LD;
        af[i][0] = r0[0];
        af[i][1] = r1[0];
        af[i][2] = r0[4];
        af[i][3] = r1[4];
      }
      for (int j = 0; j < 4; j++) {
        const u32* c0 = Bs + (32 * wn + 8 * j + g) * KMM_LD + kk + t;
        bf[j][0] = c0[0];
        bf[j][1] = c0[4];
      }
      for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) kiln_mma_16816(acc[i][j], af[i], bf[j], acc[i][j]);
    }
  }

  // c[0..1]: C[g][2t..2t+1], c[2..3]: C[g+8][2t..2t+1] of each 16 × 8 piece.
  for (int i = 0; i < 2; i++) {
    for (int j = 0; j < 4; j++) {
      const int col = n0 + 32 * wn + 8 * j + 2 * t;
      for (int h = 0; h < 2; h++) {
        const int row = m0 + 32 * wm + 16 * i + g + 8 * h;
        if (row >= a.m) continue;
        float* o = a.out + (i64)row * a.ldo;
        if (col < a.n) o[col] = acc[i][j][2 * h];
        if (col + 1 < a.n) o[col + 1] = acc[i][j][2 * h + 1];
      }
    }
  }
}

template <int ID>
KILN_FN void kmm_run(const LinearArgs& a) {
  // Declared here, not in kmm_tile: each instantiation's static shared array would count.
  alignas(16) KILN_SHARED u32 smem[4 * KMM_TILE_WORDS];  // 36 KiB; 16-aligned for kmm_stash's 16-byte stores
  if (((u64)a.x & 15u) == 0 && (a.ldx & 3) == 0) kmm_tile<ID, true>(a, smem);
  else kmm_tile<ID, false>(a, smem);
}

KILN_KERNEL(kiln_matmul_f32, LinearArgs) { kmm_run<KDQ_F32>(a); }
KILN_KERNEL(kiln_matmul_f16, LinearArgs) { kmm_run<KDQ_F16>(a); }
KILN_KERNEL(kiln_matmul_bf16, LinearArgs) { kmm_run<KDQ_BF16>(a); }
KILN_KERNEL(kiln_matmul_q4_0, LinearArgs) { kmm_run<KDQ_Q4_0>(a); }
KILN_KERNEL(kiln_matmul_q4_1, LinearArgs) { kmm_run<KDQ_Q4_1>(a); }
KILN_KERNEL(kiln_matmul_q5_0, LinearArgs) { kmm_run<KDQ_Q5_0>(a); }
KILN_KERNEL(kiln_matmul_q5_1, LinearArgs) { kmm_run<KDQ_Q5_1>(a); }
KILN_KERNEL(kiln_matmul_q8_0, LinearArgs) { kmm_run<KDQ_Q8_0>(a); }
KILN_KERNEL(kiln_matmul_q4_k, LinearArgs) { kmm_run<KDQ_Q4_K>(a); }
KILN_KERNEL(kiln_matmul_q5_k, LinearArgs) { kmm_run<KDQ_Q5_K>(a); }
KILN_KERNEL(kiln_matmul_q6_k, LinearArgs) { kmm_run<KDQ_Q6_K>(a); }

