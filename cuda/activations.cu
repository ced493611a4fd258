// activations.cu — elementwise kernels: gated activations, add/mul/scale, bias rows, f32→f16.
//
// One thread per element in a grid-stride loop (the launcher caps the grid). Formulas follow
// zig-kernels/norm.zig: silu(g) = g / (1 + e^-g); ggml's gelu_tanh evaluated as g / (1 + e^(-2u))
// with u = sqrt(2/π)·g·(1 + 0.044715·g²).
//
// Reference: the CPU kernels src/backends/cpu.ts siluMul/geluTanhMul/add/addBias/mul/scale (zig-kernels/norm.zig, activations.zig) and exact f16 rounding. Tests: test/cuda/elementwise.test.ts; test/backends/conformance.test.ts (f64), on the host emulator always and on a GPU when present.
#include "kiln_cuda.cuh"

// The element range one thread walks: i = start, start + stride, ... < n.
#define KA_FOR(i, n)                                                               \
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x, ka_stride_ = (u64)gridDim.x * blockDim.x; \
       i < (u64)(n); i += ka_stride_)

struct GatedArgs {
  const float* gate;
  const float* up;
  float* out;  // may be gate or up
  i32 n;
};
KILN_KERNEL(kiln_silu_mul, GatedArgs) {
  KA_FOR(i, a.n) {
    const float g = a.gate[i];
    a.out[i] = (g / (1.0f + expf(-g))) * a.up[i];
  }
}
KILN_KERNEL(kiln_gelu_tanh_mul, GatedArgs) {
  KA_FOR(i, a.n) {
    const float g = a.gate[i];
    const float u = 0.79788456080286535587989211986876f * g * (1.0f + 0.044715f * g * g);
    a.out[i] = (g / (1.0f + expf(-2.0f * u))) * a.up[i];
  }
}

// dst += src / dst *= src.
struct BinaryArgs {
  float* dst;
  const float* src;
  i32 n;
};
KILN_KERNEL(kiln_add, BinaryArgs) {
  KA_FOR(i, a.n) a.dst[i] += a.src[i];
}
KILN_KERNEL(kiln_mul, BinaryArgs) {
  KA_FOR(i, a.n) a.dst[i] *= a.src[i];
}

// x[r][c] += bias[c] for rows × cols.
struct AddBiasArgs {
  float* x;
  const float* bias;
  i32 rows;
  i32 cols;
};
KILN_KERNEL(kiln_add_bias, AddBiasArgs) {
  const u64 cols = (u64)a.cols;
  KA_FOR(i, (u64)a.rows * cols) a.x[i] += a.bias[i % cols];
}

// x *= s.
struct ScaleArgs {
  float* x;
  i32 n;
  float s;
};
KILN_KERNEL(kiln_scale, ScaleArgs) {
  KA_FOR(i, a.n) a.x[i] *= a.s;
}

// dst[i] = f16(src[i]), round to nearest even (the f16 KV cache store).
struct F32ToF16Args {
  const float* src;
  u16* dst;
  i32 n;
};
KILN_KERNEL(kiln_f32_to_f16, F32ToF16Args) {
  KA_FOR(i, a.n) a.dst[i] = kiln_f32_to_f16(a.src[i]);
}
