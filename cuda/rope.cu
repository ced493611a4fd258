// rope.cu — rotary position embedding in place, every head of every row.
//
// Pair k (k < nRot/2) of a head is rotated by θ_k = freqScale · (θ'_k / ff[k]) where θ'_0 = pos
// and θ'_{k+1} = θ'_k · thetaScale in f32, thetaScale = pow(freqBase, -2.0f/nRot) (the exponent
// rounded to f32 first): zig-kernels/rope.zig's (and ggml's) order. cos/sin are taken in double
// and rounded to f32. mode 0 (normal): the pair is (x[2k], x[2k+1]); mode 2 (neox): (x[k],
// x[k + nRot/2]). Dimensions at or beyond nRot are untouched.
//
// Reference: the CPU rope (zig-kernels/rope.zig). Tests: test/cuda/elementwise.test.ts; test/backends/conformance.test.ts (f64), on the host emulator always and on a GPU when present.
#include "kiln_cuda.cuh"

#define KR_MAX_ROT 1024

// One block per row: the block fills the row's cos/sin table, then rotates every head.
struct RopeArgs {
  float* x;
  const i32* positions;     // one per row
  const float* freqFactors; // nRot/2 divisors, 0 = none
  i32 rows;
  i32 nHead;
  i32 headDim;
  i32 nRot;
  i32 mode;                 // 0 normal, 2 neox
  float freqBase;
  float freqScale;
};
KILN_KERNEL(kiln_rope, RopeArgs) {
  KILN_SHARED float cs[KR_MAX_ROT / 2];
  KILN_SHARED float sn[KR_MAX_ROT / 2];
  const u64 row = blockIdx.x;
  if (row >= (u64)a.rows) return;
  const int half = a.nRot / 2;
  const float e = -2.0f / (float)a.nRot;
  const float thetaScale = (float)pow((double)a.freqBase, (double)e);
  const float pos = (float)a.positions[row];
  for (int k = threadIdx.x; k < half; k += blockDim.x) {
    float theta = pos;
    for (int j = 0; j < k; j++) theta *= thetaScale;  // the f32 recurrence, step by step
    const float ff = a.freqFactors ? a.freqFactors[k] : 1.0f;
    const float angle = a.freqScale * (theta / ff);
    cs[k] = (float)cos((double)angle);
    sn[k] = (float)sin((double)angle);
  }
  kiln_sync();
  float* base = a.x + row * (u64)a.nHead * (u64)a.headDim;
  const int pairs = a.nHead * half;
  for (int j = threadIdx.x; j < pairs; j += blockDim.x) {
    const int h = j / half, k = j - h * half;
    float* p = base + (u64)h * (u64)a.headDim;
    const int i0 = a.mode == 2 ? k : 2 * k;
    const int i1 = a.mode == 2 ? k + half : 2 * k + 1;
    const float x0 = p[i0], x1 = p[i1];
    const float c = cs[k], s = sn[k];
    p[i0] = x0 * c - x1 * s;
    p[i1] = x0 * s + x1 * c;
  }
}
