//! GGUF "legacy" weight types (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) and the 8-bit
//! activation format their integer dot products consume (ActQ8_0).
//!
//! Layouts and rounding follow ggml (ggml-common.h / ggml-quants.c). Every type exposes the same
//! namespace interface (block_size, type_size, act, dequantizeRow[Ref], vecDot[Ref]) so the
//! traits table in quant.zig can dispatch at compile time.
//!
//! SIMD paths are chosen at comptime from the target CPU (the library is built once per level):
//! x86-64 baseline uses generic @Vector code, AVX2 uses vpmaddubsw+vpmaddwd, AVX-512 VNNI uses
//! vpdpbusd, aarch64+dotprod uses sdot. Weight rows are byte streams with no alignment (an
//! 18-byte Q4_0 block lands anywhere), so all loads go through byte arrays.
const std = @import("std");
const builtin = @import("builtin");
const cpu = @import("cpu.zig");

/// The activation formats weight types consume (quant.ActTraits): f32 rows as they are; f32 rows
/// followed by their bf16 roundings (BF16 weights: bf16.prepareRow); Q8_0 blocks; Q8_K blocks.
pub const ActKind = enum { f32, f32_bf16, q8_0, q8_k };

// ---------------------------------------------------------------------------------------------
// CPU features
// ---------------------------------------------------------------------------------------------

// Comptime flags of the build's CPU level (cpu.zig).
const has_avx2 = cpu.has_avx2;
const has_avx512bw = cpu.has_avx512bw;
const has_vnni = cpu.has_vnni256;
const has_dotprod = cpu.has_dotprod;

/// f32 lanes per vector for the float paths (16 on AVX-512, 8 on AVX2, 4 on SSE/NEON).
const vlen_f32: usize = std.simd.suggestVectorLength(f32) orelse 4;

extern fn @"llvm.x86.avx2.pmadd.ub.sw"(a: @Vector(32, u8), b: @Vector(32, i8)) @Vector(16, i16);
extern fn @"llvm.x86.avx2.pmadd.wd"(a: @Vector(16, i16), b: @Vector(16, i16)) @Vector(8, i32);
extern fn @"llvm.x86.avx2.psign.b"(a: @Vector(32, i8), b: @Vector(32, i8)) @Vector(32, i8);
extern fn @"llvm.x86.avx512.vpdpbusd.256"(acc: @Vector(8, i32), a: @Vector(8, i32), b: @Vector(8, i32)) @Vector(8, i32);
extern fn @"llvm.x86.avx512.vpdpbusd.512"(acc: @Vector(16, i32), a: @Vector(16, i32), b: @Vector(16, i32)) @Vector(16, i32);
extern fn @"llvm.aarch64.neon.sdot.v4i32.v16i8"(acc: @Vector(4, i32), a: @Vector(16, i8), b: @Vector(16, i8)) @Vector(4, i32);

// ---------------------------------------------------------------------------------------------
// Small load/convert helpers (unaligned, little-endian)
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

inline fn storeF16(p: [*]u8, v: f32) void {
    const h: f16 = @floatCast(v); // round-to-nearest-even, as GGML_FP32_TO_FP16
    std.mem.writeInt(u16, p[0..2], @bitCast(h), .little);
}

inline fn loadU32(p: [*]const u8) u32 {
    return std.mem.readInt(u32, p[0..4], .little);
}

/// ggml_compute_fp32_to_bf16: round-to-nearest-even on the top 16 bits; NaNs are kept quiet.
fn f32ToBf16(x: f32) u16 {
    const u: u32 = @bitCast(x);
    if ((u & 0x7fff_ffff) > 0x7f80_0000) return @truncate((u >> 16) | 64);
    return @truncate((u +% (0x7fff + ((u >> 16) & 1))) >> 16);
}

inline fn bf16ToF32(h: u16) f32 {
    return @bitCast(@as(u32, h) << 16);
}

/// 16 packed nibbles → 32 values: low nibbles are elements 0..15, high nibbles 16..31 (ggml's
/// split layout, not interleaved).
inline fn unpackNibbles(p: [*]const u8) @Vector(32, u8) {
    const v: @Vector(16, u8) = p[0..16].*;
    const lo = v & @as(@Vector(16, u8), @splat(0x0f));
    const hi = v >> @splat(4);
    return std.simd.join(lo, hi);
}

/// Bit j of `h` → 16 in byte j, else 0 (the fifth bit of Q5_0/Q5_1 quants).
pub inline fn highBits(h: u32) @Vector(32, u8) {
    const sixteen: @Vector(32, u8) = @splat(16);
    const zero: @Vector(32, u8) = @splat(0);
    if (comptime has_avx512bw) {
        // A u32 is directly a lane mask (kmovd + masked move).
        const m: @Vector(32, bool) = @bitCast(h);
        return @select(u8, m, sixteen, zero);
    }
    // Spread byte k of h over lanes 8k..8k+7, then test one bit per lane.
    const b4: @Vector(4, u8) = @bitCast(h);
    const spread = @shuffle(u8, b4, undefined, high_bits_spread);
    const bitv: @Vector(32, u8) = high_bits_bit;
    return @select(u8, (spread & bitv) == bitv, sixteen, zero);
}

// highBits' constant tables, computed once (not at every inlined call: the multi-row kernels
// inline many of them into one function, which would exhaust the comptime branch quota).
const high_bits_spread: [32]i32 = blk: {
    var idx: [32]i32 = undefined;
    for (&idx, 0..) |*x, j| x.* = @intCast(j / 8);
    break :blk idx;
};
const high_bits_bit: [32]u8 = blk: {
    var b: [32]u8 = undefined;
    for (&b, 0..) |*x, j| x.* = @as(u8, 1) << @intCast(j % 8);
    break :blk b;
};

// ---------------------------------------------------------------------------------------------
// Integer dot primitives: 32 bytes × 32 bytes → 8 partial i32 sums (which lanes hold which
// products is unspecified; only the lane total matters).
// ---------------------------------------------------------------------------------------------

/// u: unsigned weights in 0..128 (≤ 31 when has_dotprod, which reads them as i8); s: signed.
inline fn dotUS(u: @Vector(32, u8), s: @Vector(32, i8)) @Vector(8, i32) {
    if (comptime has_vnni) {
        return @"llvm.x86.avx512.vpdpbusd.256"(@splat(0), @bitCast(u), @bitCast(s));
    } else if (comptime has_avx2) {
        // Pair sums are ≤ 2·128·127 < 2^15, so vpmaddubsw never saturates here.
        const p = @"llvm.x86.avx2.pmadd.ub.sw"(u, s);
        return @"llvm.x86.avx2.pmadd.wd"(p, @splat(1));
    } else if (comptime has_dotprod) {
        const ui: @Vector(32, i8) = @bitCast(u);
        return sdot32(ui, s);
    } else {
        return genericDot(@as(@Vector(32, i16), u), @as(@Vector(32, i16), s));
    }
}

/// Signed × signed (Q8_0 weights). x86 has only u8×i8 dot instructions, so move the sign of x
/// onto y (ggml's trick): |x|·sign(y, x) = x·y.
inline fn dotSS(x: @Vector(32, i8), y: @Vector(32, i8)) @Vector(8, i32) {
    if (comptime has_avx2) {
        return dotUS(@abs(x), @"llvm.x86.avx2.psign.b"(y, x));
    } else if (comptime has_dotprod) {
        return sdot32(x, y);
    } else {
        return genericDot(@as(@Vector(32, i16), x), @as(@Vector(32, i16), y));
    }
}

inline fn sdot32(x: @Vector(32, i8), y: @Vector(32, i8)) @Vector(8, i32) {
    const x0: @Vector(16, i8) = std.simd.extract(x, 0, 16);
    const x1: @Vector(16, i8) = std.simd.extract(x, 16, 16);
    const y0: @Vector(16, i8) = std.simd.extract(y, 0, 16);
    const y1: @Vector(16, i8) = std.simd.extract(y, 16, 16);
    const r0 = @"llvm.aarch64.neon.sdot.v4i32.v16i8"(@splat(0), x0, y0);
    const r1 = @"llvm.aarch64.neon.sdot.v4i32.v16i8"(@splat(0), x1, y1);
    return std.simd.join(r0, r1);
}

inline fn genericDot(a: @Vector(32, i16), b: @Vector(32, i16)) @Vector(8, i32) {
    // |a·b| ≤ 128·128 fits i16 only barely for -128·-128, so widen before multiplying.
    const p = @as(@Vector(32, i32), a) * @as(@Vector(32, i32), b);
    const q0: @Vector(8, i32) = std.simd.extract(p, 0, 8);
    const q1: @Vector(8, i32) = std.simd.extract(p, 8, 8);
    const q2: @Vector(8, i32) = std.simd.extract(p, 16, 8);
    const q3: @Vector(8, i32) = std.simd.extract(p, 24, 8);
    return (q0 + q1) + (q2 + q3);
}

// ---------------------------------------------------------------------------------------------
// Activation format
// ---------------------------------------------------------------------------------------------

/// Activations quantized per 32 elements like ggml's Q8_0, with two changes that cost nothing:
/// d stays f32 (ggml rounds it to f16, a small extra error) and s = d·Σqs is stored so weight
/// types with an offset (Q4_0's −8, Q5_0's −16, Q4_1/Q5_1's min) can feed their unsigned quants
/// straight into u8×i8 dot instructions and apply the offset once per block as off·s.
pub const ActQ8_0 = struct {
    pub const block_size: usize = 32;
    pub const type_size: usize = 40;
    pub const Block = extern struct { d: f32, s: f32, qs: [32]i8 };
    comptime {
        std.debug.assert(@sizeOf(Block) == type_size);
        std.debug.assert(@offsetOf(Block, "qs") == 8);
    }

    /// Blocks a group quantizes together (one per f32 lane of a vector).
    const group = vlen_f32;

    /// quantizeRowRef, vectorized, bit for bit: groups of `group` blocks at a time (their amax,
    /// scales and sums as lanes of one vector: cpu.reduceEach), the rest one block at a time.
    /// One block at a time, perf put the top samples in each block's horizontal max and sum and
    /// its scalar division (Emerald Rapids, 2026-12-06: activation quantization 5% of SmolLM2's
    /// prefill); grouped, a 128 × 576 row set took 26.7 µs instead of 31.7 at 1 thread, so the
    /// rest of the time is the per-element work itself.
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        @setEvalBranchQuota(10_000);
        std.debug.assert(n % block_size == 0);
        const nb = n / block_size;
        var i: usize = 0;
        while (i + group <= nb) : (i += group) quantizeGroup(src + i * 32, dst + i * type_size);
        while (i < nb) : (i += 1) {
            const x: @Vector(32, f32) = src[i * 32 ..][0..32].*;
            // amax from 0 as the reference's loop: an all-NaN block gets 0, not NaN.
            const d = @max(cpu.maxLanes(32, @abs(x)), 0) / 127.0;
            const id: f32 = if (d != 0) 1.0 / d else 0.0;
            const q = quants(x, id);
            const b = dst + i * type_size;
            storeF32(b, d);
            storeF32(b + 4, d * @as(f32, @floatFromInt(@reduce(.Add, @as(@Vector(32, i32), q)))));
            b[8..40].* = @bitCast(q);
        }
    }

    /// round(clamp(x·id, ±127)); clamping also turns NaN into a finite value, so the int
    /// conversion is defined.
    inline fn quants(x: @Vector(32, f32), id: f32) @Vector(32, i8) {
        const lim: @Vector(32, f32) = @splat(127.0);
        const y = @min(@max(x * @as(@Vector(32, f32), @splat(id)), -lim), lim);
        return @intFromFloat(@round(y));
    }

    /// `group` consecutive blocks, each lane's operations the single block's.
    inline fn quantizeGroup(src: [*]const f32, dst: [*]u8) void {
        const G = group;
        const VG = @Vector(G, f32);
        const VGi = @Vector(G, i32);
        var parts: [G]VG = undefined;
        inline for (0..G) |b| {
            var m: VG = @abs(@as(VG, src[b * 32 ..][0..G].*));
            inline for (1..32 / G) |c| m = @max(m, @abs(@as(VG, src[b * 32 + c * G ..][0..G].*)));
            parts[b] = m;
        }
        const d = @max(cpu.reduceEach(f32, G, .max, parts), @as(VG, @splat(0))) / @as(VG, @splat(127.0));
        const ids: [G]f32 = @select(f32, d != @as(VG, @splat(0)), @as(VG, @splat(1.0)) / d, @as(VG, @splat(0)));
        var sums: [G]VGi = undefined;
        inline for (0..G) |b| {
            const q = quants(src[b * 32 ..][0..32].*, ids[b]);
            dst[b * type_size + 8 ..][0..32].* = @bitCast(q);
            const qi: @Vector(32, i32) = q;
            var s: VGi = std.simd.extract(qi, 0, G);
            inline for (1..32 / G) |c| s += std.simd.extract(qi, c * G, G);
            sums[b] = s;
        }
        const ds: [G]f32 = d;
        const s: [G]f32 = d * @as(VG, @floatFromInt(cpu.reduceEach(i32, G, .add, sums)));
        inline for (0..G) |b| {
            storeF32(dst + b * type_size, ds[b]);
            storeF32(dst + b * type_size + 4, s[b]);
        }
    }

    pub fn quantizeRowRef(src: [*]const f32, dst: [*]u8, n: usize) void {
        std.debug.assert(n % block_size == 0);
        for (0..n / block_size) |i| {
            const x = src[i * 32 ..][0..32];
            var amax: f32 = 0;
            for (x) |v| amax = @max(amax, @abs(v));
            const d = amax / 127.0;
            const id: f32 = if (d != 0) 1.0 / d else 0.0;
            const b = dst + i * type_size;
            var sum: i32 = 0;
            for (x, 0..) |v, j| {
                const q: i8 = @intFromFloat(@round(@min(@max(v * id, -127.0), 127.0)));
                b[8 + j] = @bitCast(q);
                sum += q;
            }
            storeF32(b, d);
            storeF32(b + 4, d * @as(f32, @floatFromInt(sum)));
        }
    }
};

inline fn actQs(ab: [*]const u8) @Vector(32, i8) {
    return @bitCast(ab[8..40].*);
}

// ---------------------------------------------------------------------------------------------
// Shared block-quant machinery
// ---------------------------------------------------------------------------------------------

/// 512-bit VNNI: the unsigned 4/5-bit types dot two blocks per vpdpbusd.
const pair_dots = has_vnni and has_avx512bw;

/// Integer dot of one weight block with one activation block (8 partial sums).
inline fn blockSumi(comptime W: type, wb: [*]const u8, ab: [*]const u8) @Vector(8, i32) {
    return if (W.signed) dotSS(W.quants(wb), actQs(ab)) else dotUS(W.quants(wb), actQs(ab));
}

/// Two consecutive blocks in one 512-bit vpdpbusd (16 partial sums, 8 per block). Signed
/// weights (Q8_0) go in biased, (q + 128)·a − 128·Σa per 4-byte lane: exactly dotSS's lane sums
/// (so pairing never changes a bit), with the −128·Σa start value depending only on the
/// activation pair (computed once for all the weight rows that share it).
inline fn pairSumi(comptime W: type, wb: [*]const u8, ab: [*]const u8) @Vector(16, i32) {
    const s = std.simd.join(actQs(ab), actQs(ab + ActQ8_0.type_size));
    if (W.signed) {
        const x: @Vector(64, u8) = @bitCast(std.simd.join(W.quants(wb), W.quants(wb + W.type_size)));
        const u = x ^ @as(@Vector(64, u8), @splat(0x80));
        const sum128 = @"llvm.x86.avx512.vpdpbusd.512"(@splat(0), @bitCast(@as(@Vector(64, u8), @splat(0x80))), @bitCast(s));
        return @"llvm.x86.avx512.vpdpbusd.512"(-%sum128, @bitCast(u), @bitCast(s));
    }
    const u = std.simd.join(W.quants(wb), W.quants(wb + W.type_size));
    return @"llvm.x86.avx512.vpdpbusd.512"(@splat(0), @bitCast(u), @bitCast(s));
}

/// The G = 4 block accumulators of a group folded lane-wise into one 8-lane vector, as
/// (a0 + a2) + (a1 + a3) whether they are kept unpaired (P = 1: four 8-lane vectors) or paired
/// (P = 2: [a0|a1] and [a2|a3]), so pairing never changes a bit; one horizontal sum per output
/// then replaces four (short rows, like a 640-wide output head, were spending a third of their
/// time in reductions).
inline fn foldGroup(comptime P: usize, acc: [4 / P]@Vector(8 * P, f32)) @Vector(8, f32) {
    if (P == 2) {
        const v = acc[0] + acc[1]; // [a0 + a2 | a1 + a3]
        return @as(@Vector(8, f32), std.simd.extract(v, 0, 8)) + @as(@Vector(8, f32), std.simd.extract(v, 8, 8));
    }
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
}

/// Lane index vector broadcasting dd[first..first+p) over p runs of 8 lanes.
fn scaleIdx(comptime first: usize, comptime p: usize) @Vector(8 * p, i32) {
    var idx: [8 * p]i32 = undefined;
    for (0..8 * p) |l| idx[l] = @intCast(first + l / 8);
    return idx;
}

/// Accumulates G consecutive blocks. The per-block scalars (weight d, min, activation d and s)
/// are gathered into G-lane vectors so one vcvtph2ps / vmulps / vfmadd serves G blocks; the
/// block sums go P blocks per dot instruction into G/P independent accumulators (independent
/// chains hide FMA latency). Offsets accumulate as coef·s and are scaled by W.off_scale once.
inline fn groupStep(
    comptime W: type,
    comptime G: usize,
    comptime P: usize,
    wb: [*]const u8,
    ab: [*]const u8,
    acc: *[G / P]@Vector(8 * P, f32),
    off: *@Vector(G, f32),
) void {
    var dh: @Vector(G, f16) = undefined;
    var mh: @Vector(G, f16) = undefined;
    var da: @Vector(G, f32) = undefined;
    var sa: @Vector(G, f32) = undefined;
    inline for (0..G) |k| {
        dh[k] = @bitCast(std.mem.readInt(u16, wb[k * W.type_size ..][0..2], .little));
        if (W.has_min) mh[k] = @bitCast(std.mem.readInt(u16, wb[k * W.type_size + 2 ..][0..2], .little));
        da[k] = loadF32(ab + k * ActQ8_0.type_size);
        sa[k] = loadF32(ab + k * ActQ8_0.type_size + 4);
    }
    const dw: @Vector(G, f32) = @floatCast(dh);
    const dd = dw * da;
    if (W.off_scale != 0) {
        const coef: @Vector(G, f32) = if (W.has_min) @floatCast(mh) else dw;
        off.* = @mulAdd(@Vector(G, f32), coef, sa, off.*);
    }
    inline for (0..G / P) |g| {
        const sumi = if (P == 2)
            pairSumi(W, wb + 2 * g * W.type_size, ab + 2 * g * ActQ8_0.type_size)
        else
            blockSumi(W, wb + g * W.type_size, ab + g * ActQ8_0.type_size);
        const scale = @shuffle(f32, dd, undefined, scaleIdx(g * P, P));
        acc[g] = @mulAdd(@Vector(8 * P, f32), @floatFromInt(sumi), scale, acc[g]);
    }
}

/// Dot of a row of 32-element weight blocks with an ActQ8_0 row: groups of 4 blocks, then
/// single blocks for the remainder.
inline fn blockDot(comptime W: type, n: usize, w: [*]const u8, a: [*]const u8) f32 {
    std.debug.assert(n % 32 == 0);
    const nb = n / 32;
    const G = 4;
    const P: usize = if (pair_dots) 2 else 1;
    var acc: [G / P]@Vector(8 * P, f32) = @splat(@splat(0));
    var off: @Vector(G, f32) = @splat(0);
    var i: usize = 0;
    while (i + G <= nb) : (i += G) {
        groupStep(W, G, P, w + i * W.type_size, a + i * ActQ8_0.type_size, &acc, &off);
    }
    var acc1: [1]@Vector(8, f32) = .{@splat(0)};
    var off1: @Vector(1, f32) = @splat(0);
    while (i < nb) : (i += 1) {
        groupStep(W, 1, 1, w + i * W.type_size, a + i * ActQ8_0.type_size, &acc1, &off1);
    }
    comptime std.debug.assert(G == 4);
    return @reduce(.Add, foldGroup(P, acc) + acc1[0]) + W.off_scale * (@reduce(.Add, off) + off1[0]);
}

/// Software prefetch for the multi-row kernels. The R rows of a call sit back to back in memory
/// and the next call takes the R rows right after them, so while this group's rows are consumed
/// in step, a later group is prefetched at the same fraction: after `done` bytes of this group,
/// lines [done, done + span) of a later group (Prefetch.lines). That is one sequential stream
/// running a whole group (R rows, ~9 KB for 4096-wide Q4_0) ahead, far enough to cover DRAM latency; the hardware
/// prefetchers alone left a single thread latency-bound at less than half the read bandwidth.
/// Prefetches past the end of the matrix are harmless (they never fault).
///
/// `into` is the cache level the lines are fetched into under the by_level policy. Fetching into L1 (prefetcht0) holds an
/// L1 miss buffer per line until it arrives; kernels that read many bytes per step then run out
/// of them and stall. Into L2 (prefetcht1), from which the demand loads hit a group later, Q6_K
/// read 1.5× faster and Q5_K 1.4×, Q4_K 1.1–1.3×, Q8_0 1.1× (4096×4096 from DRAM, 2 threads;
/// Q6_K 2.1× on one thread), while the VNNI kernel of the 4-/5-bit legacy types (splitTile)
/// read up to 1.2× slower: it keeps L1 (AMD EPYC Zen 4; two builds' kernels alternated call by
/// call in one process, bench/matmul-ab.ts).
///
/// Fetched into L2, the lines must arrive further ahead: one group of 2048-wide Q4_K rows
/// (4.6 KB) was too close (1.08× slower than L1 there), two groups 1.17× faster than one; at
/// 4096 wide (9 KB per group) two groups gained nothing. Prefetch.init gives the offset.
///
/// The L1 prefetches need the same minimum: 2048-wide Q4_0 rows (4.6 KB per 4-row group)
/// prefetched one group ahead read 1.05–1.2× slower (fused gate+up 5632×2048) and 1.1–1.2×
/// slower (2048×2048) than two groups ahead, over all 22 layers of a TinyLlama-shape file,
/// back to back as in a forward pass (AMD EPYC Zen 5, 2 threads, builds alternated in one
/// process); 5632-wide rows (12.7 KB groups) were unchanged. Four groups ahead (18 KB) gained
/// nothing more and would crowd a 32 KB L1. Whole decode steps (`kiln generate --profile`,
/// libraries alternated run by run): TinyLlama-shape Q4_0 12.2–13.3 → 10.6–11.5 ms/token;
/// Gemma 3 270M (640-wide Q5_0 rows, 5 groups ahead) and SmolLM2 Q4_1 (576 wide) within their
/// run-to-run noise (5.5–5.9 → 5.3–5.6, 3.7–5.1 → 3.4–5.0).
///
/// Which hint fetches the lines is the CPU's (cpu.PrefetchPolicy, chosen at run time): on the
/// Zen 5 host of 2026-12-05 (AMD EPYC family 26 model 2, 2 threads) prefetchnta for every kernel
/// read faster than the levels above, one op over every layer of a real file through its mapping
/// (bench/model-matmul-ab.ts, builds alternated round by round, p50 GB/s, 60 rounds):
/// TinyLlama-shape BF16 ffn_down 41.5 → 46.2, attn_q 44.3 → 48.7, gate+up 46.7 → 47.7; Q8_0
/// ffn_down 44.9 → 47.4, attn_q 45.3 → 50.9; Q4_K gate+up 41.4 → 45.3, ffn_down 43.3 → 47.6;
/// Q4_0 gate+up 41.9 → 45.5, ffn_down 42.9 → 48.2; Llama-2-7B-shape Q4_0 ffn_down 47.4 → 49.2,
/// attn_q 43.7 → 46.6; 2048×2048 Q4_0/Q4_K and the 576–640-wide rows of Gemma 3 270M and
/// SmolLM2 within noise. prefetcht0 for the float rows did about as well as nta (ffn_down 46.0),
/// so on Zen 5 L1 is the place for all of them; Zen 4's L1 was not (above). On Intel Emerald
/// Rapids (2026-12-06) L2 is the place for all of them (the `l2` policy): whole decode steps,
/// policies alternated run by run, TinyLlama-shape Q4_0 1.03–1.04×, Q8_0 1.05×, Gemma 3 270M
/// 1.03–1.09× faster than by_level, and prefetchnta halved decode there. Other CPUs keep the
/// levels they were measured with.
pub const PrefetchInto = enum { l1, l2 };
const l2_prefetch_min_bytes = 8 * 1024;
const l1_prefetch_min_bytes = 8 * 1024;
/// The largest group the L1 kernels prefetch into L1: a 4-row group of 11008-wide Q4_0 rows
/// (24.8 KB, Llama-2-7B's ffn_down) one group ahead of the one being read overflowed Zen 4's
/// 32 KB L1 and read at 23 GB/s against 32 for 4096-wide rows; into L2 it reads at 32.
pub const l1_prefetch_max_bytes = 16 * 1024;

/// Under test, a policy that overrides the CPU's (to run both on one machine).
pub var test_prefetch_policy: ?cpu.PrefetchPolicy = null;

/// The instruction a prefetch uses: prefetcht0, prefetcht1 or prefetchnta.
pub const PrefetchHint = enum { t0, t1, nta };

/// The hint for lines that belong in `level` (cpu.PrefetchPolicy: by_level keeps the level,
/// non_temporal takes nta for every level). Reads the process's decision: once per kernel call.
pub inline fn prefetchHint(level: PrefetchInto) PrefetchHint {
    const policy = if (builtin.is_test and test_prefetch_policy != null) test_prefetch_policy.? else cpu.prefetchChoice().policy();
    return switch (policy) {
        .non_temporal => .nta,
        .by_level => if (level == .l1) .t0 else .t1,
        .l2 => .t1,
    };
}

/// Prefetches the lines of [p, p + span) with `hint` (never faults, whatever the address).
pub inline fn prefetchLines(hint: PrefetchHint, p: [*]const u8, comptime span: usize) void {
    switch (hint) {
        inline else => |h| {
            const locality = switch (h) {
                .t0 => 3,
                .t1 => 2,
                .nta => 0,
            };
            inline for (0..(span + 63) / 64) |l| @prefetch(p + 64 * l, .{ .locality = locality });
        },
    }
}

/// One kernel call's prefetch stream: where the group being prefetched starts (whole groups, at
/// least l2_prefetch_min_bytes or l1_prefetch_min_bytes ahead of the group being read) and the
/// hint, both decided once per call.
pub const Prefetch = struct {
    ahead: [*]const u8,
    hint: PrefetchHint,

    /// For a kernel reading R-row groups of `group_bytes` from `w`, whose lines belong in `into`
    /// (an L1 kernel's groups over l1_prefetch_max_bytes go to L2).
    pub inline fn init(comptime into: PrefetchInto, w: [*]const u8, group_bytes: usize) Prefetch {
        const level: PrefetchInto = if (into == .l1 and group_bytes > l1_prefetch_max_bytes) .l2 else into;
        const min_bytes: usize = switch (level) {
            .l1 => l1_prefetch_min_bytes,
            .l2 => l2_prefetch_min_bytes,
        };
        return .{ .ahead = w + group_bytes * @max(1, (min_bytes + group_bytes - 1) / group_bytes), .hint = prefetchHint(level) };
    }

    /// Lines [done, done + span) of the group being prefetched.
    pub inline fn lines(p: Prefetch, done: usize, comptime span: usize) void {
        prefetchLines(p.hint, p.ahead + done, span);
    }
};

/// Weight rows per decode call of the 32-element block types (matmul.zig dotRows; a row's bits do
/// not depend on it). Without AVX-512 there are 16 vector registers, and 4 rows' accumulators
/// (4 per row, and the offsets) spilled: 2 rows read faster there. One activation row, AMD EPYC
/// family 25 model 1 (Zen 3): one thread, 2048 × 2048 cache-warm (bench/matmul-hot.ts, M=1),
/// Q4_0 33 → 37 GFLOP/s, Q4_1 28 → 32, Q8_0 36 → 43; 2 threads over the 22 layers of a
/// TinyLlama-shape file (bench/model-matmul-ab.ts, p50), Q4_0 gate+up 8.8 → 9.4 GB/s, Q8_0
/// ffn_down 20.9 → 21.8. These kernels are compute-bound on that CPU (Q4_0 at ~10 cycles a block).
const legacy_decode_row_group = if (has_avx512bw) 4 else 2;

/// R weight rows (row_bytes apart) × C activation rows (act_bytes apart):
/// out[c·out_stride + r] = (row r) · (activation c). Decode calls it with C = 1 (vecDotRows),
/// batches with C > 1 (vecDotTile): the arithmetic of each (r, c) pair is the same whatever R
/// and C are, so a batched row is bit-identical to decoding it alone (what speculative decoding
/// needs), and the batch shares each weight block's unpack across C rows and each activation
/// load across R rows. On AVX-512 VNNI the unsigned types take splitTile (same integer sums,
/// different float summation order than vecDot); elsewhere the per-pair arithmetic is exactly
/// blockDot's, so results are bit-identical to vecDot. The next R rows are prefetched
/// (Prefetch).
inline fn blockTile(comptime W: type, comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
    if (comptime pair_dots and !W.signed and C == 1 and R % 2 == 0) return splitRowPairs(W, R, n, w, row_bytes, a, out);
    if (comptime has_vnni and !W.signed) return splitTile(W, R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
    blockTilePaired(W, if (pair_dots) 2 else 1, R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
}

/// blockTile with P blocks per dot instruction (P = 2 needs 512-bit VNNI). The result is the
/// same bits for P = 1 and P = 2 (tested): pairing only packs two blocks' 8-lane sums into one
/// 16-lane vector.
inline fn blockTilePaired(comptime W: type, comptime P: usize, comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
    @setEvalBranchQuota(400_000);
    std.debug.assert(n % 32 == 0);
    const nb = n / 32;
    const G = 4;
    var acc: [R][C][G / P]@Vector(8 * P, f32) = @splat(@splat(@splat(@splat(0))));
    var off: [R][C]@Vector(G, f32) = @splat(@splat(@splat(0)));
    var i: usize = 0;
    const pf = Prefetch.init(.l2, w, R * row_bytes);
    while (i + G <= nb) : (i += G) {
        inline for (0..R) |r| {
            const wb = w + r * row_bytes + i * W.type_size;
            if (r == 0) pf.lines(i * W.type_size * R, G * W.type_size * R);
            inline for (0..C) |c| groupStep(W, G, P, wb, a + c * act_bytes + i * ActQ8_0.type_size, &acc[r][c], &off[r][c]);
        }
    }
    var acc1: [R][C][1]@Vector(8, f32) = @splat(@splat(.{@splat(0)}));
    var off1: [R][C]@Vector(1, f32) = @splat(@splat(@splat(0)));
    while (i < nb) : (i += 1) {
        inline for (0..R) |r| {
            inline for (0..C) |c| groupStep(W, 1, 1, w + r * row_bytes + i * W.type_size, a + c * act_bytes + i * ActQ8_0.type_size, &acc1[r][c], &off1[r][c]);
        }
    }
    comptime std.debug.assert(G == 4);
    inline for (0..R) |r| {
        inline for (0..C) |c| {
            const sum = @reduce(.Add, foldGroup(P, acc[r][c]) + acc1[r][c][0]);
            out[c * out_stride + r] = sum + W.off_scale * (@reduce(.Add, off[r][c]) + off1[r][c][0]);
        }
    }
}

/// Activation operands of one pair of blocks in the split order splitTile uses: `lo` holds
/// elements 0..15 of both blocks, `hi` elements 16..31, so a 32-byte weight load of both
/// blocks' packed nibbles dots against them after one mask and one shift (no cross-lane join).
/// In the resulting 8 i32 lanes, lanes 0..3 belong to the first block and 4..7 to the second.
const ActPair = struct {
    lo: @Vector(32, i8),
    hi: @Vector(32, i8),
    /// off_scale·(Σ of the 4+4 activation bytes feeding each lane): the offset types' integer
    /// correction, used as the dot accumulators' starting value so Σ (q − zero)·a is exact.
    bias: @Vector(8, i32),
    da: @Vector(8, f32), // activation d per lane
    sa: @Vector(8, f32), // activation s/4 per lane (the min types' m·s term, spread over 4 lanes)
};

inline fn actPair(comptime W: type, ab: [*]const u8) ActPair {
    const b0 = ab + 8;
    const b1 = ab + ActQ8_0.type_size + 8;
    const lo: @Vector(32, i8) = @bitCast(std.simd.join(@as(@Vector(16, u8), b0[0..16].*), @as(@Vector(16, u8), b1[0..16].*)));
    const hi: @Vector(32, i8) = @bitCast(std.simd.join(@as(@Vector(16, u8), b0[16..32].*), @as(@Vector(16, u8), b1[16..32].*)));
    const spread = [8]i32{ 0, 0, 0, 0, 1, 1, 1, 1 };
    const d2: @Vector(2, f32) = .{ loadF32(ab), loadF32(ab + ActQ8_0.type_size) };
    var r: ActPair = .{ .lo = lo, .hi = hi, .bias = @splat(0), .da = @shuffle(f32, d2, undefined, spread), .sa = @splat(0) };
    if (W.has_min) {
        const s2: @Vector(2, f32) = .{ loadF32(ab + 4), loadF32(ab + ActQ8_0.type_size + 4) };
        r.sa = @shuffle(f32, s2, undefined, spread) * @as(@Vector(8, f32), @splat(0.25));
    } else {
        const ones: @Vector(32, u8) = @splat(1);
        const sum4 = dotUS(ones, lo) + dotUS(ones, hi);
        r.bias = sum4 * @as(@Vector(8, i32), @splat(@as(i32, @intFromFloat(W.off_scale))));
    }
    return r;
}

/// Packed-nibble offset inside a legacy block (after d, m and qh).
fn qsOffset(comptime W: type) usize {
    return W.type_size - 16;
}

/// A pair of blocks' packed nibbles (16 bytes of each block), for one mask and one shift.
inline fn pairNibbles(comptime W: type, wb: [*]const u8) @Vector(32, u8) {
    const qo = qsOffset(W);
    return std.simd.join(@as(@Vector(16, u8), wb[qo..][0..16].*), @as(@Vector(16, u8), wb[W.type_size + qo ..][0..16].*));
}

/// Q5 types: the fifth bits of a pair of blocks, as 16 in the bytes of the low nibbles (`lo`,
/// elements 0..15 of each block) and of the high ones (`hi`, elements 16..31).
inline fn pairHighBits(comptime W: type, wb: [*]const u8) struct { lo: @Vector(32, u8), hi: @Vector(32, u8) } {
    const m = pairHighMasks(W, wb);
    return .{ .lo = highBits(m.lo), .hi = highBits(m.hi) };
}

/// pairHighBits as bit masks: bit j of `lo` is the fifth bit of the pair's byte j of `lo`.
inline fn pairHighMasks(comptime W: type, wb: [*]const u8) struct { lo: u32, hi: u32 } {
    const qh = if (W.has_min) 4 else 2;
    const h0 = loadU32(wb + qh);
    const h1 = loadU32(wb + W.type_size + qh);
    return .{ .lo = (h0 & 0xffff) | (h1 << 16), .hi = (h0 >> 16) | (h1 & 0xffff_0000) };
}

/// v with 16 OR-ed into the bytes whose bit is set in `m` (vporq, then vmovdqu8 under the mask).
/// Built from highBits per 32 bytes and joined, the same vector code came out, but each 64-bit
/// mask took two kmovd and a kunpckdq; with one kmovq of the combined word Q5_0 decode ran 1.1×
/// faster cache-warm on Zen 4 (docs/optimization.md).
inline fn withFifthBits(v: @Vector(64, u8), m: u64) @Vector(64, u8) {
    const mask: @Vector(64, bool) = @bitCast(m);
    return @select(u8, mask, v | @as(@Vector(64, u8), @splat(16)), v);
}

/// AVX-512 VNNI kernel for the unsigned legacy types (Q4_0, Q4_1, Q5_0, Q5_1), R weight rows ×
/// C activation rows (see blockTile): two blocks per step, split lo/hi as ActPair, per-pair
/// scales from one 32-byte load of the pair's header words. Integer sums are exact; only the
/// float summation order differs from vecDot. Each weight pair is unpacked once for C rows.
inline fn splitTile(comptime W: type, comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
    @setEvalBranchQuota(400_000);
    std.debug.assert(n % 32 == 0);
    const nb = n / 32;
    const ts = W.type_size;
    const mask: @Vector(32, u8) = @splat(0x0f);
    // Header words of a pair (as f16): d of block 0 ×4 then d of block 1 ×4 (and m likewise).
    const d_idx = [8]i32{ 0, 0, 0, 0, ts / 2, ts / 2, ts / 2, ts / 2 };
    const m_idx = [8]i32{ 1, 1, 1, 1, ts / 2 + 1, ts / 2 + 1, ts / 2 + 1, ts / 2 + 1 };
    var acc: [R][C]@Vector(8, f32) = @splat(@splat(@splat(0)));
    var off: [R][C]@Vector(8, f32) = @splat(@splat(@splat(0)));
    const pf = Prefetch.init(.l1, w, R * row_bytes);
    var i: usize = 0;
    while (i + 2 <= nb) : (i += 2) {
        var ap: [C]ActPair = undefined;
        inline for (0..C) |c| ap[c] = actPair(W, a + c * act_bytes + i * ActQ8_0.type_size);
        inline for (0..R) |r| {
            const wb = w + r * row_bytes + i * ts;
            if (r == 0) pf.lines(i * ts * R, 2 * ts * R);
            const v = pairNibbles(W, wb);
            var lo = v & mask;
            var hi = (v >> @splat(4)) & mask;
            if (W.type_size >= 22) { // Q5: fifth bits from each block's qh
                const hb = pairHighBits(W, wb);
                lo |= hb.lo;
                hi |= hb.hi;
            }
            const hdr: @Vector(16, u16) = @bitCast(wb[0..32].*);
            const dw: @Vector(8, f32) = @floatCast(@as(@Vector(8, f16), @bitCast(@shuffle(u16, hdr, undefined, d_idx))));
            const mw: @Vector(8, f32) = if (W.has_min) @floatCast(@as(@Vector(8, f16), @bitCast(@shuffle(u16, hdr, undefined, m_idx)))) else undefined;
            inline for (0..C) |c| {
                var sumi = @"llvm.x86.avx512.vpdpbusd.256"(ap[c].bias, @bitCast(lo), @bitCast(ap[c].lo));
                sumi = @"llvm.x86.avx512.vpdpbusd.256"(sumi, @bitCast(hi), @bitCast(ap[c].hi));
                acc[r][c] = @mulAdd(@Vector(8, f32), @floatFromInt(sumi), dw * ap[c].da, acc[r][c]);
                if (W.has_min) off[r][c] = @mulAdd(@Vector(8, f32), mw, ap[c].sa, off[r][c]);
            }
        }
    }
    var acc1: [R][C][1]@Vector(8, f32) = @splat(@splat(.{@splat(0)}));
    var off1: [R][C]@Vector(1, f32) = @splat(@splat(@splat(0)));
    if (i < nb) {
        inline for (0..R) |r| {
            inline for (0..C) |c| groupStep(W, 1, 1, w + r * row_bytes + i * ts, a + c * act_bytes + i * ActQ8_0.type_size, &acc1[r][c], &off1[r][c]);
        }
    }
    inline for (0..R) |r| {
        inline for (0..C) |c| {
            out[c * out_stride + r] = @reduce(.Add, acc[r][c] + off[r][c]) + @reduce(.Add, acc1[r][c][0]) + W.off_scale * off1[r][c][0];
        }
    }
}

/// splitTile for one activation row (decode), two weight rows per 512-bit vector: row 2k's pair
/// of blocks in the low 256 bits, row 2k+1's in the high, so one mask, shift, vpdpbusd,
/// conversion and FMA serve both. Every lane does what splitTile's does (the activation pair
/// repeated in both halves), and each half is reduced as splitTile reduces its row: the same
/// bits (tested), in about two thirds of the instructions.
inline fn splitRowPairs(comptime W: type, comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: [*]f32) void {
    @setEvalBranchQuota(400_000);
    comptime std.debug.assert(R % 2 == 0);
    std.debug.assert(n % 32 == 0);
    const RP = R / 2;
    const F = @Vector(16, f32);
    const nb = n / 32;
    const ts = W.type_size;
    const mask: @Vector(64, u8) = @splat(0x0f);
    // Header words of both rows' pairs (as f16): splitTile's d_idx for the first row's 16 words,
    // then for the second row's (16 words later).
    const h = ts / 2;
    const d_idx = [16]i32{ 0, 0, 0, 0, h, h, h, h, 16, 16, 16, 16, 16 + h, 16 + h, 16 + h, 16 + h };
    const m_idx = [16]i32{ 1, 1, 1, 1, h + 1, h + 1, h + 1, h + 1, 17, 17, 17, 17, 17 + h, 17 + h, 17 + h, 17 + h };
    var acc: [RP]F = @splat(@splat(0));
    var off: [RP]F = @splat(@splat(0));
    const pf = Prefetch.init(.l1, w, R * row_bytes);
    var i: usize = 0;
    while (i + 2 <= nb) : (i += 2) {
        const ap = actPair(W, a + i * ActQ8_0.type_size);
        const a_lo = std.simd.join(ap.lo, ap.lo);
        const a_hi = std.simd.join(ap.hi, ap.hi);
        const bias = std.simd.join(ap.bias, ap.bias);
        const da = std.simd.join(ap.da, ap.da);
        const sa = std.simd.join(ap.sa, ap.sa);
        inline for (0..RP) |rp| {
            const wb0 = w + 2 * rp * row_bytes + i * ts;
            const wb1 = wb0 + row_bytes;
            if (rp == 0) pf.lines(i * ts * R, 2 * ts * R);
            // Both rows' nibbles in one vector: one mask and one shift for the two.
            const v = std.simd.join(pairNibbles(W, wb0), pairNibbles(W, wb1));
            var lo = v & mask;
            var hi = (v >> @splat(4)) & mask;
            if (W.type_size >= 22) { // Q5: fifth bits from each block's qh, both rows' in one mask
                const m0 = pairHighMasks(W, wb0);
                const m1 = pairHighMasks(W, wb1);
                lo = withFifthBits(lo, @as(u64, m0.lo) | (@as(u64, m1.lo) << 32));
                hi = withFifthBits(hi, @as(u64, m0.hi) | (@as(u64, m1.hi) << 32));
            }
            const hdr: @Vector(32, u16) = std.simd.join(@as(@Vector(16, u16), @bitCast(wb0[0..32].*)), @as(@Vector(16, u16), @bitCast(wb1[0..32].*)));
            const dw: F = @floatCast(@as(@Vector(16, f16), @bitCast(@shuffle(u16, hdr, undefined, d_idx))));
            var sumi = @"llvm.x86.avx512.vpdpbusd.512"(bias, @bitCast(lo), @bitCast(a_lo));
            sumi = @"llvm.x86.avx512.vpdpbusd.512"(sumi, @bitCast(hi), @bitCast(a_hi));
            acc[rp] = @mulAdd(F, @floatFromInt(sumi), dw * da, acc[rp]);
            if (W.has_min) {
                const mw: F = @floatCast(@as(@Vector(16, f16), @bitCast(@shuffle(u16, hdr, undefined, m_idx))));
                off[rp] = @mulAdd(F, mw, sa, off[rp]);
            }
        }
    }
    var acc1: [R][1]@Vector(8, f32) = @splat(.{@splat(0)});
    var off1: [R]@Vector(1, f32) = @splat(@splat(0));
    if (i < nb) {
        inline for (0..R) |r| groupStep(W, 1, 1, w + r * row_bytes + i * ts, a + i * ActQ8_0.type_size, &acc1[r], &off1[r]);
    }
    inline for (0..RP) |rp| inline for (0..2) |k| {
        const r = 2 * rp + k;
        const acc8: @Vector(8, f32) = std.simd.extract(acc[rp], 8 * k, 8);
        const off8: @Vector(8, f32) = std.simd.extract(off[rp], 8 * k, 8);
        out[r] = @reduce(.Add, acc8 + off8) + @reduce(.Add, acc1[r][0]) + W.off_scale * off1[r][0];
    };
}

// ---------------------------------------------------------------------------------------------
// Tile shape of the batched calls (weight rows × activation rows)
// ---------------------------------------------------------------------------------------------

/// R×C accumulators must stay in registers: splitTile keeps R·C (×2 with a min) ymm
/// accumulators plus C activation pairs; blockTile keeps 4·R·C (one per block of a group).
/// AVX-512 has 32 vector registers, AVX2/NEON fewer.
fn tileR(comptime W: type) usize {
    if (has_vnni and !W.signed) return if (W.has_min) 2 else 4;
    return if (has_vnni) 2 else 1;
}
fn tileC(comptime W: type) usize {
    if (has_vnni and !W.signed) return 3;
    return if (has_vnni) 4 else 2;
}

/// Scalar reference for the offset types: per block sumi = Σ (q − zero)·qa exactly in integers,
/// then d_w·d_a·sumi (+ m·s for the types with a min), as ggml's generic vec_dot.
fn blockDotRef(comptime W: type, n: usize, w: [*]const u8, a: [*]const u8) f32 {
    std.debug.assert(n % 32 == 0);
    var sum: f32 = 0;
    var q: [32]i32 = undefined;
    for (0..n / 32) |i| {
        const wb = w + i * W.type_size;
        const ab = a + i * ActQ8_0.type_size;
        const md = W.scalarQuants(wb, &q);
        var sumi: i32 = 0;
        for (0..32) |j| sumi += q[j] * @as(i8, @bitCast(ab[8 + j]));
        const dd = md.d * loadF32(ab);
        sum += dd * @as(f32, @floatFromInt(sumi)) + md.m * loadF32(ab + 4);
    }
    return sum;
}

/// Scalar dequantization shared by the block types: y = q·d + m with q from scalarQuants
/// (already offset for Q4_0/Q5_0/Q8_0, where m = 0 and the add is exact).
fn blockDequantRef(comptime W: type, src: [*]const u8, dst: [*]f32, n: usize) void {
    std.debug.assert(n % 32 == 0);
    var q: [32]i32 = undefined;
    for (0..n / 32) |i| {
        const md = W.scalarQuants(src + i * W.type_size, &q);
        for (0..32) |j| {
            const x: f32 = @floatFromInt(q[j]);
            dst[i * 32 + j] = if (W.has_min) x * md.d + md.m else x * md.d;
        }
    }
}

/// SIMD dequantization: W.vecQuants gives the 32 quants as i32 lanes (offset applied).
fn blockDequant(comptime W: type, src: [*]const u8, dst: [*]f32, n: usize) void {
    std.debug.assert(n % 32 == 0);
    for (0..n / 32) |i| {
        const wb = src + i * W.type_size;
        const md = W.scalarScales(wb);
        const x: @Vector(32, f32) = @floatFromInt(W.vecQuants(wb));
        // q·d is exact in f32 (≤ 8-bit q times an 11-bit f16 mantissa), so mul+add equals
        // ggml's expression whether or not its compiler fused it.
        const y = if (W.has_min)
            x * @as(@Vector(32, f32), @splat(md.d)) + @as(@Vector(32, f32), @splat(md.m))
        else
            x * @as(@Vector(32, f32), @splat(md.d));
        dst[i * 32 ..][0..32].* = y;
    }
}

const DM = struct { d: f32, m: f32 };

// ---------------------------------------------------------------------------------------------
// Block weight types
// ---------------------------------------------------------------------------------------------

pub const Q8_0 = struct {
    pub const block_size: usize = 32;
    pub const type_size: usize = 34;
    pub const Block = extern struct { d: f16 align(1), qs: [32]i8 };
    comptime {
        std.debug.assert(@sizeOf(Block) == type_size);
    }
    pub const act: ActKind = .q8_0;
    const has_min = false;
    const signed = true;
    /// y = q·d, signed: the dot adds off_scale·Σ coef·s_act (coef = m with a min, else d).
    const off_scale: f32 = 0;
    inline fn quants(wb: [*]const u8) @Vector(32, i8) {
        return @bitCast(wb[2..34].*);
    }

    fn scalarScales(wb: [*]const u8) DM {
        return .{ .d = loadF16(wb), .m = 0 };
    }
    fn scalarQuants(wb: [*]const u8, q: *[32]i32) DM {
        for (0..32) |j| q[j] = @as(i8, @bitCast(wb[2 + j]));
        return scalarScales(wb);
    }
    fn vecQuants(wb: [*]const u8) @Vector(32, i32) {
        const v: @Vector(32, i8) = @bitCast(wb[2..34].*);
        return v;
    }

    pub fn dequantizeRow(src: [*]const u8, dst: [*]f32, n: usize) void {
        blockDequant(@This(), src, dst, n);
    }
    pub fn dequantizeRowRef(src: [*]const u8, dst: [*]f32, n: usize) void {
        blockDequantRef(@This(), src, dst, n);
    }
    pub fn vecDot(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return blockDot(@This(), n, w, a);
    }
    pub fn vecDotRef(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return blockDotRef(@This(), n, w, a);
    }
    pub const decode_row_group = legacy_decode_row_group;
    /// R rows (row_bytes apart) against one activation row: out[r] = row r · a (see blockTile).
    pub fn vecDotRows(comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
        blockTile(@This(), R, 1, n, w, row_bytes, a, 0, out, 1);
    }
    /// R weight rows × C activation rows (act_bytes apart): out[c·out_stride + r], each bit-identical
    /// to vecDotRows (see blockTile).
    pub fn vecDotTile(comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
        blockTile(@This(), R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
    }
    pub const tile_r = tileR(@This());
    pub const tile_c = tileC(@This());

    /// quantize_row_q8_0_ref: d = amax/127 stored as f16, q = roundf(x·(1/d)) with the f32 d.
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        std.debug.assert(n % 32 == 0);
        for (0..n / 32) |i| {
            const x = src[i * 32 ..][0..32];
            var amax: f32 = 0;
            for (x) |v| amax = @max(amax, @abs(v));
            const d = amax / 127.0;
            const id: f32 = if (d != 0) 1.0 / d else 0.0;
            const b = dst + i * type_size;
            storeF16(b, d);
            for (x, 0..) |v, j| {
                const q: i8 = @intFromFloat(@round(@min(@max(v * id, -127.0), 127.0)));
                b[2 + j] = @bitCast(q);
            }
        }
    }
};

/// The value of largest magnitude in a block, with its sign (the first one on ties), as ggml's
/// reference quantizers pick it: the block's scale is derived from it.
fn signedAbsMax(x: *const [32]f32) f32 {
    var amax: f32 = 0;
    var max: f32 = 0;
    for (x) |v| {
        if (amax < @abs(v)) {
            amax = @abs(v);
            max = v;
        }
    }
    return max;
}

pub const Q4_0 = struct {
    pub const block_size: usize = 32;
    pub const type_size: usize = 18;
    pub const Block = extern struct { d: f16 align(1), qs: [16]u8 };
    comptime {
        std.debug.assert(@sizeOf(Block) == type_size);
    }
    pub const act: ActKind = .q8_0;
    const has_min = false;
    const signed = false;
    /// y = (q − 8)·d: the dot adds off_scale·Σ coef·s_act (coef = m with a min, else d).
    const off_scale: f32 = -8;
    inline fn quants(wb: [*]const u8) @Vector(32, u8) {
        return unpackNibbles(wb + 2);
    }

    fn scalarScales(wb: [*]const u8) DM {
        return .{ .d = loadF16(wb), .m = 0 };
    }
    fn scalarQuants(wb: [*]const u8, q: *[32]i32) DM {
        for (0..16) |j| {
            q[j] = @as(i32, wb[2 + j] & 15) - 8;
            q[j + 16] = @as(i32, wb[2 + j] >> 4) - 8;
        }
        return scalarScales(wb);
    }
    fn vecQuants(wb: [*]const u8) @Vector(32, i32) {
        return @as(@Vector(32, i32), unpackNibbles(wb + 2)) - @as(@Vector(32, i32), @splat(8));
    }

    pub fn dequantizeRow(src: [*]const u8, dst: [*]f32, n: usize) void {
        blockDequant(@This(), src, dst, n);
    }
    pub fn dequantizeRowRef(src: [*]const u8, dst: [*]f32, n: usize) void {
        blockDequantRef(@This(), src, dst, n);
    }
    pub fn vecDot(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return blockDot(@This(), n, w, a);
    }
    pub fn vecDotRef(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return blockDotRef(@This(), n, w, a);
    }
    pub const decode_row_group = legacy_decode_row_group;
    /// R rows (row_bytes apart) against one activation row: out[r] = row r · a (see blockTile).
    pub fn vecDotRows(comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
        blockTile(@This(), R, 1, n, w, row_bytes, a, 0, out, 1);
    }
    /// R weight rows × C activation rows (act_bytes apart): out[c·out_stride + r], each bit-identical
    /// to vecDotRows (see blockTile).
    pub fn vecDotTile(comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
        blockTile(@This(), R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
    }
    pub const tile_r = tileR(@This());
    pub const tile_c = tileC(@This());

    /// quantize_row_q4_0_ref: d = max/−8 where max is the signed value of largest magnitude,
    /// q = min(15, trunc(x/d + 8.5)).
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        std.debug.assert(n % 32 == 0);
        for (0..n / 32) |i| {
            const x = src[i * 32 ..][0..32];
            const max = signedAbsMax(x);
            const d = max / -8.0;
            const id: f32 = if (d != 0) 1.0 / d else 0.0;
            const b = dst + i * type_size;
            storeF16(b, d);
            for (0..16) |j| {
                b[2 + j] = nib4(x[j] * id) | (nib4(x[j + 16] * id) << 4);
            }
        }
    }

    /// (int8_t)(v + 8.5f) truncates toward zero; v ∈ [−8, 8] so the result is 0..16 before the
    /// clamp (the clamp below 0 only guards non-finite input).
    fn nib4(v: f32) u8 {
        const t = @trunc(@min(@max(v + 8.5, 0.0), 15.0));
        return @intFromFloat(t);
    }
};

pub const Q4_1 = struct {
    pub const block_size: usize = 32;
    pub const type_size: usize = 20;
    pub const Block = extern struct { d: f16 align(1), m: f16 align(1), qs: [16]u8 };
    comptime {
        std.debug.assert(@sizeOf(Block) == type_size);
    }
    pub const act: ActKind = .q8_0;
    const has_min = true;
    const signed = false;
    /// y = q·d + m: the dot adds off_scale·Σ coef·s_act (coef = m with a min, else d).
    const off_scale: f32 = 1;
    inline fn quants(wb: [*]const u8) @Vector(32, u8) {
        return unpackNibbles(wb + 4);
    }

    fn scalarScales(wb: [*]const u8) DM {
        return .{ .d = loadF16(wb), .m = loadF16(wb + 2) };
    }
    fn scalarQuants(wb: [*]const u8, q: *[32]i32) DM {
        for (0..16) |j| {
            q[j] = wb[4 + j] & 15;
            q[j + 16] = wb[4 + j] >> 4;
        }
        return scalarScales(wb);
    }
    fn vecQuants(wb: [*]const u8) @Vector(32, i32) {
        return unpackNibbles(wb + 4);
    }

    pub fn dequantizeRow(src: [*]const u8, dst: [*]f32, n: usize) void {
        blockDequant(@This(), src, dst, n);
    }
    pub fn dequantizeRowRef(src: [*]const u8, dst: [*]f32, n: usize) void {
        blockDequantRef(@This(), src, dst, n);
    }
    pub fn vecDot(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return blockDot(@This(), n, w, a);
    }
    pub fn vecDotRef(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return blockDotRef(@This(), n, w, a);
    }
    pub const decode_row_group = legacy_decode_row_group;
    /// R rows (row_bytes apart) against one activation row: out[r] = row r · a (see blockTile).
    pub fn vecDotRows(comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
        blockTile(@This(), R, 1, n, w, row_bytes, a, 0, out, 1);
    }
    /// R weight rows × C activation rows (act_bytes apart): out[c·out_stride + r], each bit-identical
    /// to vecDotRows (see blockTile).
    pub fn vecDotTile(comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
        blockTile(@This(), R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
    }
    pub const tile_r = tileR(@This());
    pub const tile_c = tileC(@This());

    /// quantize_row_q4_1_ref: d = (max − min)/15, m = min (both stored as f16, the quants use
    /// the f32 values), q = min(15, trunc((x − min)·(1/d) + 0.5)).
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        std.debug.assert(n % 32 == 0);
        for (0..n / 32) |i| {
            const x = src[i * 32 ..][0..32];
            const mm = minMax(x);
            const d = (mm.max - mm.min) / 15.0;
            const id: f32 = if (d != 0) 1.0 / d else 0.0;
            const b = dst + i * type_size;
            storeF16(b, d);
            storeF16(b + 2, mm.min);
            for (0..16) |j| {
                const lo = truncQ(31, (x[j] - mm.min) * id + 0.5, 15);
                const hi = truncQ(31, (x[j + 16] - mm.min) * id + 0.5, 15);
                b[4 + j] = lo | (hi << 4);
            }
        }
    }
};

/// ggml's min/max scan (min starts at FLT_MAX, max at −FLT_MAX; strict comparisons).
fn minMax(x: *const [32]f32) struct { min: f32, max: f32 } {
    var min: f32 = std.math.floatMax(f32);
    var max: f32 = -std.math.floatMax(f32);
    for (x) |v| {
        if (v < min) min = v;
        if (v > max) max = v;
    }
    return .{ .min = min, .max = max };
}

/// ggml's (int8_t)/(uint8_t)(v) then MIN(hi, ·): truncation toward zero. For finite inputs the
/// values are in [0, lim]; the clamps keep non-finite input defined.
inline fn truncQ(comptime lim: f32, v: f32, comptime hi: u8) u8 {
    const t: u8 = @intFromFloat(@trunc(@min(@max(v, 0.0), lim)));
    return @min(t, hi);
}

/// Packs 32 five-bit quants: low nibbles split as Q4 (element j low, j + 16 high), bit 4 of
/// element j into bit j of the u32 qh.
fn packQ5(q: *const [32]u8, qh: [*]u8, qs: [*]u8) void {
    var h: u32 = 0;
    for (0..16) |j| {
        qs[j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
        h |= @as(u32, q[j] >> 4) << @intCast(j);
        h |= @as(u32, q[j + 16] >> 4) << @intCast(j + 16);
    }
    std.mem.writeInt(u32, qh[0..4], h, .little);
}

/// Q5 quants: low nibble from qs (split layout as Q4), fifth bit j of the u32 qh for element j.
pub inline fn q5Quants(qh: [*]const u8, qs: [*]const u8) @Vector(32, u8) {
    return unpackNibbles(qs) | highBits(loadU32(qh));
}

fn q5ScalarQuants(qh: [*]const u8, qs: [*]const u8, q: *[32]i32) void {
    const h = loadU32(qh);
    for (0..16) |j| {
        const b0: i32 = @intCast((h >> @intCast(j)) & 1);
        const b1: i32 = @intCast((h >> @intCast(j + 16)) & 1);
        q[j] = @as(i32, qs[j] & 15) | (b0 << 4);
        q[j + 16] = @as(i32, qs[j] >> 4) | (b1 << 4);
    }
}

pub const Q5_0 = struct {
    pub const block_size: usize = 32;
    pub const type_size: usize = 22;
    pub const Block = extern struct { d: f16 align(1), qh: [4]u8, qs: [16]u8 };
    comptime {
        std.debug.assert(@sizeOf(Block) == type_size);
    }
    pub const act: ActKind = .q8_0;
    const has_min = false;
    const signed = false;
    /// y = (q − 16)·d: the dot adds off_scale·Σ coef·s_act (coef = m with a min, else d).
    const off_scale: f32 = -16;
    inline fn quants(wb: [*]const u8) @Vector(32, u8) {
        return q5Quants(wb + 2, wb + 6);
    }

    fn scalarScales(wb: [*]const u8) DM {
        return .{ .d = loadF16(wb), .m = 0 };
    }
    fn scalarQuants(wb: [*]const u8, q: *[32]i32) DM {
        q5ScalarQuants(wb + 2, wb + 6, q);
        for (q) |*x| x.* -= 16;
        return scalarScales(wb);
    }
    fn vecQuants(wb: [*]const u8) @Vector(32, i32) {
        return @as(@Vector(32, i32), q5Quants(wb + 2, wb + 6)) - @as(@Vector(32, i32), @splat(16));
    }

    pub fn dequantizeRow(src: [*]const u8, dst: [*]f32, n: usize) void {
        blockDequant(@This(), src, dst, n);
    }
    pub fn dequantizeRowRef(src: [*]const u8, dst: [*]f32, n: usize) void {
        blockDequantRef(@This(), src, dst, n);
    }
    pub fn vecDot(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return blockDot(@This(), n, w, a);
    }
    pub fn vecDotRef(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return blockDotRef(@This(), n, w, a);
    }
    pub const decode_row_group = legacy_decode_row_group;
    /// R rows (row_bytes apart) against one activation row: out[r] = row r · a (see blockTile).
    pub fn vecDotRows(comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
        blockTile(@This(), R, 1, n, w, row_bytes, a, 0, out, 1);
    }
    /// R weight rows × C activation rows (act_bytes apart): out[c·out_stride + r], each bit-identical
    /// to vecDotRows (see blockTile).
    pub fn vecDotTile(comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
        blockTile(@This(), R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
    }
    pub const tile_r = tileR(@This());
    pub const tile_c = tileC(@This());

    /// quantize_row_q5_0_ref: d = max/−16 (max: the signed value of largest magnitude),
    /// q = min(31, trunc(x·(1/d) + 16.5)).
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        std.debug.assert(n % 32 == 0);
        for (0..n / 32) |i| {
            const x = src[i * 32 ..][0..32];
            const max = signedAbsMax(x);
            const d = max / -16.0;
            const id: f32 = if (d != 0) 1.0 / d else 0.0;
            const b = dst + i * type_size;
            storeF16(b, d);
            var q: [32]u8 = undefined;
            for (x, &q) |v, *o| o.* = truncQ(32, v * id + 16.5, 31);
            packQ5(&q, b + 2, b + 6);
        }
    }
};
pub const Q5_1 = struct {
    pub const block_size: usize = 32;
    pub const type_size: usize = 24;
    pub const Block = extern struct { d: f16 align(1), m: f16 align(1), qh: [4]u8, qs: [16]u8 };
    comptime {
        std.debug.assert(@sizeOf(Block) == type_size);
    }
    pub const act: ActKind = .q8_0;
    const has_min = true;
    const signed = false;
    /// y = q·d + m: the dot adds off_scale·Σ coef·s_act (coef = m with a min, else d).
    const off_scale: f32 = 1;
    inline fn quants(wb: [*]const u8) @Vector(32, u8) {
        return q5Quants(wb + 4, wb + 8);
    }

    fn scalarScales(wb: [*]const u8) DM {
        return .{ .d = loadF16(wb), .m = loadF16(wb + 2) };
    }
    fn scalarQuants(wb: [*]const u8, q: *[32]i32) DM {
        q5ScalarQuants(wb + 4, wb + 8, q);
        return scalarScales(wb);
    }
    fn vecQuants(wb: [*]const u8) @Vector(32, i32) {
        return q5Quants(wb + 4, wb + 8);
    }

    pub fn dequantizeRow(src: [*]const u8, dst: [*]f32, n: usize) void {
        blockDequant(@This(), src, dst, n);
    }
    pub fn dequantizeRowRef(src: [*]const u8, dst: [*]f32, n: usize) void {
        blockDequantRef(@This(), src, dst, n);
    }
    pub fn vecDot(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return blockDot(@This(), n, w, a);
    }
    pub fn vecDotRef(n: usize, w: [*]const u8, a: [*]const u8) f32 {
        return blockDotRef(@This(), n, w, a);
    }
    pub const decode_row_group = legacy_decode_row_group;
    /// R rows (row_bytes apart) against one activation row: out[r] = row r · a (see blockTile).
    pub fn vecDotRows(comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
        blockTile(@This(), R, 1, n, w, row_bytes, a, 0, out, 1);
    }
    /// R weight rows × C activation rows (act_bytes apart): out[c·out_stride + r], each bit-identical
    /// to vecDotRows (see blockTile).
    pub fn vecDotTile(comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
        blockTile(@This(), R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
    }
    pub const tile_r = tileR(@This());
    pub const tile_c = tileC(@This());

    /// quantize_row_q5_1_ref: d = (max − min)/31, m = min, q = trunc((x − min)·(1/d) + 0.5)
    /// (ggml has no clamp here; the values are ≤ 31.5 for finite input, so ours never binds).
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        std.debug.assert(n % 32 == 0);
        for (0..n / 32) |i| {
            const x = src[i * 32 ..][0..32];
            const mm = minMax(x);
            const d = (mm.max - mm.min) / 31.0;
            const id: f32 = if (d != 0) 1.0 / d else 0.0;
            const b = dst + i * type_size;
            storeF16(b, d);
            storeF16(b + 2, mm.min);
            var q: [32]u8 = undefined;
            for (x, &q) |v, *o| o.* = truncQ(31, (v - mm.min) * id + 0.5, 31);
            packQ5(&q, b + 4, b + 8);
        }
    }
};
// ---------------------------------------------------------------------------------------------
// Float weight types (activation = raw f32)
// ---------------------------------------------------------------------------------------------

const FloatKind = enum { f32, f16, bf16 };

fn elemBytes(comptime k: FloatKind) usize {
    return if (k == .f32) 4 else 2;
}

/// V consecutive weights from byte offset i·elemBytes, widened to f32.
inline fn loadFloats(comptime k: FloatKind, comptime V: usize, p: [*]const u8) @Vector(V, f32) {
    switch (k) {
        .f32 => return @bitCast(p[0 .. V * 4].*),
        // Lowers to vcvtph2ps with F16C/AVX-512 and fcvtl on NEON.
        .f16 => return @floatCast(@as(@Vector(V, f16), @bitCast(p[0 .. V * 2].*))),
        .bf16 => {
            const h: @Vector(V, u16) = @bitCast(p[0 .. V * 2].*);
            return @bitCast(@as(@Vector(V, u32), h) << @splat(16));
        },
    }
}

inline fn loadFloat(comptime k: FloatKind, p: [*]const u8) f32 {
    return switch (k) {
        .f32 => loadF32(p),
        .f16 => loadF16(p),
        .bf16 => bf16ToF32(std.mem.readInt(u16, p[0..2], .little)),
    };
}

/// SIMD dot with four independent accumulators, scalar tail.
inline fn floatDot(comptime k: FloatKind, n: usize, w: [*]const u8, a: [*]const u8) f32 {
    var out: [1]f32 = undefined;
    floatDotGroup(k, 1, false, n, w, 0, a, &out);
    return out[0];
}

/// R rows (row_bytes apart) against one activation row, each row with floatDot's bits, read as a
/// group sharing each activation load, the next group prefetched into L2 as one is read
/// (Prefetch). Once only rows of 8 KB and up took the groups: on a Zen 4 host, rows of
/// 1.2–4 KB read 5–30% slower in them. On the Zen 5 host of 2026-12-05 (AMD EPYC family 26
/// model 2, 50 GB/s probe at 2 threads) one row at a time left 4 KB BF16 rows at 41 GB/s and F16
/// at 26 against 64–65 in groups (5632×2048 from DRAM, 2 threads, bench/matmul-ab.ts), TinyLlama
/// BF16 decode at 0.65× llama.cpp's; rows of 0.5–2 KB read 1.1–2.2× faster in groups, 1 thread
/// 1.5–2.6×. Every float row now takes them.
inline fn floatDotRows(comptime k: FloatKind, comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
    floatDotGroup(k, R, true, n, w, row_bytes, a, out);
}

/// R rows against one activation row, four accumulators per row summed in one fixed order (so
/// out[r] has the same bits whatever R and prefetch are), scalar tail.
inline fn floatDotGroup(comptime k: FloatKind, comptime R: usize, comptime prefetch: bool, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
    const V = vlen_f32;
    const eb = comptime elemBytes(k);
    var acc: [R][4]@Vector(V, f32) = @splat(@splat(@splat(0)));
    const pf = if (prefetch) Prefetch.init(.l2, w, R * row_bytes) else undefined;
    var i: usize = 0;
    while (i + 4 * V <= n) : (i += 4 * V) {
        if (prefetch) pf.lines(i * eb * R, 4 * V * eb * R);
        inline for (0..4) |u| {
            const j = i + u * V;
            const y = loadFloats(.f32, V, a + j * 4);
            inline for (0..R) |r| acc[r][u] = @mulAdd(@Vector(V, f32), loadFloats(k, V, w + r * row_bytes + j * eb), y, acc[r][u]);
        }
    }
    while (i + V <= n) : (i += V) {
        const y = loadFloats(.f32, V, a + i * 4);
        inline for (0..R) |r| acc[r][0] = @mulAdd(@Vector(V, f32), loadFloats(k, V, w + r * row_bytes + i * eb), y, acc[r][0]);
    }
    inline for (0..R) |r| {
        var sum = @reduce(.Add, (acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3]));
        var t = i;
        while (t < n) : (t += 1) sum += loadFloat(k, w + r * row_bytes + t * eb) * loadF32(a + t * 4);
        out[r] = sum;
    }
}

/// Prefill tile for the float weight types: R weight rows × C activation rows (f32),
/// out[c·out_stride + r] = row r · activation c, one accumulator per pair (R·C ≤ 16 vectors, so
/// each step's R + C loads feed R·C multiply-adds; the one-row dot floatDot does one per two
/// loads). Its summation order differs from floatDot's, so it serves batches beyond
/// matmul.max_invariant_rows (prefill) only, where rows need not match decode's bits.
/// Full-width vectors: 16 lanes on AVX-512 even where the compiler prefers 256-bit ones.
const prefill_vlen: usize = if (has_avx512bw) 16 else vlen_f32;
pub inline fn floatPrefillTile(comptime k: FloatKind, comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
    const V = prefill_vlen;
    const eb = elemBytes(k);
    var acc: [R][C]@Vector(V, f32) = @splat(@splat(@splat(0)));
    var i: usize = 0;
    while (i + V <= n) : (i += V) {
        var wv: [R]@Vector(V, f32) = undefined;
        inline for (0..R) |r| wv[r] = loadFloats(k, V, w + r * row_bytes + i * eb);
        inline for (0..C) |c| {
            const xv = loadFloats(.f32, V, a + c * act_bytes + i * 4);
            inline for (0..R) |r| acc[r][c] = @mulAdd(@Vector(V, f32), wv[r], xv, acc[r][c]);
        }
    }
    inline for (0..R) |r| {
        inline for (0..C) |c| {
            var sum = @reduce(.Add, acc[r][c]);
            var t = i;
            while (t < n) : (t += 1) sum += loadFloat(k, w + r * row_bytes + t * eb) * loadF32(a + c * act_bytes + t * 4);
            out[c * out_stride + r] = sum;
        }
    }
}

/// Reference: sequential, accumulated in f64 so it is a good yardstick for the fast path.
fn floatDotRef(comptime k: FloatKind, n: usize, w: [*]const u8, a: [*]const u8) f32 {
    var sum: f64 = 0;
    for (0..n) |i| sum += @as(f64, loadFloat(k, w + i * elemBytes(k))) * loadF32(a + i * 4);
    return @floatCast(sum);
}

inline fn floatDequant(comptime k: FloatKind, src: [*]const u8, dst: [*]f32, n: usize) void {
    const V = vlen_f32;
    var i: usize = 0;
    while (i + V <= n) : (i += V) dst[i..][0..V].* = loadFloats(k, V, src + i * elemBytes(k));
    while (i < n) : (i += 1) dst[i] = loadFloat(k, src + i * elemBytes(k));
}

fn floatDequantRef(comptime k: FloatKind, src: [*]const u8, dst: [*]f32, n: usize) void {
    for (0..n) |i| dst[i] = loadFloat(k, src + i * elemBytes(k));
}

fn FloatType(comptime k: FloatKind) type {
    return struct {
        pub const block_size: usize = 1;
        pub const type_size: usize = elemBytes(k);
        pub const act: ActKind = .f32;

        pub fn dequantizeRow(src: [*]const u8, dst: [*]f32, n: usize) void {
            if (k == .f32) {
                @memcpy(std.mem.sliceAsBytes(dst[0..n]), src[0 .. n * 4]);
            } else {
                floatDequant(k, src, dst, n);
            }
        }
        pub fn dequantizeRowRef(src: [*]const u8, dst: [*]f32, n: usize) void {
            floatDequantRef(k, src, dst, n);
        }
        pub fn vecDot(n: usize, w: [*]const u8, a: [*]const u8) f32 {
            return floatDot(k, n, w, a);
        }
        /// Weight rows per decode group (matmul.zig dotRows; other types take its row_group of 4):
        /// each activation load is shared by 8 rows instead of 4 (9 loads per 8 multiply-adds
        /// where there were 10); a row's bits do not depend on the group (floatDotGroup). TinyLlama-shape
        /// BF16, one op over every layer through the file's mapping, 2 threads, builds alternated
        /// round by round (bench/model-matmul-ab.ts, p50 GB/s, AMD EPYC family 25 model 17, Zen 4):
        /// gate+up 41.9 → 46.7, ffn_down 40.6 → 45.9, attn_output 39.1 → 43.0, attn_q 29.5 →
        /// 28.8 (within noise); in the host's slow spells (every op at ~32 GB/s) both read alike.
        /// Not measured on Intel.
        pub const decode_row_group = 8;
        /// R rows against one activation row, each with vecDot's bits (floatDotRows).
        pub fn vecDotRows(comptime R: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, out: *[R]f32) void {
            floatDotRows(k, R, n, w, row_bytes, a, out);
        }
        pub fn vecDotRef(n: usize, w: [*]const u8, a: [*]const u8) f32 {
            return floatDotRef(k, n, w, a);
        }
        /// Prefill only (see floatPrefillTile): tile shape and bits differ from vecDot's. AVX2
        /// has 16 vector registers, so 3 × 4 (12 accumulators, 3 weight vectors, 1 activation):
        /// 4 × 4's 16 accumulators spilled. One thread, 2048 × 2048, m = 512, cache-warm
        /// (bench/matmul-hot.ts, AMD EPYC family 25 model 1, Zen 3): bf16 43 → 59 GFLOP/s, f16
        /// 44 → 65 (4 × 3: 35, 34; 2 × 6: 56, 62; 2 × 4: 53, 63).
        pub const prefill_tile_r = if (has_avx512bw) 4 else 3;
        pub const prefill_tile_c = 4;
        pub fn prefillTile(comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
            floatPrefillTile(k, R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
        }
    };
}

pub const F32 = FloatType(.f32);

pub const F16 = struct {
    const Base = FloatType(.f16);
    pub const block_size = Base.block_size;
    pub const type_size = Base.type_size;
    pub const act = Base.act;
    pub const dequantizeRow = Base.dequantizeRow;
    pub const dequantizeRowRef = Base.dequantizeRowRef;
    pub const vecDot = Base.vecDot;
    pub const vecDotRef = Base.vecDotRef;
    pub const vecDotRows = Base.vecDotRows;
    pub const decode_row_group = Base.decode_row_group;
    pub const prefill_tile_r = Base.prefill_tile_r;
    pub const prefill_tile_c = Base.prefill_tile_c;
    pub const prefillTile = Base.prefillTile;

    /// Round-to-nearest-even, as GGML_FP32_TO_FP16.
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        for (0..n) |i| storeF16(dst + 2 * i, src[i]);
    }
};

/// BF16 weights. Where the CPU has AVX512-BF16 (bf16.enabled()), matmul.zig routes decode and
/// batches to bf16.zig instead (decodeRows, weightTile: the activations rounded to bf16); these
/// f32 kernels serve the other CPUs and the references.
pub const BF16 = struct {
    const Base = FloatType(.bf16);
    pub const block_size = Base.block_size;
    pub const type_size = Base.type_size;
    /// The f32 rows Base reads, their bf16 roundings after them for bf16.weightTile's prefill.
    pub const act: ActKind = .f32_bf16;
    pub const dequantizeRow = Base.dequantizeRow;
    pub const dequantizeRowRef = Base.dequantizeRowRef;
    pub const vecDot = Base.vecDot;
    pub const vecDotRef = Base.vecDotRef;
    pub const vecDotRows = Base.vecDotRows;
    pub const decode_row_group = Base.decode_row_group;
    pub const prefill_tile_r = Base.prefill_tile_r;
    pub const prefill_tile_c = Base.prefill_tile_c;
    pub const prefillTile = Base.prefillTile;

    /// ggml_fp32_to_bf16 (round-to-nearest-even, NaN kept quiet).
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        for (0..n) |i| std.mem.writeInt(u16, dst[2 * i ..][0..2], f32ToBf16(src[i]), .little);
    }
};

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const testing = std.testing;

const block_types = .{ Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 };
const float_types = .{ F32, F16, BF16 };
const sentinel_f32: u32 = 0xDEADBEEF;
const sentinel_u8: u8 = 0xA5;
const guard = 16;

fn hasMin(comptime T: type) bool {
    return T == Q4_1 or T == Q5_1;
}

/// Random quant bytes with sane finite f16 scale (and min) fields.
fn fillBlocks(comptime T: type, r: std.Random, buf: []u8) void {
    r.bytes(buf);
    var i: usize = 0;
    while (i < buf.len) : (i += T.type_size) {
        storeF16(buf[i..].ptr, (r.float(f32) - 0.5) * 0.2);
        if (hasMin(T)) storeF16(buf[i + 2 ..].ptr, (r.float(f32) - 0.5) * 2.0);
    }
}

/// Random finite weights for the float types, already rounded to the type.
fn fillFloats(comptime T: type, r: std.Random, buf: []u8) void {
    const n = buf.len / T.type_size;
    for (0..n) |i| {
        const x = r.floatNorm(f32) * 3.0;
        if (T == F32) storeF32(buf[4 * i ..].ptr, x) else T.quantizeRow(&[1]f32{x}, buf[2 * i ..].ptr, 1);
    }
}

fn fillWeights(comptime T: type, r: std.Random, buf: []u8) void {
    if (T.block_size == 1) fillFloats(T, r, buf) else fillBlocks(T, r, buf);
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

fn expectSameBits(a: []const f32, b: []const f32) !void {
    for (a, b) |x, y| try testing.expectEqual(@as(u32, @bitCast(y)), @as(u32, @bitCast(x)));
}

test "dequantizeRow matches dequantizeRowRef bit-exactly" {
    var prng = std.Random.DefaultPrng.init(0x5eed_0001);
    const r = prng.random();
    const block_counts = [_]usize{ 1, 2, 3, 4, 5, 7, 8, 9, 33, 100 };
    inline for (block_types) |T| {
        for (block_counts) |nb| {
            const n = nb * 32;
            const src = try testing.allocator.alloc(u8, nb * T.type_size);
            defer testing.allocator.free(src);
            fillBlocks(T, r, src);
            const a = try allocF32Guarded(n);
            defer testing.allocator.free(a);
            const b = try allocF32Guarded(n);
            defer testing.allocator.free(b);
            T.dequantizeRow(src.ptr, a.ptr, n);
            T.dequantizeRowRef(src.ptr, b.ptr, n);
            try expectSameBits(a[0..n], b[0..n]);
            try checkF32Guard(a, n);
            try checkF32Guard(b, n);
        }
    }
    const lens = [_]usize{ 1, 3, 15, 16, 17, 64, 100, 1023, 1024 };
    inline for (float_types) |T| {
        for (lens) |n| {
            const src = try testing.allocator.alloc(u8, n * T.type_size);
            defer testing.allocator.free(src);
            fillFloats(T, r, src);
            const a = try allocF32Guarded(n);
            defer testing.allocator.free(a);
            const b = try allocF32Guarded(n);
            defer testing.allocator.free(b);
            T.dequantizeRow(src.ptr, a.ptr, n);
            T.dequantizeRowRef(src.ptr, b.ptr, n);
            try expectSameBits(a[0..n], b[0..n]);
            try checkF32Guard(a, n);
        }
    }
}

/// Dequantizes one block with both paths and checks them against `want`.
fn expectBlock(comptime T: type, blk: []const u8, want: []const f32) !void {
    var y: [32]f32 = undefined;
    T.dequantizeRowRef(blk.ptr, &y, want.len);
    try testing.expectEqualSlices(f32, want, y[0..want.len]);
    T.dequantizeRow(blk.ptr, &y, want.len);
    try testing.expectEqualSlices(f32, want, y[0..want.len]);
}

test "known-answer blocks from the ggml layouts" {
    var blk: [34]u8 = undefined;
    var want: [32]f32 = undefined;

    // Q4_0: d = 0.5 (f16 0x3800); byte j = j | (15−j)<<4 → y[j] = (j−8)/2, y[j+16] = (7−j)/2.
    blk[0] = 0x00;
    blk[1] = 0x38;
    for (0..16) |j| {
        blk[2 + j] = @intCast(j | ((15 - j) << 4));
        want[j] = (@as(f32, @floatFromInt(j)) - 8) * 0.5;
        want[j + 16] = (7 - @as(f32, @floatFromInt(j))) * 0.5;
    }
    try expectBlock(Q4_0, &blk, &want);

    // Q4_1: d = 0.25 (0x3400), m = −1 (0xBC00); byte j = j | j<<4 → y[j] = y[j+16] = j/4 − 1.
    blk[0..4].* = .{ 0x00, 0x34, 0x00, 0xBC };
    for (0..16) |j| {
        blk[4 + j] = @intCast(j | (j << 4));
        want[j] = @as(f32, @floatFromInt(j)) * 0.25 - 1;
        want[j + 16] = want[j];
    }
    try expectBlock(Q4_1, &blk, &want);

    // Q5_0: d = 1 (0x3C00), qh = 0x5555_AAAA: bit j set for odd j < 16 and even j ≥ 16.
    // byte j = j | j<<4 → y[j] = j + 16·(j odd) − 16, y[j+16] = j + 16·(j even) − 16.
    blk[0..6].* = .{ 0x00, 0x3C, 0xAA, 0xAA, 0x55, 0x55 };
    for (0..16) |j| {
        blk[6 + j] = @intCast(j | (j << 4));
        const jf: f32 = @floatFromInt(j);
        want[j] = jf + (if (j % 2 == 1) @as(f32, 16) else 0) - 16;
        want[j + 16] = jf + (if (j % 2 == 0) @as(f32, 16) else 0) - 16;
    }
    try expectBlock(Q5_0, &blk, &want);

    // Q5_1: d = 0.5 (0x3800), m = 2 (0x4000), qh = 0x8000_0001 (elements 0 and 31).
    // byte j = 15 − j (both nibbles) → q[j] = q[j+16] = 15 − j, plus 16 at elements 0 and 31.
    blk[0..8].* = .{ 0x00, 0x38, 0x00, 0x40, 0x01, 0x00, 0x00, 0x80 };
    for (0..16) |j| {
        blk[8 + j] = @intCast((15 - j) | ((15 - j) << 4));
        want[j] = @as(f32, @floatFromInt(15 - j)) * 0.5 + 2;
        want[j + 16] = want[j];
    }
    want[0] = 31 * 0.5 + 2;
    want[31] = 16 * 0.5 + 2;
    try expectBlock(Q5_1, &blk, &want);

    // Q8_0: d = 0.125 (0x3000), qs[j] = j − 16, and qs[0] = −128.
    blk[0..2].* = .{ 0x00, 0x30 };
    for (0..32) |j| {
        blk[2 + j] = @bitCast(@as(i8, @intCast(@as(i32, @intCast(j)) - 16)));
        want[j] = (@as(f32, @floatFromInt(j)) - 16) * 0.125;
    }
    blk[2] = 0x80;
    want[0] = -16;
    try expectBlock(Q8_0, &blk, &want);

    // F16: 1, −2, 65504 (max), 2^−24 (smallest subnormal), −0.
    const h = [_]u8{ 0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00, 0x00, 0x80 };
    try expectBlock(F16, &h, &.{ 1, -2, 65504, 0x1p-24, -0.0 });
    // BF16: 1, −3, 0.5.
    const bf = [_]u8{ 0x80, 0x3F, 0x40, 0xC0, 0x00, 0x3F };
    try expectBlock(BF16, &bf, &.{ 1, -3, 0.5 });
}

test "quantizeRow known answers (ggml rounding)" {
    // Q4_0: x = −8..7 then 0, 0.5, .., 7, 7.4; the largest |x| is −8 → d = 1, id = 1 and the
    // nibble is trunc(x + 8.5): halves land on 8 + ceil(x) (e.g. 0.5 + 8.5 = 9), 7.4 → 15.
    var x: [32]f32 = undefined;
    for (0..16) |j| x[j] = @as(f32, @floatFromInt(j)) - 8;
    for (16..32) |j| x[j] = @as(f32, @floatFromInt(j - 16)) * 0.5;
    x[31] = 7.4;
    var q4: [18]u8 = undefined;
    Q4_0.quantizeRow(&x, &q4, 32);
    try testing.expectEqualSlices(u8, &.{ 0x00, 0x3C }, q4[0..2]);
    for (0..16) |j| {
        const lo: u8 = @intCast(j);
        const hi: u8 = if (j == 15) 15 else @intCast((j + 1) / 2 + 8);
        try testing.expectEqual(lo | (hi << 4), q4[2 + j]);
    }

    // Q8_0: amax = 127 → d = 1; q = round-half-away(x).
    var y: [32]f32 = @splat(0);
    y[0] = 127;
    y[1] = 2.5;
    y[2] = -2.5;
    y[3] = -127;
    y[4] = 0.49;
    var q8: [34]u8 = undefined;
    Q8_0.quantizeRow(&y, &q8, 32);
    try testing.expectEqualSlices(u8, &.{ 0x00, 0x3C, 127, 3, @bitCast(@as(i8, -3)), @bitCast(@as(i8, -127)), 0 }, q8[0..7]);

    // Q4_1: x[j] = j/4 − 1, x[16+j] = (j + ½)/4 − 1 (j < 15), x[31] = 2.75: min −1, max 2.75
    // → d = 0.25 (0x3400), m = −1 (0xBC00), id = 4; q = trunc((x + 1)·4 + 0.5): the low half
    // gives j, the half-steps round up to j + 1, and the max gives 15.
    for (0..16) |j| {
        const jf: f32 = @floatFromInt(j);
        x[j] = jf / 4 - 1;
        x[j + 16] = (jf + 0.5) / 4 - 1;
    }
    x[31] = 2.75;
    var q41: [20]u8 = undefined;
    Q4_1.quantizeRow(&x, &q41, 32);
    try testing.expectEqualSlices(u8, &.{ 0x00, 0x34, 0x00, 0xBC }, q41[0..4]);
    for (0..16) |j| {
        const hi: u8 = @intCast(@min(j + 1, 15));
        try testing.expectEqual(@as(u8, @intCast(j)) | (hi << 4), q41[4 + j]);
    }

    // Q5_0: x[j] = j − 16, except x[1] = −14.6 (→ 1.9, truncated to 1) and x[31] = 15.7
    // (→ 32.2, clamped to 31). max = −16 → d = 1 (0x3C00); q = j, so byte j = j | j<<4 and
    // qh has bits 16..31 set.
    for (0..32) |j| x[j] = @as(f32, @floatFromInt(j)) - 16;
    x[1] = -14.6;
    x[31] = 15.7;
    var q50: [22]u8 = undefined;
    Q5_0.quantizeRow(&x, &q50, 32);
    try testing.expectEqualSlices(u8, &.{ 0x00, 0x3C, 0x00, 0x00, 0xFF, 0xFF }, q50[0..6]);
    for (0..16) |j| try testing.expectEqual(@as(u8, @intCast(j | (j << 4))), q50[6 + j]);
    // A positive max gives a negative d: x = 16 − j → d = −1 (0xBC00), q = j again.
    for (0..32) |j| x[j] = 16 - @as(f32, @floatFromInt(j));
    Q5_0.quantizeRow(&x, &q50, 32);
    try testing.expectEqualSlices(u8, &.{ 0x00, 0xBC, 0x00, 0x00, 0xFF, 0xFF }, q50[0..6]);
    for (0..16) |j| try testing.expectEqual(@as(u8, @intCast(j | (j << 4))), q50[6 + j]);

    // Q5_1: x[j] = j/2 + 2 → min 2 (0x4000), d = 15.5/31 = 0.5 (0x3800), q = trunc(2(x−2) + ½)
    // = j; x[3] = 3.76 → 3.52 + ½ → 4 (a round-up).
    for (0..32) |j| x[j] = @as(f32, @floatFromInt(j)) / 2 + 2;
    x[3] = 3.76;
    var q51: [24]u8 = undefined;
    Q5_1.quantizeRow(&x, &q51, 32);
    try testing.expectEqualSlices(u8, &.{ 0x00, 0x38, 0x00, 0x40, 0x00, 0x00, 0xFF, 0xFF }, q51[0..8]);
    for (0..16) |j| {
        const lo: u8 = if (j == 3) 4 else @intCast(j);
        try testing.expectEqual(lo | (@as(u8, @intCast(j)) << 4), q51[8 + j]);
    }
    // All equal: d = 0, id = 0 → every q is 0 and m carries the value.
    @memset(&x, 1.5);
    Q5_1.quantizeRow(&x, &q51, 32);
    try testing.expectEqualSlices(u8, &(.{ 0x00, 0x00, 0x00, 0x3E } ++ .{0} ** 20), &q51);

    // F16 ties round to even: 1 + 2^−11 → 1.0 (0x3C00); 1 + 3·2^−11 → 1 + 2^−9 (0x3C02).
    var f: [4]u8 = undefined;
    F16.quantizeRow(&[_]f32{ 1 + 0x1p-11, 1 + 3 * 0x1p-11 }, &f, 2);
    try testing.expectEqualSlices(u8, &.{ 0x00, 0x3C, 0x02, 0x3C }, &f);
    // BF16 ties: 0x3F808000 → 0x3F80, 0x3F818000 → 0x3F82, 0x3F808001 → 0x3F81.
    var b: [6]u8 = undefined;
    const bx = [_]u32{ 0x3F80_8000, 0x3F81_8000, 0x3F80_8001 };
    BF16.quantizeRow(@ptrCast(&bx), &b, 3);
    try testing.expectEqualSlices(u8, &.{ 0x80, 0x3F, 0x82, 0x3F, 0x81, 0x3F }, &b);
}

test "ActQ8_0 quantizeRow equals quantizeRowRef" {
    var prng = std.Random.DefaultPrng.init(0x5eed_0002);
    const r = prng.random();
    // Whole groups of blocks (quantizeGroup), groups plus single blocks, single blocks only.
    for ([_]usize{ 1, 2, 3, 7, 16, 18, 33, 48, 100 }) |nb| {
        const n = nb * 32;
        const x = try testing.allocator.alloc(f32, n);
        defer testing.allocator.free(x);
        // Blocks of different magnitudes, so a block given another's scale shows.
        for (x, 0..) |*v, j| v.* = r.floatNorm(f32) * @as(f32, @floatFromInt(1 + (j / 32) % 5));
        // Edge cases: an all-zero block, exact halves, a single spike, an infinity, a NaN.
        if (nb >= 3) {
            @memset(x[0..32], 0);
            for (x[32..64], 0..) |*v, j| v.* = (@as(f32, @floatFromInt(j)) - 15.5) * 127.0 / 15.5;
            @memset(x[64..96], 1e-3);
            x[70] = -50;
        }
        if (nb >= 7) {
            x[4 * 32 + 3] = std.math.inf(f32);
            x[5 * 32 + 9] = std.math.nan(f32);
            @memset(x[6 * 32 .. 7 * 32], std.math.nan(f32));
        }
        const bytes = nb * ActQ8_0.type_size;
        const a = try allocU8Guarded(bytes);
        defer testing.allocator.free(a);
        const b = try allocU8Guarded(bytes);
        defer testing.allocator.free(b);
        ActQ8_0.quantizeRow(x.ptr, a.ptr, n);
        ActQ8_0.quantizeRowRef(x.ptr, b.ptr, n);
        try testing.expectEqualSlices(u8, b[0..bytes], a[0..bytes]);
        try checkU8Guard(a, bytes);
        try checkU8Guard(b, bytes);
    }
}

/// NMSE budget of vecDot against an f64 dot of the dequantized weights with the raw f32
/// activations (N(0,1) activations, random quant bytes). For the integer types this is the
/// activation rounding error only; measured: Q8_0 2.8e-5, Q4_0 3.2e-5, Q4_1 2.6e-5,
/// Q5_0 2.0e-5, Q5_1 2.2e-5. The float types are exact up to f32 summation: measured
/// F32 6e-14, F16 1.2e-13, BF16 1.6e-13.
fn dotBudget(comptime T: type) f64 {
    return if (T.act == .f32 or T.act == .f32_bf16) 1e-12 else 1e-4;
}

test "vecDot vs vecDotRef and vs f64 dot of dequantized weights" {
    var prng = std.Random.DefaultPrng.init(0x5eed_0003);
    const r = prng.random();
    const all = block_types ++ float_types;
    inline for (all) |T| {
        const lens = if (T.block_size == 1)
            [_]usize{ 1, 3, 17, 100, 1023, 4096 }
        else
            [_]usize{ 32, 96, 224, 1056, 3200, 4096 };
        var err2: f64 = 0;
        var ref2: f64 = 0;
        for (lens) |n| {
            for (0..8) |_| {
                const w = try testing.allocator.alloc(u8, n / T.block_size * T.type_size);
                defer testing.allocator.free(w);
                fillWeights(T, r, w);
                const x = try testing.allocator.alloc(f32, n);
                defer testing.allocator.free(x);
                for (x) |*v| v.* = r.floatNorm(f32);
                const wd = try testing.allocator.alloc(f32, n);
                defer testing.allocator.free(wd);
                T.dequantizeRowRef(w.ptr, wd.ptr, n);

                const act = try testing.allocator.alloc(u8, n * 2 * @sizeOf(f32));
                defer testing.allocator.free(act);
                if (T.act == .q8_0) {
                    ActQ8_0.quantizeRow(x.ptr, act.ptr, n);
                } else {
                    @memcpy(act[0 .. n * 4], std.mem.sliceAsBytes(x));
                }
                const fast = T.vecDot(n, w.ptr, act.ptr);
                const ref = T.vecDotRef(n, w.ptr, act.ptr);
                var exact: f64 = 0;
                var mag: f64 = 0;
                for (wd, x) |a, b| {
                    exact += @as(f64, a) * b;
                    mag += @abs(@as(f64, a) * b);
                }
                // Both paths do the same integer sums; only float summation order differs.
                try testing.expect(@abs(@as(f64, fast) - ref) <= 1e-5 * mag);
                err2 += (fast - exact) * (fast - exact);
                ref2 += exact * exact;
            }
        }
        const nmse = err2 / ref2;
        testing.expect(nmse <= dotBudget(T)) catch |e| {
            std.debug.print("{s}: dot NMSE {e} over budget {e}\n", .{ @typeName(T), nmse, dotBudget(T) });
            return e;
        };
    }
}

test "Prefetch.init: whole groups at least 8 KB ahead; the hint by policy, L1 kernels' big groups to L2" {
    defer test_prefetch_policy = null;
    const w: [*]const u8 = @ptrFromInt(0x10000);
    test_prefetch_policy = .by_level;
    const small = Prefetch.init(.l1, w, 4608); // 4-row group of 2048-wide Q4_0: two groups ahead
    try testing.expectEqual(@as(usize, 2 * 4608), @intFromPtr(small.ahead) - 0x10000);
    try testing.expectEqual(PrefetchHint.t0, small.hint);
    const big = Prefetch.init(.l1, w, l1_prefetch_max_bytes + 64);
    try testing.expectEqual(PrefetchHint.t1, big.hint);
    try testing.expectEqual(@as(usize, l1_prefetch_max_bytes + 64), @intFromPtr(big.ahead) - 0x10000);
    try testing.expectEqual(PrefetchHint.t1, Prefetch.init(.l2, w, 4608).hint);
    test_prefetch_policy = .l2;
    try testing.expectEqual(PrefetchHint.t1, Prefetch.init(.l1, w, 4608).hint);
    try testing.expectEqual(PrefetchHint.t1, Prefetch.init(.l2, w, 4608).hint);
    test_prefetch_policy = .non_temporal;
    try testing.expectEqual(PrefetchHint.nta, Prefetch.init(.l1, w, 4608).hint);
    try testing.expectEqual(PrefetchHint.nta, Prefetch.init(.l2, w, 40000).hint);
    try testing.expectEqual(@as(usize, 2 * 4608), @intFromPtr(Prefetch.init(.l2, w, 4608).ahead) - 0x10000);
}

test "vecDotRows vs vecDotRef and vecDot (1 to 5 rows per call, odd block counts and tails)" {
    @setEvalBranchQuota(100_000);
    var prng = std.Random.DefaultPrng.init(0x5eed_0006);
    const r = prng.random();
    inline for (block_types) |T| {
        for ([_]usize{ 1, 2, 3, 4, 5, 7, 9, 33, 128 }) |nb| {
            const n = nb * 32;
            const rows = 5;
            const rb = nb * T.type_size;
            const w = try testing.allocator.alloc(u8, rows * rb);
            defer testing.allocator.free(w);
            fillBlocks(T, r, w);
            const x = try testing.allocator.alloc(f32, n);
            defer testing.allocator.free(x);
            for (x) |*v| v.* = r.floatNorm(f32);
            const act = try testing.allocator.alloc(u8, nb * ActQ8_0.type_size);
            defer testing.allocator.free(act);
            ActQ8_0.quantizeRow(x.ptr, act.ptr, n);
            inline for (1..rows + 1) |R| {
                var out: [R]f32 = undefined;
                T.vecDotRows(R, n, w.ptr, rb, act.ptr, &out);
                for (0..R) |j| {
                    const wj = w[j * rb ..].ptr;
                    const ref = T.vecDotRef(n, wj, act.ptr);
                    const one = T.vecDot(n, wj, act.ptr);
                    // The magnitude scale of the sum: Σ |w·a| over the dequantized weights.
                    var deq: [128 * 32]f32 = undefined;
                    T.dequantizeRowRef(wj, &deq, n);
                    var mag: f64 = 0;
                    for (deq[0..n], x) |dw, xv| mag += @abs(@as(f64, dw) * xv);
                    try testing.expect(@abs(@as(f64, out[j]) - ref) <= 1e-5 * mag + 1e-30);
                    try testing.expect(@abs(@as(f64, out[j]) - one) <= 1e-5 * mag + 1e-30);
                }
            }
        }
    }
}

test "float types: vecDotRows equals vecDot bit for bit and the f64 reference closely (1 row to one past decode_row_group, lengths off every vector width)" {
    @setEvalBranchQuota(100_000);
    var prng = std.Random.DefaultPrng.init(0x5eed_0007);
    const r = prng.random();
    inline for (float_types) |T| {
        // 2050 and 4099: rows of 8 KB and more (f32; all three) take the prefetched groups.
        for ([_]usize{ 1, 7, 16, 17, 63, 64, 65, 200, 1000, 2050, 4099 }) |n| {
            const rows = T.decode_row_group + 1;
            const rb = n * T.type_size + 2; // rows off the vector alignment
            const w = try testing.allocator.alloc(u8, rows * rb);
            defer testing.allocator.free(w);
            const x = try testing.allocator.alloc(f32, n);
            defer testing.allocator.free(x);
            for (0..rows) |j| {
                for (x) |*v| v.* = r.floatNorm(f32);
                if (comptime @hasDecl(T, "quantizeRow")) T.quantizeRow(x.ptr, w[j * rb ..].ptr, n) else @memcpy(w[j * rb ..][0 .. n * 4], std.mem.sliceAsBytes(x));
            }
            for (x) |*v| v.* = r.floatNorm(f32);
            const a: [*]const u8 = @ptrCast(x.ptr);
            inline for (1..rows + 1) |R| {
                var out: [R]f32 = undefined;
                T.vecDotRows(R, n, w.ptr, rb, a, &out);
                for (0..R) |j| {
                    const wj = w[j * rb ..].ptr;
                    try testing.expectEqual(@as(u32, @bitCast(T.vecDot(n, wj, a))), @as(u32, @bitCast(out[j])));
                    const ref = T.vecDotRef(n, wj, a);
                    try testing.expectApproxEqAbs(ref, out[j], 1e-5 * (1 + @abs(ref)) * @sqrt(@as(f32, @floatFromInt(n))));
                }
            }
        }
    }
}

/// Round-trip NMSE budget of quantizeRow → dequantizeRow on N(0,1) data; measured Q8_0 2.9e-5,
/// Q4_0 7.2e-3, Q4_1 6.1e-3, Q5_0 1.9e-3, Q5_1 1.3e-3, F16 4.5e-8, BF16 2.7e-6 (budgets have 2-4× headroom).
fn roundTripBudget(comptime T: type) f64 {
    return switch (T) {
        Q8_0 => 1e-4,
        Q4_0 => 1.5e-2,
        Q4_1 => 1.5e-2,
        Q5_0, Q5_1 => 4e-3,
        F16 => 2e-7,
        BF16 => 1e-5,
        else => unreachable,
    };
}

test "quantizeRow round trip within budget" {
    var prng = std.Random.DefaultPrng.init(0x5eed_0004);
    const r = prng.random();
    inline for (.{ Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16 }) |T| {
        const n: usize = 32 * 97;
        const x = try testing.allocator.alloc(f32, n);
        defer testing.allocator.free(x);
        for (x) |*v| v.* = r.floatNorm(f32);
        const bytes = n / T.block_size * T.type_size;
        const q = try allocU8Guarded(bytes);
        defer testing.allocator.free(q);
        T.quantizeRow(x.ptr, q.ptr, n);
        try checkU8Guard(q, bytes);
        const y = try allocF32Guarded(n);
        defer testing.allocator.free(y);
        T.dequantizeRow(q.ptr, y.ptr, n);
        try checkF32Guard(y, n);
        var e2: f64 = 0;
        var s2: f64 = 0;
        for (x, y[0..n]) |a, b| {
            e2 += (@as(f64, a) - b) * (@as(f64, a) - b);
            s2 += @as(f64, a) * a;
        }
        testing.expect(e2 / s2 <= roundTripBudget(T)) catch |e| {
            std.debug.print("{s}: round-trip NMSE {e}\n", .{ @typeName(T), e2 / s2 });
            return e;
        };
    }
}

test "Q4_0 and Q8_0 matvec pipeline: f32 weights vs quantized dot, vs ggml's path" {
    // End to end as the engine runs it: weights quantized once, activations per call. Budgets
    // against the exact f32 dot (measured Q8_0 3.8e-5, Q4_0 4.9e-3: weight rounding dominates).
    // ggml's Q8_0 activation keeps d as f16; emulating that on the same quants (vecDotRef on a
    // copy with d rounded) gives ggml's error. Ours must match it: the f16 rounding of d is a
    // ~2^-12 perturbation, statistically invisible next to 8-bit rounding, hence the 5% slack.
    var prng = std.Random.DefaultPrng.init(0x5eed_0005);
    const r = prng.random();
    inline for (.{ .{ Q8_0, 1e-4 }, .{ Q4_0, 1.2e-2 } }) |c| {
        const T = c[0];
        const n: usize = 2048;
        var e2: f64 = 0;
        var g2: f64 = 0;
        var s2: f64 = 0;
        const w = try testing.allocator.alloc(f32, n);
        defer testing.allocator.free(w);
        const x = try testing.allocator.alloc(f32, n);
        defer testing.allocator.free(x);
        const wq = try testing.allocator.alloc(u8, n / 32 * T.type_size);
        defer testing.allocator.free(wq);
        const xq = try testing.allocator.alloc(u8, n / 32 * ActQ8_0.type_size);
        defer testing.allocator.free(xq);
        const xg = try testing.allocator.alloc(u8, n / 32 * ActQ8_0.type_size);
        defer testing.allocator.free(xg);
        for (0..32) |_| {
            for (w) |*v| v.* = r.floatNorm(f32);
            for (x) |*v| v.* = r.floatNorm(f32);
            T.quantizeRow(w.ptr, wq.ptr, n);
            ActQ8_0.quantizeRow(x.ptr, xq.ptr, n);
            @memcpy(xg, xq);
            for (0..n / 32) |b| {
                const d = loadF32(xg[b * ActQ8_0.type_size ..].ptr);
                storeF32(xg[b * ActQ8_0.type_size ..].ptr, @as(f16, @floatCast(d)));
            }
            const got = T.vecDot(n, wq.ptr, xq.ptr);
            const ggml = T.vecDotRef(n, wq.ptr, xg.ptr);
            var exact: f64 = 0;
            for (w, x) |a, b| exact += @as(f64, a) * b;
            e2 += (got - exact) * (got - exact);
            g2 += (ggml - exact) * (ggml - exact);
            s2 += exact * exact;
        }
        testing.expect(e2 / s2 <= c[1] and e2 <= g2 * 1.05) catch |e| {
            std.debug.print("{s}: pipeline NMSE {e} (ggml-style {e})\n", .{ @typeName(T), e2 / s2, g2 / s2 });
            return e;
        };
    }
}

test "Q8_0 on 512-bit VNNI: two blocks per vpdpbusd gives exactly the one-block sums" {
    if (!pair_dots) return; // only 512-bit VNNI builds pair blocks
    var prng = std.Random.DefaultPrng.init(11);
    const rng = prng.random();
    for ([_]usize{ 1, 3, 4, 5, 9, 64 }) |nb| {
        const n = 32 * nb;
        var x: [64 * 32]f32 = undefined;
        var w: [2 * 64 * Q8_0.type_size]u8 = undefined;
        var a: [3 * 64 * ActQ8_0.type_size]u8 = undefined;
        for (0..2) |r| {
            for (x[0..n]) |*v| v.* = rng.floatNorm(f32) * 3;
            Q8_0.quantizeRow(&x, w[r * nb * Q8_0.type_size ..].ptr, n);
        }
        for (0..3) |c| {
            for (x[0..n]) |*v| v.* = rng.floatNorm(f32);
            ActQ8_0.quantizeRow(&x, a[c * nb * ActQ8_0.type_size ..].ptr, n);
        }
        var one: [6]f32 = undefined;
        var two: [6]f32 = undefined;
        blockTilePaired(Q8_0, 1, 2, 3, n, &w, nb * Q8_0.type_size, &a, nb * ActQ8_0.type_size, &one, 2);
        blockTilePaired(Q8_0, 2, 2, 3, n, &w, nb * Q8_0.type_size, &a, nb * ActQ8_0.type_size, &two, 2);
        try std.testing.expectEqualSlices(u32, @ptrCast(&one), @ptrCast(&two));
    }
}

test "4/5-bit types on 512-bit VNNI: two weight rows per vector give exactly splitTile's bits" {
    if (!pair_dots) return; // only 512-bit VNNI builds pair rows
    @setEvalBranchQuota(100_000);
    var prng = std.Random.DefaultPrng.init(12);
    const rng = prng.random();
    inline for (.{ Q4_0, Q4_1, Q5_0, Q5_1 }) |T| {
        for ([_]usize{ 1, 2, 3, 5, 8, 9, 64 }) |nb| {
            const n = 32 * nb;
            const rb = nb * T.type_size;
            var w: [4 * 64 * Q5_1.type_size]u8 = undefined;
            fillBlocks(T, rng, w[0 .. 4 * rb]);
            var x: [64 * 32]f32 = undefined;
            for (x[0..n]) |*v| v.* = rng.floatNorm(f32);
            var a: [64 * ActQ8_0.type_size]u8 = undefined;
            ActQ8_0.quantizeRow(&x, &a, n);
            inline for (.{ 2, 4 }) |R| {
                var pairs: [R]f32 = undefined;
                var tile: [R]f32 = undefined;
                splitRowPairs(T, R, n, &w, rb, &a, &pairs);
                splitTile(T, R, 1, n, &w, rb, &a, 0, &tile, 1);
                try std.testing.expectEqualSlices(u32, @ptrCast(&tile), @ptrCast(&pairs));
            }
        }
    }
}
