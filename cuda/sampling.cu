// sampling.cu — per-row argmax (greedy sampling on the device) and softmax.
//
// Reference: the CPU softmax and a host argmax. Tests: test/cuda/elementwise.test.ts, on the host emulator always and on a GPU when present.
#include "kiln_cuda.cuh"

#define KS_NEG_INF kiln_as_float(0xff800000u)

// Block-wide max / sum, every thread gets the result; blockDim a multiple of 32 (≤ 1024).
KILN_FN float ks_block_max(float v) {
  KILN_SHARED float red[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = kiln_warp_max(v);
  if (lane == 0) red[warp] = v;
  kiln_sync();
  float t = lane < nwarps ? red[lane] : KS_NEG_INF;
  t = kiln_warp_max(t);
  kiln_sync();  // red is reused by the next reduction
  return t;
}
KILN_FN float ks_block_sum(float v) {
  KILN_SHARED float red[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = kiln_warp_sum(v);
  if (lane == 0) red[warp] = v;
  kiln_sync();
  float t = lane < nwarps ? red[lane] : 0.0f;
  t = kiln_warp_sum(t);
  kiln_sync();
  return t;
}

// (value, index) with "better" = larger value, ties to the lower index; index -1 = none (NaN
// and -inf never win, as in src/runtime/sampling.ts argmax).
KILN_FN void ks_better(float& bv, int& bi, float v, int i) {
  if (i >= 0 && (bi < 0 || v > bv || (v == bv && i < bi))) {
    bv = v;
    bi = i;
  }
}

// out[r] = the first index of the largest value of row r (-1 when the row has no value > -inf).
// One block per row.
struct ArgmaxRowsArgs {
  const float* x;
  i32* out;
  i32 rows;
  i32 cols;
};
KILN_KERNEL(kiln_argmax_rows, ArgmaxRowsArgs) {
  KILN_SHARED float sv[32];
  KILN_SHARED int si[32];
  const u64 row = blockIdx.x;
  if (row >= (u64)a.rows) return;
  const float* x = a.x + row * (u64)a.cols;
  float bv = KS_NEG_INF;
  int bi = -1;
  for (int i = threadIdx.x; i < a.cols; i += blockDim.x) {
    const float v = x[i];
    if (v > bv) {  // false for NaN; strict, so a thread keeps its first (lowest) index on ties
      bv = v;
      bi = i;
    }
  }
  for (int m = 16; m > 0; m >>= 1) {
    const float ov = kiln_shfl_xor(bv, m);
    const int oi = kiln_shfl_xor_i(bi, m);
    ks_better(bv, bi, ov, oi);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  kiln_sync();
  if (warp == 0) {
    bv = lane < nwarps ? sv[lane] : KS_NEG_INF;
    bi = lane < nwarps ? si[lane] : -1;
    for (int m = 16; m > 0; m >>= 1) {
      const float ov = kiln_shfl_xor(bv, m);
      const int oi = kiln_shfl_xor_i(bi, m);
      ks_better(bv, bi, ov, oi);
    }
    if (lane == 0) a.out[row] = bi;
  }
}

// Softmax of each row in place (max-subtracted; -inf entries get 0; a row of only -inf becomes
// zeros). One block per row.
struct SoftmaxRowsArgs {
  float* x;
  i32 rows;
  i32 cols;
};
KILN_KERNEL(kiln_softmax_rows, SoftmaxRowsArgs) {
  const u64 row = blockIdx.x;
  if (row >= (u64)a.rows) return;
  float* x = a.x + row * (u64)a.cols;
  float m = KS_NEG_INF;
  for (int i = threadIdx.x; i < a.cols; i += blockDim.x) m = fmaxf(m, x[i]);
  m = ks_block_max(m);
  if (m == KS_NEG_INF) {
    for (int i = threadIdx.x; i < a.cols; i += blockDim.x) x[i] = 0.0f;
    return;  // the whole block takes this branch (m is the block's)
  }
  float s = 0.0f;
  for (int i = threadIdx.x; i < a.cols; i += blockDim.x) {
    const float e = expf(x[i] - m);
    x[i] = e;
    s += e;
  }
  s = ks_block_sum(s);
  const float inv = 1.0f / s;
  for (int i = threadIdx.x; i < a.cols; i += blockDim.x) x[i] *= inv;
}
