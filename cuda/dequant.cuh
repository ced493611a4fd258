// dequant.cuh — the GGUF weight types on the device: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1,
// q8_0, q4_k, q5_k, q6_k, stored exactly as in the file (row-major [n][k], a row a whole number
// of blocks). Bit layouts and rounding follow zig-kernels/quant_legacy.zig and quant_k.zig
// (ggml's): every value dequantized here is bit-identical to dequantizeRowRef there.
//
// Two views of each type:
//   * KdqT<ID>::load16(blk, j, Raw16&) + decode16(raw, j, y[16]): elements 16j..16j+15 of one
//     block as f32, bit-exact (the get_rows kernel, and the tensor-core tile loader, which rounds
//     them to f16 pairs); KdqRow16 below wraps them, and the float types, by row position. For
//     the quantized types 16 divides the block size.
//   * the mat-vec lane view: a block is read by NP lanes; lane piece p ∈ [0, NP) loads its raw
//     words with KdqT<ID>::load(blk, p, Raw&) (separate, so a lane can have the next piece's
//     loads in flight while it decodes this one) and KdqT<ID>::decode(raw, p, q[E], sc[NS],
//     mn[NS]) turns them into E quants (exact floats, offsets such as q4_0's −8 already
//     applied) in NG = E/4 groups of 4 CONTIGUOUS elements, group g starting at element
//     pos(p, g) of the block; the groups split evenly into NS scale sets, set s = g / (NG/NS),
//     whose value is q·sc[s] + mn[s] (mn only when HAS_MIN). The dot product factors the scale
//     out: Σ w·x = sc·Σ q·x + mn·Σ x. Loads are 4-byte or 16-byte words where the block layout's
//     alignment allows (blocks of 20/24/144/176 bytes are 4/8/16/16-aligned given a 16-byte-aligned
//     base; 18/22/34/210-byte blocks only 2-aligned, read as u16 pairs).
//
// Float types (block size 1) have no piece view: the mat-vec reads them as 16-byte vectors (4
// f32 or 8 f16/bf16) when k allows, else one element per lane; see matvec.cu.
#pragma once
#include "kiln_cuda.cuh"

// GGML type ids (src/tensor.ts DTYPE_IDS).
#define KDQ_F32 0
#define KDQ_F16 1
#define KDQ_Q4_0 2
#define KDQ_Q4_1 3
#define KDQ_Q5_0 6
#define KDQ_Q5_1 7
#define KDQ_Q8_0 8
#define KDQ_Q4_K 12
#define KDQ_Q5_K 13
#define KDQ_Q6_K 14
#define KDQ_BF16 30

// ---------------------------------------------------------------------------------------------
// Loads (little-endian; the alignment each one needs is in its name)
// ---------------------------------------------------------------------------------------------
#if defined(KILN_DEVICE_BUILD)
KILN_FN u16 kdq_ld16(const u8* p) { return *reinterpret_cast<const u16*>(p); }
KILN_FN u32 kdq_ld32(const u8* p) { return *reinterpret_cast<const u32*>(p); }
KILN_FN void kdq_ld128(const u8* p, u32 v[4]) {
  const uint4 q = *reinterpret_cast<const uint4*>(p);
  v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
}
#else
KILN_FN u16 kdq_ld16(const u8* p) { u16 v; std::memcpy(&v, p, 2); return v; }
KILN_FN u32 kdq_ld32(const u8* p) { u32 v; std::memcpy(&v, p, 4); return v; }
KILN_FN void kdq_ld128(const u8* p, u32 v[4]) { std::memcpy(v, p, 16); }
#endif
// Four bytes from a 2-aligned address (two u16 loads).
KILN_FN u32 kdq_ld32_2(const u8* p) { return (u32)kdq_ld16(p) | ((u32)kdq_ld16(p + 2) << 16); }
// f16 at a 2-aligned address.
KILN_FN float kdq_f16(const u8* p) { return kiln_f16_to_f32(kdq_ld16(p)); }

// q (0 ≤ q < 2^23) as a float, minus `off`: exact, one LOP + one FADD instead of an I2F (which
// runs at a quarter of the FP32 rate and would bound the 4-bit mat-vec).
KILN_FN float kdq_u2f(u32 q, float off) { return kiln_as_float(0x4B000000u | q) - (8388608.0f + off); }
// Byte i (0..3) of w.
KILN_FN u32 kdq_byte(u32 w, int i) { return (w >> (8 * i)) & 0xFFu; }

// q4_k/q5_k scales (ggml's get_scale_min_k4): the 6-bit scale and min of sub-blocks 2c and
// 2c + 1 (c < 4) of the 12 packed bytes s (2-aligned), read as three u16: ab = a | b << 16 with
// a = s[o..o+1], b = s[4+o..5+o], and e = s[8+o..9+o], o = 2·(c % 2). Every byte
// get_scale_min_k4 reads for sub-block j = 2c + i is byte i of a, b or e:
//   j < 4:  sc = s[j] & 63 (a), m = s[j + 4] & 63 (b);
//   j ≥ 4:  sc = (s[j + 4] & 15) | (s[j − 4] >> 6) << 4 (e, a), m = (s[j + 4] >> 4) | (s[j] >> 6) << 4 (e, b).
KILN_FN void kdq_k4_load(const u8* s, int c, u32& ab, u32& e) {
  const int o = 2 * (c & 1);
  ab = (u32)kdq_ld16(s + o) | ((u32)kdq_ld16(s + 4 + o) << 16);
  e = kdq_ld16(s + 8 + o);
}
// sc[i] = d·scale, mn[i] = −dmin·min of sub-block 2c + i, from dd = (d, dmin) and kdq_k4_load's words.
KILN_FN void kdq_k4_scales(u32 dd, u32 ab, u32 e, int c, float sc[2], float mn[2]) {
  const float d = kiln_f16_to_f32((u16)(dd & 0xFFFFu)), dmin = kiln_f16_to_f32((u16)(dd >> 16));
  for (int i = 0; i < 2; i++) {
    const u32 A = kdq_byte(ab, i), B = kdq_byte(ab, 2 + i), E = kdq_byte(e, i);
    const u32 scv = c < 2 ? (A & 63u) : ((E & 15u) | ((A >> 6) << 4));
    const u32 mv = c < 2 ? (B & 63u) : ((E >> 4) | ((B >> 6) << 4));
    sc[i] = d * (float)scv;
    mn[i] = -(dmin * (float)mv);
  }
}

// Tail of every decode16: y = q·d (+ m). q·d is exact in f32 (≤ 8-bit q times an 11-bit f16
// mantissa), so fused or not the sum rounds once, as ggml's expression.

// ---------------------------------------------------------------------------------------------
// Legacy 32-element blocks
// ---------------------------------------------------------------------------------------------
template <int ID> struct KdqT;

// q4_0: {f16 d; u8 qs[16]}, y = (q − 8)·d; element j is qs[j] & 15, element j + 16 is qs[j] >> 4.
template <> struct KdqT<KDQ_Q4_0> {
  static constexpr int QK = 32, BYTES = 18, NP = 4, E = 8, NG = 2, NS = 1;
  static constexpr bool HAS_MIN = false;
  KILN_FN int pos(int p, int g) { return 4 * p + 16 * g; }
  struct Raw { u32 v[2]; };
  KILN_FN void load(const u8* b, int p, Raw& r) {
    r.v[0] = kdq_ld16(b);
    r.v[1] = kdq_ld32_2(b + 2 + 4 * p);
  }
  KILN_FN void decode(const Raw& r, int, float q[E], float sc[NS], float mn[NS]) {
    sc[0] = kiln_f16_to_f32((u16)r.v[0]);
    mn[0] = 0.0f;
    for (int i = 0; i < 4; i++) {
      q[i] = kdq_u2f(kdq_byte(r.v[1], i) & 15u, 8.0f);
      q[4 + i] = kdq_u2f(kdq_byte(r.v[1], i) >> 4, 8.0f);
    }
  }
  struct Raw16 { u32 v[5]; };
  KILN_FN void load16(const u8* b, int, Raw16& r) {
    r.v[0] = kdq_ld16(b);
    for (int v = 0; v < 4; v++) r.v[1 + v] = kdq_ld32_2(b + 2 + 4 * v);
  }
  KILN_FN void decode16(const Raw16& r, int j, float y[16]) {
    const float d = kiln_f16_to_f32((u16)r.v[0]);
    for (int v = 0; v < 4; v++) {
      const u32 w = r.v[1 + v];
      for (int i = 0; i < 4; i++) {
        const u32 q = j == 0 ? (kdq_byte(w, i) & 15u) : (kdq_byte(w, i) >> 4);
        y[4 * v + i] = kdq_u2f(q, 8.0f) * d;
      }
    }
  }
};

// q4_1: {f16 d; f16 m; u8 qs[16]}, y = q·d + m.
template <> struct KdqT<KDQ_Q4_1> {
  static constexpr int QK = 32, BYTES = 20, NP = 4, E = 8, NG = 2, NS = 1;
  static constexpr bool HAS_MIN = true;
  KILN_FN int pos(int p, int g) { return 4 * p + 16 * g; }
  struct Raw { u32 v[2]; };
  KILN_FN void load(const u8* b, int p, Raw& r) {
    r.v[0] = kdq_ld32(b);
    r.v[1] = kdq_ld32(b + 4 + 4 * p);
  }
  KILN_FN void decode(const Raw& r, int, float q[E], float sc[NS], float mn[NS]) {
    sc[0] = kiln_f16_to_f32((u16)(r.v[0] & 0xFFFFu));
    mn[0] = kiln_f16_to_f32((u16)(r.v[0] >> 16));
    for (int i = 0; i < 4; i++) {
      q[i] = kdq_u2f(kdq_byte(r.v[1], i) & 15u, 0.0f);
      q[4 + i] = kdq_u2f(kdq_byte(r.v[1], i) >> 4, 0.0f);
    }
  }
  struct Raw16 { u32 v[5]; };
  KILN_FN void load16(const u8* b, int, Raw16& r) {
    r.v[0] = kdq_ld32(b);
    for (int v = 0; v < 4; v++) r.v[1 + v] = kdq_ld32(b + 4 + 4 * v);
  }
  KILN_FN void decode16(const Raw16& r, int j, float y[16]) {
    const float d = kiln_f16_to_f32((u16)(r.v[0] & 0xFFFFu)), m = kiln_f16_to_f32((u16)(r.v[0] >> 16));
    for (int v = 0; v < 4; v++) {
      const u32 w = r.v[1 + v];
      for (int i = 0; i < 4; i++) {
        const u32 q = j == 0 ? (kdq_byte(w, i) & 15u) : (kdq_byte(w, i) >> 4);
        y[4 * v + i] = kdq_u2f(q, 0.0f) * d + m;
      }
    }
  }
};

// q5_0: {f16 d; u8 qh[4]; u8 qs[16]}, y = (q − 16)·d; low nibbles as q4_0, bit e of the u32 qh
// is bit 4 of element e.
template <> struct KdqT<KDQ_Q5_0> {
  static constexpr int QK = 32, BYTES = 22, NP = 4, E = 8, NG = 2, NS = 1;
  static constexpr bool HAS_MIN = false;
  KILN_FN int pos(int p, int g) { return 4 * p + 16 * g; }
  struct Raw { u32 v[3]; };
  KILN_FN void load(const u8* b, int p, Raw& r) {
    r.v[0] = kdq_ld16(b);
    r.v[1] = kdq_ld32_2(b + 2);
    r.v[2] = kdq_ld32_2(b + 6 + 4 * p);
  }
  KILN_FN void decode(const Raw& r, int p, float q[E], float sc[NS], float mn[NS]) {
    sc[0] = kiln_f16_to_f32((u16)r.v[0]);
    mn[0] = 0.0f;
    const u32 h = r.v[1], w = r.v[2];
    for (int i = 0; i < 4; i++) {
      const int e = 4 * p + i;
      q[i] = kdq_u2f((kdq_byte(w, i) & 15u) | (((h >> e) & 1u) << 4), 16.0f);
      q[4 + i] = kdq_u2f((kdq_byte(w, i) >> 4) | (((h >> (e + 16)) & 1u) << 4), 16.0f);
    }
  }
  struct Raw16 { u32 v[6]; };
  KILN_FN void load16(const u8* b, int, Raw16& r) {
    r.v[0] = kdq_ld16(b);
    r.v[1] = kdq_ld32_2(b + 2);
    for (int v = 0; v < 4; v++) r.v[2 + v] = kdq_ld32_2(b + 6 + 4 * v);
  }
  KILN_FN void decode16(const Raw16& r, int j, float y[16]) {
    const float d = kiln_f16_to_f32((u16)r.v[0]);
    const u32 h = r.v[1];
    for (int v = 0; v < 4; v++) {
      const u32 w = r.v[2 + v];
      for (int i = 0; i < 4; i++) {
        const int e = 16 * j + 4 * v + i;
        const u32 nib = j == 0 ? (kdq_byte(w, i) & 15u) : (kdq_byte(w, i) >> 4);
        y[4 * v + i] = kdq_u2f(nib | (((h >> e) & 1u) << 4), 16.0f) * d;
      }
    }
  }
};

// q5_1: {f16 d; f16 m; u8 qh[4]; u8 qs[16]}, y = q·d + m.
template <> struct KdqT<KDQ_Q5_1> {
  static constexpr int QK = 32, BYTES = 24, NP = 4, E = 8, NG = 2, NS = 1;
  static constexpr bool HAS_MIN = true;
  KILN_FN int pos(int p, int g) { return 4 * p + 16 * g; }
  struct Raw { u32 v[3]; };
  KILN_FN void load(const u8* b, int p, Raw& r) {
    r.v[0] = kdq_ld32(b);
    r.v[1] = kdq_ld32(b + 4);
    r.v[2] = kdq_ld32(b + 8 + 4 * p);
  }
  KILN_FN void decode(const Raw& r, int p, float q[E], float sc[NS], float mn[NS]) {
    sc[0] = kiln_f16_to_f32((u16)(r.v[0] & 0xFFFFu));
    mn[0] = kiln_f16_to_f32((u16)(r.v[0] >> 16));
    const u32 h = r.v[1], w = r.v[2];
    for (int i = 0; i < 4; i++) {
      const int e = 4 * p + i;
      q[i] = kdq_u2f((kdq_byte(w, i) & 15u) | (((h >> e) & 1u) << 4), 0.0f);
      q[4 + i] = kdq_u2f((kdq_byte(w, i) >> 4) | (((h >> (e + 16)) & 1u) << 4), 0.0f);
    }
  }
  struct Raw16 { u32 v[6]; };
  KILN_FN void load16(const u8* b, int, Raw16& r) {
    r.v[0] = kdq_ld32(b);
    r.v[1] = kdq_ld32(b + 4);
    for (int v = 0; v < 4; v++) r.v[2 + v] = kdq_ld32(b + 8 + 4 * v);
  }
  KILN_FN void decode16(const Raw16& r, int j, float y[16]) {
    const float d = kiln_f16_to_f32((u16)(r.v[0] & 0xFFFFu)), m = kiln_f16_to_f32((u16)(r.v[0] >> 16));
    const u32 h = r.v[1];
    for (int v = 0; v < 4; v++) {
      const u32 w = r.v[2 + v];
      for (int i = 0; i < 4; i++) {
        const int e = 16 * j + 4 * v + i;
        const u32 nib = j == 0 ? (kdq_byte(w, i) & 15u) : (kdq_byte(w, i) >> 4);
        y[4 * v + i] = kdq_u2f(nib | (((h >> e) & 1u) << 4), 0.0f) * d + m;
      }
    }
  }
};

// q8_0: {f16 d; i8 qs[32]}, y = q·d. Signed bytes go through the same exact conversion
// biased by 128 (q ^ 0x80 = q + 128 as unsigned).
template <> struct KdqT<KDQ_Q8_0> {
  static constexpr int QK = 32, BYTES = 34, NP = 4, E = 8, NG = 2, NS = 1;
  static constexpr bool HAS_MIN = false;
  KILN_FN int pos(int p, int g) { return 8 * p + 4 * g; }
  struct Raw { u32 v[3]; };
  KILN_FN void load(const u8* b, int p, Raw& r) {
    r.v[0] = kdq_ld16(b);
    r.v[1] = kdq_ld32_2(b + 2 + 8 * p);
    r.v[2] = kdq_ld32_2(b + 6 + 8 * p);
  }
  KILN_FN void decode(const Raw& r, int, float q[E], float sc[NS], float mn[NS]) {
    sc[0] = kiln_f16_to_f32((u16)r.v[0]);
    mn[0] = 0.0f;
    for (int v = 0; v < 2; v++) {
      const u32 w = r.v[1 + v] ^ 0x80808080u;
      for (int i = 0; i < 4; i++) q[4 * v + i] = kdq_u2f(kdq_byte(w, i), 128.0f);
    }
  }
  struct Raw16 { u32 v[5]; };
  KILN_FN void load16(const u8* b, int j, Raw16& r) {
    r.v[0] = kdq_ld16(b);
    for (int v = 0; v < 4; v++) r.v[1 + v] = kdq_ld32_2(b + 2 + 16 * j + 4 * v);
  }
  KILN_FN void decode16(const Raw16& r, int, float y[16]) {
    const float d = kiln_f16_to_f32((u16)r.v[0]);
    for (int v = 0; v < 4; v++) {
      const u32 w = r.v[1 + v] ^ 0x80808080u;
      for (int i = 0; i < 4; i++) y[4 * v + i] = kdq_u2f(kdq_byte(w, i), 128.0f) * d;
    }
  }
};

// ---------------------------------------------------------------------------------------------
// K-quants, 256-element blocks
// ---------------------------------------------------------------------------------------------

// q4_k: {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}. Eight 32-element sub-blocks with 6-bit
// scale sc and min m: y = (d·sc)·q − dmin·m. qs[32c + l] holds element 64c + l (low nibble,
// sub-block 2c) and 64c + 32 + l (high nibble, sub-block 2c + 1).
// Mat-vec lane piece p (8 per block): the 16 bytes qs[16p..16p+16), c = p/2, l0 = 16·(p%2):
// groups 0..3 are elements 64c + l0 + 4g (scale set 0 = sub-block 2c), groups 4..7 are
// 64c + 32 + l0 + 4(g−4) (set 1 = sub-block 2c + 1).
template <> struct KdqT<KDQ_Q4_K> {
  static constexpr int QK = 256, BYTES = 144, NP = 8, E = 32, NG = 8, NS = 2;
  static constexpr bool HAS_MIN = true;
  KILN_FN int pos(int p, int g) { return 64 * (p >> 1) + 16 * (p & 1) + (g < 4 ? 4 * g : 32 + 4 * (g - 4)); }
  // v[0]: d, dmin; v[1], v[2]: the scale bytes of sub-blocks 2c, 2c+1 (kdq_k4_load); v[3..6]: qs.
  struct Raw { u32 v[7]; };
  KILN_FN void load(const u8* b, int p, Raw& r) {
    r.v[0] = kdq_ld32(b);
    kdq_k4_load(b + 4, p >> 1, r.v[1], r.v[2]);
    kdq_ld128(b + 16 + 16 * p, r.v + 3);
  }
  KILN_FN void decode(const Raw& r, int p, float q[E], float sc[NS], float mn[NS]) {
    kdq_k4_scales(r.v[0], r.v[1], r.v[2], p >> 1, sc, mn);
    for (int v = 0; v < 4; v++) {
      for (int i = 0; i < 4; i++) {
        q[4 * v + i] = kdq_u2f(kdq_byte(r.v[3 + v], i) & 15u, 0.0f);
        q[16 + 4 * v + i] = kdq_u2f(kdq_byte(r.v[3 + v], i) >> 4, 0.0f);
      }
    }
  }
  // Elements 16j..16j+15: c = j/4, hi = (j/2)%2 (the nibble and sub-block 2c + hi), l0 = 16·(j%2).
  // v[0]: d, dmin; v[1], v[2]: kdq_k4_load's scale words of chunk c; v[3..6]: the 16 qs bytes.
  struct Raw16 { u32 v[7]; };
  KILN_FN void load16(const u8* b, int j, Raw16& r) {
    const int c = j >> 2, l0 = 16 * (j & 1);
    r.v[0] = kdq_ld32(b);
    kdq_k4_load(b + 4, c, r.v[1], r.v[2]);
    kdq_ld128(b + 16 + 32 * c + l0, r.v + 3);
  }
  // y = d1·q − m1 (get_scale_min_k4's scale and min of sub-block 2c + hi), written as
  // d1·q + (−m1), the same IEEE operation.
  KILN_FN void decode16(const Raw16& r, int j, float y[16]) {
    const int c = j >> 2, hi = (j >> 1) & 1;
    float sc[2], mn[2];
    kdq_k4_scales(r.v[0], r.v[1], r.v[2], c, sc, mn);
    const float d1 = hi ? sc[1] : sc[0], m1 = hi ? mn[1] : mn[0];
    for (int v = 0; v < 4; v++) {
      for (int i = 0; i < 4; i++) {
        const u32 q = hi ? (kdq_byte(r.v[3 + v], i) >> 4) : (kdq_byte(r.v[3 + v], i) & 15u);
        y[4 * v + i] = d1 * kdq_u2f(q, 0.0f) + m1;
      }
    }
  }
};

// q5_k: {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: q4_k plus a fifth bit, bit 2c
// of qh[l] for element 64c + l and bit 2c + 1 for element 64c + 32 + l.
template <> struct KdqT<KDQ_Q5_K> {
  static constexpr int QK = 256, BYTES = 176, NP = 8, E = 32, NG = 8, NS = 2;
  static constexpr bool HAS_MIN = true;
  KILN_FN int pos(int p, int g) { return 64 * (p >> 1) + 16 * (p & 1) + (g < 4 ? 4 * g : 32 + 4 * (g - 4)); }
  // v[0..2] as q4_k; v[3..6]: qs; v[7..10]: the qh bytes of the piece's 16 positions.
  struct Raw { u32 v[11]; };
  KILN_FN void load(const u8* b, int p, Raw& r) {
    r.v[0] = kdq_ld32(b);
    kdq_k4_load(b + 4, p >> 1, r.v[1], r.v[2]);
    kdq_ld128(b + 48 + 16 * p, r.v + 3);
    kdq_ld128(b + 16 + 16 * (p & 1), r.v + 7);
  }
  KILN_FN void decode(const Raw& r, int p, float q[E], float sc[NS], float mn[NS]) {
    const int c = p >> 1;
    kdq_k4_scales(r.v[0], r.v[1], r.v[2], c, sc, mn);
    const u32* w = r.v + 3;
    const u32* h = r.v + 7;
    for (int v = 0; v < 4; v++) {
      // Bits 2c and 2c + 1 of each qh byte moved to bits 4 of each byte.
      const u32 hl = ((h[v] >> (2 * c)) & 0x01010101u) << 4;
      const u32 hh = ((h[v] >> (2 * c + 1)) & 0x01010101u) << 4;
      const u32 lo = (w[v] & 0x0F0F0F0Fu) | hl;
      const u32 hi = ((w[v] >> 4) & 0x0F0F0F0Fu) | hh;
      for (int i = 0; i < 4; i++) {
        q[4 * v + i] = kdq_u2f(kdq_byte(lo, i), 0.0f);
        q[16 + 4 * v + i] = kdq_u2f(kdq_byte(hi, i), 0.0f);
      }
    }
  }
  // v[0..6] as q4_k (qs at offset 48); v[7..10]: the qh bytes of positions l0..l0+15.
  struct Raw16 { u32 v[11]; };
  KILN_FN void load16(const u8* b, int j, Raw16& r) {
    const int c = j >> 2, l0 = 16 * (j & 1);
    r.v[0] = kdq_ld32(b);
    kdq_k4_load(b + 4, c, r.v[1], r.v[2]);
    kdq_ld128(b + 48 + 32 * c + l0, r.v + 3);
    kdq_ld128(b + 16 + l0, r.v + 7);
  }
  KILN_FN void decode16(const Raw16& r, int j, float y[16]) {
    const int c = j >> 2, hi = (j >> 1) & 1;
    float sc[2], mn[2];
    kdq_k4_scales(r.v[0], r.v[1], r.v[2], c, sc, mn);
    const float d1 = hi ? sc[1] : sc[0], m1 = hi ? mn[1] : mn[0];
    const int bit = 2 * c + hi;
    for (int v = 0; v < 4; v++) {
      const u32 w = r.v[3 + v], h = r.v[7 + v];
      const u32 nib = hi ? ((w >> 4) & 0x0F0F0F0Fu) : (w & 0x0F0F0F0Fu);
      const u32 q4 = nib | (((h >> bit) & 0x01010101u) << 4);
      for (int i = 0; i < 4; i++) y[4 * v + i] = d1 * kdq_u2f(kdq_byte(q4, i), 0.0f) + m1;
    }
  }
};

// q6_k: {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} (210 bytes, 2-aligned). Element
// 128h + 32j + l (h < 2, j < 4, l < 32): low (j < 2) or high (j ≥ 2) nibble of
// ql[64h + 32(j%2) + l], bits 2j..2j+1 of qh[32h + l] as bits 4..5, minus 32; scale
// scales[8h + l/16 + 2j]; y = (d·sc)·(q − 32).
// Mat-vec lane piece p (16 per block): h = p/8, l0 = 4·(p%8); group j is elements
// 128h + 32j + l0 .. +3, each group its own scale set.
template <> struct KdqT<KDQ_Q6_K> {
  static constexpr int QK = 256, BYTES = 210, NP = 16, E = 16, NG = 4, NS = 4;
  static constexpr bool HAS_MIN = false;
  KILN_FN int pos(int p, int g) { return 128 * (p >> 3) + 32 * g + 4 * (p & 7); }
  // v[0]: d; v[1]: the 4 scale bytes of groups j = 0..3; v[2], v[3]: ql; v[4]: qh.
  struct Raw { u32 v[5]; };
  KILN_FN void load(const u8* b, int p, Raw& r) {
    const int h = p >> 3, l0 = 4 * (p & 7);
    r.v[0] = kdq_ld16(b + 208);
    const u8* scales = b + 192 + 8 * h + (l0 >> 4);
    r.v[1] = (u32)scales[0] | ((u32)scales[2] << 8) | ((u32)scales[4] << 16) | ((u32)scales[6] << 24);
    r.v[2] = kdq_ld32_2(b + 64 * h + l0);       // j = 0 (low), j = 2 (high)
    r.v[3] = kdq_ld32_2(b + 64 * h + 32 + l0);  // j = 1 (low), j = 3 (high)
    r.v[4] = kdq_ld32_2(b + 128 + 32 * h + l0);
  }
  KILN_FN void decode(const Raw& r, int, float q[E], float sc[NS], float mn[NS]) {
    const float d = kiln_f16_to_f32((u16)r.v[0]);
    for (int j = 0; j < 4; j++) {
      sc[j] = d * (float)(i8)kdq_byte(r.v[1], j);
      mn[j] = 0.0f;
    }
    const u32 qa = r.v[2], qb = r.v[3], qh = r.v[4];
    const u32 v[4] = {
        (qa & 0x0F0F0F0Fu) | ((qh & 0x03030303u) << 4),
        (qb & 0x0F0F0F0Fu) | (((qh >> 2) & 0x03030303u) << 4),
        ((qa >> 4) & 0x0F0F0F0Fu) | (((qh >> 4) & 0x03030303u) << 4),
        ((qb >> 4) & 0x0F0F0F0Fu) | (((qh >> 6) & 0x03030303u) << 4),
    };
    for (int j = 0; j < 4; j++)
      for (int i = 0; i < 4; i++) q[4 * j + i] = kdq_u2f(kdq_byte(v[j], i), 32.0f);
  }
  // Elements 16j..16j+15: h = j/8, jj = (j/2)%4, l0 = 16·(j%2).
  // v[0]: d | the scale byte << 16; v[1..4]: ql; v[5..8]: qh.
  struct Raw16 { u32 v[9]; };
  KILN_FN void load16(const u8* b, int j, Raw16& r) {
    const int h = j >> 3, jj = (j >> 1) & 3, l0 = 16 * (j & 1);
    r.v[0] = (u32)kdq_ld16(b + 208) | ((u32)b[192 + 8 * h + (l0 >> 4) + 2 * jj] << 16);
    for (int v = 0; v < 4; v++) {
      r.v[1 + v] = kdq_ld32_2(b + 64 * h + 32 * (jj & 1) + l0 + 4 * v);
      r.v[5 + v] = kdq_ld32_2(b + 128 + 32 * h + l0 + 4 * v);
    }
  }
  KILN_FN void decode16(const Raw16& r, int j, float y[16]) {
    const int jj = (j >> 1) & 3;
    const float ds = kiln_f16_to_f32((u16)(r.v[0] & 0xFFFFu)) * (float)(i8)kdq_byte(r.v[0], 2);
    for (int v = 0; v < 4; v++) {
      const u32 ql = r.v[1 + v];
      const u32 qh = r.v[5 + v];
      const u32 nib = jj < 2 ? (ql & 0x0F0F0F0Fu) : ((ql >> 4) & 0x0F0F0F0Fu);
      const u32 q6 = nib | (((qh >> (2 * jj)) & 0x03030303u) << 4);
      for (int i = 0; i < 4; i++) y[4 * v + i] = ds * kdq_u2f(kdq_byte(q6, i), 32.0f);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Float types: element e of a row
// ---------------------------------------------------------------------------------------------
template <int ID>
KILN_FN float kdq_float_at(const u8* row, i64 e) {
  if constexpr (ID == KDQ_F32) return reinterpret_cast<const float*>(row)[e];
  else if constexpr (ID == KDQ_F16) return kiln_f16_to_f32(reinterpret_cast<const u16*>(row)[e]);
  else return kiln_bf16_to_f32(reinterpret_cast<const u16*>(row)[e]);
}

template <int ID> struct KdqIsFloat { static constexpr bool value = false; };
template <> struct KdqIsFloat<KDQ_F32> { static constexpr bool value = true; };
template <> struct KdqIsFloat<KDQ_F16> { static constexpr bool value = true; };
template <> struct KdqIsFloat<KDQ_BF16> { static constexpr bool value = true; };

// Bytes per element of a float type.
template <int ID> struct KdqFloatBytes { static constexpr int value = ID == KDQ_F32 ? 4 : 2; };

// Elements e0..e0+15 (e0 a multiple of 16) of a row of k elements, in two steps so a loader can
// have the loads of its next tile in flight while it computes: KdqRow16<ID>::fetch(row, e0, k,
// vec, raw) issues the loads, convert(raw, e0, k, y) gives the exact f32 values. Elements at or
// beyond k read as 0 (for the quantized types k is a whole number of blocks, so a piece is
// either wholly inside or wholly beyond it). vec: float rows may be read as 16-byte words (the
// row start and e0's address 16-byte aligned: k a multiple of 4 (f32) or 8 (f16/bf16) and a
// 16-byte-aligned base).
template <int ID, bool IsFloat = KdqIsFloat<ID>::value> struct KdqRow16;

template <int ID> struct KdqRow16<ID, false> {
  using T = KdqT<ID>;
  struct Raw { typename T::Raw16 r; };
  KILN_FN void fetch(const u8* row, i64 e0, i64 k, bool, Raw& raw) {
    if (e0 < k) T::load16(row + (e0 / T::QK) * T::BYTES, (int)((e0 % T::QK) / 16), raw.r);
  }
  KILN_FN void convert(const Raw& raw, i64 e0, i64 k, float y[16]) {
    if (e0 < k) {
      T::decode16(raw.r, (int)((e0 % T::QK) / 16), y);
    } else {
      for (int i = 0; i < 16; i++) y[i] = 0.0f;
    }
  }
};

template <int ID> struct KdqRow16<ID, true> {
  static constexpr int EB = KdqFloatBytes<ID>::value;
  struct Raw { u32 v[EB * 4]; };  // the 16 elements' bytes
  KILN_FN void fetch(const u8* row, i64 e0, i64 k, bool vec, Raw& raw) {
    const u8* p = row + e0 * EB;
    if (vec && e0 + 16 <= k) {
      for (int q = 0; q < EB; q++) kdq_ld128(p + 16 * q, raw.v + 4 * q);
    } else if constexpr (EB == 4) {
      for (int i = 0; i < 16; i++) raw.v[i] = e0 + i < k ? kdq_ld32(p + 4 * i) : 0u;
    } else {
      for (int i = 0; i < 8; i++) {
        const u32 lo = e0 + 2 * i < k ? kdq_ld16(p + 4 * i) : 0u;
        const u32 hi = e0 + 2 * i + 1 < k ? kdq_ld16(p + 4 * i + 2) : 0u;
        raw.v[i] = lo | (hi << 16);
      }
    }
  }
  // Zero bytes are +0 in every float type, so the tail needs no test here.
  KILN_FN void convert(const Raw& raw, i64, i64, float y[16]) {
    for (int i = 0; i < 16; i++) {
      if constexpr (ID == KDQ_F32) y[i] = kiln_as_float(raw.v[i]);
      else if constexpr (ID == KDQ_F16) y[i] = kiln_f16_to_f32((u16)(raw.v[i >> 1] >> (16 * (i & 1))));
      else y[i] = kiln_bf16_to_f32((u16)(raw.v[i >> 1] >> (16 * (i & 1))));
    }
  }
};

template <int ID>
KILN_FN void kdq_row16(const u8* row, i64 e0, i64 k, float y[16]) {
  typename KdqRow16<ID>::Raw raw;
  KdqRow16<ID>::fetch(row, e0, k, false, raw);
  KdqRow16<ID>::convert(raw, e0, k, y);
}

// 16 f32 → 8 f16 pairs (lo = even element), the tensor-core tile format.
KILN_FN void kdq_pack16_f16(const float y[16], u32 h[8]) {
  for (int i = 0; i < 8; i++) h[i] = kiln_pack_f16x2(y[2 * i], y[2 * i + 1]);
}

// Row bytes of k elements (k a whole number of blocks).
template <int ID>
KILN_FN i64 kdq_row_bytes(i64 k) {
  if constexpr (KdqIsFloat<ID>::value) {
    return k * KdqFloatBytes<ID>::value;
  } else {
    return (k / KdqT<ID>::QK) * KdqT<ID>::BYTES;
  }
}

// ---------------------------------------------------------------------------------------------
// The FFN's gate activations of matvec.cu's fused gated mat-vec, as
// zig-kernels/norm.zig writes them: silu(g) = g / (1 + e^−g); ggml's tanh GELU
// 0.5·g·(1 + tanh u), u = √(2/π)·g·(1 + 0.044715·g²), as the identical g / (1 + e^(−2u)).
// ---------------------------------------------------------------------------------------------
KILN_FN float kdq_silu(float g) { return g / (1.0f + expf(-g)); }
KILN_FN float kdq_gelu_tanh(float g) {
  const float u = 0.79788456080286535587989211986876f * g * (1.0f + 0.044715f * g * g);
  return g / (1.0f + expf(-2.0f * u));
}
// act: 0 silu, 1 gelu_tanh.
KILN_FN float kdq_gated_act(int act, float g) { return act == 1 ? kdq_gelu_tanh(g) : kdq_silu(g); }

// The one argument of every weight × activation kernel (kiln_matvec_<type> in matvec.cu,
// kiln_matmul_<type> in matmul.cu): out[r·ldo + j] = W[j, :] · x[r·ldx + :] for r < m, j < n,
// W in its GGUF block layout with rows of k elements. Packed by kernels/matmul.ts.
struct LinearArgs {
  const void* w;
  const float* x;
  float* out;
  i32 n;
  i32 k;
  i32 m;
  i32 ldx;
  i32 ldo;
};
