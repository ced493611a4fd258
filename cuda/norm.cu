// norm.cu — RMSNorm (optionally after the residual add) and per-head RMSNorm (QK-norm).
//
// Numerics follow zig-kernels/norm.zig (ggml's CPU rms_norm): squares rounded to f32, summed in
// f64, the mean rounded to f32, scale = 1/sqrtf(mean + eps), out = (x·scale)·w in that order.
//
// Reference: the CPU rmsNorm / rmsNormHeads (bit-exact on the emulator). Tests: test/cuda/elementwise.test.ts; test/backends/conformance.test.ts (f64), on the host emulator always and on a GPU when present.
#include "kiln_cuda.cuh"

#define KN_MAX_THREADS 1024

// Σ of one double per thread over the block (any blockDim ≤ KN_MAX_THREADS); every thread gets it.
KILN_FN double kn_block_sum_f64(double v) {
  KILN_SHARED double red[KN_MAX_THREADS];
  const unsigned t = threadIdx.x, n = blockDim.x;
  red[t] = v;
  kiln_sync();
  for (unsigned s = 1; s < n; s <<= 1) {
    if ((t & (2 * s - 1)) == 0 && t + s < n) red[t] += red[t + s];
    kiln_sync();
  }
  const double r = red[0];
  kiln_sync();  // red may be reused by the caller's next reduction
  return r;
}

// One row of n floats at x: x += residual (when given), out = rmsnorm(x)·weight. out may be x.
KILN_FN void kn_rmsnorm_row(float* x, const float* residual, const float* weight, float* out, int n, float eps) {
  double ss = 0.0;
  if (residual) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float v = x[i] + residual[i];
      x[i] = v;
      ss += (double)(v * v);
    }
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float v = x[i];
      ss += (double)(v * v);
    }
  }
  const double sum = kn_block_sum_f64(ss);
  const float mean = (float)(sum / (double)n);
  const float scale = 1.0f / sqrtf(mean + eps);
  // Each thread reads back only the elements it wrote: no barrier needed between the passes.
  if (weight) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = (x[i] * scale) * weight[i];
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = x[i] * scale;
  }
}

// One block per row.
struct RmsNormArgs {
  float* x;
  const float* residual;  // 0 = none
  const float* weight;    // 0 = none
  float* out;
  i32 rows;
  i32 cols;
  float eps;
};
KILN_KERNEL_BOUNDS(kiln_rmsnorm, RmsNormArgs, KN_MAX_THREADS) {
  const u64 row = blockIdx.x;
  if (row >= (u64)a.rows) return;  // whole block: no barrier is skipped by part of it
  const u64 off = row * (u64)a.cols;
  kn_rmsnorm_row(a.x + off, a.residual ? a.residual + off : nullptr, a.weight, a.out + off, a.cols, a.eps);
}

// One block per (row, head), blockIdx.x = row·nHead + head; in place, one weight for all heads.
struct RmsNormHeadsArgs {
  float* x;
  const float* weight;
  i32 rows;
  i32 nHead;
  i32 headDim;
  float eps;
};
KILN_KERNEL_BOUNDS(kiln_rmsnorm_heads, RmsNormHeadsArgs, KN_MAX_THREADS) {
  const u64 head = blockIdx.x;
  if (head >= (u64)a.rows * (u64)a.nHead) return;
  float* p = a.x + head * (u64)a.headDim;
  kn_rmsnorm_row(p, nullptr, a.weight, p, a.headDim, a.eps);
}
