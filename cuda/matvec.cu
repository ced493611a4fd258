// matvec.cu — decode-time matrix × vector(s): out[r·ldo + j] = W[j, :] · x[r·ldx + :] for
// j < n output rows and r < m ≤ 8 activation rows, W in its GGUF block layout (dequant.cuh),
// x and out f32. Launchers: src/backends/cuda/kernels/matmul.ts (matvec, matvecGated).
//
// Decode is bound by the weight bytes (every weight is read once per token), so the kernel is
// built around streaming W once:
//   * one warp per output row, KMV_WARPS rows per block (256 threads);
//   * the 32 lanes walk the row's blocks together, lane i taking piece i % NP of block i / NP
//     (dequant.cuh's lane pieces), so a warp reads one contiguous span of the row per step
//     with 4-byte (legacy types, q6_k) or 16-byte (q4_k, q5_k, float rows) loads per lane;
//   * each lane loads its next piece before decoding the current one (two in flight);
//   * every piece is dequantized ONCE into registers and applied to all m activation rows (x is
//     read through L1: the block's 8 warps and all blocks share it; 16-byte loads when x and
//     ldx are 16-byte aligned);
//   * per-lane f32 partial sums (the block scale factored out of each sub-block's sum), then a
//     warp-shuffle reduction and one store per (row, output).
// The gated variant streams the gate and up rows of the same j together and writes
// act(gate·x)·(up·x), the FFN's first half in one launch.
//
// Precision: f32 products and sums of the exactly dequantized weights (summation order differs
// from the CPU kernels, which quantize x to 8 bits first: the two agree to the CPU's
// quantization error; against an f64 reference the error is f32 rounding only).
//
// Reference: an f64 product of the CPU-dequantized weights. Tests: test/cuda/matmul.test.ts; test/backends/conformance.test.ts, on the host emulator always and on a GPU when present.
#include "dequant.cuh"

struct MatvecGatedArgs {
  const void* gate;
  const void* up;
  const float* x;
  float* out;
  i32 n;
  i32 k;
  i32 m;
  i32 ldx;
  i32 ldo;
  i32 act;  // 0 silu, 1 gelu_tanh
};

#define KMV_WARPS 8
#define KMV_MAXM 8

// ---------------------------------------------------------------------------------------------
// Float rows as pieces: 16 bytes per lane (4 f32 or 8 f16/bf16) when k allows, else one
// element per lane. Same interface as KdqT (GS = elements per contiguous group).
// ---------------------------------------------------------------------------------------------
template <int ID> struct KmvFloatVec;
template <> struct KmvFloatVec<KDQ_F32> {
  static constexpr int QK = 4, BYTES = 16, NP = 1, E = 4, NG = 1, NS = 1, GS = 4;
  static constexpr bool HAS_MIN = false;
  KILN_FN int pos(int, int g) { return 4 * g; }
  struct Raw { u32 v[4]; };
  KILN_FN void load(const u8* b, int, Raw& r) { kdq_ld128(b, r.v); }
  KILN_FN void decode(const Raw& r, int, float q[E], float sc[NS], float mn[NS]) {
    for (int i = 0; i < 4; i++) q[i] = kiln_as_float(r.v[i]);
    sc[0] = 1.0f;
    mn[0] = 0.0f;
  }
};
template <int ID> struct KmvHalfVec {
  static constexpr int QK = 8, BYTES = 16, NP = 1, E = 8, NG = 2, NS = 1, GS = 4;
  static constexpr bool HAS_MIN = false;
  KILN_FN int pos(int, int g) { return 4 * g; }
  struct Raw { u32 v[4]; };
  KILN_FN void load(const u8* b, int, Raw& r) { kdq_ld128(b, r.v); }
  KILN_FN void decode(const Raw& r, int, float q[E], float sc[NS], float mn[NS]) {
    for (int i = 0; i < 4; i++) {
      const u16 lo = (u16)(r.v[i] & 0xFFFFu), hi = (u16)(r.v[i] >> 16);
      if constexpr (ID == KDQ_F16) {
        q[2 * i] = kiln_f16_to_f32(lo);
        q[2 * i + 1] = kiln_f16_to_f32(hi);
      } else {
        q[2 * i] = kiln_bf16_to_f32(lo);
        q[2 * i + 1] = kiln_bf16_to_f32(hi);
      }
    }
    sc[0] = 1.0f;
    mn[0] = 0.0f;
  }
};
template <> struct KmvFloatVec<KDQ_F16> : KmvHalfVec<KDQ_F16> {};
template <> struct KmvFloatVec<KDQ_BF16> : KmvHalfVec<KDQ_BF16> {};

template <int ID> struct KmvFloatScalar {
  static constexpr int QK = 1, BYTES = KdqFloatBytes<ID>::value, NP = 1, E = 1, NG = 1, NS = 1, GS = 1;
  static constexpr bool HAS_MIN = false;
  KILN_FN int pos(int, int) { return 0; }
  struct Raw { float v; };
  KILN_FN void load(const u8* b, int, Raw& r) { r.v = kdq_float_at<ID>(b, 0); }
  KILN_FN void decode(const Raw& r, int, float q[E], float sc[NS], float mn[NS]) {
    q[0] = r.v;
    sc[0] = 1.0f;
    mn[0] = 0.0f;
  }
};

// Quantized types: dequant.cuh's pieces, groups of 4.
template <int ID> struct KmvQuant : KdqT<ID> {
  static constexpr int GS = 4;
};

// ---------------------------------------------------------------------------------------------
// The kernel body
// ---------------------------------------------------------------------------------------------

// GS consecutive activations at p (XV: p is 16-byte aligned).
template <int GS, bool XV>
KILN_FN void kmv_load_x(const float* p, float v[GS]) {
#if defined(KILN_DEVICE_BUILD)
  if constexpr (XV && GS == 4) {
    const float4 f = *reinterpret_cast<const float4*>(p);
    v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
  } else
#endif
  {
    for (int i = 0; i < GS; i++) v[i] = p[i];
  }
}

// NW weight matrices (1, or 2 for gate/up) against M (1 or 8, the first m used) rows of x.
template <class T, int M, bool XV, int NW>
KILN_FN void kmv_body(const u8* w0, const u8* w1, const float* x, float* out, int n, int k, int m, int ldx, int ldo, int act) {
  const int warp = (int)(threadIdx.x >> 5), lane = (int)(threadIdx.x & 31);
  const int j = (int)blockIdx.x * KMV_WARPS + warp;
  if (j >= n) return;  // the whole warp: no shuffles are skipped by part of it
  const i64 rb = (i64)(k / T::QK) * T::BYTES;
  const u8* rows[NW];
  rows[0] = w0 + (i64)j * rb;
  if constexpr (NW == 2) rows[1] = w1 + (i64)j * rb;

  float acc[NW][M];
  for (int w = 0; w < NW; w++)
    for (int r = 0; r < M; r++) acc[w][r] = 0.0f;

  // Software pipelining: the next piece's raw words are loaded before this one is decoded, so
  // each lane has two pieces' weight loads in flight.
  const int total = (k / T::QK) * T::NP;
  typename T::Raw cur[NW], nxt[NW];
  if (lane < total)
    for (int w = 0; w < NW; w++) T::load(rows[w] + (i64)(lane / T::NP) * T::BYTES, lane % T::NP, cur[w]);
  for (int i = lane; i < total; i += 32) {
    const int blk = i / T::NP, p = i % T::NP;
    const int inext = i + 32;
    if (inext < total)
      for (int w = 0; w < NW; w++) T::load(rows[w] + (i64)(inext / T::NP) * T::BYTES, inext % T::NP, nxt[w]);
    float q[NW][T::E], sc[NW][T::NS], mn[NW][T::NS];
    for (int w = 0; w < NW; w++) T::decode(cur[w], p, q[w], sc[w], mn[w]);
    for (int w = 0; w < NW; w++) cur[w] = nxt[w];
    const float* xb = x + (i64)blk * T::QK;
#pragma unroll
    for (int r = 0; r < M; r++) {
      if (r >= m) break;
      const float* xr = xb + (i64)r * ldx;
#pragma unroll
      for (int s = 0; s < T::NS; s++) {
        float sq[NW], sx = 0.0f;
        for (int w = 0; w < NW; w++) sq[w] = 0.0f;
#pragma unroll
        for (int g = s * (T::NG / T::NS); g < (s + 1) * (T::NG / T::NS); g++) {
          float xv[T::GS];
          kmv_load_x<T::GS, XV>(xr + T::pos(p, g), xv);
#pragma unroll
          for (int e = 0; e < T::GS; e++) {
            for (int w = 0; w < NW; w++) sq[w] = fmaf(q[w][T::GS * g + e], xv[e], sq[w]);
            if constexpr (T::HAS_MIN) sx += xv[e];
          }
        }
        for (int w = 0; w < NW; w++) {
          acc[w][r] = fmaf(sc[w][s], sq[w], acc[w][r]);
          if constexpr (T::HAS_MIN) acc[w][r] = fmaf(mn[w][s], sx, acc[w][r]);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < M; r++) {
    if (r >= m) break;
    for (int w = 0; w < NW; w++) acc[w][r] = kiln_warp_sum(acc[w][r]);
    if (lane == 0) {
      float y = acc[0][r];
      if constexpr (NW == 2) y = kdq_gated_act(act, acc[0][r]) * acc[1][r];
      out[(i64)r * ldo + j] = y;
    }
  }
}

// Picks M (1 or 8) and whether x can be read as float4 (x 16-byte aligned, ldx % 4 == 0).
template <class T, int NW>
KILN_FN void kmv_dispatch(const u8* w0, const u8* w1, const float* x, float* out, int n, int k, int m, int ldx, int ldo, int act) {
  const bool xv = ((u64)x & 15u) == 0 && (ldx & 3) == 0;
  if (m == 1) {
    if (xv) kmv_body<T, 1, true, NW>(w0, w1, x, out, n, k, m, ldx, ldo, act);
    else kmv_body<T, 1, false, NW>(w0, w1, x, out, n, k, m, ldx, ldo, act);
  } else {
    if (xv) kmv_body<T, KMV_MAXM, true, NW>(w0, w1, x, out, n, k, m, ldx, ldo, act);
    else kmv_body<T, KMV_MAXM, false, NW>(w0, w1, x, out, n, k, m, ldx, ldo, act);
  }
}

template <int ID, int NW>
KILN_FN void kmv_run(const void* w0, const void* w1, const float* x, float* out, int n, int k, int m, int ldx, int ldo, int act) {
  const u8* a = static_cast<const u8*>(w0);
  const u8* b = static_cast<const u8*>(w1);
  if constexpr (KdqIsFloat<ID>::value) {
    // 16-byte rows loads need every row start aligned: k a multiple of the vector and the
    // weights 16-byte aligned.
    using V = KmvFloatVec<ID>;
    const bool vec = k % V::QK == 0 && ((u64)a & 15u) == 0 && (NW == 1 || ((u64)b & 15u) == 0);
    if (vec) kmv_dispatch<V, NW>(a, b, x, out, n, k, m, ldx, ldo, act);
    else kmv_dispatch<KmvFloatScalar<ID>, NW>(a, b, x, out, n, k, m, ldx, ldo, act);
  } else {
    kmv_dispatch<KmvQuant<ID>, NW>(a, b, x, out, n, k, m, ldx, ldo, act);
  }
}

template <int ID>
KILN_FN void kmv_plain(const LinearArgs& a) { kmv_run<ID, 1>(a.w, nullptr, a.x, a.out, a.n, a.k, a.m, a.ldx, a.ldo, 0); }
template <int ID>
KILN_FN void kmv_gated(const MatvecGatedArgs& a) { kmv_run<ID, 2>(a.gate, a.up, a.x, a.out, a.n, a.k, a.m, a.ldx, a.ldo, a.act); }

KILN_KERNEL(kiln_matvec_f32, LinearArgs) { kmv_plain<KDQ_F32>(a); }
KILN_KERNEL(kiln_matvec_f16, LinearArgs) { kmv_plain<KDQ_F16>(a); }
KILN_KERNEL(kiln_matvec_bf16, LinearArgs) { kmv_plain<KDQ_BF16>(a); }
KILN_KERNEL(kiln_matvec_q4_0, LinearArgs) { kmv_plain<KDQ_Q4_0>(a); }
KILN_KERNEL(kiln_matvec_q4_1, LinearArgs) { kmv_plain<KDQ_Q4_1>(a); }
KILN_KERNEL(kiln_matvec_q5_0, LinearArgs) { kmv_plain<KDQ_Q5_0>(a); }
KILN_KERNEL(kiln_matvec_q5_1, LinearArgs) { kmv_plain<KDQ_Q5_1>(a); }
KILN_KERNEL(kiln_matvec_q8_0, LinearArgs) { kmv_plain<KDQ_Q8_0>(a); }
KILN_KERNEL(kiln_matvec_q4_k, LinearArgs) { kmv_plain<KDQ_Q4_K>(a); }
KILN_KERNEL(kiln_matvec_q5_k, LinearArgs) { kmv_plain<KDQ_Q5_K>(a); }
KILN_KERNEL(kiln_matvec_q6_k, LinearArgs) { kmv_plain<KDQ_Q6_K>(a); }

KILN_KERNEL(kiln_matvec_gated_f32, MatvecGatedArgs) { kmv_gated<KDQ_F32>(a); }
KILN_KERNEL(kiln_matvec_gated_f16, MatvecGatedArgs) { kmv_gated<KDQ_F16>(a); }
KILN_KERNEL(kiln_matvec_gated_bf16, MatvecGatedArgs) { kmv_gated<KDQ_BF16>(a); }
KILN_KERNEL(kiln_matvec_gated_q4_0, MatvecGatedArgs) { kmv_gated<KDQ_Q4_0>(a); }
KILN_KERNEL(kiln_matvec_gated_q4_1, MatvecGatedArgs) { kmv_gated<KDQ_Q4_1>(a); }
KILN_KERNEL(kiln_matvec_gated_q5_0, MatvecGatedArgs) { kmv_gated<KDQ_Q5_0>(a); }
KILN_KERNEL(kiln_matvec_gated_q5_1, MatvecGatedArgs) { kmv_gated<KDQ_Q5_1>(a); }
KILN_KERNEL(kiln_matvec_gated_q8_0, MatvecGatedArgs) { kmv_gated<KDQ_Q8_0>(a); }
KILN_KERNEL(kiln_matvec_gated_q4_k, MatvecGatedArgs) { kmv_gated<KDQ_Q4_K>(a); }
KILN_KERNEL(kiln_matvec_gated_q5_k, MatvecGatedArgs) { kmv_gated<KDQ_Q5_K>(a); }
KILN_KERNEL(kiln_matvec_gated_q6_k, MatvecGatedArgs) { kmv_gated<KDQ_Q6_K>(a); }
