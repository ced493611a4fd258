//! Prefill matmul over weights interleaved 16 rows at a time (AVX-512 VNNI: Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0, Q4_K, Q5_K, Q6_K).
//!
//! The tile kernels (quant_legacy.zig) dot one weight row with one activation row per vector:
//! every vpdpbusd's 16 lanes hold partial sums of the same output, so each block ends in a
//! convert, a scale multiply and an FMA per output. Here one vector holds 16 OUTPUTS (16 weight
//! rows): the weights of 16 rows are interleaved 4 bytes at a time, each vpdpbusd multiplies them
//! by 4 activation bytes broadcast to every lane, and the per-block float work (convert, scale,
//! FMA) is shared by 16 outputs. This is the layout llama.cpp repacks Q4_0 into at load time;
//! kiln keeps the weights in the mapped file (zero-copy) and interleaves each task's 16 rows into
//! a small stack buffer, block chunk by block chunk, which costs a few percent of the compute
//! that reuses it across up to 64 activation rows.
//!
//! Only batches of more than max_invariant_rows activation rows come here (prefill): its float
//! summation differs from the decode kernels', so speculative verification batches (≤ 16 rows),
//! which must reproduce decode bit for bit, keep the tile kernels.
//! Offsets: unsigned weights (Q4_0's q, Q8_0's q + 128) dot the signed activations, and the
//! zero point (8 or 128) times Σa comes back through the activation block's s = d_a·Σa,
//! accumulated per output as off += d_w·s, subtracted once at the end (as the AVX2/NEON paths
//! of the tile kernels do for Q4_0). The types with a min (Q4_1, Q5_1: y = d·q + m) carry
//! off += m_w·s instead, added at the end.
const std = @import("std");
const cpu = @import("cpu.zig");
const quant = @import("quant.zig");
const legacy = @import("quant_legacy.zig");
const kq = @import("quant_k.zig");

const GgmlType = quant.GgmlType;
const ActQ8_0 = legacy.ActQ8_0;

extern fn @"llvm.x86.avx512.vpdpbusd.512"(acc: @Vector(16, i32), a: @Vector(16, i32), b: @Vector(16, i32)) @Vector(16, i32);

/// Built only where 512-bit VNNI exists (the x86_64-v4 library); elsewhere `supports` is false.
pub const available = cpu.has_vnni512;

/// Weight rows interleaved per vector (one i32 lane each).
pub const rows = 16;
/// Legacy blocks interleaved per pass: 64 Q8_0 blocks of 16 rows are 34 KB of stack.
const legacy_chunk_blocks = 64;
/// Activation rows per inner tile (4 accumulators + 4 offset accumulators of 16 outputs).
const tile_c = 4;

pub fn supports(t: GgmlType) bool {
    return available and switch (t) {
        .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_k, .q5_k, .q6_k => true,
        else => false,
    };
}

/// One weight type's interleaved layout: per block, `groups` vectors of 16 rows × 4 bytes.
fn Layout(comptime t: GgmlType) type {
    return struct {
        /// Q4_0/Q4_1: 16 packed bytes per row-block → 4 groups, each unpacking to elements
        /// 4g..4g+3 (low nibbles) and 16+4g..16+4g+3 (high nibbles). Q5_0/Q5_1 (unpacked to
        /// 5-bit bytes while interleaving) and Q8_0: 32 bytes → 8 groups.
        const nibbles = t == .q4_0 or t == .q4_1;
        const groups = if (nibbles) 4 else 8;
        /// y = d·q + m: the offset term is m_w·s_a, added (zero = −1) instead of subtracted.
        const has_min = t == .q4_1 or t == .q5_1;
        const type_size = switch (t) {
            .q4_0 => legacy.Q4_0.type_size,
            .q4_1 => legacy.Q4_1.type_size,
            .q5_0 => legacy.Q5_0.type_size,
            .q5_1 => legacy.Q5_1.type_size,
            else => legacy.Q8_0.type_size,
        };
        /// out = acc − zero·off (the zero point times Σ d_w·s_a; −1: plus Σ m_w·s_a).
        const zero: f32 = switch (t) {
            .q4_0 => 8,
            .q5_0 => 16,
            .q4_1, .q5_1 => -1,
            else => 128,
        };
        /// Where the quants start after the scales (d, and m for the min types).
        const scales_bytes = if (has_min) 4 else 2;
        const block_elems = 32;
        const chunk_blocks = legacy_chunk_blocks;
        const Chunk = struct {
            q: [chunk_blocks][groups]@Vector(64, u8),
            d: [chunk_blocks]@Vector(16, f32),
            m: if (has_min) [chunk_blocks]@Vector(16, f32) else void,
        };

        /// Interleaves rows [0, 16) of blocks [b0, b0 + nb) into c (Q8_0 biased to unsigned).
        fn fill(c: *Chunk, w: [*]const u8, row_bytes: usize, b0: usize, nb: usize) void {
            for (0..nb) |b| {
                var words: [groups][16]u32 = undefined;
                inline for (0..rows) |r| {
                    const blk = w + r * row_bytes + (b0 + b) * type_size;
                    c.d[b][r] = @floatCast(@as(f16, @bitCast(std.mem.readInt(u16, blk[0..2], .little))));
                    if (has_min) c.m[b][r] = @floatCast(@as(f16, @bitCast(std.mem.readInt(u16, blk[2..4], .little))));
                    if (t == .q5_0 or t == .q5_1) {
                        const v: [8]u32 = @bitCast(legacy.q5Quants(blk + scales_bytes, blk + scales_bytes + 4));
                        inline for (0..groups) |g| words[g][r] = v[g];
                    } else {
                        inline for (0..groups) |g| words[g][r] = std.mem.readInt(u32, blk[scales_bytes + 4 * g ..][0..4], .little);
                    }
                }
                inline for (0..groups) |g| {
                    const v: @Vector(64, u8) = @bitCast(words[g]);
                    c.q[b][g] = if (t == .q8_0) v ^ @as(@Vector(64, u8), @splat(0x80)) else v;
                }
            }
        }

        /// acc[c] += Σ_blocks d_w·d_a·Σ q·a and off[c] += Σ_blocks (d_w or m_w)·s_a for C activation rows.
        inline fn dotChunk(comptime C: usize, c: *const Chunk, nb: usize, a: [*]const u8, act_bytes: usize, b0: usize, acc: *[C]@Vector(16, f32), off: *[C]@Vector(16, f32)) void {
            const mask: @Vector(64, u8) = @splat(0x0f);
            for (0..nb) |b| {
                var wq: [2 * groups]@Vector(64, u8) = undefined;
                inline for (0..groups) |g| {
                    if (nibbles) {
                        wq[2 * g] = c.q[b][g] & mask;
                        wq[2 * g + 1] = (c.q[b][g] >> @splat(4)) & mask;
                    } else wq[g] = c.q[b][g];
                }
                const dw = c.d[b];
                const ow = if (has_min) c.m[b] else dw;
                inline for (0..C) |ci| {
                    const ab = a + ci * act_bytes + (b0 + b) * ActQ8_0.type_size;
                    var sumi: @Vector(16, i32) = @splat(0);
                    inline for (0..groups) |g| {
                        if (nibbles) {
                            const lo: @Vector(16, i32) = @splat(std.mem.readInt(i32, ab[8 + 4 * g ..][0..4], .little));
                            const hi: @Vector(16, i32) = @splat(std.mem.readInt(i32, ab[8 + 16 + 4 * g ..][0..4], .little));
                            sumi = @"llvm.x86.avx512.vpdpbusd.512"(sumi, @bitCast(wq[2 * g]), lo);
                            sumi = @"llvm.x86.avx512.vpdpbusd.512"(sumi, @bitCast(wq[2 * g + 1]), hi);
                        } else {
                            const x: @Vector(16, i32) = @splat(std.mem.readInt(i32, ab[8 + 4 * g ..][0..4], .little));
                            sumi = @"llvm.x86.avx512.vpdpbusd.512"(sumi, @bitCast(wq[g]), x);
                        }
                    }
                    const da: @Vector(16, f32) = @splat(@bitCast(std.mem.readInt(u32, ab[0..4], .little)));
                    const sa: @Vector(16, f32) = @splat(@bitCast(std.mem.readInt(u32, ab[4..8], .little)));
                    acc[ci] = @mulAdd(@Vector(16, f32), @floatFromInt(sumi), dw * da, acc[ci]);
                    off[ci] = @mulAdd(@Vector(16, f32), ow, sa, off[ci]);
                }
            }
        }
    };
}

/// The K-quants (256-element blocks with per-sub-block scales): each row-block is unpacked to
/// bytes while interleaving (kq.unpackRowBlock), so a sub-block of S elements is S/4 vectors of
/// 16 rows × 4 bytes; per sub-block, 16 outputs get scale·Σq·a − offset·Σa, Σa from the
/// activation's 16-element sums. The block total is scaled by the activation's d once.
fn KLayout(comptime W: type) type {
    return struct {
        const sub = kq.subBlock(W);
        const n_sub = 256 / sub;
        const groups_per_sub = sub / 4;
        /// out = acc − off: off carries Σ_blocks d_a·Σ_sub offset·Σa.
        const zero: f32 = 1;
        const block_elems = 256;
        const chunk_blocks = 4; // blocks per pass: 4 × (4 KB quants + 2 × n_sub × 64 B scales)
        const Chunk = struct {
            q: [chunk_blocks][64]@Vector(64, u8),
            scale: [chunk_blocks][n_sub]@Vector(16, f32),
            offset: [chunk_blocks][n_sub]@Vector(16, f32),
        };

        fn fill(c: *Chunk, w: [*]const u8, row_bytes: usize, b0: usize, nb: usize) void {
            for (0..nb) |b| {
                var words: [64][16]u32 = undefined;
                var sc: [n_sub][16]f32 = undefined;
                var off: [n_sub][16]f32 = undefined;
                for (0..rows) |r| {
                    var q: [256]u8 align(64) = undefined;
                    var s16: [16]f32 = undefined;
                    var o16: [16]f32 = undefined;
                    kq.unpackRowBlock(W, w + r * row_bytes + (b0 + b) * W.type_size, &q, &s16, &o16);
                    const qw: [64]u32 = @bitCast(q);
                    for (0..64) |g| words[g][r] = qw[g];
                    for (0..n_sub) |j| {
                        sc[j][r] = s16[j];
                        off[j][r] = o16[j];
                    }
                }
                for (0..64) |g| c.q[b][g] = @bitCast(words[g]);
                for (0..n_sub) |j| {
                    c.scale[b][j] = sc[j];
                    c.offset[b][j] = off[j];
                }
            }
        }

        /// acc[c] += Σ_blocks d_a·Σ_sub scale·Σq·a and off[c] += Σ_blocks d_a·Σ_sub offset·Σa.
        inline fn dotChunk(comptime C: usize, c: *const Chunk, nb: usize, a: [*]const u8, act_bytes: usize, b0: usize, acc: *[C]@Vector(16, f32), off: *[C]@Vector(16, f32)) void {
            @setEvalBranchQuota(100_000);
            const ts = kq.ActQ8_K.type_size;
            for (0..nb) |b| {
                var t: [C]@Vector(16, f32) = @splat(@splat(0));
                var o: [C]@Vector(16, f32) = @splat(@splat(0));
                inline for (0..n_sub) |j| {
                    inline for (0..C) |ci| {
                        const ab = a + ci * act_bytes + (b0 + b) * ts;
                        var sumi: @Vector(16, i32) = @splat(0);
                        inline for (0..groups_per_sub) |gg| {
                            const g = j * groups_per_sub + gg;
                            const x: @Vector(16, i32) = @splat(std.mem.readInt(i32, ab[kq.ActQ8_K.off_qs + 4 * g ..][0..4], .little));
                            sumi = @"llvm.x86.avx512.vpdpbusd.512"(sumi, @bitCast(c.q[b][g]), x);
                        }
                        const bs = ab + kq.ActQ8_K.off_bsums;
                        const bsum: i32 = if (sub == 32)
                            @as(i32, std.mem.readInt(i16, bs[4 * j ..][0..2], .little)) + std.mem.readInt(i16, bs[4 * j + 2 ..][0..2], .little)
                        else
                            std.mem.readInt(i16, bs[2 * j ..][0..2], .little);
                        t[ci] = @mulAdd(@Vector(16, f32), @floatFromInt(sumi), c.scale[b][j], t[ci]);
                        o[ci] = @mulAdd(@Vector(16, f32), c.offset[b][j], @splat(@floatFromInt(bsum)), o[ci]);
                    }
                }
                inline for (0..C) |ci| {
                    const ab = a + ci * act_bytes + (b0 + b) * ts;
                    const da: @Vector(16, f32) = @splat(@bitCast(std.mem.readInt(u32, ab[kq.ActQ8_K.off_d..][0..4], .little)));
                    acc[ci] = @mulAdd(@Vector(16, f32), t[ci], da, acc[ci]);
                    off[ci] = @mulAdd(@Vector(16, f32), o[ci], da, off[ci]);
                }
            }
        }
    };
}

/// y[i·y_stride + j] for the 16 weight rows at w (j = 0..15) and activation rows [0, m), m ≤ 64,
/// through layout L: each chunk of blocks is interleaved once, then every tile of activation
/// rows runs over it; out = acc − L.zero·off.
fn rowsTimesActs(comptime L: type, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, y: [*]f32, y_stride: usize) void {
    std.debug.assert(m <= 64 and k % L.block_elems == 0);
    const nb_total = k / L.block_elems;
    var chunk: L.Chunk = undefined;
    var acc: [64]@Vector(16, f32) = undefined;
    var off: [64]@Vector(16, f32) = undefined;
    @memset(acc[0..m], @splat(0));
    @memset(off[0..m], @splat(0));
    var b0: usize = 0;
    while (b0 < nb_total) : (b0 += L.chunk_blocks) {
        const nb = @min(L.chunk_blocks, nb_total - b0);
        L.fill(&chunk, w, row_bytes, b0, nb);
        var i: usize = 0;
        while (i < m) : (i += tile_c) {
            switch (@min(tile_c, m - i)) {
                inline 1...tile_c => |C| L.dotChunk(C, &chunk, nb, a + i * act_bytes, act_bytes, b0, acc[i..][0..C], off[i..][0..C]),
                else => unreachable,
            }
        }
    }
    for (0..m) |i| y[i * y_stride ..][0..16].* = acc[i] - @as(@Vector(16, f32), @splat(L.zero)) * off[i];
}

/// y rows [j0, j0 + 16) × activation rows [i_0, i_0 + m), m ≤ 64, through the interleaved kernel.
pub fn block16(t: GgmlType, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, y: [*]f32, y_stride: usize) void {
    if (comptime !available) unreachable;
    switch (t) {
        .q4_0 => rowsTimesActs(Layout(.q4_0), w, row_bytes, k, a, act_bytes, m, y, y_stride),
        .q4_1 => rowsTimesActs(Layout(.q4_1), w, row_bytes, k, a, act_bytes, m, y, y_stride),
        .q5_0 => rowsTimesActs(Layout(.q5_0), w, row_bytes, k, a, act_bytes, m, y, y_stride),
        .q5_1 => rowsTimesActs(Layout(.q5_1), w, row_bytes, k, a, act_bytes, m, y, y_stride),
        .q8_0 => rowsTimesActs(Layout(.q8_0), w, row_bytes, k, a, act_bytes, m, y, y_stride),
        .q4_k => rowsTimesActs(KLayout(kq.Q4_K), w, row_bytes, k, a, act_bytes, m, y, y_stride),
        .q5_k => rowsTimesActs(KLayout(kq.Q5_K), w, row_bytes, k, a, act_bytes, m, y, y_stride),
        .q6_k => rowsTimesActs(KLayout(kq.Q6_K), w, row_bytes, k, a, act_bytes, m, y, y_stride),
        else => unreachable,
    }
}

/// Scalar reference for block16: each output is the type's scalar dot (exact integer sums per
/// block, the activation's f32 scales), one weight row by one activation row at a time.
pub fn block16Ref(t: GgmlType, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, y: [*]f32, y_stride: usize) void {
    switch (t) {
        inline .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_k, .q5_k, .q6_k => |ct| {
            for (0..m) |i| for (0..rows) |j| {
                y[i * y_stride + j] = quant.Traits(ct).vecDotRef(k, w + j * row_bytes, a + i * act_bytes);
            };
        },
        else => unreachable,
    }
}

test "block16 matches its scalar reference: every type, whole and partial chunks, 1..64 activation rows" {
    if (!available) return; // only the x86_64-v4 build has the interleaved kernels
    const al = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(31);
    const rng = prng.random();
    inline for (.{ GgmlType.q4_0, GgmlType.q4_1, GgmlType.q5_0, GgmlType.q5_1, GgmlType.q8_0, GgmlType.q4_k, GgmlType.q5_k, GgmlType.q6_k }) |t| {
        const bs = quant.blockSize(t);
        // Legacy chunks are 64 blocks, K-quant chunks 4: one block, exactly one chunk, and
        // whole chunks plus a partial one.
        const chunk: usize = if (bs == 32) legacy_chunk_blocks else 4;
        for ([_]usize{ 1, chunk, 2 * chunk + 3 }) |nb| {
            const k = bs * nb;
            // Rows padded apart (row_bytes > one row) so a kernel reading the wrong row shows.
            const rb = quant.rowBytes(t, k) + 64;
            const ab = quant.actRowBytes(t, k);
            const w = try al.alloc(u8, rb * rows);
            defer al.free(w);
            const x = try al.alloc(f32, k * 64);
            defer al.free(x);
            for (x[0 .. k * rows]) |*v| v.* = rng.floatNorm(f32);
            for (0..rows) |r| try std.testing.expect(quant.quantizeRow(t, x[r * k ..].ptr, w[r * rb ..].ptr, k));
            for (x) |*v| v.* = rng.floatNorm(f32);
            const xq = try al.alloc(u8, ab * 64);
            defer al.free(xq);
            quant.quantizeActivations(t, x.ptr, k, 64, k, xq.ptr);
            var got: [64 * rows + 8]f32 = undefined;
            var want: [64 * rows]f32 = undefined;
            for ([_]usize{ 1, 3, 4, 5, 64 }) |m| {
                @memset(&got, 12345);
                block16(t, w.ptr, rb, k, xq.ptr, ab, m, &got, rows);
                block16Ref(t, w.ptr, rb, k, xq.ptr, ab, m, &want, rows);
                var num: f64 = 0;
                var den: f64 = 0;
                for (got[0 .. m * rows], want[0 .. m * rows]) |g, v| {
                    num += (@as(f64, g) - v) * (@as(f64, g) - v);
                    den += @as(f64, v) * v;
                }
                if (num / den > 1e-10) {
                    std.debug.print("{s} nb={d} m={d}: nmse {e}\n", .{ @tagName(t), nb, m, num / den });
                    return error.TestExpectedApproxEq;
                }
                // Nothing written past the m rows asked for.
                for (got[m * rows ..]) |g| try std.testing.expectEqual(@as(f32, 12345), g);
            }
        }
    }
}
