// kiln_cuda.cuh — the one portability layer every kernel in cuda/ is written against.
//
// The same kernel bodies build two ways:
//   * on the device: NVRTC compiles each cuda/*.cu at run time (src/backends/cuda/compile.ts
//     hands it this header and the other cuda/*.cuh by name); no CUDA headers are needed, so
//     the PyPI NVRTC wheel alone compiles them (half conversions and tensor-core MMA are inline PTX);
//   * on the host (KILN_HOST_EMU): zig c++ builds them into libkiln-cuda-emu, where cuda/emu/emu.cpp
//     runs every block's threads as fibers with real barriers, warp shuffles and MMA fragment
//     layouts, so kernel logic is tested against the CPU kernels without a GPU.
//
// Rules for kernels:
//   * every kernel takes ONE argument, a struct of plain fields: 8-byte fields (pointers as
//     u64-sized pointers, u64) first, then 4-byte fields (i32, u32, float), padded by the
//     compiler to a multiple of 8. The TypeScript side packs the same layout (argument packer
//     in src/backends/cuda/args.ts) and the emulator reports sizeof(Args) per kernel, which a
//     test compares.
//   * declare it with KILN_KERNEL(name, Args) (or KILN_KERNEL_BOUNDS with a max block size);
//     names start with kiln_ and are unique across cuda/.
//   * shared memory: KILN_SHARED T name[N]; dynamic: KILN_DYNAMIC_SMEM(T, name);
//   * warp-collective helpers (kiln_shfl_*, kiln_warp_*, kiln_mma_*) must be reached by all 32
//     lanes of the warp (the full mask); kiln_sync() by every thread of the block. The emulator
//     reports a deadlock otherwise.
//   * device helpers are KILN_FN; use expf/sqrtf/tanhf (not the __ fast intrinsics) unless a
//     kernel documents why.
#pragma once

#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
// ============================================================================ device (NVRTC)
#define KILN_DEVICE_BUILD 1
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef short i16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;
typedef long long i64;

#define KILN_FN static __device__ __forceinline__
#define KILN_SHARED __shared__
#define KILN_KERNEL(name, Args) extern "C" __global__ void name(const Args a)
#define KILN_KERNEL_BOUNDS(name, Args, maxThreads) extern "C" __global__ void __launch_bounds__(maxThreads) name(const Args a)
#define KILN_DYNAMIC_SMEM(T, name) \
  extern __shared__ __align__(16) unsigned char kiln_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(kiln_dynamic_smem_)

KILN_FN void kiln_sync() { __syncthreads(); }
KILN_FN float kiln_shfl_xor(float v, int laneMask) { return __shfl_xor_sync(0xffffffffu, v, laneMask); }
KILN_FN float kiln_shfl(float v, int srcLane) { return __shfl_sync(0xffffffffu, v, srcLane); }
KILN_FN int kiln_shfl_xor_i(int v, int laneMask) { return __shfl_xor_sync(0xffffffffu, v, laneMask); }
KILN_FN int kiln_shfl_i(int v, int srcLane) { return __shfl_sync(0xffffffffu, v, srcLane); }

KILN_FN float kiln_f16_to_f32(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
KILN_FN u16 kiln_f32_to_f16(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
KILN_FN float kiln_bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }
KILN_FN float kiln_as_float(u32 u) { return __uint_as_float(u); }
KILN_FN u32 kiln_as_u32(float f) { return __float_as_uint(f); }
KILN_FN float kiln_atomic_add(float* p, float v) { return atomicAdd(p, v); }

// D (16x8 f32) = A (16x16 f16, row-major) * B (16x8 f16, "col") + C, one warp, the fragment
// layout of PTX's mma.m16n8k16 (.f16 A/B, .f32 C/D); with g = lane>>2, t = lane&3:
//   a[r]: halves (lo, hi) of a[0]: A[g][2t..2t+1], a[1]: A[g+8][2t..2t+1],
//         a[2]: A[g][2t+8..2t+9], a[3]: A[g+8][2t+8..2t+9]
//   b[r]: halves of b[0]: B[2t..2t+1][g], b[1]: B[2t+8..2t+9][g]   (k rows, n = g)
//   c/d:  c[0..1]: C[g][2t..2t+1], c[2..3]: C[g+8][2t..2t+1]
KILN_FN void kiln_mma_16816(float d[4], const u32 a[4], const u32 b[2], const float c[4]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

#else
// ============================================================================ host emulation
#define KILN_HOST_EMU_BUILD 1
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
typedef uint8_t u8;
typedef int8_t i8;
typedef uint16_t u16;
typedef int16_t i16;
typedef uint32_t u32;
typedef int32_t i32;
typedef uint64_t u64;
typedef int64_t i64;

namespace kiln_emu {
struct Dim3 { unsigned x, y, z; };
struct ThreadIds { Dim3 thread, block; };
const ThreadIds& ids();            // the running fiber's thread and block index
const Dim3& block_dim();
const Dim3& grid_dim();
void sync_block();                 // __syncthreads: every thread of the block
void sync_warp();                  // a barrier of the running thread's warp (its live lanes)
unsigned lane();                   // linear thread index % 32
u32 warp_exchange(u32 v, unsigned srcLane); // all lanes publish v; returns lane srcLane's value
void* dynamic_smem();              // the launch's dynamic shared memory (16-byte aligned)
void mma_16816(float d[4], const u32 a[4], const u32 b[2], const float c[4]);
struct Registration {
  Registration(const char* name, size_t argBytes, void (*run)(const void* args));
};
}  // namespace kiln_emu

#define threadIdx (kiln_emu::ids().thread)
#define blockIdx (kiln_emu::ids().block)
#define blockDim (kiln_emu::block_dim())
#define gridDim (kiln_emu::grid_dim())
#define __restrict__ __restrict
// One block runs at a time on one OS thread, so a function-static array is block-shared memory.
#define KILN_SHARED static
#define KILN_FN static inline
#define KILN_KERNEL(name, Args)                                                             \
  static void name(const Args a);                                                           \
  static kiln_emu::Registration name##_registration(#name, sizeof(Args), [](const void* p) { \
    name(*static_cast<const Args*>(p));                                                     \
  });                                                                                       \
  static void name(const Args a)
#define KILN_KERNEL_BOUNDS(name, Args, maxThreads) KILN_KERNEL(name, Args)
#define KILN_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(kiln_emu::dynamic_smem())

KILN_FN void kiln_sync() { kiln_emu::sync_block(); }
KILN_FN float kiln_as_float(u32 u) { float f; std::memcpy(&f, &u, 4); return f; }
KILN_FN u32 kiln_as_u32(float f) { u32 u; std::memcpy(&u, &f, 4); return u; }
KILN_FN float kiln_shfl_xor(float v, int laneMask) { return kiln_as_float(kiln_emu::warp_exchange(kiln_as_u32(v), kiln_emu::lane() ^ (unsigned)laneMask)); }
KILN_FN float kiln_shfl(float v, int srcLane) { return kiln_as_float(kiln_emu::warp_exchange(kiln_as_u32(v), (unsigned)srcLane)); }
KILN_FN int kiln_shfl_xor_i(int v, int laneMask) { return (int)kiln_emu::warp_exchange((u32)v, kiln_emu::lane() ^ (unsigned)laneMask); }
KILN_FN int kiln_shfl_i(int v, int srcLane) { return (int)kiln_emu::warp_exchange((u32)v, (unsigned)srcLane); }
KILN_FN float kiln_f16_to_f32(u16 h) { _Float16 x; std::memcpy(&x, &h, 2); return (float)x; }
KILN_FN u16 kiln_f32_to_f16(float f) { _Float16 x = (_Float16)f; u16 h; std::memcpy(&h, &x, 2); return h; }
KILN_FN float kiln_bf16_to_f32(u16 b) { return kiln_as_float(((u32)b) << 16); }
// Not atomic here (one block at a time on one OS thread): the emulator cannot test a kernel's
// races on it. No kernel uses it today.
KILN_FN float kiln_atomic_add(float* p, float v) { float old = *p; *p = old + v; return old; }
KILN_FN void kiln_mma_16816(float d[4], const u32 a[4], const u32 b[2], const float c[4]) { kiln_emu::mma_16816(d, a, b, c); }
KILN_FN float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
using std::expf; using std::sqrtf; using std::tanhf; using std::fmaxf; using std::fminf; using std::fabsf; using std::logf;
#endif

// ============================================================================ both builds
KILN_FN float kiln_warp_sum(float v) {
  for (int m = 16; m > 0; m >>= 1) v += kiln_shfl_xor(v, m);
  return v;
}
KILN_FN float kiln_warp_max(float v) {
  for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, kiln_shfl_xor(v, m));
  return v;
}
// Two f32 → one u32 of two f16 (lo first), the register format of the MMA fragments.
KILN_FN u32 kiln_pack_f16x2(float lo, float hi) { return (u32)kiln_f32_to_f16(lo) | ((u32)kiln_f32_to_f16(hi) << 16); }
