// copy.cu — device-to-device copies of f32 ranges (gathering each sequence's last row before the
// output head in a multi-sequence batch).
//
// Reference: a host copy of the same bytes. Tests: test/cuda/copy-kv.test.ts, on the host emulator always and on a GPU when present.
#include "kiln_cuda.cuh"

// CopyArgs: dst[i] = src[i] for i < n. Grid: ceil(n / 256) blocks of 256 threads. src and dst
// must not overlap (the launcher checks).
struct CopyArgs {
  const float* src;
  float* dst;
  i32 n;
};

KILN_KERNEL(kiln_copy_f32, CopyArgs) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < a.n) a.dst[i] = a.src[i];
}
