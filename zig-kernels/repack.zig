//! Prefill matmul over weights interleaved 16 rows at a time (AVX-512 VNNI) or 8 (AVX2): Q4_0,
//! Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K.
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
//!
//! AVX2 (the x86_64-v3 build) has no vpdpbusd: its 8-row vectors take vpmaddubsw (u8 × i8 pair
//! sums in i16) and vpmaddwd by 1 (i16 pairs into i32), and the i16 pair sums of several 4-byte
//! groups are added before one vpmaddwd while their bound allows (dotAcc). Q8_0 is not biased
//! there (biased quants up to 255 would saturate vpmaddubsw): it dots |q| with the activation
//! bytes given q's sign (vpsignb), as the tile kernels' dotSS.
const std = @import("std");
const cpu = @import("cpu.zig");
const quant = @import("quant.zig");
const legacy = @import("quant_legacy.zig");
const kq = @import("quant_k.zig");

const GgmlType = quant.GgmlType;
const ActQ8_0 = legacy.ActQ8_0;

extern fn @"llvm.x86.avx512.vpdpbusd.512"(acc: @Vector(16, i32), a: @Vector(16, i32), b: @Vector(16, i32)) @Vector(16, i32);
extern fn @"llvm.x86.avx512.vpdpwssd.512"(acc: @Vector(16, i32), a: @Vector(16, i32), b: @Vector(16, i32)) @Vector(16, i32);
extern fn @"llvm.x86.avx2.pmadd.ub.sw"(a: @Vector(32, u8), b: @Vector(32, i8)) @Vector(16, i16);
extern fn @"llvm.x86.avx2.pmadd.wd"(a: @Vector(16, i16), b: @Vector(16, i16)) @Vector(8, i32);
extern fn @"llvm.x86.avx2.psign.b"(a: @Vector(32, i8), b: @Vector(32, i8)) @Vector(32, i8);

/// 512-bit VNNI (the x86_64-v4 library): 16 rows a vector, and packed.zig's packed copies and the
/// Q4_K kernel over them (block16PackedQ4K), which exist only here.
pub const available = cpu.has_vnni512;
/// The interleaved kernels exist: 512-bit VNNI, or AVX2 (the x86_64-v3 library, 8 rows a
/// vector); elsewhere `supports` is false.
pub const built = available or cpu.has_avx2;

/// Weight rows interleaved per vector (one i32 lane each).
pub const rows = if (available) 16 else 8;
/// Rows per group of packed.zig's layout (and q4k_packed's): the 512-bit build's vector.
pub const packed_rows = 16;
const VI = @Vector(rows, i32);
const VF = @Vector(rows, f32);
/// 4 bytes of each of the `rows` rows.
const VB = @Vector(4 * rows, u8);

/// acc + Σ_g u[g]·s[g] per 4-byte lane: u unsigned weight bytes ≤ qmax, s the activation's 4
/// bytes broadcast (|byte| ≤ 128). VNNI: a vpdpbusd per group. AVX2: vpmaddubsw pair sums
/// (≤ 2·qmax·128 each, never saturating) added in i16 for `per` groups at a time, so their sum
/// stays ≤ 32767, then one vpmaddwd by 1 into i32: exactly the same integers.
pub inline fn dotAcc(comptime qmax: u32, comptime n: usize, acc: VI, u: [n]VB, s: [n]VI) VI {
    var r = acc;
    if (comptime available) {
        inline for (0..n) |g| r = @"llvm.x86.avx512.vpdpbusd.512"(r, @bitCast(u[g]), s[g]);
        return r;
    }
    const per = comptime 32767 / (2 * qmax * 128);
    comptime std.debug.assert(per >= 1);
    const ones: @Vector(16, i16) = @splat(1);
    comptime var g0: usize = 0;
    inline while (g0 < n) : (g0 += per) {
        var h: @Vector(16, i16) = @"llvm.x86.avx2.pmadd.ub.sw"(u[g0], @bitCast(s[g0]));
        inline for (g0 + 1..@min(n, g0 + per)) |g| h +%= @"llvm.x86.avx2.pmadd.ub.sw"(u[g], @bitCast(s[g]));
        r +%= @"llvm.x86.avx2.pmadd.wd"(h, ones);
    }
    return r;
}

/// AVX2's signed × signed group dot (Q8_0's unbiased quants q): |q| times the activation bytes
/// given q's sign (zero where q is 0), |q|·sign(a, q) = q·a; pair sums ≤ 2·128·127 < 32768.
pub inline fn dotSignedAcc(acc: VI, q: VB, s: VI) VI {
    const qi: @Vector(32, i8) = @bitCast(q);
    const p = @"llvm.x86.avx2.pmadd.ub.sw"(@bitCast(@abs(qi)), @"llvm.x86.avx2.psign.b"(@bitCast(s), qi));
    return acc +% @"llvm.x86.avx2.pmadd.wd"(p, @splat(1));
}

/// acc + the i16 pairs of a times those of b, per i32 lane (vpdpwssd; AVX2: vpmaddwd and an add).
inline fn dotPairsAcc(acc: VI, a: VI, b: VI) VI {
    if (comptime available) return @"llvm.x86.avx512.vpdpwssd.512"(acc, a, b);
    return acc +% @"llvm.x86.avx2.pmadd.wd"(@bitCast(a), @bitCast(b));
}
/// Legacy blocks interleaved per pass: 64 Q8_0 blocks of 16 rows are 34 KB of stack.
const legacy_chunk_blocks = 64;
/// Activation rows per inner tile (4 accumulators + 4 offset accumulators of 16 outputs).
const tile_c = 4;

pub fn supports(t: GgmlType) bool {
    return built and switch (t) {
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
        /// The largest weight byte dotted (dotAcc's bound); Q8_0 is biased to unsigned under
        /// VNNI only (AVX2 dots it signed: dotSignedAcc).
        const qmax: u32 = switch (t) {
            .q4_0, .q4_1 => 15,
            .q5_0, .q5_1 => 31,
            else => 255,
        };
        const biased = t == .q8_0 and available;
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
            else => if (biased) 128 else 0,
        };
        /// Where the quants start after the scales (d, and m for the min types).
        const scales_bytes = if (has_min) 4 else 2;
        const block_elems = 32;
        const chunk_blocks = legacy_chunk_blocks;
        const Chunk = struct {
            q: [chunk_blocks][groups]VB,
            d: [chunk_blocks]VF,
            m: if (has_min) [chunk_blocks]VF else void,
        };

        /// Interleaves rows [0, 16) of blocks [b0, b0 + nb) into c (Q8_0 biased to unsigned).
        fn fill(c: *Chunk, w: [*]const u8, row_bytes: usize, b0: usize, nb: usize) void {
            for (0..nb) |b| {
                var words: [groups][rows]u32 = undefined;
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
                    const v: VB = @bitCast(words[g]);
                    c.q[b][g] = if (biased) v ^ @as(VB, @splat(0x80)) else v;
                }
            }
        }

        /// acc[c] += Σ_blocks d_w·d_a·Σ q·a and off[c] += Σ_blocks (d_w or m_w)·s_a for C activation rows.
        inline fn dotChunk(comptime C: usize, c: *const Chunk, nb: usize, a: [*]const u8, act_bytes: usize, b0: usize, acc: *[C]VF, off: *[C]VF) void {
            const mask: VB = @splat(0x0f);
            for (0..nb) |b| {
                var wq: [2 * groups]VB = undefined;
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
                    // The activation's 4-byte groups broadcast, in wq's order (nibble types: the
                    // low nibbles of group g dot elements 4g.., the high ones 16 + 4g..).
                    var x: [2 * groups]VI = undefined;
                    inline for (0..groups) |g| {
                        if (nibbles) {
                            x[2 * g] = @splat(std.mem.readInt(i32, ab[8 + 4 * g ..][0..4], .little));
                            x[2 * g + 1] = @splat(std.mem.readInt(i32, ab[8 + 16 + 4 * g ..][0..4], .little));
                        } else x[g] = @splat(std.mem.readInt(i32, ab[8 + 4 * g ..][0..4], .little));
                    }
                    const n_dots = if (nibbles) 2 * groups else groups;
                    var sumi: VI = @splat(0);
                    if (t == .q8_0 and !biased) {
                        inline for (0..groups) |g| sumi = dotSignedAcc(sumi, wq[g], x[g]);
                    } else sumi = dotAcc(qmax, n_dots, sumi, wq[0..n_dots].*, x[0..n_dots].*);
                    const da: VF = @splat(@bitCast(std.mem.readInt(u32, ab[0..4], .little)));
                    acc[ci] = @mulAdd(VF, @floatFromInt(sumi), dw * da, acc[ci]);
                    if (zero != 0) {
                        const sa: VF = @splat(@bitCast(std.mem.readInt(u32, ab[4..8], .little)));
                        off[ci] = @mulAdd(VF, ow, sa, off[ci]);
                    }
                }
            }
        }
    };
}

/// The K-quants (256-element blocks with per-sub-block scales), in integers as ggml's scalar
/// dot: each row-block is unpacked to bytes (0..15 / 0..31 / 0..63) and interleaved by a
/// 16 × 16-word transpose per 64 elements, so a sub-block of S elements is S/4 vectors of
/// 16 rows × 4 bytes. Per block and activation row, 16 outputs get
///   Q4_K/Q5_K: sumi = Σ_j sc_j·Σq·a (vpdpbusd, then vpmulld by the lane's 6-bit scale) and
///              summ = Σ_j m_j·(bsum_2j + bsum_2j+1) (one vpdpwssd per sub-block: (m_j, m_j)
///              per lane times the activation's bsum pair);
///   Q6_K:      sumi = Σ_j sc_j·(Σq·a − 32·bsum_j) (the −32·sc pairs folded in by vpdpwssd),
/// then acc += (d·d_a)·sumi − (dmin·d_a)·summ in f32, in the reference's order of operations:
/// every output equals kq's vecDotRef bit for bit.
///
/// No int32 overflow (vpdpbusd and vpdpwssd wrap, so only the block totals need to fit; the
/// activation quants are |a| ≤ 127 (Q8_K), bounded here by 128 for any byte):
///   Q4_K: |sumi| ≤ 8 sub-blocks · 63 · (32 · 15 · 128) = 30,965,760;
///   Q5_K: |sumi| ≤ 8 · 63 · (32 · 31 · 128) = 63,995,904;
///   Q6_K: |sumi| ≤ 16 · 128 · (16 · 32 · 128) = 134,217,728 (q − 32 ∈ [−32, 31], |sc| ≤ 128);
///   Q4_K/Q5_K summ: |summ| ≤ 8 · 63 · (32 · 128) = 2,064,384;
/// all far below 2^31 = 2,147,483,648 (tested with every quant, scale and activation at max).
fn KLayout(comptime W: type) type {
    return struct {
        const sub = kq.subBlock(W);
        const n_sub = 256 / sub;
        const groups_per_sub = sub / 4;
        const is_q6 = W == kq.Q6_K;
        /// The largest unpacked quant byte (dotAcc's bound).
        const qmax: u32 = if (W == kq.Q4_K) 15 else if (W == kq.Q5_K) 31 else 63;
        /// acc holds the whole result (off stays 0).
        const zero: f32 = 0;
        const block_elems = 256;
        const chunk_blocks = 4; // blocks per pass: 4 × (4 KB quants + ~1.5 KB scales)
        const Chunk = struct {
            q: [chunk_blocks][64]VB,
            /// Per sub-block, the rows' integer scales (Q4_K/Q5_K 0..63, Q6_K −128..127).
            sc: [chunk_blocks][n_sub]VI,
            /// vpdpwssd operands, two i16 per lane: Q4_K/Q5_K (m_j, m_j) for sub-block j, Q6_K
            /// (−32·sc_2p, −32·sc_2p+1); each times the activation's bsum pair (2p, 2p + 1).
            mp: [chunk_blocks][8]VI,
            d: [chunk_blocks]VF,
            dmin: if (is_q6) void else [chunk_blocks]VF,
        };

        fn fill(c: *Chunk, w: [*]const u8, row_bytes: usize, b0: usize, nb: usize) void {
            @setEvalBranchQuota(100_000);
            const so = kq.scalesOffset(W);
            const do = kq.dOffsetOf(W);
            for (0..nb) |b| {
                const base = w + (b0 + b) * W.type_size;
                inline for (0..4) |k| {
                    // Row r's 16 words of elements 64k.. (word i: elements 64k + 4i..), turned
                    // into vector 16k + i of the rows' word i, rows words at a time.
                    var words: [rows]@Vector(16, u32) = undefined;
                    inline for (0..rows) |r| words[r] = @bitCast(kq.unpackQuants64(W, base + r * row_bytes, k));
                    inline for (0..16 / rows) |h| {
                        var v: [rows]@Vector(rows, u32) = undefined;
                        inline for (0..rows) |r| v[r] = std.simd.extract(words[r], h * rows, rows);
                        transpose(rows, &v);
                        inline for (0..rows) |i| c.q[b][16 * k + h * rows + i] = @bitCast(v[i]);
                    }
                }
                // The scale words and d of the rows, one lane each.
                var sw: [if (is_q6) 4 else 3][rows]u32 = undefined;
                var dw: [rows]u16 = undefined;
                var mw: [rows]u16 = undefined;
                inline for (0..rows) |r| {
                    const blk = base + r * row_bytes;
                    inline for (0..sw.len) |t| sw[t][r] = std.mem.readInt(u32, blk[so + 4 * t ..][0..4], .little);
                    // u16 reads: Q6_K's d ends its block (the last row's last block ends the mapping).
                    dw[r] = std.mem.readInt(u16, blk[do..][0..2], .little);
                    if (!is_q6) mw[r] = std.mem.readInt(u16, blk[2..4], .little);
                }
                c.d[b] = @floatCast(@as(@Vector(rows, f16), @bitCast(@as(@Vector(rows, u16), dw))));
                if (is_q6) {
                    var sc: [16]VI = undefined;
                    inline for (0..16) |j| {
                        const x: VI = @bitCast(@as(@Vector(rows, u32), sw[j / 4]));
                        sc[j] = (x << @splat(24 - 8 * (j % 4))) >> @splat(24);
                        c.sc[b][j] = sc[j];
                    }
                    const m32: VI = @splat(-32);
                    const lo16: VI = @splat(0xffff);
                    inline for (0..8) |p| c.mp[b][p] = ((sc[2 * p] * m32) & lo16) | ((sc[2 * p + 1] * m32) << @splat(16));
                } else {
                    c.dmin[b] = @floatCast(@as(@Vector(rows, f16), @bitCast(@as(@Vector(rows, u16), mw))));
                    scalesMins(rows, sw[0], sw[1], sw[2], &c.sc[b], &c.mp[b]);
                }
            }
        }

        /// fill() from packed.zig's copy of the 16 rows (layout q4k_packed, Q4_K only): the
        /// quants are interleaved already, so a block is 32 vectors split into their nibbles.
        fn fillPacked(c: *Chunk, blocks: [*]const u8, b0: usize, nb: usize) void {
            comptime std.debug.assert(W == kq.Q4_K and rows == packed_rows);
            const L = q4k_packed;
            const mask: @Vector(64, u8) = @splat(0x0f);
            for (0..nb) |b| {
                const blk = blocks + (b0 + b) * L.block_bytes;
                // Vector 8h + g: low nibbles are group g of sub-block 2h, high ones of 2h + 1.
                inline for (0..4) |h| inline for (0..8) |g| {
                    const v: @Vector(64, u8) = blk[L.qs + 64 * (8 * h + g) ..][0..64].*;
                    c.q[b][16 * h + g] = v & mask;
                    c.q[b][16 * h + 8 + g] = (v >> @splat(4)) & mask;
                };
                c.d[b] = @floatCast(@as(@Vector(16, f16), @bitCast(blk[L.d..][0..32].*)));
                c.dmin[b] = @floatCast(@as(@Vector(16, f16), @bitCast(blk[L.dmin..][0..32].*)));
                scalesMins(rows, @bitCast(blk[L.scales..][0..64].*), @bitCast(blk[L.scales + 64 ..][0..64].*), @bitCast(blk[L.scales + 128 ..][0..64].*), &c.sc[b], &c.mp[b]);
            }
        }

        /// acc[c] += Σ_blocks (d·d_a)·sumi − (dmin·d_a)·summ, as vecDotRef.
        inline fn dotChunk(comptime C: usize, c: *const Chunk, nb: usize, a: [*]const u8, act_bytes: usize, b0: usize, acc: *[C]VF, off: *[C]VF) void {
            @setEvalBranchQuota(100_000);
            _ = off;
            const ts = kq.ActQ8_K.type_size;
            for (0..nb) |b| {
                var isum: [C]VI = @splat(@splat(0));
                var msum: [C]VI = @splat(@splat(0));
                inline for (0..n_sub) |j| {
                    inline for (0..C) |ci| {
                        const ab = a + ci * act_bytes + (b0 + b) * ts;
                        var x: [groups_per_sub]VI = undefined;
                        inline for (0..groups_per_sub) |gg| {
                            const g = j * groups_per_sub + gg;
                            x[gg] = @splat(std.mem.readInt(i32, ab[kq.ActQ8_K.off_qs + 4 * g ..][0..4], .little));
                        }
                        const s = dotAcc(qmax, groups_per_sub, @splat(0), c.q[b][j * groups_per_sub ..][0..groups_per_sub].*, x);
                        isum[ci] +%= s *% c.sc[b][j];
                    }
                }
                inline for (0..C) |ci| {
                    const ab = a + ci * act_bytes + (b0 + b) * ts;
                    inline for (0..8) |p| {
                        const bs: VI = @splat(std.mem.readInt(i32, ab[kq.ActQ8_K.off_bsums + 4 * p ..][0..4], .little));
                        if (is_q6) {
                            isum[ci] = dotPairsAcc(isum[ci], c.mp[b][p], bs);
                        } else {
                            msum[ci] = dotPairsAcc(msum[ci], c.mp[b][p], bs);
                        }
                    }
                    const da: VF = @splat(@bitCast(std.mem.readInt(u32, ab[kq.ActQ8_K.off_d..][0..4], .little)));
                    const t = (c.d[b] * da) * @as(VF, @floatFromInt(isum[ci]));
                    acc[ci] += if (is_q6) t else t - (c.dmin[b] * da) * @as(VF, @floatFromInt(msum[ci]));
                }
            }
        }
    };
}

/// Q4_K/Q5_K's 6-bit scales and mins (get_scale_min_k4) of N rows at once, from the three
/// scale words of each (lane r = row r's word t in w_t): sc[j] = the N rows' scale of sub-block
/// j, mp[j] = (m_j, m_j) as two i16 per lane (the vpdpwssd operand against a bsum pair).
pub inline fn scalesMins(comptime N: usize, w0: @Vector(N, u32), w1: @Vector(N, u32), w2: @Vector(N, u32), sc: *[8]@Vector(N, i32), mp: *[8]@Vector(N, i32)) void {
    const k1: @Vector(N, u32) = @splat(0x3f3f3f3f);
    const k2: @Vector(N, u32) = @splat(0x0f0f0f0f);
    const k3: @Vector(N, u32) = @splat(0x03030303);
    const sc_lo = w0 & k1;
    const sc_hi = (w2 & k2) | (((w0 >> @splat(6)) & k3) << @splat(4));
    const m_lo = w1 & k1;
    const m_hi = ((w2 >> @splat(4)) & k2) | (((w1 >> @splat(6)) & k3) << @splat(4));
    const ff: @Vector(N, u32) = @splat(0xff);
    inline for (0..8) |j| {
        const sh: @Vector(N, u5) = @splat(8 * (j % 4));
        const scj = ((if (j < 4) sc_lo else sc_hi) >> sh) & ff;
        const mj = ((if (j < 4) m_lo else m_hi) >> sh) & ff;
        sc[j] = @bitCast(scj);
        mp[j] = @bitCast(mj | (mj << @splat(16)));
    }
}

/// packed.zig's copy of Q4_K, per 16 rows and 256-element block (16 of the file's 144-byte
/// blocks, the same 2304 bytes): 32 vectors of the rows' quant bytes interleaved 4 at a time
/// (vector 8h + g, lane r = row r's qs bytes 32h + 4g .. 32h + 4g + 3: low nibbles elements
/// 64h + 4g.., high ones 64h + 32 + 4g..), the rows' three scale words (3 vectors, lane r = row
/// r's word), then the 16 d and the 16 dmin (f16).
pub const q4k_packed = struct {
    pub const qs: usize = 0;
    pub const scales: usize = 32 * 64;
    pub const d: usize = scales + 3 * 64;
    pub const dmin: usize = d + 32;
    pub const block_bytes: usize = dmin + 32;
    comptime {
        std.debug.assert(block_bytes == packed_rows * kq.Q4_K.type_size);
    }
};

/// In-register transpose of N × N u32 (N a power of two): v[i][c] becomes v[c][i]. Stage h swaps
/// bit h of the row index with bit h of the column index (log2 N stages of N/2 two-source
/// shuffles).
inline fn transpose(comptime N: usize, v: *[N]@Vector(N, u32)) void {
    comptime var h: usize = N / 2;
    inline while (h >= 1) : (h /= 2) {
        const masks = comptime blk: {
            var lo: [N]i32 = undefined;
            var hi: [N]i32 = undefined;
            for (0..N) |col| {
                lo[col] = if (col & h == 0) col else ~@as(i32, col - h);
                hi[col] = if (col & h == 0) col + h else ~@as(i32, col);
            }
            break :blk .{ lo, hi };
        };
        inline for (0..N) |i| {
            if (i & h == 0) {
                const x = v[i];
                const y = v[i + h];
                v[i] = @shuffle(u32, x, y, @as(@Vector(N, i32), masks[0]));
                v[i + h] = @shuffle(u32, x, y, @as(@Vector(N, i32), masks[1]));
            }
        }
    }
}

/// y[i·y_stride + j] for the `rows` weight rows at w (j < rows) and activation rows [0, m), m ≤ 64,
/// through layout L: each chunk of blocks is interleaved once, then every tile of activation
/// rows runs over it; out = acc − L.zero·off.
fn rowsTimesActs(comptime L: type, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, y: [*]f32, y_stride: usize) void {
    rowsTimesActsFrom(L, false, w, row_bytes, k, a, act_bytes, m, y, y_stride);
}

/// rowsTimesActs, the rows read from the file's rows (row_bytes apart) or, `from_packed`,
/// from packed.zig's copy of them (w: their first block; row_bytes unused).
fn rowsTimesActsFrom(comptime L: type, comptime from_packed: bool, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, y: [*]f32, y_stride: usize) void {
    std.debug.assert(m <= 64 and k % L.block_elems == 0);
    const nb_total = k / L.block_elems;
    var chunk: L.Chunk = undefined;
    var acc: [64]VF = undefined;
    var off: [64]VF = undefined;
    @memset(acc[0..m], @splat(0));
    @memset(off[0..m], @splat(0));
    var b0: usize = 0;
    while (b0 < nb_total) : (b0 += L.chunk_blocks) {
        const nb = @min(L.chunk_blocks, nb_total - b0);
        if (from_packed) L.fillPacked(&chunk, w, b0, nb) else L.fill(&chunk, w, row_bytes, b0, nb);
        var i: usize = 0;
        while (i < m) : (i += tile_c) {
            switch (@min(tile_c, m - i)) {
                inline 1...tile_c => |C| L.dotChunk(C, &chunk, nb, a + i * act_bytes, act_bytes, b0, acc[i..][0..C], off[i..][0..C]),
                else => unreachable,
            }
        }
    }
    for (0..m) |i| y[i * y_stride ..][0..rows].* = if (L.zero == 0) acc[i] else acc[i] - @as(VF, @splat(L.zero)) * off[i];
}

/// y columns [0, rows) (the weight rows at w) × activation rows [0, m), m ≤ 64, through the
/// interleaved kernel.
pub fn rowsBlock(t: GgmlType, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, y: [*]f32, y_stride: usize) void {
    if (comptime !built) unreachable;
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

/// rowsBlock over packed.zig's Q4_K copy of 16 rows (blocks: the group's first block,
/// q4k_packed layout): the same arithmetic, so the bits of rowsBlock on the rows it was packed from.
pub fn block16PackedQ4K(blocks: [*]const u8, k: usize, a: [*]const u8, act_bytes: usize, m: usize, y: [*]f32, y_stride: usize) void {
    if (comptime !available) unreachable;
    rowsTimesActsFrom(KLayout(kq.Q4_K), true, blocks, 0, k, a, act_bytes, m, y, y_stride);
}

/// Scalar reference for rowsBlock: each output is the type's scalar dot (exact integer sums per
/// block, the activation's f32 scales), one weight row by one activation row at a time.
pub fn rowsBlockRef(t: GgmlType, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, y: [*]f32, y_stride: usize) void {
    switch (t) {
        inline .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_k, .q5_k, .q6_k => |ct| {
            for (0..m) |i| for (0..rows) |j| {
                y[i * y_stride + j] = quant.Traits(ct).vecDotRef(k, w + j * row_bytes, a + i * act_bytes);
            };
        },
        else => unreachable,
    }
}

test "rowsBlock matches its scalar reference: every type, whole and partial chunks, 1..64 activation rows" {
    if (!built) return; // only the x86_64-v4 and -v3 builds have the interleaved kernels
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
                rowsBlock(t, w.ptr, rb, k, xq.ptr, ab, m, &got, rows);
                rowsBlockRef(t, w.ptr, rb, k, xq.ptr, ab, m, &want, rows);
                // The K-quants follow vecDotRef's integer sums and float operations: bit for bit.
                if (bs == 256) for (got[0 .. m * rows], want[0 .. m * rows], 0..) |g, v, e| {
                    if (@as(u32, @bitCast(g)) != @as(u32, @bitCast(v))) {
                        std.debug.print("{s} nb={d} m={d} output {d}: {e} != reference {e}\n", .{ @tagName(t), nb, m, e, g, v });
                        return error.TestExpectedEqual;
                    }
                };
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

/// The integer-extremes tests' activation quant e of pattern i: all +127, all −127, ±127 by
/// `group` elements, ±127 by element, random ±127, random −127..127.
fn extremeActivation(i: usize, e: usize, group: usize, rng: std.Random) i8 {
    return switch (i) {
        0 => 127,
        1 => -127,
        2 => if ((e / group) % 2 == 0) 127 else -127,
        3 => if (e % 2 == 0) 127 else -127,
        4 => if (rng.boolean()) 127 else -127,
        else => rng.intRangeAtMost(i8, -127, 127),
    };
}

test "rowsBlock K-quants at the integer extremes: every quant, scale and min at max, activations ±127, no int32 overflow" {
    if (!built) return;
    var prng = std.Random.DefaultPrng.init(7);
    const rng = prng.random();
    const nb = 2;
    const k = 256 * nb;
    const m = 6;
    // Activations: all +127, all −127, ±127 by 16-element group, ±127 by element, random ±127,
    // random −127..127; d_a = 1 so every output is the exact integer total (in f32).
    var xq: [m * nb * kq.ActQ8_K.type_size]u8 = undefined;
    for (0..m) |i| for (0..nb) |b| {
        const blk = xq[(i * nb + b) * kq.ActQ8_K.type_size ..];
        std.mem.writeInt(u32, blk[kq.ActQ8_K.off_d..][0..4], @bitCast(@as(f32, 1)), .little);
        for (0..16) |g| {
            var s: i16 = 0;
            for (0..16) |l| {
                const e = 16 * g + l;
                const v = extremeActivation(i, e, 16, rng);
                blk[kq.ActQ8_K.off_qs + e] = @bitCast(v);
                s += v;
            }
            std.mem.writeInt(i16, blk[kq.ActQ8_K.off_bsums + 2 * g ..][0..2], s, .little);
        }
    };
    const one: u16 = @bitCast(@as(f16, 1));
    inline for (.{ kq.Q4_K, kq.Q5_K, kq.Q6_K }) |W| {
        const t: GgmlType = if (W == kq.Q4_K) .q4_k else if (W == kq.Q5_K) .q5_k else .q6_k;
        const rb = nb * W.type_size;
        var w: [rows * rb]u8 = undefined;
        for (0..rows) |r| for (0..nb) |b| {
            const blk = w[r * rb + b * W.type_size ..][0..W.type_size];
            if (W == kq.Q6_K) {
                // r % 4: q = 0 (q − 32 = −32) with sc = −128; q = 63 with −128; q = 0 with 127; random.
                const so = kq.scalesOffset(W);
                switch (r % 4) {
                    0 => @memset(blk, 0x00),
                    1 => @memset(blk, 0xFF),
                    2 => @memset(blk, 0x00),
                    else => rng.bytes(blk),
                }
                if (r % 4 < 3) @memset(blk[so..][0..16], if (r % 4 == 2) 0x7F else 0x80);
                std.mem.writeInt(u16, blk[kq.dOffsetOf(W)..][0..2], one, .little);
            } else {
                // r % 4: every quant, scale and min at max (all bits set), d = dmin = 1;
                // quants 0 (the min term alone); quants at max with dmin = 0 (sumi alone); random.
                if (r % 4 == 3) rng.bytes(blk) else @memset(blk, 0xFF);
                if (r % 4 == 1) @memset(blk[16..], 0); // Q5_K: qh and qs; Q4_K: qs
                std.mem.writeInt(u16, blk[0..2], one, .little);
                std.mem.writeInt(u16, blk[2..4], if (r % 4 == 2) 0 else one, .little);
            }
        };
        var got: [m * rows]f32 = undefined;
        var want: [m * rows]f32 = undefined;
        rowsBlock(t, &w, rb, k, &xq, nb * kq.ActQ8_K.type_size, m, &got, rows);
        rowsBlockRef(t, &w, rb, k, &xq, nb * kq.ActQ8_K.type_size, m, &want, rows);
        for (got, want) |g, v| try std.testing.expectEqual(@as(u32, @bitCast(v)), @as(u32, @bitCast(g)));
        // The extreme totals, exact: activations all +127 (row 0) against weight rows 0..2.
        if (W == kq.Q6_K) {
            try std.testing.expectEqual(@as(f32, nb * 16 * 128 * (16 * 32 * 127)), got[0]); // 2^20·127 per block
        } else {
            const qmax: f32 = if (W == kq.Q4_K) 15 else 31;
            try std.testing.expectEqual(-@as(f32, nb * 8 * 63 * (32 * 127)), got[1]); // −Σ m·bsum
            try std.testing.expectEqual(nb * 8 * 63 * (32 * qmax * 127), got[2]); // Σ sc·Σ q·a
        }
    }
}

test "rowsBlock legacy types at the integer extremes: every quant at max (Q8_0 also −128), activations ±127, exact totals (AVX2's i16 pair sums never saturate)" {
    if (!built) return;
    var prng = std.Random.DefaultPrng.init(11);
    const rng = prng.random();
    const nb = 3;
    const k = 32 * nb;
    const m = 6;
    const ts = ActQ8_0.type_size;
    // Activations as the K-quant test's: all +127, all −127, ±127 by 4-byte group, ±127 by
    // element, random ±127, random −127..127; d_a = 1 and s = Σa, so outputs are exact integers.
    var xq: [m * nb * ts]u8 = undefined;
    for (0..m) |i| for (0..nb) |b| {
        const blk = xq[(i * nb + b) * ts ..];
        var s: i32 = 0;
        for (0..32) |e| {
            const v = extremeActivation(i, e, 4, rng);
            blk[8 + e] = @bitCast(v);
            s += v;
        }
        std.mem.writeInt(u32, blk[0..4], @bitCast(@as(f32, 1)), .little);
        std.mem.writeInt(u32, blk[4..8], @bitCast(@as(f32, @floatFromInt(s))), .little);
    };
    const one: u16 = @bitCast(@as(f16, 1));
    inline for (.{ GgmlType.q4_0, GgmlType.q4_1, GgmlType.q5_0, GgmlType.q5_1, GgmlType.q8_0 }) |t| {
        const T = quant.Traits(t);
        const scales: usize = if (t == .q4_1 or t == .q5_1) 4 else 2;
        const rb = nb * T.type_size;
        var w: [rows * rb]u8 = undefined;
        // r % 4: every quant byte 0xFF (4/5-bit quants at max, Q8_0 −1); quants 0 (the offset
        // alone; Q8_0: −128, 0x80); Q8_0 at +127 (0x7F; the others: 0x77, nibbles 7); random.
        for (0..rows) |r| for (0..nb) |b| {
            const blk = w[r * rb + b * T.type_size ..][0..T.type_size];
            switch (r % 4) {
                0 => @memset(blk, 0xFF),
                1 => @memset(blk, if (t == .q8_0) 0x80 else 0x00),
                2 => @memset(blk, if (t == .q8_0) 0x7F else 0x77),
                else => rng.bytes(blk),
            }
            std.mem.writeInt(u16, blk[0..2], one, .little);
            if (scales == 4) std.mem.writeInt(u16, blk[2..4], one, .little);
        };
        var got: [m * rows]f32 = undefined;
        var want: [m * rows]f32 = undefined;
        rowsBlock(t, &w, rb, k, &xq, nb * ts, m, &got, rows);
        rowsBlockRef(t, &w, rb, k, &xq, nb * ts, m, &want, rows);
        for (got, want, 0..) |g, v, e| {
            if (g != v) {
                std.debug.print("{s} output {d} (activation row {d}, weight row {d}): {d} != reference {d}\n", .{ @tagName(t), e, e / rows, e % rows, g, v });
                return error.TestExpectedEqual;
            }
        }
        // One extreme total exactly: activations all +127 against the all-0xFF row (4-bit: 15 − 8,
        // 15 + min 1; 5-bit: 31 − 16, 31 + 1; Q8_0: −1), 32 elements a block.
        const q: f32 = switch (t) {
            .q4_0 => 7,
            .q4_1 => 16,
            .q5_0 => 15,
            .q5_1 => 32,
            else => -1,
        };
        try std.testing.expectEqual(q * 127 * k, got[0]);
    }
}
