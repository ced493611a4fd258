// kv.cu — the KV-cache store of a decode step at a position read from device memory, so the
// launch's arguments are the same every token (a CUDA graph replays them unchanged).
//
// Reference: Float16Array rounding of the source rows at the position written. Tests: test/cuda/copy-kv.test.ts; test/cuda/model.test.ts (decode graphs), on the host emulator always and on a GPU when present.
#include "kiln_cuda.cuh"

// StoreKvArgs: cache rows pos[0] .. pos[0] + nRows - 1 (rows of rowElems f16) = f16(src rows),
// round to nearest even. The caller guarantees pos[0] + nRows ≤ capacity; the kernel also
// refuses a position outside [0, capacity - nRows] by writing nothing (a guard, not a contract).
// Grid: ceil(nRows * rowElems / 256) blocks of 256 threads.
struct StoreKvArgs {
  const float* src;
  u16* cache;
  const i32* pos;
  i32 rowElems;
  i32 nRows;
  i32 capacity;
};

KILN_KERNEL(kiln_store_kv_f16_at, StoreKvArgs) {
  const i32 p = a.pos[0];
  if (p < 0 || p > a.capacity - a.nRows) return;
  const i64 n = (i64)a.nRows * a.rowElems;
  const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) a.cache[(i64)p * a.rowElems + i] = kiln_f32_to_f16(a.src[i]);
}
