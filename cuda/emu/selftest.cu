// selftest.cu — test-only kernels for the emulator itself (test/cuda/emulator.test.ts).
// Built like the others into libkiln-cuda-emu-emu-selftest.so; not part of the device kernel set.
// These kernels are themselves the test fixtures: each test states the exact answer its kernel
// must give (a host sum, a plain f32 matmul of the same f16 values, a deadlock error).
#include "kiln_cuda.cuh"

// out[row] = sum of x[row*n .. row*n+n): strided loads, warp shuffles, shared partials, kiln_sync.
struct EmuBlockSumArgs { const float* x; float* out; i32 n; };
KILN_KERNEL(kiln_emutest_block_sum, EmuBlockSumArgs) {
  KILN_SHARED float partial[32];
  const float* row = a.x + (u64)blockIdx.x * a.n;
  float s = 0.0f;
  for (int i = threadIdx.x; i < a.n; i += blockDim.x) s += row[i];
  s = kiln_warp_sum(s);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = (blockDim.x + 31) >> 5;
  if (lane == 0) partial[warp] = s;
  kiln_sync();
  if (warp == 0) {
    float t = lane < nwarps ? partial[lane] : 0.0f;
    t = kiln_warp_sum(t);
    if (lane == 0) a.out[blockIdx.x] = t;
  }
}

// A barrier only half the block reaches: must be reported as a deadlock.
struct EmuOutArgs { float* out; };
KILN_KERNEL(kiln_emutest_divergent_sync, EmuOutArgs) {
  if (threadIdx.x < 16) kiln_sync();
  a.out[threadIdx.x] = 1.0f;
}

// Lane 5 exits, then the warp shuffles: reading an exited lane is an error.
KILN_KERNEL(kiln_emutest_exited_lane, EmuOutArgs) {
  if ((threadIdx.x & 31) == 5) return;
  a.out[threadIdx.x] = kiln_warp_sum(1.0f);
}

// D = A (16x16 f16, row-major) * B (16x8 f16, [k][n] row-major) + C (16x8 f32), one warp,
// fragments packed per kiln_cuda.cuh's layout; swapA12 != 0 packs a[1]/a[2] swapped (wrong).
struct EmuMmaArgs { const u16* A; const u16* B; const float* C; float* D; i32 swapA12; };
KILN_KERNEL(kiln_emutest_mma, EmuMmaArgs) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  auto pk = [](u16 lo, u16 hi) { return (u32)lo | ((u32)hi << 16); };
  u32 fa[4], fb[2];
  float fc[4], fd[4];
  fa[0] = pk(a.A[g * 16 + 2 * t], a.A[g * 16 + 2 * t + 1]);
  fa[1] = pk(a.A[(g + 8) * 16 + 2 * t], a.A[(g + 8) * 16 + 2 * t + 1]);
  fa[2] = pk(a.A[g * 16 + 2 * t + 8], a.A[g * 16 + 2 * t + 9]);
  fa[3] = pk(a.A[(g + 8) * 16 + 2 * t + 8], a.A[(g + 8) * 16 + 2 * t + 9]);
  if (a.swapA12) { u32 s = fa[1]; fa[1] = fa[2]; fa[2] = s; }
  fb[0] = pk(a.B[(2 * t) * 8 + g], a.B[(2 * t + 1) * 8 + g]);
  fb[1] = pk(a.B[(2 * t + 8) * 8 + g], a.B[(2 * t + 9) * 8 + g]);
  fc[0] = a.C[g * 8 + 2 * t];
  fc[1] = a.C[g * 8 + 2 * t + 1];
  fc[2] = a.C[(g + 8) * 8 + 2 * t];
  fc[3] = a.C[(g + 8) * 8 + 2 * t + 1];
  kiln_mma_16816(fd, fa, fb, fc);
  a.D[g * 8 + 2 * t] = fd[0];
  a.D[g * 8 + 2 * t + 1] = fd[1];
  a.D[(g + 8) * 8 + 2 * t] = fd[2];
  a.D[(g + 8) * 8 + 2 * t + 1] = fd[3];
}

// Each thread stores x[block*bs + t] into dynamic shared memory (blocks > 0 skip it when
// skipWrite), syncs, and reads its neighbour's slot: out = x of thread (t+1) % bs of the block.
struct EmuSmemArgs { const float* x; float* out; i32 skipWrite; };
KILN_KERNEL(kiln_emutest_smem, EmuSmemArgs) {
  KILN_DYNAMIC_SMEM(float, s);
  const int bs = blockDim.x, t = threadIdx.x, base = blockIdx.x * bs;
  if (!(a.skipWrite && blockIdx.x > 0)) s[t] = a.x[base + t];
  kiln_sync();
  a.out[base + t] = s[(t + 1) % bs];
}

// Every thread writes its ids: out[linear global thread] = {tx,ty,tz,bx,by,bz, shfl of lane^1's linear}.
struct EmuIdsArgs { u32* out; };
KILN_KERNEL(kiln_emutest_ids, EmuIdsArgs) {
  const u32 tlin = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
  const u32 blin = blockIdx.x + blockIdx.y * gridDim.x + blockIdx.z * gridDim.x * gridDim.y;
  const u32 nt = blockDim.x * blockDim.y * blockDim.z;
  u32* o = a.out + (u64)(blin * nt + tlin) * 7;
  o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
  o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
  o[6] = (u32)kiln_shfl_xor_i((int)tlin, 1);
}
