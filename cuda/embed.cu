// embed.cu — the embedding lookup: out[i, :] = dequantize(table row ids[i]) for every weight
// type (dequant.cuh), bit-identical to the CPU's dequantizeRow. Launcher:
// src/backends/cuda/kernels/matmul.ts (getRows), which checks every id against the table's rows
// before the launch.
//
// Grid (nIds, ceil(cols / (16·blockDim.x))): each thread writes 16 consecutive elements of one
// output row (for the quantized types 16 divides the block size, so a piece never straddles a
// block; the float types stop at cols).
//
// Reference: the CPU dequantizeRow (bit-exact). Tests: test/cuda/matmul.test.ts (get_rows); test/backends/conformance.test.ts, on the host emulator always and on a GPU when present.
#include "dequant.cuh"

struct GetRowsArgs {
  const void* table;
  const i32* ids;
  float* out;
  i32 nIds;
  i32 cols;
  i32 dtype;     // GGML type id
  i32 rowBytes;  // bytes of one table row
};

template <int ID>
KILN_FN void kgr_piece(const u8* row, i64 e0, i64 cols, float* dst) {
  float y[16];
  kdq_row16<ID>(row, e0, cols, y);
  const int count = e0 + 16 <= cols ? 16 : (int)(cols - e0);
  for (int i = 0; i < count; i++) dst[i] = y[i];
}

KILN_KERNEL(kiln_get_rows, GetRowsArgs) {
  const i64 e0 = 16 * ((i64)blockIdx.y * blockDim.x + threadIdx.x);
  const int i = (int)blockIdx.x;
  if (i >= a.nIds || e0 >= a.cols) return;
  const u8* row = static_cast<const u8*>(a.table) + (i64)a.ids[i] * a.rowBytes;
  float* dst = a.out + (i64)i * a.cols + e0;
  switch (a.dtype) {
    case KDQ_F32: kgr_piece<KDQ_F32>(row, e0, a.cols, dst); break;
    case KDQ_F16: kgr_piece<KDQ_F16>(row, e0, a.cols, dst); break;
    case KDQ_BF16: kgr_piece<KDQ_BF16>(row, e0, a.cols, dst); break;
    case KDQ_Q4_0: kgr_piece<KDQ_Q4_0>(row, e0, a.cols, dst); break;
    case KDQ_Q4_1: kgr_piece<KDQ_Q4_1>(row, e0, a.cols, dst); break;
    case KDQ_Q5_0: kgr_piece<KDQ_Q5_0>(row, e0, a.cols, dst); break;
    case KDQ_Q5_1: kgr_piece<KDQ_Q5_1>(row, e0, a.cols, dst); break;
    case KDQ_Q8_0: kgr_piece<KDQ_Q8_0>(row, e0, a.cols, dst); break;
    case KDQ_Q4_K: kgr_piece<KDQ_Q4_K>(row, e0, a.cols, dst); break;
    case KDQ_Q5_K: kgr_piece<KDQ_Q5_K>(row, e0, a.cols, dst); break;
    case KDQ_Q6_K: kgr_piece<KDQ_Q6_K>(row, e0, a.cols, dst); break;
    default: break;  // the launcher accepts only the types above
  }
}
