//! GGUF K-quant weight types (Q4_K, Q5_K, Q6_K) and the Q8_K activation format their integer
//! dot products consume.
//!
//! Layouts, dequantization and the quantizers follow ggml (ggml-common.h / ggml-quants.c).
//! Every weight type exposes the namespace interface the traits table in quant.zig expects:
//! block_size, type_size, Block, act, dequantizeRow[Ref], vecDot[Ref] (+ quantizeRow).
//!
//! A 256-element super-block is processed as four 64-element chunks. For each chunk the dot
//! kernels form u8 weights (0..63) and i8 activations, multiply pairwise into i16
//! (vpmaddubsw / sdot) and apply the per-sub-block integer scales in i32 (vpmaddwd or, with
//! AVX-512 VNNI, the fused vpdpwssd). Offsets (Q4_K/Q5_K mins, Q6_K's −32) are applied once per
//! block through the activation's 16-element sums (bsums), so the integer totals per block equal
//! the scalar reference exactly; only the float accumulation order differs.
//!
//! SIMD paths are picked at comptime from the target CPU (the library is built once per level).
//! Weight rows are byte streams with no alignment guarantee, so all loads go through byte arrays.
const std = @import("std");
const builtin = @import("builtin");
const cpu = @import("cpu.zig");
const Prefetch = @import("quant_legacy.zig").Prefetch;

comptime {
    // Quants, f16 scalars and bsums are read by bit-casting byte arrays.
    std.debug.assert(builtin.cpu.arch.endian() == .little);
}

// ---------------------------------------------------------------------------------------------
// CPU features
// ---------------------------------------------------------------------------------------------

// Comptime flags of the build's CPU level (cpu.zig).
const has_avx2 = cpu.has_avx2;
const has_avx512bw = cpu.has_avx512bw;
/// vpdpwssd on zmm (AVX512_VNNI; llama.cpp has no such path for K-quants).
const has_vnni512 = cpu.has_vnni512;
const has_dotprod = cpu.has_dotprod;

extern fn @"llvm.x86.avx2.pmadd.ub.sw"(a: @Vector(32, u8), b: @Vector(32, i8)) @Vector(16, i16);
extern fn @"llvm.x86.avx2.pmadd.wd"(a: @Vector(16, i16), b: @Vector(16, i16)) @Vector(8, i32);
extern fn @"llvm.x86.avx512.pmaddubs.w.512"(a: @Vector(64, u8), b: @Vector(64, i8)) @Vector(32, i16);
extern fn @"llvm.x86.avx512.pmaddw.d.512"(a: @Vector(32, i16), b: @Vector(32, i16)) @Vector(16, i32);
extern fn @"llvm.x86.avx512.vpdpwssd.512"(acc: @Vector(16, i32), a: @Vector(16, i32), b: @Vector(16, i32)) @Vector(16, i32);
extern fn @"llvm.aarch64.neon.sdot.v4i32.v16i8"(acc: @Vector(4, i32), a: @Vector(16, i8), b: @Vector(16, i8)) @Vector(4, i32);

const U8x32 = @Vector(32, u8);
const U8x64 = @Vector(64, u8);
const I8x64 = @Vector(64, i8);
const I16x16 = @Vector(16, i16);
const I32x8 = @Vector(8, i32);
const I32x16 = @Vector(16, i32);
const F32x8 = @Vector(8, f32);
const F32x16 = @Vector(16, f32);

// ---------------------------------------------------------------------------------------------
// Scalar helpers (unaligned, little-endian)
// ---------------------------------------------------------------------------------------------

inline fn loadF16(p: [*]const u8) f32 {
    const h: f16 = @bitCast(std.mem.readInt(u16, p[0..2], .little));
    return @floatCast(h);
}

inline fn loadF32(p: [*]const u8) f32 {
    return @bitCast(std.mem.readInt(u32, p[0..4], .little));
}

inline fn storeF32(p: [*]u8, v: f32) void {
    std.mem.writeInt(u32, p[0..4], @bitCast(v), .little);
}

/// GGML_FP32_TO_FP16: round-to-nearest-even.
inline fn storeF16(p: [*]u8, v: f32) void {
    const h: f16 = @floatCast(v);
    std.mem.writeInt(u16, p[0..2], @bitCast(h), .little);
}

/// ggml's nearest_int: adding 1.5·2^23 leaves round-half-even(x) in the low mantissa bits.
/// Valid for |x| ≤ 4194303; outside that (or NaN) it returns garbage but never traps.
inline fn nearestInt(x: f32) i32 {
    const i: i32 = @bitCast(x + 12582912.0);
    return (i & 0x007fffff) - 0x00400000;
}

inline fn nearestIntV(comptime n: usize, x: @Vector(n, f32)) @Vector(n, i32) {
    const i: @Vector(n, i32) = @bitCast(x + @as(@Vector(n, f32), @splat(12582912.0)));
    return (i & @as(@Vector(n, i32), @splat(0x007fffff))) - @as(@Vector(n, i32), @splat(0x00400000));
}

/// get_scale_min_k4: the 6-bit scale and min of sub-block j from the packed 12 bytes.
pub fn getScaleMinK4(j: usize, q: [*]const u8) struct { sc: u8, m: u8 } {
    if (j < 4) return .{ .sc = q[j] & 63, .m = q[j + 4] & 63 };
    return .{
        .sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
        .m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
    };
}

/// All 8 scales and mins at once with 32-bit masks (same bits as getScaleMinK4).
pub inline fn unpackScalesMins(s: [*]const u8) struct { sc: @Vector(8, u8), m: @Vector(8, u8) } {
    const k1: u32 = 0x3f3f3f3f;
    const k2: u32 = 0x0f0f0f0f;
    const k3: u32 = 0x03030303;
    const w0 = std.mem.readInt(u32, s[0..4], .little);
    const w1 = std.mem.readInt(u32, s[4..8], .little);
    const w2 = std.mem.readInt(u32, s[8..12], .little);
    const sc_lo = w0 & k1;
    const sc_hi = (w2 & k2) | (((w0 >> 6) & k3) << 4);
    const m_lo = w1 & k1;
    const m_hi = ((w2 >> 4) & k2) | (((w1 >> 6) & k3) << 4);
    return .{
        .sc = @bitCast(@as(u64, sc_lo) | (@as(u64, sc_hi) << 32)),
        .m = @bitCast(@as(u64, m_lo) | (@as(u64, m_hi) << 32)),
    };
}

/// Shuffle mask repeating each of `n` lanes `rep` times.
fn repeatIdx(comptime n: usize, comptime rep: usize, comptime first: usize) @Vector(n * rep, i32) {
    @setEvalBranchQuota(10_000);
    var idx: [n * rep]i32 = undefined;
    for (&idx, 0..) |*x, j| x.* = @intCast(first + j / rep);
    return idx;
}

/// The 8 per-32 values of Q4_K/Q5_K spread to one i16 per 16 elements (each twice).
inline fn per16(v: @Vector(8, u8)) I16x16 {
    const w: @Vector(8, i16) = v;
    return @shuffle(i16, w, undefined, repeatIdx(8, 2, 0));
}

// ---------------------------------------------------------------------------------------------
// Integer dot primitives
// ---------------------------------------------------------------------------------------------

/// acc + Σ_e q[e]·a[e]·sc[e/16] over one 64-element chunk. Which acc lane receives which
/// products is unspecified (only the lane total matters). Bounds: q ≤ 63, |a| ≤ 128 so a
/// vpmaddubsw pair is ≤ 16128 (no i16 saturation) and |sc| ≤ 128.
inline fn mulAcc64(acc: I32x16, q: U8x64, a: I8x64, sc: @Vector(4, i16)) I32x16 {
    if (comptime has_avx512bw) {
        const p = @"llvm.x86.avx512.pmaddubs.w.512"(q, a);
        const s = @shuffle(i16, sc, undefined, repeatIdx(4, 8, 0));
        if (comptime has_vnni512) {
            return @"llvm.x86.avx512.vpdpwssd.512"(acc, @bitCast(p), @bitCast(s));
        }
        return acc + @"llvm.x86.avx512.pmaddw.d.512"(p, s);
    } else if (comptime has_avx2) {
        var r: [2]I32x8 = undefined;
        inline for (0..2) |h| {
            const qh: U8x32 = std.simd.extract(q, 32 * h, 32);
            const ah: @Vector(32, i8) = std.simd.extract(a, 32 * h, 32);
            const p = @"llvm.x86.avx2.pmadd.ub.sw"(qh, ah);
            const s = @shuffle(i16, sc, undefined, repeatIdx(2, 8, 2 * h));
            r[h] = @"llvm.x86.avx2.pmadd.wd"(p, s);
        }
        return acc + std.simd.join(r[0], r[1]);
    } else if (comptime has_dotprod) {
        // q ≤ 63 is a valid i8, so signed sdot works; lanes c cover 16 elements each.
        const qs: I8x64 = @bitCast(q);
        var r: [4]@Vector(4, i32) = undefined;
        inline for (0..4) |c| {
            const p = @"llvm.aarch64.neon.sdot.v4i32.v16i8"(@splat(0), std.simd.extract(qs, 16 * c, 16), std.simd.extract(a, 16 * c, 16));
            r[c] = p * @as(@Vector(4, i32), @splat(sc[c]));
        }
        return acc + std.simd.join(std.simd.join(r[0], r[1]), std.simd.join(r[2], r[3]));
    } else {
        // Scale the activations in i16 first (|a·sc| ≤ 16384), then one pmaddwd against q.
        // (Multiplying q·a first lets LLVM factor the pair-equal scale out of the pmaddwd
        // pattern into an emulated i32 multiply on SSE2.)
        const s = @shuffle(i16, sc, undefined, repeatIdx(4, 16, 0));
        const as = @as(@Vector(64, i16), a) * s;
        const r = maddwd(32, @as(@Vector(64, i16), q), as);
        return acc + std.simd.extract(r, 0, 16) + std.simd.extract(r, 16, 16);
    }
}

/// pmaddwd: r[j] = a[2j]·b[2j] + a[2j+1]·b[2j+1] in i32.
inline fn maddwd(comptime n: usize, a: @Vector(2 * n, i16), b: @Vector(2 * n, i16)) @Vector(n, i32) {
    if (comptime has_avx2 and n == 8) return @"llvm.x86.avx2.pmadd.wd"(a, b);
    const even = comptime std.simd.iota(i32, n) * @as(@Vector(n, i32), @splat(2));
    const odd = comptime even + @as(@Vector(n, i32), @splat(1));
    const ae: @Vector(n, i32) = @shuffle(i16, a, undefined, even);
    const ao: @Vector(n, i32) = @shuffle(i16, a, undefined, odd);
    const be: @Vector(n, i32) = @shuffle(i16, b, undefined, even);
    const bo: @Vector(n, i32) = @shuffle(i16, b, undefined, odd);
    return ae * be + ao * bo;
}

/// Shift each half of a 64-byte vector by its own amount (u16 lanes: vpsllvw/vpsrlvw on
/// AVX-512, uniform immediates per ymm/xmm elsewhere). Callers mask away bits that cross bytes.
inline fn shiftHalves(comptime left: bool, v: U8x64, comptime s0: u4, comptime s1: u4) U8x64 {
    const w: @Vector(32, u16) = @bitCast(v);
    const sh: @Vector(32, u4) = comptime std.simd.join(@as(@Vector(16, u4), @splat(s0)), @as(@Vector(16, u4), @splat(s1)));
    return @bitCast(if (left) w << sh else w >> sh);
}

/// 32 packed bytes → 64 nibbles: low nibbles first, then high nibbles (Q4_K/Q5_K chunk order).
inline fn nib64(p: [*]const u8) U8x64 {
    const v: U8x32 = p[0..32].*;
    const lo: U8x64 = @splat(0x0F);
    // Broadcast + one variable shift beats and/shift/and + a cross-lane insert.
    return shiftHalves(false, std.simd.join(v, v), 0, 4) & lo;
}

inline fn loadActs64(ab: [*]const u8, comptime k: usize) I8x64 {
    return @bitCast(ab[ActQ8_K.off_qs + 64 * k ..][0..64].*);
}

inline fn loadBsums(ab: [*]const u8) I16x16 {
    return @bitCast(ab[ActQ8_K.off_bsums..][0..32].*);
}

/// Folds 16 partial sums to 8 (lane identity does not matter, only the total).
inline fn fold16(v: I32x16) I32x8 {
    return std.simd.extract(v, 0, 8) + std.simd.extract(v, 8, 8);
}

/// Pairwise tree sum (an ordered @reduce would be a serial chain of 7 adds).
inline fn hsum(v: F32x8) f32 {
    const a = std.simd.extract(v, 0, 4) + std.simd.extract(v, 4, 4);
    const b = std.simd.extract(a, 0, 2) + std.simd.extract(a, 2, 2);
    return b[0] + b[1];
}

// ---------------------------------------------------------------------------------------------
// Activation format
// ---------------------------------------------------------------------------------------------

/// ggml's block_q8_K: d f32, qs[256] i8, bsums[16] i16 (sum of each 16 qs). d = max/−127 where
/// max is the signed value of largest magnitude, so qs ∈ [−127, 127].
pub const ActQ8_K = struct {
    pub const block_size: usize = 256;
    pub const type_size: usize = 292;
    pub const Block = extern struct { d: f32, qs: [256]i8, bsums: [16]i16 };
    pub const off_d = @offsetOf(Block, "d");
    pub const off_qs = @offsetOf(Block, "qs");
    pub const off_bsums = @offsetOf(Block, "bsums");
    comptime {
        std.debug.assert(@sizeOf(Block) == type_size);
        std.debug.assert(off_d == 0 and off_qs == 4 and off_bsums == 260);
    }

    /// quantize_row_q8_K_ref, vectorized. Bit-identical to quantizeRowRef (same ops, same
    /// rounding); an all-zero block gets d = 0 and zero bsums (ggml leaves bsums unset there).
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        std.debug.assert(n % block_size == 0);
        for (0..n / block_size) |i| quantizeBlock(src + i * block_size, dst + i * type_size);
    }

    fn quantizeBlock(x: [*]const f32, b: [*]u8) void {
        var vmax: F32x16 = @splat(0);
        inline for (0..16) |c| vmax = @max(vmax, @abs(@as(F32x16, x[16 * c ..][0..16].*)));
        const amax = cpu.maxLanes(16, vmax);
        if (!(amax > 0)) return zeroBlock(b);
        const iscale = -127.0 / firstWithAbs(x, amax);
        var q16: [16]I32x16 = undefined;
        inline for (0..16) |c| {
            const v: F32x16 = x[16 * c ..][0..16].*;
            const l = nearestIntV(16, v * @as(F32x16, @splat(iscale)));
            // The clamp below −128 only matters for non-finite input (keeps @intCast defined).
            q16[c] = @max(@min(l, @as(I32x16, @splat(127))), @as(I32x16, @splat(-128)));
            const q: @Vector(16, i8) = @intCast(q16[c]);
            b[off_qs + 16 * c ..][0..16].* = @bitCast(q);
        }
        // The 16 sums of 16 as the lanes of one vector (one reduction tree for all of them).
        const bsums: @Vector(16, i16) = @intCast(cpu.reduceEach(i32, 16, .add, q16));
        b[off_bsums..][0..32].* = @bitCast(bsums);
        storeF32(b + off_d, 1.0 / iscale);
    }

    /// The signed value of the first element with |x| == amax (ggml keeps the first maximum).
    fn firstWithAbs(x: [*]const f32, amax: f32) f32 {
        inline for (0..16) |c| {
            const v: F32x16 = x[16 * c ..][0..16].*;
            const hit: u16 = @bitCast(@abs(v) == @as(F32x16, @splat(amax)));
            if (hit != 0) return v[@ctz(hit)];
        }
        unreachable;
    }

    fn zeroBlock(b: [*]u8) void {
        @memset(b[0..type_size], 0);
    }

    pub fn quantizeRowRef(src: [*]const f32, dst: [*]u8, n: usize) void {
        std.debug.assert(n % block_size == 0);
        for (0..n / block_size) |i| {
            const x = src[i * block_size ..][0..block_size];
            const b = dst + i * type_size;
            var amax: f32 = 0;
            var max: f32 = 0;
            for (x) |v| {
                if (@abs(v) > amax) {
                    amax = @abs(v);
                    max = v;
                }
            }
            if (amax == 0) {
                zeroBlock(b);
                continue;
            }
            const iscale = -127.0 / max;
            var qs: [256]i8 = undefined;
            for (x, &qs) |v, *q| q.* = @intCast(std.math.clamp(nearestInt(iscale * v), -128, 127));
            for (0..16) |j| {
                var s: i32 = 0;
                for (qs[16 * j ..][0..16]) |q| s += q;
                std.mem.writeInt(i16, b[off_bsums + 2 * j ..][0..2], @intCast(s), .little);
            }
            b[off_qs..][0..256].* = @bitCast(qs);
            storeF32(b + off_d, 1.0 / iscale);
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Q4_K
// ---------------------------------------------------------------------------------------------

/// Eight 32-element sub-blocks, y = d·sc·q − dmin·m with 6-bit sc/m and 4-bit q. qs[32c + l]
/// holds element 64c + l in its low nibble and 64c + 32 + l in its high nibble.
pub const Q4_K = struct {
    pub const block_size: usize = 256;
    pub const type_size: usize = 144;
    pub const Block = extern struct { d: f16, dmin: f16, scales: [12]u8, qs: [128]u8 };
    pub const act = .q8_k;
    const off_scales = @offsetOf(Block, "scales");
    const off_qs = @offsetOf(Block, "qs");
    comptime {
        std.debug.assert(@sizeOf(Block) == type_size);
        std.debug.assert(off_scales == 4 and off_qs == 16);
    }

    /// 64 quants (0..15) of chunk k.
    inline fn quants(wb: [*]const u8, comptime k: usize) U8x64 {
        return nib64(wb + off_qs + 32 * k);
    }

    pub fn dequantizeRow(src: [*]const u8, dst: [*]f32, n: usize) void {
        kDequant(@This(), src, dst, n);
    }
    pub fn dequantizeRowRef(src: [*]const u8, dst: [*]f32, n: usize) void {
        std.debug.assert(n % block_size == 0);
        var y = dst;
        for (0..n / block_size) |i| {
            const b = src + i * type_size;
            const d = loadF16(b);
            const dmin = loadF16(b + 2);
            for (0..4) |c| {
                const q = b + off_qs + 32 * c;
                const s0 = getScaleMinK4(2 * c, b + off_scales);
                const s1 = getScaleMinK4(2 * c + 1, b + off_scales);
                const d1 = d * @as(f32, @floatFromInt(s0.sc));
                const m1 = dmin * @as(f32, @floatFromInt(s0.m));
                const d2 = d * @as(f32, @floatFromInt(s1.sc));
                const m2 = dmin * @as(f32, @floatFromInt(s1.m));
                for (0..32) |l| y[l] = d1 * @as(f32, @floatFromInt(q[l] & 0xF)) - m1;
                for (0..32) |l| y[32 + l] = d2 * @as(f32, @floatFromInt(q[l] >> 4)) - m2;
                y += 64;
            }
        }
    }
    pub fn vecDot(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return kDot(@This(), n, w, a);
    }
    /// R rows at once (row_bytes apart) sharing the activation loads; out[r] equals vecDot of
    /// row r bit for bit.
    pub fn vecDotRows(comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
        kDotRows(@This(), R, n, w, row_bytes, a, out);
    }
    /// R weight rows × C activation rows (act_bytes apart): out[c·out_stride + r] (see kTileDot).
    pub fn vecDotTile(comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
        kTileDot(@This(), R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
    }
    pub const tile_r = k_tile_r;
    pub const tile_c = k_tile_c;
    pub fn vecDotRef(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return kDotRefMin(@This(), n, w, a);
    }
    fn scalarQuant(b: [*]const u8, e: usize) i32 {
        const byte = b[off_qs + 32 * (e / 64) + e % 32];
        return if (e % 64 < 32) byte & 0xF else byte >> 4;
    }

    /// quantize_row_q4_K_ref (make_qkx2_quants, 15 levels, 21 trial scales).
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        quantizeMinType(@This(), src, dst, n);
    }
    const nmax = 15;
    const rmin: f32 = -1.0;
    const nstep = 20;
    fn packQuants(b: [*]u8, L: *const [256]u8) void {
        for (0..4) |c| {
            for (0..32) |l| b[off_qs + 32 * c + l] = L[64 * c + l] | (L[64 * c + 32 + l] << 4);
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Q5_K
// ---------------------------------------------------------------------------------------------

/// Q4_K plus a fifth bit: element 64c + l adds 16 if bit 2c of qh[l] is set, element
/// 64c + 32 + l if bit 2c + 1 is.
pub const Q5_K = struct {
    pub const block_size: usize = 256;
    pub const type_size: usize = 176;
    pub const Block = extern struct { d: f16, dmin: f16, scales: [12]u8, qh: [32]u8, qs: [128]u8 };
    pub const act = .q8_k;
    const off_scales = @offsetOf(Block, "scales");
    const off_qh = @offsetOf(Block, "qh");
    const off_qs = @offsetOf(Block, "qs");
    comptime {
        std.debug.assert(@sizeOf(Block) == type_size);
        std.debug.assert(off_scales == 4 and off_qh == 16 and off_qs == 48);
    }

    /// 64 quants (0..31) of chunk k.
    inline fn quants(wb: [*]const u8, comptime k: usize) U8x64 {
        const h: U8x32 = wb[off_qh..][0..32].*;
        const hh = std.simd.join(h, h);
        // Move bit 2k (first 32 lanes) and bit 2k+1 (last 32) to bit 4. Shifts are ≤ 4 bits,
        // so bit 4 of each byte never receives a bit from its neighbour within the u16 lane.
        const hb = if (k < 2)
            shiftHalves(true, hh, 4 - 2 * k, 3 - 2 * k)
        else
            shiftHalves(false, hh, 2 * k - 4, 2 * k - 3);
        return nib64(wb + off_qs + 32 * k) | (hb & @as(U8x64, @splat(0x10)));
    }

    pub fn dequantizeRow(src: [*]const u8, dst: [*]f32, n: usize) void {
        kDequant(@This(), src, dst, n);
    }
    pub fn dequantizeRowRef(src: [*]const u8, dst: [*]f32, n: usize) void {
        std.debug.assert(n % block_size == 0);
        var y = dst;
        for (0..n / block_size) |i| {
            const b = src + i * type_size;
            const d = loadF16(b);
            const dmin = loadF16(b + 2);
            const qh = b + off_qh;
            for (0..4) |c| {
                const ql = b + off_qs + 32 * c;
                const u_1 = @as(u8, 1) << @intCast(2 * c);
                const u_2 = @as(u8, 2) << @intCast(2 * c);
                const s0 = getScaleMinK4(2 * c, b + off_scales);
                const s1 = getScaleMinK4(2 * c + 1, b + off_scales);
                const d1 = d * @as(f32, @floatFromInt(s0.sc));
                const m1 = dmin * @as(f32, @floatFromInt(s0.m));
                const d2 = d * @as(f32, @floatFromInt(s1.sc));
                const m2 = dmin * @as(f32, @floatFromInt(s1.m));
                for (0..32) |l| {
                    const q: u8 = (ql[l] & 0xF) + @as(u8, if (qh[l] & u_1 != 0) 16 else 0);
                    y[l] = d1 * @as(f32, @floatFromInt(q)) - m1;
                }
                for (0..32) |l| {
                    const q: u8 = (ql[l] >> 4) + @as(u8, if (qh[l] & u_2 != 0) 16 else 0);
                    y[32 + l] = d2 * @as(f32, @floatFromInt(q)) - m2;
                }
                y += 64;
            }
        }
    }
    pub fn vecDot(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return kDot(@This(), n, w, a);
    }
    /// R rows at once (row_bytes apart) sharing the activation loads; out[r] equals vecDot of
    /// row r bit for bit.
    pub fn vecDotRows(comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
        kDotRows(@This(), R, n, w, row_bytes, a, out);
    }
    /// R weight rows × C activation rows (act_bytes apart): out[c·out_stride + r] (see kTileDot).
    pub fn vecDotTile(comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
        kTileDot(@This(), R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
    }
    pub const tile_r = k_tile_r;
    pub const tile_c = k_tile_c;
    pub fn vecDotRef(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return kDotRefMin(@This(), n, w, a);
    }
    fn scalarQuant(b: [*]const u8, e: usize) i32 {
        const c = e / 64;
        const byte = b[off_qs + 32 * c + e % 32];
        const hi = e % 64 >= 32;
        const nib: i32 = if (hi) byte >> 4 else byte & 0xF;
        const bit: u3 = @intCast(2 * c + @intFromBool(hi));
        return nib + 16 * @as(i32, (b[off_qh + e % 32] >> bit) & 1);
    }

    /// quantize_row_q5_K_ref (make_qkx2_quants, 31 levels, 16 trial scales).
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        quantizeMinType(@This(), src, dst, n);
    }
    const nmax = 31;
    const rmin: f32 = -0.5;
    const nstep = 15;
    fn packQuants(b: [*]u8, L: *const [256]u8) void {
        @memset(b[off_qh..][0..32], 0);
        for (0..4) |c| {
            for (0..32) |l| {
                const l1 = L[64 * c + l];
                const l2 = L[64 * c + 32 + l];
                b[off_qh + l] |= ((l1 >> 4) << @intCast(2 * c)) | ((l2 >> 4) << @intCast(2 * c + 1));
                b[off_qs + 32 * c + l] = (l1 & 0xF) | ((l2 & 0xF) << 4);
            }
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Q6_K
// ---------------------------------------------------------------------------------------------

/// Sixteen 16-element sub-blocks with signed 8-bit scales, y = d·sc·(q − 32), 6-bit q. Half h
/// (128 elements) uses ql[64h..], qh[32h..]: element 128h + 32j + l takes the low (j < 2) or
/// high (j ≥ 2) nibble of ql[64h + 32(j%2) + l] and bits 2j..2j+1 of qh[32h + l]. d is last.
pub const Q6_K = struct {
    pub const block_size: usize = 256;
    pub const type_size: usize = 210;
    pub const Block = extern struct { ql: [128]u8, qh: [64]u8, scales: [16]i8, d: f16 };
    pub const act = .q8_k;
    const off_qh = @offsetOf(Block, "qh");
    const off_scales = @offsetOf(Block, "scales");
    const off_d = @offsetOf(Block, "d");
    comptime {
        std.debug.assert(@sizeOf(Block) == type_size);
        std.debug.assert(off_qh == 128 and off_scales == 192 and off_d == 208);
    }

    /// 64 unsigned quants (0..63, i.e. q + 32) of chunk k = 2h + j2 (j2: low/high nibbles).
    inline fn quants(wb: [*]const u8, comptime k: usize) U8x64 {
        const h = k / 2;
        const ql: U8x64 = wb[64 * h ..][0..64].*;
        const nib = if (k % 2 == 0) ql & @as(U8x64, @splat(0x0F)) else ql >> @splat(4);
        const qh: U8x32 = wb[off_qh + 32 * h ..][0..32].*;
        const hh = std.simd.join(qh, qh);
        // Bring bit pairs (0,1)/(2,3) or (4,5)/(6,7) of each half to bits 4..5.
        const hb = if (k % 2 == 0) shiftHalves(true, hh, 4, 2) else shiftHalves(false, hh, 0, 2);
        return nib | (hb & @as(U8x64, @splat(0x30)));
    }

    pub fn dequantizeRow(src: [*]const u8, dst: [*]f32, n: usize) void {
        std.debug.assert(n % block_size == 0);
        for (0..n / block_size) |i| {
            const b = src + i * type_size;
            const sc: @Vector(16, f32) = @floatFromInt(@as(@Vector(16, i8), @bitCast(b[off_scales..][0..16].*)));
            const ds = @as(F32x16, @splat(loadF16(b + off_d))) * sc; // exact: 11 × 8 bits
            const y = dst + i * block_size;
            inline for (0..4) |k| {
                const q: @Vector(64, i32) = quants(b, k);
                const qf: @Vector(64, f32) = @floatFromInt(q - @as(@Vector(64, i32), @splat(32)));
                inline for (0..4) |g| {
                    y[64 * k + 16 * g ..][0..16].* = std.simd.extract(qf, 16 * g, 16) * @as(F32x16, @splat(ds[4 * k + g]));
                }
            }
        }
    }
    pub fn dequantizeRowRef(src: [*]const u8, dst: [*]f32, n: usize) void {
        std.debug.assert(n % block_size == 0);
        var y = dst;
        for (0..n / block_size) |i| {
            const b = src + i * type_size;
            const d = loadF16(b + off_d);
            for (0..2) |h| {
                const ql = b + 64 * h;
                const qh = b + off_qh + 32 * h;
                const sc: [*]const i8 = @ptrCast(b + off_scales + 8 * h);
                for (0..32) |l| {
                    const is = l / 16;
                    const q1 = @as(i32, (ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                    const q2 = @as(i32, (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    const q3 = @as(i32, (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    const q4 = @as(i32, (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * @as(f32, @floatFromInt(sc[is])) * @as(f32, @floatFromInt(q1));
                    y[l + 32] = d * @as(f32, @floatFromInt(sc[is + 2])) * @as(f32, @floatFromInt(q2));
                    y[l + 64] = d * @as(f32, @floatFromInt(sc[is + 4])) * @as(f32, @floatFromInt(q3));
                    y[l + 96] = d * @as(f32, @floatFromInt(sc[is + 6])) * @as(f32, @floatFromInt(q4));
                }
                y += 128;
            }
        }
    }

    pub fn vecDot(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        std.debug.assert(n % block_size == 0);
        var acc: F32x8 = @splat(0);
        for (0..n / block_size) |i| {
            const wb = w + i * type_size;
            const ab = a + i * ActQ8_K.type_size;
            const sc: I16x16 = @as(@Vector(16, i8), @bitCast(wb[off_scales..][0..16].*));
            var isum = [2]I32x16{ @splat(0), @splat(0) };
            inline for (0..4) |k| {
                const s4 = @shuffle(i16, sc, undefined, repeatIdx(4, 1, 4 * k));
                isum[k % 2] = mulAcc64(isum[k % 2], quants(wb, k), loadActs64(ab, k), s4);
            }
            // Σ sc·(q − 32)·a = Σ sc·q·a − 32·Σ_g sc[g]·bsums[g]
            const corr = maddwd(8, loadBsums(ab), sc) * @as(I32x8, @splat(32));
            const total = fold16(isum[0] + isum[1]) - corr;
            const dd = loadF16(wb + off_d) * loadF32(ab + ActQ8_K.off_d);
            acc = @mulAdd(F32x8, @floatFromInt(total), @splat(dd), acc);
        }
        return hsum(acc);
    }

    /// R rows at once (row_bytes apart) sharing the activation loads; out[r] equals vecDot of
    /// row r bit for bit.
    pub fn vecDotRows(comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
        std.debug.assert(n % block_size == 0);
        @setEvalBranchQuota(100_000);
        var acc: [R]F32x8 = @splat(@splat(0));
        const pf = Prefetch.init(.l2, w, R * row_bytes);
        for (0..n / block_size) |i| {
            const ab = a + i * ActQ8_K.type_size;
            const da = loadF32(ab + ActQ8_K.off_d);
            const bsums = loadBsums(ab);
            var acts: [4]I8x64 = undefined;
            inline for (0..4) |k| acts[k] = loadActs64(ab, k);
            pf.lines(i * type_size * R, type_size * R);
            inline for (0..R) |r| {
                const wb = w + r * row_bytes + i * type_size;
                const sc: I16x16 = @as(@Vector(16, i8), @bitCast(wb[off_scales..][0..16].*));
                var isum = [2]I32x16{ @splat(0), @splat(0) };
                inline for (0..4) |k| {
                    const s4 = @shuffle(i16, sc, undefined, repeatIdx(4, 1, 4 * k));
                    isum[k % 2] = mulAcc64(isum[k % 2], quants(wb, k), acts[k], s4);
                }
                const corr = maddwd(8, bsums, sc) * @as(I32x8, @splat(32));
                const total = fold16(isum[0] + isum[1]) - corr;
                const dd = loadF16(wb + off_d) * da;
                acc[r] = @mulAdd(F32x8, @floatFromInt(total), @splat(dd), acc[r]);
            }
        }
        inline for (0..R) |r| out[r] = hsum(acc[r]);
    }
    /// R weight rows × C activation rows (act_bytes apart): out[c·out_stride + r] (see kTileDot).
    pub fn vecDotTile(comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
        kTileDot(@This(), R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
    }
    pub const tile_r = k_tile_r;
    pub const tile_c = k_tile_c;

    pub fn vecDotRef(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        std.debug.assert(n % block_size == 0);
        var sum: f32 = 0;
        for (0..n / block_size) |i| {
            const wb = w + i * type_size;
            const ab = a + i * ActQ8_K.type_size;
            var sumi: i32 = 0;
            for (0..16) |g| {
                var s: i32 = 0;
                for (16 * g..16 * g + 16) |e| s += (scalarQuant(wb, e) - 32) * actQ(ab, e);
                sumi += @as(i8, @bitCast(wb[off_scales + g])) * s;
            }
            sum += loadF16(wb + off_d) * loadF32(ab + ActQ8_K.off_d) * @as(f32, @floatFromInt(sumi));
        }
        return sum;
    }

    /// Unsigned quant (0..63) of element e, straight from the layout description.
    fn scalarQuant(b: [*]const u8, e: usize) i32 {
        const h = e / 128;
        const j = (e % 128) / 32;
        const l = e % 32;
        const byte = b[64 * h + 32 * (j % 2) + l];
        const nib: i32 = if (j < 2) byte & 0xF else byte >> 4;
        const hb: i32 = (b[off_qh + 32 * h + l] >> @intCast(2 * j)) & 3;
        return nib | (hb << 4);
    }

    /// quantize_row_q6_K_ref: make_qx_quants per 16 (weights x², 19 trial scales), 8-bit
    /// scales relative to the largest-magnitude one, then requantize with the f16-rounded d.
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        std.debug.assert(n % block_size == 0);
        for (0..n / block_size) |i| quantizeBlock(src[i * block_size ..][0..block_size], dst + i * type_size);
    }

    fn quantizeBlock(x: *const [256]f32, b: [*]u8) void {
        var L: [256]u8 = undefined;
        var scales: [16]f32 = undefined;
        var max_scale: f32 = 0;
        var max_abs_scale: f32 = 0;
        for (0..16) |g| {
            scales[g] = makeQxQuants(x[16 * g ..][0..16], L[16 * g ..][0..16]);
            if (@abs(scales[g]) > max_abs_scale) {
                max_abs_scale = @abs(scales[g]);
                max_scale = scales[g];
            }
        }
        if (max_abs_scale < group_max_eps) {
            @memset(b[0..type_size], 0);
            return;
        }
        const iscale = -128.0 / max_scale;
        storeF16(b + off_d, 1.0 / iscale);
        for (0..16) |g| {
            const s = @min(127, nearestInt(iscale * scales[g]));
            b[off_scales + g] = @bitCast(@as(i8, @truncate(s)));
        }
        const d = loadF16(b + off_d);
        for (0..16) |g| {
            const dg = d * @as(f32, @floatFromInt(@as(i8, @bitCast(b[off_scales + g]))));
            if (dg == 0) continue;
            for (16 * g..16 * g + 16) |e| {
                L[e] = @intCast(std.math.clamp(nearestInt(x[e] / dg), -32, 31) + 32);
            }
        }
        packQuants(b, &L);
    }

    fn packQuants(b: [*]u8, L: *const [256]u8) void {
        for (0..2) |h| {
            for (0..32) |l| {
                const e = 128 * h + l;
                b[64 * h + l] = (L[e] & 0xF) | ((L[e + 64] & 0xF) << 4);
                b[64 * h + 32 + l] = (L[e + 32] & 0xF) | ((L[e + 96] & 0xF) << 4);
                b[off_qh + 32 * h + l] = (L[e] >> 4) | ((L[e + 32] >> 4) << 2) |
                    ((L[e + 64] >> 4) << 4) | ((L[e + 96] >> 4) << 6);
            }
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Shared Q4_K / Q5_K machinery (types with 6-bit scales and mins)
// ---------------------------------------------------------------------------------------------

inline fn actQ(ab: [*]const u8, e: usize) i32 {
    return @as(i8, @bitCast(ab[ActQ8_K.off_qs + e]));
}

/// Σ_blocks d·d_a·Σ_sub sc·(q·a) − dmin·d_a·Σ_sub m·bsums, integers exact per block.
inline fn kDot(comptime W: type, n: usize, w: [*]const u8, a: [*]const u8) f32 {
    std.debug.assert(n % 256 == 0);
    var acc: F32x8 = @splat(0);
    var macc: F32x8 = @splat(0);
    for (0..n / 256) |i| {
        const wb = w + i * W.type_size;
        const ab = a + i * ActQ8_K.type_size;
        const sm = unpackScalesMins(wb + W.off_scales);
        const sc = per16(sm.sc);
        // Two chains so consecutive dot instructions do not wait on each other.
        var isum = [2]I32x16{ @splat(0), @splat(0) };
        inline for (0..4) |k| {
            const s4 = @shuffle(i16, sc, undefined, repeatIdx(4, 1, 4 * k));
            isum[k % 2] = mulAcc64(isum[k % 2], W.quants(wb, k), loadActs64(ab, k), s4);
        }
        const msum = maddwd(8, loadBsums(ab), per16(sm.m));
        const da = loadF32(ab + ActQ8_K.off_d);
        const d = loadF16(wb) * da;
        const dm = loadF16(wb + 2) * da;
        acc = @mulAdd(F32x8, @floatFromInt(fold16(isum[0] + isum[1])), @splat(d), acc);
        macc = @mulAdd(F32x8, @floatFromInt(msum), @splat(dm), macc);
    }
    return hsum(acc - macc);
}

/// kDot for R rows against one activation row: the per-row arithmetic is kDot's exactly (so the
/// results are bit-identical); the activation loads are shared and the next R rows prefetched.
inline fn kDotRows(comptime W: type, comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
    @setEvalBranchQuota(100_000);
    std.debug.assert(n % 256 == 0);
    var acc: [R]F32x8 = @splat(@splat(0));
    var macc: [R]F32x8 = @splat(@splat(0));
    const pf = Prefetch.init(.l2, w, R * row_bytes);
    for (0..n / 256) |i| {
        const ab = a + i * ActQ8_K.type_size;
        const da = loadF32(ab + ActQ8_K.off_d);
        const bsums = loadBsums(ab);
        var acts: [4]I8x64 = undefined;
        inline for (0..4) |k| acts[k] = loadActs64(ab, k);
        pf.lines(i * W.type_size * R, W.type_size * R);
        inline for (0..R) |r| {
            const wb = w + r * row_bytes + i * W.type_size;
            const sm = unpackScalesMins(wb + W.off_scales);
            const sc = per16(sm.sc);
            var isum = [2]I32x16{ @splat(0), @splat(0) };
            inline for (0..4) |k| {
                const s4 = @shuffle(i16, sc, undefined, repeatIdx(4, 1, 4 * k));
                isum[k % 2] = mulAcc64(isum[k % 2], W.quants(wb, k), acts[k], s4);
            }
            const msum = maddwd(8, bsums, per16(sm.m));
            const d = loadF16(wb) * da;
            const dm = loadF16(wb + 2) * da;
            acc[r] = @mulAdd(F32x8, @floatFromInt(fold16(isum[0] + isum[1])), @splat(d), acc[r]);
            macc[r] = @mulAdd(F32x8, @floatFromInt(msum), @splat(dm), macc[r]);
        }
    }
    inline for (0..R) |r| out[r] = hsum(acc[r] - macc[r]);
}

// ---------------------------------------------------------------------------------------------
// Batched tile kernel (prefill): R weight rows × C activation rows
// ---------------------------------------------------------------------------------------------

/// Tile shape of the batched K-quant kernels: the R×C integer accumulators are 64-byte vectors
/// (one zmm each on AVX-512, two ymm/four xmm elsewhere), so fewer rows off AVX-512.
const k_tile_r: usize = 1;
const k_tile_c: usize = 4;

/// 1×4 measured 396/522 GFLOP/s (Q4_K/Q6_K, m = 64, AVX-512, 2 threads) against 277/294 for
/// the per-row path; 2×4 spilled (~200).
/// out[c·out_stride + r] = (weight row r) · (activation row c) for an R×C tile. Each 64-element
/// chunk of a weight block is unpacked once and multiplied against the C activation chunks, so
/// the unpack (and scale shuffles) are shared by C rows and each activation load by R rows.
/// The float arithmetic of each (r, c) pair is exactly kDotRows' (Q4_K/Q5_K: scaled sums and
/// mins in separate accumulators, subtracted at the end; Q6_K: the −32 correction in integers),
/// and integer sums are exact whatever their order, so every output is bit-identical to
/// decoding its row alone whatever R and C are: batched verification reproduces decode.
fn kTileDot(comptime W: type, comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
    @setEvalBranchQuota(200_000);
    std.debug.assert(n % 256 == 0);
    const is_q6 = W == Q6_K;
    var acc: [R][C]F32x8 = @splat(@splat(@splat(0)));
    var macc: [R][C]F32x8 = @splat(@splat(@splat(0)));
    const pf = Prefetch.init(.l2, w, R * row_bytes);
    for (0..n / 256) |i| {
        pf.lines(i * W.type_size * R, W.type_size * R);
        var sc: [R]I16x16 = undefined;
        var mn: [R]I16x16 = undefined;
        var d: [R]f32 = undefined;
        var dmin: [R]f32 = undefined;
        inline for (0..R) |r| {
            const wb = w + r * row_bytes + i * W.type_size;
            if (is_q6) {
                sc[r] = @as(@Vector(16, i8), @bitCast(wb[Q6_K.off_scales..][0..16].*));
                d[r] = loadF16(wb + Q6_K.off_d);
            } else {
                const sm = unpackScalesMins(wb + W.off_scales);
                sc[r] = per16(sm.sc);
                mn[r] = per16(sm.m);
                d[r] = loadF16(wb);
                dmin[r] = loadF16(wb + 2);
            }
        }
        var isum: [R][C]I32x16 = @splat(@splat(@splat(0)));
        inline for (0..4) |k| {
            var q: [R]U8x64 = undefined;
            var s4: [R]@Vector(4, i16) = undefined;
            inline for (0..R) |r| {
                q[r] = W.quants(w + r * row_bytes + i * W.type_size, k);
                s4[r] = @shuffle(i16, sc[r], undefined, repeatIdx(4, 1, 4 * k));
            }
            inline for (0..C) |c| {
                const act = loadActs64(a + c * act_bytes + i * ActQ8_K.type_size, k);
                inline for (0..R) |r| isum[r][c] = mulAcc64(isum[r][c], q[r], act, s4[r]);
            }
        }
        inline for (0..C) |c| {
            const ab = a + c * act_bytes + i * ActQ8_K.type_size;
            const da = loadF32(ab + ActQ8_K.off_d);
            const bsums = loadBsums(ab);
            inline for (0..R) |r| {
                if (is_q6) {
                    const corr = maddwd(8, bsums, sc[r]) * @as(I32x8, @splat(32));
                    const total = fold16(isum[r][c]) - corr;
                    acc[r][c] = @mulAdd(F32x8, @floatFromInt(total), @splat(d[r] * da), acc[r][c]);
                } else {
                    const msum = maddwd(8, bsums, mn[r]);
                    acc[r][c] = @mulAdd(F32x8, @floatFromInt(fold16(isum[r][c])), @splat(d[r] * da), acc[r][c]);
                    macc[r][c] = @mulAdd(F32x8, @floatFromInt(msum), @splat(dmin[r] * da), macc[r][c]);
                }
            }
        }
    }
    inline for (0..C) |c| {
        inline for (0..R) |r| out[c * out_stride + r] = hsum(acc[r][c] - macc[r][c]);
    }
}

/// Scalar reference: per sub-block j, sumi += sc_j·Σ q·a and summ += m_j·(bsums[2j]+bsums[2j+1]).
fn kDotRefMin(comptime W: type, n: usize, w: [*]const u8, a: [*]const u8) f32 {
    std.debug.assert(n % 256 == 0);
    var sum: f32 = 0;
    for (0..n / 256) |i| {
        const wb = w + i * W.type_size;
        const ab = a + i * ActQ8_K.type_size;
        var sumi: i32 = 0;
        var summ: i32 = 0;
        for (0..8) |j| {
            const sm = getScaleMinK4(j, wb + W.off_scales);
            var s: i32 = 0;
            for (32 * j..32 * j + 32) |e| s += W.scalarQuant(wb, e) * actQ(ab, e);
            sumi += @as(i32, sm.sc) * s;
            const bs0 = std.mem.readInt(i16, ab[ActQ8_K.off_bsums + 4 * j ..][0..2], .little);
            const bs1 = std.mem.readInt(i16, ab[ActQ8_K.off_bsums + 4 * j + 2 ..][0..2], .little);
            summ += @as(i32, sm.m) * (@as(i32, bs0) + bs1);
        }
        const da = loadF32(ab + ActQ8_K.off_d);
        sum += loadF16(wb) * da * @as(f32, @floatFromInt(sumi)) - loadF16(wb + 2) * da * @as(f32, @floatFromInt(summ));
    }
    return sum;
}

/// y = (d·sc)·q − dmin·m. d·sc·q is exact in f32 (11 + 6 + 5 bits), so this single-rounding
/// form equals ggml's whether or not its compiler fused the multiply-subtract.
fn kDequant(comptime W: type, src: [*]const u8, dst: [*]f32, n: usize) void {
    std.debug.assert(n % 256 == 0);
    for (0..n / 256) |i| {
        const b = src + i * W.type_size;
        const sm = unpackScalesMins(b + W.off_scales);
        const ds = @as(F32x8, @splat(loadF16(b))) * @as(F32x8, @floatFromInt(sm.sc));
        const dm = @as(F32x8, @splat(loadF16(b + 2))) * @as(F32x8, @floatFromInt(sm.m));
        const y = dst + i * 256;
        inline for (0..4) |k| {
            const qf: @Vector(64, f32) = @floatFromInt(W.quants(b, k));
            inline for (0..2) |h| {
                const j = 2 * k + h;
                const v: @Vector(32, f32) = std.simd.extract(qf, 32 * h, 32);
                y[32 * j ..][0..32].* = v * @as(@Vector(32, f32), @splat(ds[j])) - @as(@Vector(32, f32), @splat(dm[j]));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Row-block unpacking for the interleaved prefill kernels (repack.zig)
// ---------------------------------------------------------------------------------------------

/// Elements per sub-block with its own scale: 32 for Q4_K/Q5_K, 16 for Q6_K.
pub fn subBlock(comptime W: type) usize {
    return if (W == Q6_K) 16 else 32;
}

/// Elements 64k..64k+63 of a K-quant row-block as unsigned quants (Q4_K 0..15, Q5_K 0..31,
/// Q6_K 0..63 = q + 32), the same bytes unpackRowBlock writes to q[64k..].
pub inline fn unpackQuants64(comptime W: type, wb: [*]const u8, comptime k: usize) @Vector(64, u8) {
    return W.quants(wb, k);
}

/// Byte offsets in a row-block of the packed scales (Q4_K/Q5_K: 12 bytes of 6-bit scales and
/// mins, Q6_K: 16 i8) and of the f16 d (Q4_K/Q5_K: dmin follows at d + 2).
pub fn scalesOffset(comptime W: type) usize {
    return W.off_scales;
}
pub fn dOffsetOf(comptime W: type) usize {
    return if (W == Q6_K) Q6_K.off_d else 0;
}

/// One row-block of a K-quant as its 256 unsigned quants in element order and, per sub-block
/// s, an effective scale and offset: value_e = scale[s]·q_e − offset[s] (Q4_K/Q5_K:
/// d·sc_s and dmin·m_s; Q6_K: d·sc_s and 32·d·sc_s).
pub fn unpackRowBlock(comptime W: type, wb: [*]const u8, q: *[256]u8, scale: *[16]f32, offset: *[16]f32) void {
    inline for (0..4) |k| q[64 * k ..][0..64].* = W.quants(wb, k);
    if (W == Q6_K) {
        const d = loadF16(wb + Q6_K.off_d);
        for (0..16) |j| {
            const sc: f32 = @floatFromInt(@as(i8, @bitCast(wb[Q6_K.off_scales + j])));
            scale[j] = d * sc;
            offset[j] = 32 * d * sc;
        }
    } else {
        const sm = unpackScalesMins(wb + W.off_scales);
        const d = loadF16(wb);
        const dmin = loadF16(wb + 2);
        for (0..8) |j| {
            scale[j] = d * @as(f32, @floatFromInt(sm.sc[j]));
            offset[j] = dmin * @as(f32, @floatFromInt(sm.m[j]));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Quantizers (ggml's *_ref search, written out; float ops in ggml's order, never fused)
//
// Checked against ggml's quantize_row_q{4,5,6}_K_ref / q8_K_ref (clang -O2, x86-64-v3):
// bit-identical output on 4096 Gaussian blocks per type when the C is built with
// -ffp-contract=off. With clang's default -ffp-contract=on (or GCC's =fast) ggml itself fuses
// some multiply-adds on FMA targets and ~1-2% of Q4_K/Q6_K blocks differ in a scale or a few
// quants; quality is the same. ActQ8_K and all dequantizers match in both builds.
// ---------------------------------------------------------------------------------------------

const group_max_eps: f32 = 1e-15;

/// quantize_row_q{4,5}_K_ref: per 32, weights av_x + |x| and make_qkx2_quants; scales and mins
/// to 6 bits relative to their maxima; requantize with the f16-rounded d·sc and dmin·m.
fn quantizeMinType(comptime W: type, src: [*]const f32, dst: [*]u8, n: usize) void {
    std.debug.assert(n % 256 == 0);
    for (0..n / 256) |i| quantizeMinBlock(W, src[256 * i ..][0..256], dst + i * W.type_size);
}

fn quantizeMinBlock(comptime W: type, x: *const [256]f32, b: [*]u8) void {
    var L: [256]u8 = undefined;
    var scales: [8]f32 = undefined;
    var mins: [8]f32 = undefined;
    var max_scale: f32 = 0;
    var max_min: f32 = 0;
    for (0..8) |j| {
        const xs = x[32 * j ..][0..32];
        var sum_x2: f32 = 0;
        for (xs) |v| sum_x2 += v * v;
        const av_x = @sqrt(sum_x2 / 32.0);
        var weights: [32]f32 = undefined;
        for (xs, &weights) |v, *wt| wt.* = av_x + @abs(v);
        scales[j] = makeQkx2Quants(W.nmax, xs, &weights, L[32 * j ..][0..32], &mins[j], W.rmin, 0.1, W.nstep);
        max_scale = @max(max_scale, scales[j]);
        max_min = @max(max_min, mins[j]);
    }
    const inv_scale: f32 = if (max_scale > 0) 63.0 / max_scale else 0;
    const inv_min: f32 = if (max_min > 0) 63.0 / max_min else 0;
    const s = b + W.off_scales;
    for (0..8) |j| {
        // (uint8_t) truncation then MIN(63, ·), as ggml.
        const ls: u8 = @min(63, @as(u8, @truncate(@as(u32, @bitCast(nearestInt(inv_scale * scales[j]))))));
        const lm: u8 = @min(63, @as(u8, @truncate(@as(u32, @bitCast(nearestInt(inv_min * mins[j]))))));
        if (j < 4) {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            s[j - 4] |= (ls >> 4) << 6;
            s[j] |= (lm >> 4) << 6;
        }
    }
    storeF16(b, max_scale / 63.0);
    storeF16(b + 2, max_min / 63.0);
    const d = loadF16(b);
    const dmin = loadF16(b + 2);
    for (0..8) |j| {
        const sm = getScaleMinK4(j, s);
        const dj = d * @as(f32, @floatFromInt(sm.sc));
        if (dj == 0) continue;
        const dmj = dmin * @as(f32, @floatFromInt(sm.m));
        for (32 * j..32 * j + 32) |e| {
            L[e] = @intCast(std.math.clamp(nearestInt((x[e] + dmj) / dj), 0, W.nmax));
        }
    }
    W.packQuants(b, &L);
}

/// make_qkx2_quants (use_mad = false): fit x ≈ scale·L − the_min with L ∈ 0..nmax by trying
/// nstep+1 inverse scales and solving the weighted least squares for scale and min each time.
fn makeQkx2Quants(
    comptime nmax: i32,
    x: *const [32]f32,
    w: *const [32]f32,
    L: *[32]u8,
    the_min: *f32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) f32 {
    const nmaxf: f32 = @floatFromInt(nmax);
    var min = x[0];
    var max = x[0];
    var sum_w = w[0];
    var sum_x = sum_w * x[0];
    for (1..32) |i| {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        @memset(L, 0);
        the_min.* = -min;
        return 0;
    }
    var iscale = nmaxf / (max - min);
    var scale = 1 / iscale;
    var best_error: f32 = 0;
    for (0..32) |i| {
        L[i] = @intCast(std.math.clamp(nearestInt(iscale * (x[i] - min)), 0, nmax));
        const diff = scale * @as(f32, @floatFromInt(L[i])) + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    var Laux: [32]u8 = undefined;
    var is: i32 = 0;
    while (is <= nstep) : (is += 1) {
        iscale = (rmin + rdelta * @as(f32, @floatFromInt(is)) + nmaxf) / (max - min);
        var sum_l: f32 = 0;
        var sum_l2: f32 = 0;
        var sum_xl: f32 = 0;
        for (0..32) |i| {
            const l = std.math.clamp(nearestInt(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = @intCast(l);
            const lf: f32 = @floatFromInt(l);
            sum_l += w[i] * lf;
            sum_l2 += w[i] * lf * lf;
            sum_xl += w[i] * lf * x[i];
        }
        const D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            var this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            var this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            var cur_error: f32 = 0;
            for (0..32) |i| {
                const diff = this_scale * @as(f32, @floatFromInt(Laux[i])) + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                L.* = Laux;
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    the_min.* = -min;
    return scale;
}

/// make_qx_quants(16, 32, x, L, rmse_type = 1, NULL): symmetric 6-bit fit with weights x²,
/// trying inverse scales −(32 + 0.1·is)/max for is = −9..9. L holds q + 32 (0..63).
fn makeQxQuants(x: *const [16]f32, L: *[16]u8) f32 {
    const nmax = 32;
    var max: f32 = 0;
    var amax: f32 = 0;
    for (x) |v| {
        if (@abs(v) > amax) {
            amax = @abs(v);
            max = v;
        }
    }
    if (amax < group_max_eps) {
        @memset(L, 0);
        return 0;
    }
    var iscale = -@as(f32, nmax) / max;
    var sumlx: f32 = 0;
    var suml2: f32 = 0;
    for (x, L) |v, *q| {
        const l = std.math.clamp(nearestInt(iscale * v), -nmax, nmax - 1);
        q.* = @intCast(l + nmax);
        const lf: f32 = @floatFromInt(l);
        const wt = v * v;
        sumlx += wt * v * lf;
        suml2 += wt * lf * lf;
    }
    var scale: f32 = if (suml2 != 0) sumlx / suml2 else 0;
    var best = scale * sumlx;
    var is: i32 = -9;
    while (is <= 9) : (is += 1) {
        if (is == 0) continue;
        iscale = -(@as(f32, nmax) + 0.1 * @as(f32, @floatFromInt(is))) / max;
        sumlx = 0;
        suml2 = 0;
        for (x) |v| {
            const lf: f32 = @floatFromInt(std.math.clamp(nearestInt(iscale * v), -nmax, nmax - 1));
            const wt = v * v;
            sumlx += wt * v * lf;
            suml2 += wt * lf * lf;
        }
        if (suml2 > 0 and sumlx * sumlx > best * suml2) {
            for (x, L) |v, *q| q.* = @intCast(std.math.clamp(nearestInt(iscale * v), -nmax, nmax - 1) + nmax);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const testing = std.testing;
const weight_types = .{ Q4_K, Q5_K, Q6_K };
const sentinel_f32: u32 = 0xDEADBEEF;
const sentinel_u8: u8 = 0xA5;
const guard = 16;

fn dOffset(comptime T: type) usize {
    return if (T == Q6_K) Q6_K.off_d else 0;
}

/// Random quant bytes with finite f16 d (and dmin) of moderate size.
fn fillBlocks(comptime T: type, r: std.Random, buf: []u8) void {
    r.bytes(buf);
    var i: usize = 0;
    while (i < buf.len) : (i += T.type_size) {
        storeF16(buf[i + dOffset(T) ..].ptr, (r.float(f32) - 0.5) * 0.02);
        if (T != Q6_K) storeF16(buf[i + 2 ..].ptr, (r.float(f32) - 0.5) * 0.02);
    }
}

fn allocF32Guarded(n: usize) ![]f32 {
    const b = try testing.allocator.alloc(f32, n + guard);
    for (b[n..]) |*x| x.* = @bitCast(sentinel_f32);
    return b;
}

fn checkF32Guard(b: []const f32, n: usize) !void {
    for (b[n..]) |x| try testing.expectEqual(sentinel_f32, @as(u32, @bitCast(x)));
}

fn allocU8Guarded(n: usize) ![]u8 {
    const b = try testing.allocator.alloc(u8, n + guard);
    @memset(b[n..], sentinel_u8);
    return b;
}

fn checkU8Guard(b: []const u8, n: usize) !void {
    for (b[n..]) |x| try testing.expectEqual(sentinel_u8, x);
}

fn fillNormal(r: std.Random, x: []f32, sigma: f32) void {
    for (x) |*v| v.* = r.floatNorm(f32) * sigma;
}

fn nmse(ref: []const f64, got: []const f64) f64 {
    var num: f64 = 0;
    var den: f64 = 0;
    for (ref, got) |a, b| {
        num += (a - b) * (a - b);
        den += a * a;
    }
    return num / den;
}

const block_counts = [_]usize{ 1, 2, 3, 7, 11 };

test "dequantizeRow matches dequantizeRowRef bit-exactly" {
    var prng = std.Random.DefaultPrng.init(0x6b71_0001);
    const r = prng.random();
    inline for (weight_types) |T| {
        for (block_counts) |nb| {
            const n = nb * 256;
            const src = try testing.allocator.alloc(u8, nb * T.type_size);
            defer testing.allocator.free(src);
            fillBlocks(T, r, src);
            const a = try allocF32Guarded(n);
            defer testing.allocator.free(a);
            const b = try allocF32Guarded(n);
            defer testing.allocator.free(b);
            T.dequantizeRow(src.ptr, a.ptr, n);
            T.dequantizeRowRef(src.ptr, b.ptr, n);
            for (a[0..n], b[0..n]) |x, y| try testing.expectEqual(@as(u32, @bitCast(y)), @as(u32, @bitCast(x)));
            try checkF32Guard(a, n);
            try checkF32Guard(b, n);
        }
    }
}

/// Dequantizes one block with both paths and compares with `want` exactly.
fn expectBlock(comptime T: type, blk: []const u8, want: *const [256]f32) !void {
    var y: [256]f32 = undefined;
    T.dequantizeRowRef(blk.ptr, &y, 256);
    try testing.expectEqualSlices(f32, want, &y);
    T.dequantizeRow(blk.ptr, &y, 256);
    try testing.expectEqualSlices(f32, want, &y);
}

// Q4_K/Q5_K scales and mins used by the known-answer blocks, and their packing done by hand:
// sub-blocks 4..7 have sc = 17, 33, 50, 63 (high 2 bits 1, 2, 3, 3; low 4 bits 1, 1, 2, 15) and
// m = 20, 40, 48, 63 (high 1, 2, 3, 3; low 4, 8, 0, 15).
const ka_sc = [8]f32{ 1, 2, 3, 4, 17, 33, 50, 63 };
const ka_m = [8]f32{ 5, 6, 7, 8, 20, 40, 48, 63 };
const ka_scales = [12]u8{
    0x41, 0x82, 0xC3, 0xC4, // sc0..3 | (sc4..7 >> 4) << 6
    0x45, 0x86, 0xC7, 0xC8, // m0..3 | (m4..7 >> 4) << 6
    0x41, 0x81, 0x02, 0xFF, // (sc4..7 & 15) | (m4..7 & 15) << 4
};

test "known-answer blocks from the ggml layouts" {
    var want: [256]f32 = undefined;

    // Q4_K: d = 0.5 (f16 0x3800), dmin = 0.25 (0x3400); qs[32c + l] = (l%16) | (15 − l%16)<<4,
    // so sub-block 2c holds l%16 and sub-block 2c+1 holds 15 − l%16.
    var q4: [144]u8 = undefined;
    q4[0..4].* = .{ 0x00, 0x38, 0x00, 0x34 };
    q4[4..16].* = ka_scales;
    for (0..128) |j| q4[16 + j] = @intCast((j % 16) | ((15 - j % 16) << 4));
    for (0..256) |e| {
        const l: f32 = @floatFromInt(e % 16);
        const sub = e / 32;
        const q = if (sub % 2 == 0) l else 15 - l;
        want[e] = 0.5 * ka_sc[sub] * q - 0.25 * ka_m[sub];
    }
    try testing.expectEqual(@as(f32, -1.25), want[0]); // 0.5·1·0 − 0.25·5
    try testing.expectEqual(@as(f32, 13.5), want[32]); // 0.5·2·15 − 0.25·6
    try testing.expectEqual(@as(f32, 221), want[128 + 32 + 1]); // 0.5·33·14 − 0.25·40
    try testing.expectEqual(@as(f32, -15.75), want[192 + 32 + 15]); // 0.5·63·0 − 0.25·63
    try expectBlock(Q4_K, &q4, &want);

    // Q5_K: same scales and nibbles; qh[l] = 0x55 for even l (bits 0,2,4,6: every low-nibble
    // element gets +16) and 0xAA for odd l (every high-nibble element gets +16).
    var q5: [176]u8 = undefined;
    q5[0..4].* = .{ 0x00, 0x38, 0x00, 0x34 };
    q5[4..16].* = ka_scales;
    for (0..32) |l| q5[16 + l] = if (l % 2 == 0) 0x55 else 0xAA;
    for (0..128) |j| q5[48 + j] = @intCast((j % 16) | ((15 - j % 16) << 4));
    for (0..256) |e| {
        const l: f32 = @floatFromInt(e % 16);
        const sub = e / 32;
        const low = sub % 2 == 0;
        const q = (if (low) l else 15 - l) + @as(f32, if (low == (e % 2 == 0)) 16 else 0);
        want[e] = 0.5 * ka_sc[sub] * q - 0.25 * ka_m[sub];
    }
    try testing.expectEqual(@as(f32, 8 - 1.25), want[0]); // 0.5·1·16 − 0.25·5
    try testing.expectEqual(@as(f32, 0.5 * 63 * 16 - 15.75), want[255]); // odd l, high nibble 0
    try expectBlock(Q5_K, &q5, &want);

    // Q6_K: d = 0.25 (0x3400), scales[g] = g − 8 except scales[0] = 127 and scales[15] = −128.
    // ql = 0x21 (low 1, high 2), qh = 0xE4 (pairs 0,1,2,3) → q−32 per quarter j of each half:
    // j=0: 1|0<<4 → −31, j=1: 1|1<<4 → −15, j=2: 2|2<<4 → 2, j=3: 2|3<<4 → 18. Exceptions:
    // ql[5] = 0xF0 → element 5: 0 → −32 and element 69: 15|2<<4 → 15; qh[35] = 0xFF →
    // elements 131, 163: 1|3<<4 → 17 and 195, 227: 2|3<<4 → 18.
    var q6: [210]u8 = undefined;
    @memset(q6[0..128], 0x21);
    @memset(q6[128..192], 0xE4);
    for (0..16) |g| q6[192 + g] = @bitCast(@as(i8, @intCast(@as(i32, @intCast(g)) - 8)));
    q6[192] = 127;
    q6[207] = 0x80;
    q6[208..210].* = .{ 0x00, 0x34 };
    q6[5] = 0xF0;
    q6[128 + 35] = 0xFF;
    const quarter = [4]f32{ -31, -15, 2, 18 };
    for (0..256) |e| {
        var q = quarter[(e % 128) / 32];
        if (e == 5) q = -32;
        if (e == 69) q = 15;
        if (e == 131 or e == 163) q = 17;
        if (e == 195 or e == 227) q = 18;
        const sc: f32 = if (e < 16) 127 else if (e >= 240) -128 else @floatFromInt(@as(i32, @intCast(e / 16)) - 8);
        want[e] = 0.25 * sc * q;
    }
    try testing.expectEqual(@as(f32, -1016), want[5]); // 0.25·127·(−32)
    try testing.expectEqual(@as(f32, -576), want[255]); // 0.25·(−128)·18
    try expectBlock(Q6_K, &q6, &want);
}

test "ActQ8_K quantizeRow equals quantizeRowRef; bsums are the 16-sums" {
    var prng = std.Random.DefaultPrng.init(0x6b71_0002);
    const r = prng.random();
    for (block_counts) |nb| {
        const n = nb * 256;
        const x = try testing.allocator.alloc(f32, n);
        defer testing.allocator.free(x);
        fillNormal(r, x, 2.0);
        // Edge cases: an all-zero block, a block whose largest |x| is negative and tied with a
        // later positive one (the first wins), and exact .5 ties for round-half-even.
        @memset(x[0..256], 0);
        if (nb > 1) {
            x[256 + 7] = -9;
            x[256 + 100] = 9;
        }
        if (nb > 2) {
            for (512..768) |j| x[j] = @as(f32, @floatFromInt(@as(i32, @intCast(j % 64)) - 32)) * 0.5;
            x[512] = 127;
        }
        const rb = nb * ActQ8_K.type_size;
        const a = try allocU8Guarded(rb);
        defer testing.allocator.free(a);
        const b = try allocU8Guarded(rb);
        defer testing.allocator.free(b);
        ActQ8_K.quantizeRow(x.ptr, a.ptr, n);
        ActQ8_K.quantizeRowRef(x.ptr, b.ptr, n);
        try testing.expectEqualSlices(u8, b[0..rb], a[0..rb]);
        try checkU8Guard(a, rb);
        try checkU8Guard(b, rb);
        for (0..nb) |i| {
            const blk = a[i * ActQ8_K.type_size ..];
            for (0..16) |g| {
                var s: i32 = 0;
                for (0..16) |k| s += @as(i8, @bitCast(blk[ActQ8_K.off_qs + 16 * g + k]));
                try testing.expectEqual(s, std.mem.readInt(i16, blk[ActQ8_K.off_bsums + 2 * g ..][0..2], .little));
            }
        }
        try testing.expectEqual(@as(f32, 0), loadF32(a.ptr + ActQ8_K.off_d));
        if (nb > 1) {
            // The first largest |x| is −9, so iscale = −127/−9 > 0: x = −9 → −127, x = 9 → 127.
            const blk = a[ActQ8_K.type_size..];
            try testing.expectEqual(@as(f32, 1.0 / (-127.0 / -9.0)), loadF32(blk.ptr + ActQ8_K.off_d));
            try testing.expectEqual(@as(i8, -127), @as(i8, @bitCast(blk[ActQ8_K.off_qs + 7])));
            try testing.expectEqual(@as(i8, 127), @as(i8, @bitCast(blk[ActQ8_K.off_qs + 100])));
        }
        if (nb > 2) {
            // max = 127 → iscale = −1: x = k/2 → nearest-even(−k/2), e.g. 0.5 → 0, 1.5 → −2.
            const blk = a[2 * ActQ8_K.type_size ..];
            try testing.expectEqual(@as(f32, -1), loadF32(blk.ptr + ActQ8_K.off_d));
            try testing.expectEqual(@as(i8, 0), @as(i8, @bitCast(blk[ActQ8_K.off_qs + 33]))); // x = 0.5
            try testing.expectEqual(@as(i8, -2), @as(i8, @bitCast(blk[ActQ8_K.off_qs + 35]))); // x = 1.5
            try testing.expectEqual(@as(i8, 2), @as(i8, @bitCast(blk[ActQ8_K.off_qs + 29]))); // x = −1.5
        }
    }
}

/// Σ |w_i·x_i| over dequantized weights and activations: the scale for float-order tolerances.
fn absDot(comptime T: type, w: []const u8, a: []const u8, n: usize) !f64 {
    const wf = try testing.allocator.alloc(f32, n);
    defer testing.allocator.free(wf);
    T.dequantizeRowRef(w.ptr, wf.ptr, n);
    var s: f64 = 0;
    for (0..n) |e| {
        const blk = a[(e / 256) * ActQ8_K.type_size ..];
        const xa = loadF32(blk.ptr + ActQ8_K.off_d) * @as(f32, @floatFromInt(@as(i8, @bitCast(blk[ActQ8_K.off_qs + e % 256]))));
        s += @abs(@as(f64, wf[e]) * xa);
    }
    return s;
}

test "vecDot matches vecDotRef" {
    var prng = std.Random.DefaultPrng.init(0x6b71_0003);
    const r = prng.random();
    inline for (weight_types) |T| {
        for (block_counts) |nb| {
            for (0..4) |_| {
                const n = nb * 256;
                const w = try testing.allocator.alloc(u8, nb * T.type_size);
                defer testing.allocator.free(w);
                fillBlocks(T, r, w);
                const x = try testing.allocator.alloc(f32, n);
                defer testing.allocator.free(x);
                fillNormal(r, x, 1.0);
                const a = try testing.allocator.alloc(u8, nb * ActQ8_K.type_size);
                defer testing.allocator.free(a);
                ActQ8_K.quantizeRow(x.ptr, a.ptr, n);
                const fast = T.vecDot(n, w.ptr, a.ptr);
                const ref = T.vecDotRef(n, w.ptr, a.ptr);
                const tol = 1e-5 * try absDot(T, w, a, n) + 1e-30;
                try testing.expect(@abs(@as(f64, fast) - ref) <= tol);
            }
        }
    }
}

test "vecDotRows equals vecDot row by row (1, 2, 3, 4 and 5 rows per call, odd block counts)" {
    @setEvalBranchQuota(100_000);
    var prng = std.Random.DefaultPrng.init(0x6b71_0005);
    const r = prng.random();
    inline for (weight_types) |T| {
        for (block_counts) |nb| {
            const n = nb * 256;
            const rows = 5;
            const rb = nb * T.type_size;
            const w = try testing.allocator.alloc(u8, rows * rb);
            defer testing.allocator.free(w);
            fillBlocks(T, r, w);
            const x = try testing.allocator.alloc(f32, n);
            defer testing.allocator.free(x);
            fillNormal(r, x, 1.0);
            const a = try testing.allocator.alloc(u8, nb * ActQ8_K.type_size);
            defer testing.allocator.free(a);
            ActQ8_K.quantizeRow(x.ptr, a.ptr, n);
            inline for (1..rows + 1) |R| {
                var out: [R]f32 = undefined;
                T.vecDotRows(R, n, w.ptr, rb, a.ptr, &out);
                for (0..R) |j| {
                    const one = T.vecDot(n, w[j * rb ..].ptr, a.ptr);
                    try testing.expectEqual(@as(u32, @bitCast(one)), @as(u32, @bitCast(out[j])));
                    const ref = T.vecDotRef(n, w[j * rb ..].ptr, a.ptr);
                    const tol = 1e-5 * try absDot(T, w[j * rb ..][0..rb], a, n) + 1e-30;
                    try testing.expect(@abs(@as(f64, out[j]) - ref) <= tol);
                }
            }
        }
    }
}
test "vecDot at the integer extremes (no i16 saturation)" {
    // Largest quants with the largest scales against ±127 activations: the integer sums must
    // agree exactly, so compare the fast and reference results for equality up to float order.
    var x: [256]f32 = undefined;
    for (&x, 0..) |*v, e| v.* = if (e % 3 == 0) -1.0 else 1.0;
    var a: [ActQ8_K.type_size]u8 = undefined;
    ActQ8_K.quantizeRow(&x, &a, 256);
    var q6: [210]u8 = undefined;
    @memset(q6[0..192], 0xFF); // every q = 63
    @memset(q6[192..208], 0x80); // every scale −128
    q6[208..210].* = .{ 0x00, 0x3C }; // d = 1
    try testing.expectEqual(Q6_K.vecDotRef(256, &q6, &a), Q6_K.vecDot(256, &q6, &a));
    var q5: [176]u8 = undefined;
    @memset(&q5, 0xFF); // q = 31, sc = m = 63
    q5[0..4].* = .{ 0x00, 0x3C, 0x00, 0x3C };
    try testing.expectEqual(Q5_K.vecDotRef(256, &q5, &a), Q5_K.vecDot(256, &q5, &a));
    var q4: [144]u8 = undefined;
    @memset(&q4, 0xFF);
    q4[0..4].* = .{ 0x00, 0x3C, 0x00, 0x3C };
    try testing.expectEqual(Q4_K.vecDotRef(256, &q4, &a), Q4_K.vecDot(256, &q4, &a));
}

/// NMSE budgets of vecDot (weights · Q8_K activations) against the f64 dot of the dequantized
/// weights with the raw f32 activations; the error is the activation rounding alone.
/// For N(0,1) activations that is (amax/127)²/12 ≈ 4.3e-5 per element; measured over 50 sets
/// of 64 rows: mean 5.1e-5 / 4.9e-5 / 5.2e-5 (Q4_K / Q5_K / Q6_K), worst 7.6e-5 / 9.9e-5 / 8.8e-5.
const dot_nmse_budget = 2e-4;

test "vecDot vs f64 dot of dequantized weights and f32 activations" {
    var prng = std.Random.DefaultPrng.init(0x6b71_0004);
    const r = prng.random();
    const nb = 8;
    const n = nb * 256;
    const rows = 64;
    inline for (weight_types) |T| {
        var ref: [rows]f64 = undefined;
        var got: [rows]f64 = undefined;
        const w = try testing.allocator.alloc(u8, nb * T.type_size);
        defer testing.allocator.free(w);
        const wf = try testing.allocator.alloc(f32, n);
        defer testing.allocator.free(wf);
        const x = try testing.allocator.alloc(f32, n);
        defer testing.allocator.free(x);
        const a = try testing.allocator.alloc(u8, nb * ActQ8_K.type_size);
        defer testing.allocator.free(a);
        for (0..rows) |row| {
            fillBlocks(T, r, w);
            fillNormal(r, x, 1.0);
            T.dequantizeRow(w.ptr, wf.ptr, n);
            ActQ8_K.quantizeRow(x.ptr, a.ptr, n);
            var s: f64 = 0;
            for (wf, x) |p, q| s += @as(f64, p) * q;
            ref[row] = s;
            got[row] = T.vecDot(n, w.ptr, a.ptr);
        }
        const e = nmse(&ref, &got);
        testing.expect(e < dot_nmse_budget) catch |err| {
            std.debug.print("{s}: vecDot NMSE {e}\n", .{ @typeName(T), e });
            return err;
        };
    }
}

/// Round-trip NMSE budgets for Gaussian weights. Measured over 2048 blocks of N(0,1):
/// Q4_K 5.10e-3, Q5_K 1.30e-3, Q6_K 3.16e-4 (the quantizers are bit-identical to ggml's
/// *_ref compiled without FP contraction, so these are ggml's numbers too). Single rows of a
/// few blocks scatter around that, hence ~25% headroom.
const rt_budget = .{ .q4 = 6.5e-3, .q5 = 1.7e-3, .q6 = 4.0e-4 };

test "quantizeRow → dequantizeRow round trip" {
    var prng = std.Random.DefaultPrng.init(0x6b71_0005);
    const r = prng.random();
    const types = .{ Q4_K, Q5_K, Q6_K };
    const budgets = [3]f64{ rt_budget.q4, rt_budget.q5, rt_budget.q6 };
    inline for (types, budgets) |T, budget| {
        for (block_counts) |nb| {
            const n = nb * 256;
            const x = try testing.allocator.alloc(f32, n);
            defer testing.allocator.free(x);
            fillNormal(r, x, 0.05);
            const rb = nb * T.type_size;
            const q = try allocU8Guarded(rb);
            defer testing.allocator.free(q);
            T.quantizeRow(x.ptr, q.ptr, n);
            try checkU8Guard(q, rb);
            const y = try allocF32Guarded(n);
            defer testing.allocator.free(y);
            T.dequantizeRow(q.ptr, y.ptr, n);
            try checkF32Guard(y, n);
            var num: f64 = 0;
            var den: f64 = 0;
            for (x, y[0..n]) |u, v| {
                num += (@as(f64, u) - v) * (@as(f64, u) - v);
                den += @as(f64, u) * u;
            }
            testing.expect(num / den < budget) catch |err| {
                std.debug.print("{s} nb={d}: round-trip NMSE {e}\n", .{ @typeName(T), nb, num / den });
                return err;
            };
        }
    }
}

test "quantizeRow edge cases: zeros, constants, exact grids" {
    var x: [256]f32 = @splat(0);
    var q6: [210]u8 = undefined;
    Q6_K.quantizeRow(&x, &q6, 256);
    for (q6) |b| try testing.expectEqual(@as(u8, 0), b);
    var q4: [144]u8 = undefined;
    Q4_K.quantizeRow(&x, &q4, 256);
    var y: [256]f32 = undefined;
    Q4_K.dequantizeRow(&q4, &y, 256);
    for (y) |v| try testing.expectEqual(@as(f32, 0), v);
    // Values q·2^−4 on the 6-bit grid, each 16-group led by q = −32: every make_qx_quants fit
    // is exact (scale 2^−4, d = −2^−11, sc = −128 all exactly representable), so Q6_K
    // reproduces the input bit for bit.
    for (&x, 0..) |*v, e| {
        const q: i32 = if (e % 16 == 0) -32 else @as(i32, @intCast((e * 7) % 64)) - 32;
        v.* = @as(f32, @floatFromInt(q)) * 0.0625;
    }
    Q6_K.quantizeRow(&x, &q6, 256);
    try testing.expectEqual(@as(u16, 0x9000), std.mem.readInt(u16, q6[208..210], .little)); // −2^−11
    for (q6[192..208]) |b| try testing.expectEqual(@as(u8, 0x80), b);
    Q6_K.dequantizeRow(&q6, &y, 256);
    try testing.expectEqualSlices(f32, &x, &y);
    // Q4_K: q·0.25 with q ∈ 0..15 and every 32-run holding both 0 and 15: min 0, exact fit with
    // scale 0.25 → sc = 63, d = f16(0.25/63), so only d's f16 rounding (≤ 2^−11 relative) shows.
    for (&x, 0..) |*v, e| v.* = @as(f32, @floatFromInt(if (e % 32 == 1) 15 else (e * 5) % 16 * @intFromBool(e % 32 != 0))) * 0.25;
    Q4_K.quantizeRow(&x, &q4, 256);
    Q4_K.dequantizeRow(&q4, &y, 256);
    for (x, y) |u, v| try testing.expectApproxEqAbs(u, v, 15 * 0.25 * 0x1p-11);
}
