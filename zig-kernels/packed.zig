//! Weights packed once, at load, into the 16-row interleaved layout of repack.zig, and the matmul
//! that reads them: kiln packs the output head (Gemma's 262144 × 640 Q8_0 one is 178 MB, about
//! three quarters of the model's weight bytes) so decode AND speculative verification run one
//! kernel whose arithmetic per output never depends on the batch.
//!
//! Why a copy for the head only: a verified row through the tile kernels costs ~1.5 ms of
//! compute on Gemma's head, against ~3.5 ms for the whole memory-bound decode head, so verifying
//! k drafted tokens cost nearly k decode heads. Here one vpdpbusd's 16 lanes are 16 OUTPUTS (16
//! weight rows interleaved 4 bytes at a time, 4 activation bytes broadcast), and the per-block
//! float work (convert, scale, FMA) is shared by 16 outputs. Read from a packed copy, decode
//! streams it as fast as the file (the copy has the file's exact size); the file's pages of the
//! tensor are then only touched by embedding lookups (a tied head), so resident memory grows by
//! little. On Intel the layers' weights are packed too (src/runtime/model.ts LoadOptions.packLayers,
//! cpu.zig packLayersFor): decode reads them as one stream with ~4–6 vector µops per 128
//! multiply-adds against ~20 in place, and prefill on AMX takes its B tiles from the copy
//! (amx.zig packBPacked). Elsewhere prefill keeps the in-place interleaving of repack.zig.
//! The AVX2 library (x86_64-v3, AMD Zen 3) has the legacy types' copies too, in the same layout,
//! read 8 rows a vector (Layout dotHalves): its in-place decode kernels are compute-bound.
//!
//! Layout, per group of 16 rows (n_out % 16 == 0), per block of 32 columns: `groups` vectors of
//! 16 rows × 4 quant bytes (row r's bytes 4g..4g+3 in lane r of vector g; Q8_0 biased by +128 to
//! unsigned, Q4_0/Q4_1/Q5_0/Q5_1 left as packed nibbles), for Q5_0/Q5_1 then the fifth bits as
//! 8 masks of 64 bits (one per nibble half of each quant vector, a bit per byte: Layout.fifthBits),
//! then the 16 rows' f16 scales d (and Q4_1's/Q5_1's 16 f16 mins m): 544 B for Q8_0, 288 B for
//! Q4_0, 320 B for Q4_1, 352 B for Q5_0, 384 B for Q5_1, exactly 16 of the file's blocks.
//! Q4_K (where the AMX prefill is off) packs per 256-element block: 2304 B, 16 of
//! its blocks (repack.zig q4k_packed), with repack.zig's K-quant arithmetic (LayoutQ4K below).
//!
//! Arithmetic per output of the legacy types (the same for every batch size and tile, so a row computed in a batch
//! is bitwise the row computed alone): per block the integer dot Σq·a is exact (the zero point ×
//! Σa is subtracted in integers, Σa taken from the activation block once per call), converted
//! to f32 (exact: |Σ| < 2^24) and accumulated as acc = fma(Σ, d_w·d_a, acc), then for Q4_1/Q5_1
//! acc = fma(m_w, s_a, acc) (s_a = d_a·Σa, the activation block's own), blocks in order.
const std = @import("std");
const pool = @import("pool.zig");
const quant = @import("quant.zig");
const legacy = @import("quant_legacy.zig");
const kq = @import("quant_k.zig");
const repack = @import("repack.zig");
const builtin = @import("builtin");
const cpu = @import("cpu.zig");
const memory = @import("memory.zig");
const amx = @import("amx.zig");
const matmul_zig = @import("matmul.zig");
const max_invariant_rows = matmul_zig.max_invariant_rows;
const Activation = matmul_zig.Activation;

const GgmlType = quant.GgmlType;
const ActQ8_0 = legacy.ActQ8_0;

extern fn @"llvm.x86.avx512.vpdpbusd.512"(acc: @Vector(16, i32), a: @Vector(16, i32), b: @Vector(16, i32)) @Vector(16, i32);
extern fn @"llvm.x86.avx512.vpdpwssd.512"(acc: @Vector(16, i32), a: @Vector(16, i32), b: @Vector(16, i32)) @Vector(16, i32);

pub const rows = repack.packed_rows;

/// The AVX2 build (x86_64-v3) reads the legacy types' copies 8 rows at a time: each 64-byte
/// vector of a 16-row group as two halves (Layout dotHalves).
const avx2_halves = !repack.available and cpu.has_avx2;
/// This build has packed layouts: the x86_64-v4 library (512-bit VNNI) or the x86_64-v3 (AVX2).
pub const built = repack.available or avx2_halves;

/// Types with a packed layout in this build: every legacy type and Q4_K with 512-bit VNNI, the
/// legacy types with AVX2. Not Q4_K there: its copy read by 8-row halves computed 88 GFLOP/s of
/// one row cache-warm against 54 in place, but streamed slower than the rows in place from DRAM
/// (AMD EPYC family 25 model 1, Zen 3, TinyLlama-shape gate+up on two threads, 12.4 against 15.2
/// GB/s; docs/optimization.md "Packed layer weights on AVX2").
pub fn hasLayout(t: GgmlType) bool {
    return (repack.available and (isLegacy(t) or isK(t))) or (avx2_halves and isLegacy(t));
}

/// The 32-element types with the legacy layout (Layout below). Q5_0 and Q5_1 since 2026-12-07:
/// their in-place kernels compute ~60 GFLOP/s of one row per thread cache-warm against 125
/// from the copy (`M=1 T=1 bun bench/matmul-hot.ts q5_0 256x2048`, AMD Zen 4), and Gemma 3
/// 270M's Q5_0 layers (attn_q/k, ffn_gate/up: 44 MB) read from the file at 15.7 GB/s on one
/// thread (gate+up; attn_q 18.2) against 26.4 (42.2) from the copy (bench/model-matmul-ab.ts).
fn isLegacy(t: GgmlType) bool {
    return switch (t) {
        .q8_0, .q4_0, .q4_1, .q5_0, .q5_1 => true,
        else => false,
    };
}

/// The K-quants with a packed layout (repack.zig's K-quant kernel's arithmetic, vecDotRef's bits).
/// Not Q6_K: a copy of it in the kernel's read order streamed no faster than the rows in place
/// on a Zen 4 thread (TinyLlama-shape Q6_K, bench/model-matmul-ab.ts, gate+up 25.0 in place
/// against 16.3 with software prefetches and 19.4 without; ffn_down 23.5, 15.8, 23.9), although
/// its kernel computes 1.5× the in-place one's rate on cache-resident rows.
fn isK(t: GgmlType) bool {
    return t == .q4_k;
}

/// The AMX prefill takes its B tiles from copies of type t (amx.kernelPacked; the x86_64-v4
/// library only: the AVX2 build's copies hold Q8_0 unbiased, and there is no AMX there).
fn amxReadsCopy(comptime t: GgmlType) bool {
    return repack.available and amx.wired(t) and amx.supportsPacked(t);
}

/// The types loading packs (kiln_packed_supported): those with a layout, but not those the AMX
/// prefill reads from the file's rows only (Q4_K, Q5_0, Q5_1: amx.routed but not
/// amx.supportsPacked) where it is enabled: the copy would lose it.
pub fn supports(t: GgmlType) bool {
    return hasLayout(t) and !(amx.routed(t) and !amx.supportsPacked(t) and amx.enabled());
}

/// Activation rows whose block sums one pass keeps on the stack: 16 rows × 1024 blocks (k ≤ 32768).
const max_sum_entries = 16 * 1024;
/// Activation rows per pass at most (rowsPerPass).
const max_pass_rows = 64;
/// Largest k the matmul takes (it checks; the binding never packs a wider matrix).
pub const max_k = 32 * 1024;
/// How far ahead of the block being read the stream prefetches (prefetches past the end of the
/// buffer are harmless: they never fault), with the hint the CPU's prefetch policy gives lines
/// that belong in L2 (quant_legacy.zig prefetchHint: prefetcht1 on AMD Zen 4 and on Intel,
/// prefetchnta on AMD Zen 5). On a Zen 4 (AMD EPYC family 25 model 17, 2026-12-07), against the
/// L1 hint 4 KB ahead: whole Gemma 3 270M decode steps (processes alternated, 400 steps each)
/// median 10.3 → 9.9 ms/token over 10 pairs, 10.4 → 9.8 over 8, although the 178 MB head alone,
/// back to back (`bun bench/packed-head-ab.ts MODEL A.so B.so`), read 33.9–34.6 → 32.3–32.8 GB/s
/// (in place 30.0–30.4): the gain is presumably in what the head's stream leaves of the layers'
/// cache lines, not in its own rate (not checked with counters). On the Zen 5 host (2026-12-05,
/// Gemma 3 270M, `kiln generate --profile`, builds alternated, 4 runs each) nta left the head's own time as it was (3.54–3.66 ms/token against
/// 3.56–3.72) and the whole token 1.06× faster (5.85–6.21 against 6.17–6.58 ms): the head's 178 MB
/// stream no longer evicts what the layers read; 8 KB ahead measured the same as 4 KB there.
const prefetch_ahead = 8192;
/// A task's stream of at least this many bytes (per matrix) of a type hardwareStreamType names is
/// left to the hardware prefetchers where the CPU reads long streams faster so
/// (cpu.longStreams: AMD Zen 4); shorter ones keep the software prefetches, which start a short
/// stream sooner. Measured on either side of it: SmolLM2's 138 KB tasks (2 threads) read faster
/// with the prefetches, TinyLlama-shape attn_q's 590 KB and the 1 MB tasks of larger matrices
/// without them (cpu.zig LongStreams).
const hardware_stream_min_bytes = 256 * 1024;
/// The types whose long streams the hardware reads faster on such a CPU. On the Zen 4 of
/// cpu.zig LongStreams (TinyLlama-shape layers, bench/model-matmul-ab.ts PACKED=1, builds
/// alternated, p50 GB/s, software prefetch → hardware alone): Q4_0 gate+up 22.4 → 29.7 on one
/// thread and 31.3 → 32.7 on two, ffn_down 22.6 → 25.7, attn_q 23.3 → 30.0 and 30.0 → 32.7. Not
/// Q8_0: on two threads ffn_down 29.9 → 28.3 and attn_q 27.8 → 25.6, whole decode steps
/// 35–38 → 37–40 ms/token. Not Q4_1: its gate+up 23.1 → 17.9 (one thread), 30.9 → 27.2 (two),
/// although its ffn_down 22.8 → 26.5. Q4_K (one thread, builds alternated, 2026-12-07): gate+up
/// 21.0 → 28.1, ffn_down 20.2 → 27.6, attn_q 20.5 → 30.8; on two threads at the host's lower
/// bandwidth 29.6 → 32.4, 29.4 → 31.5, 30.9 → 34.0 (the rows in place: 30.6, 29.7, 27.7). Not
/// Q5_0 (2026-12-07, the copies alternated round by round, one thread): gate+up 25.3 → 19.7,
/// ffn_down 24.7 → 21.6, attn_q 26.0 → 23.6; two threads 34.0 → 31.4, 32.5 → 31.9, 32.1 → 31.4.
fn hardwareStreamType(t: GgmlType) bool {
    return t == .q4_0 or t == .q4_k;
}
/// Under test, a choice that overrides the CPU's (to run both on one machine).
pub var test_long_streams: ?cpu.LongStreams = null;

/// Whether a task reading `stream_bytes` of one matrix's copy of type t prefetches its stream in
/// software.
fn softwarePrefetch(t: GgmlType, stream_bytes: usize) bool {
    const choice = if (builtin.is_test and test_long_streams != null) test_long_streams.? else cpu.longStreams();
    return choice == .software_prefetch or !hardwareStreamType(t) or stream_bytes < hardware_stream_min_bytes;
}

/// The packed bytes of one matrix a decode task of matmulTyped reads: its groups × a group's bytes.
fn taskStreamBytes(t: GgmlType, n_out: usize, k: usize) usize {
    const group_bytes = rows * quant.rowBytes(t, k);
    return groupsPerTask(n_out / rows, group_bytes) * group_bytes;
}

/// Packed weight bytes per task (96 groups of Gemma's head, ~15 of a 4096-wide Q8_0 matrix).
/// Long tasks keep each thread on one sequential stream: with 64 KB tasks the two threads'
/// streams interleaved every few microseconds and Gemma's head read ~7% slower than in place;
/// at 1 MB it reads ~5% faster than in place (bench:kernels, output head section).
const task_bytes = 1024 * 1024;

fn Layout(comptime t: GgmlType) type {
    if (t == .q4_k) return LayoutQ4K;
    return struct {
        const block_elems = 32;
        const nibbles = t != .q8_0;
        /// Q5_0/Q5_1: the quants' fifth bits, as one 64-bit mask per nibble half of each quant
        /// vector (fifthBits).
        const fifth = t == .q5_0 or t == .q5_1;
        const groups = if (nibbles) 4 else 8;
        const type_size = quant.Traits(t).type_size;
        /// Q4_1's and Q5_1's per-block min (f16, after d in its blocks; 16 of them after the 16 d here).
        const has_min = t == .q4_1 or t == .q5_1;
        /// Where a file block's fifth bits (u32 qh) and quants start: after d (and the min).
        const qh_offset: usize = if (has_min) 4 else 2;
        const qs_offset: usize = qh_offset + if (fifth) 4 else 0;
        /// Subtracted from the stored quants, in integers (Q4_1/Q5_1: none, their min is a float term).
        const zero: i32 = switch (t) {
            .q4_0 => 8,
            .q5_0 => 16,
            .q8_0 => if (biased) 128 else 0,
            else => 0,
        };
        /// Q8_0's quants stored +128 (unsigned, for vpdpbusd) in the 512-bit build; the AVX2
        /// one dots them signed (repack.dotSignedAcc: biased bytes would saturate vpmaddubsw).
        const biased = t == .q8_0 and repack.available;
        /// The largest unsigned weight byte the AVX2 kernel dots (repack.dotAcc's bound).
        const qmax: u32 = if (fifth) 31 else 15;
        const fifth_bytes: usize = if (fifth) 2 * groups * 8 else 0;
        const d_at = groups * 64 + fifth_bytes;
        const m_at = d_at + 2 * rows;
        const scale_bytes: usize = if (has_min) 4 * rows else 2 * rows;
        const block_bytes = d_at + scale_bytes;
        comptime {
            std.debug.assert(block_bytes == rows * type_size);
        }

        /// The 16 rows' fifth bits (qh[r], the file's u32 per block) of quant vector g's low
        /// (half 0: elements 4g..4g+3) or high nibbles (half 1: 16+4g..): bit 4r+i is that of
        /// row r's byte i, where the vector holds it (row r's 4 bytes in lane r).
        fn fifthBits(qh: *const [rows]u32, g: usize, half: usize) u64 {
            var bits: u64 = 0;
            for (0..rows) |r| bits |= @as(u64, (qh[r] >> @intCast(16 * half + 4 * g)) & 0xf) << @intCast(4 * r);
            return bits;
        }

        /// Packs rows [16·grp, 16·grp + 16) of w (nb blocks per row) into dst.
        fn packGroup(w: [*]const u8, row_bytes: usize, nb: usize, grp: usize, dst: [*]u8) void {
            for (0..nb) |b| {
                const out = dst + (grp * nb + b) * block_bytes;
                var words: [groups][rows]u32 = undefined;
                var d: [rows]u16 = undefined;
                var m: [rows]u16 = undefined;
                var qh: [rows]u32 = undefined;
                for (0..rows) |r| {
                    const blk = w + (grp * rows + r) * row_bytes + b * type_size;
                    d[r] = std.mem.readInt(u16, blk[0..2], .little);
                    if (has_min) m[r] = std.mem.readInt(u16, blk[2..4], .little);
                    if (fifth) qh[r] = std.mem.readInt(u32, blk[qh_offset..][0..4], .little);
                    inline for (0..groups) |g| {
                        const v = std.mem.readInt(u32, blk[qs_offset + 4 * g ..][0..4], .little);
                        words[g][r] = if (biased) v ^ 0x80808080 else v;
                    }
                }
                inline for (0..groups) |g| @memcpy(out[g * 64 ..][0..64], std.mem.asBytes(&words[g]));
                if (fifth) for (0..groups) |g| for (0..2) |half| {
                    std.mem.writeInt(u64, out[groups * 64 + 8 * (2 * g + half) ..][0..8], fifthBits(&qh, g, half), .little);
                };
                @memcpy(out[d_at..][0 .. 2 * rows], std.mem.asBytes(&d));
                if (has_min) @memcpy(out[m_at..][0 .. 2 * rows], std.mem.asBytes(&m));
            }
        }

        /// y[ci·y_stride + r] for the group's 16 rows and C activation rows starting at a. The
        /// first pass over a group (`stream`) prefetches prefetch_ahead bytes ahead: the packed
        /// weights are one sequential stream per task, and on most CPUs measured the hardware
        /// prefetchers alone leave a thread latency-bound well below the read bandwidth (where
        /// they do not, matmulTyped passes stream = false: softwarePrefetch).
        inline fn dotGroup(comptime C: usize, comptime stream: bool, hint: legacy.PrefetchHint, blocks: [*]const u8, nb: usize, a: [*]const u8, act_bytes: usize, sums: [*]const i32, y: [*]f32, y_stride: usize) void {
            dotGroups(1, C, stream, hint, .{blocks}, nb, a, act_bytes, sums, .{y}, y_stride);
        }

        /// dotGroup over S groups of the same rows in S matrices (gate and up), block by block
        /// together: S sequential streams advance side by side, and each activation block is
        /// read once for all of them. Each matrix's sums are dotGroup's, in its order: the same bits.
        inline fn dotGroups(comptime S: usize, comptime C: usize, comptime stream: bool, hint: legacy.PrefetchHint, blocks: [S][*]const u8, nb: usize, a: [*]const u8, act_bytes: usize, sums: [*]const i32, y: [S][*]f32, y_stride: usize) void {
            if (comptime avx2_halves) {
                // Several activation rows: one matrix and one half at a time (C accumulators of
                // 8 lanes and the half's 8 weight vectors; more spilled), the group's blocks
                // re-read from cache for the second half.
                if (C > 1) {
                    inline for (0..S) |si| inline for (0..2) |h| {
                        dotHalves(1, C, .{h}, stream and h == 0, hint, .{blocks[si]}, nb, a, act_bytes, sums, .{y[si]}, y_stride);
                    };
                } else dotHalves(S, C, .{ 0, 1 }, stream, hint, blocks, nb, a, act_bytes, sums, y, y_stride);
            } else dotGroups512(S, C, stream, hint, blocks, nb, a, act_bytes, sums, y, y_stride);
        }

        /// dotGroups on AVX2 for the 8-row halves `hs` of the group (half h: rows 8h..8h+7, bytes
        /// 32h..32h+31 of each 64-byte vector, d and m words 8h..8h+7): vpmaddubsw/vpmaddwd
        /// (repack.dotAcc, dotSignedAcc for Q8_0's signed quants) give the 512-bit kernel's exact
        /// integer sums, and the float operations per output are its own, in its order: the
        /// same bits as the x86_64-v4 library's copy.
        inline fn dotHalves(comptime S: usize, comptime C: usize, comptime hs: anytype, comptime stream: bool, hint: legacy.PrefetchHint, blocks: [S][*]const u8, nb: usize, a: [*]const u8, act_bytes: usize, sums: [*]const i32, y: [S][*]f32, y_stride: usize) void {
            const V = @Vector(32, u8);
            const VI = @Vector(8, i32);
            const VF = @Vector(8, f32);
            const mask: V = @splat(0x0f);
            const H = hs.len;
            var accs: [S][C][H]VF = @splat(@splat(@splat(@splat(0))));
            for (0..nb) |b| inline for (0..S) |si| {
                const blk = blocks[si] + b * block_bytes;
                if (stream) legacy.prefetchLines(hint, blk + prefetch_ahead, block_bytes);
                inline for (hs, 0..) |h, hi| {
                    const dw: VF = @floatCast(@as(@Vector(8, f16), @bitCast(blk[d_at + 16 * h ..][0..16].*)));
                    const mw: VF = if (has_min) @floatCast(@as(@Vector(8, f16), @bitCast(blk[m_at + 16 * h ..][0..16].*))) else undefined;
                    // Nibble types: low nibbles of groups 0..3, then the high ones.
                    var wq: [2 * groups]V = undefined;
                    inline for (0..groups) |g| {
                        const v: V = blk[g * 64 + 32 * h ..][0..32].*;
                        if (nibbles) {
                            wq[g] = v & mask;
                            wq[groups + g] = (v >> @splat(4)) & mask;
                            if (fifth) inline for (0..2) |half| {
                                const bits = std.mem.readInt(u32, blk[groups * 64 + 8 * (2 * g + half) + 4 * h ..][0..4], .little);
                                wq[half * groups + g] |= legacy.highBits(bits);
                            };
                        } else wq[g] = v;
                    }
                    inline for (0..C) |ci| {
                        const ab = a + ci * act_bytes + b * ActQ8_0.type_size;
                        var s: VI = @splat(0);
                        if (nibbles) {
                            var x: [2 * groups]VI = undefined;
                            inline for (0..2 * groups) |j| x[j] = @splat(std.mem.readInt(i32, ab[8 + 4 * j ..][0..4], .little));
                            s = repack.dotAcc(qmax, 2 * groups, s, wq, x);
                        } else inline for (0..groups) |g| {
                            s = repack.dotSignedAcc(s, wq[g], @splat(std.mem.readInt(i32, ab[8 + 4 * g ..][0..4], .little)));
                        }
                        const exact = if (zero != 0) s - @as(VI, @splat(zero * sums[ci * nb + b])) else s;
                        const da: VF = @splat(@bitCast(std.mem.readInt(u32, ab[0..4], .little)));
                        const acc = &accs[si][ci][hi];
                        acc.* = @mulAdd(VF, @floatFromInt(exact), dw * da, acc.*);
                        if (has_min) acc.* = @mulAdd(VF, mw, @splat(@bitCast(std.mem.readInt(u32, ab[4..8], .little))), acc.*);
                    }
                }
            };
            inline for (0..S) |si| inline for (0..C) |ci| inline for (hs, 0..) |h, hi| {
                y[si][ci * y_stride + 8 * h ..][0..8].* = accs[si][ci][hi];
            };
        }

        inline fn dotGroups512(comptime S: usize, comptime C: usize, comptime stream: bool, hint: legacy.PrefetchHint, blocks: [S][*]const u8, nb: usize, a: [*]const u8, act_bytes: usize, sums: [*]const i32, y: [S][*]f32, y_stride: usize) void {
            const V64 = @Vector(64, u8);
            const mask: V64 = @splat(0x0f);
            var accs: [S][C]@Vector(16, f32) = @splat(@splat(@splat(0)));
            for (0..nb) |b| inline for (0..S) |si| {
                const acc = &accs[si];
                const blk = blocks[si] + b * block_bytes;
                if (stream) legacy.prefetchLines(hint, blk + prefetch_ahead, block_bytes);
                const dw: @Vector(16, f32) = @floatCast(@as(@Vector(16, f16), @bitCast(blk[d_at..][0 .. 2 * rows].*)));
                const mw: @Vector(16, f32) = if (has_min) @floatCast(@as(@Vector(16, f16), @bitCast(blk[m_at..][0 .. 2 * rows].*))) else undefined;
                var wq: [2 * groups]V64 = undefined;
                inline for (0..groups) |g| {
                    const v: V64 = blk[g * 64 ..][0..64].*;
                    if (nibbles) {
                        wq[2 * g] = v & mask;
                        wq[2 * g + 1] = (v >> @splat(4)) & mask;
                        // Q5: bit 4 of each byte from its mask bit (one masked OR per vector).
                        if (fifth) inline for (0..2) |half| {
                            const bits: @Vector(64, bool) = @bitCast(std.mem.readInt(u64, blk[groups * 64 + 8 * (2 * g + half) ..][0..8], .little));
                            wq[2 * g + half] = @select(u8, bits, wq[2 * g + half] | @as(V64, @splat(0x10)), wq[2 * g + half]);
                        };
                    } else wq[g] = v;
                }
                inline for (0..C) |ci| {
                    const ab = a + ci * act_bytes + b * ActQ8_0.type_size;
                    // Two independent chains (integer sums: their order changes no bit).
                    var s0: @Vector(16, i32) = @splat(0);
                    var s1: @Vector(16, i32) = @splat(0);
                    inline for (0..groups) |g| {
                        if (nibbles) {
                            const lo: @Vector(16, i32) = @splat(std.mem.readInt(i32, ab[8 + 4 * g ..][0..4], .little));
                            const hi: @Vector(16, i32) = @splat(std.mem.readInt(i32, ab[8 + 16 + 4 * g ..][0..4], .little));
                            s0 = @"llvm.x86.avx512.vpdpbusd.512"(s0, @bitCast(wq[2 * g]), lo);
                            s1 = @"llvm.x86.avx512.vpdpbusd.512"(s1, @bitCast(wq[2 * g + 1]), hi);
                        } else {
                            const x: @Vector(16, i32) = @splat(std.mem.readInt(i32, ab[8 + 4 * g ..][0..4], .little));
                            if (g % 2 == 0) {
                                s0 = @"llvm.x86.avx512.vpdpbusd.512"(s0, @bitCast(wq[g]), x);
                            } else {
                                s1 = @"llvm.x86.avx512.vpdpbusd.512"(s1, @bitCast(wq[g]), x);
                            }
                        }
                    }
                    const exact = if (zero != 0) s0 + s1 - @as(@Vector(16, i32), @splat(zero * sums[ci * nb + b])) else s0 + s1;
                    const da: @Vector(16, f32) = @splat(@bitCast(std.mem.readInt(u32, ab[0..4], .little)));
                    acc[ci] = @mulAdd(@Vector(16, f32), @floatFromInt(exact), dw * da, acc[ci]);
                    // Q4_1: + m_w·s_a (s_a = d_a·Σq_a, the activation block's second field).
                    if (has_min) acc[ci] = @mulAdd(@Vector(16, f32), mw, @splat(@bitCast(std.mem.readInt(u32, ab[4..8], .little))), acc[ci]);
                }
            };
            inline for (0..S) |si| {
                inline for (0..C) |ci| y[si][ci * y_stride ..][0..rows].* = accs[si][ci];
            }
        }
    };
}

/// Q4_K's copy (repack.q4k_packed: each 256-element block of 16 rows as 32 vectors of
/// interleaved quant words, the rows' scale words, d and dmin) and its decode kernel, whose
/// arithmetic is repack.zig's K-quant kernel's (KLayout.dotChunk), so every output has the bits
/// of quant_k.zig's vecDotRef: integer sums per sub-block (vpdpbusd) times the lane's 6-bit
/// scale, the mins through vpdpwssd against the activation's bsums, then per block
/// acc += (d·d_a)·sumi − (dmin·d_a)·summ. Batches beyond max_invariant_rows take
/// repack.block16PackedQ4K (the same bits; matmulPrefillQ4K).
const LayoutQ4K = struct {
    const P = repack.q4k_packed;
    const block_elems = 256;
    const block_bytes = P.block_bytes;
    const zero: i32 = 0;
    const W = kq.Q4_K;
    const A = kq.ActQ8_K;

    fn packGroup(w: [*]const u8, row_bytes: usize, nb: usize, grp: usize, dst: [*]u8) void {
        const qs_offset = 16; // after d, dmin and the 12 scale bytes
        for (0..nb) |b| {
            const out = dst + (grp * nb + b) * block_bytes;
            var words: [32][rows]u32 = undefined;
            var sw: [3][rows]u32 = undefined;
            var d: [rows]u16 = undefined;
            var dmin: [rows]u16 = undefined;
            for (0..rows) |r| {
                const blk = w + (grp * rows + r) * row_bytes + b * W.type_size;
                d[r] = std.mem.readInt(u16, blk[0..2], .little);
                dmin[r] = std.mem.readInt(u16, blk[2..4], .little);
                inline for (0..3) |t| sw[t][r] = std.mem.readInt(u32, blk[4 + 4 * t ..][0..4], .little);
                // Vector v = 8h + g holds qs bytes 32h + 4g = 4v of every row.
                inline for (0..32) |v| words[v][r] = std.mem.readInt(u32, blk[qs_offset + 4 * v ..][0..4], .little);
            }
            @memcpy(out[P.qs..][0 .. 32 * 64], std.mem.asBytes(&words));
            @memcpy(out[P.scales..][0 .. 3 * 64], std.mem.asBytes(&sw));
            @memcpy(out[P.d..][0..32], std.mem.asBytes(&d));
            @memcpy(out[P.dmin..][0..32], std.mem.asBytes(&dmin));
        }
    }

    inline fn dotGroup(comptime C: usize, comptime stream: bool, hint: legacy.PrefetchHint, blocks: [*]const u8, nb: usize, a: [*]const u8, act_bytes: usize, sums: [*]const i32, y: [*]f32, y_stride: usize) void {
        dotGroups(1, C, stream, hint, .{blocks}, nb, a, act_bytes, sums, .{y}, y_stride);
    }

    /// Layout(legacy).dotGroups' contract (S matrices' groups block by block, C ≤ 4 activation
    /// rows; `sums` unused: Q4_K's mins come from the activation's bsums).
    inline fn dotGroups(comptime S: usize, comptime C: usize, comptime stream: bool, hint: legacy.PrefetchHint, blocks: [S][*]const u8, nb: usize, a: [*]const u8, act_bytes: usize, sums: [*]const i32, y: [S][*]f32, y_stride: usize) void {
        _ = sums;
        const V64 = @Vector(64, u8);
        const mask: V64 = @splat(0x0f);
        var accs: [S][C]@Vector(16, f32) = @splat(@splat(@splat(0)));
        for (0..nb) |b| inline for (0..S) |si| {
            const blk = blocks[si] + b * block_bytes;
            if (stream) legacy.prefetchLines(hint, blk + prefetch_ahead, block_bytes);
            var sc: [8]@Vector(16, i32) = undefined;
            var mp: [8]@Vector(16, i32) = undefined;
            repack.scalesMins(rows, @bitCast(blk[P.scales..][0..64].*), @bitCast(blk[P.scales + 64 ..][0..64].*), @bitCast(blk[P.scales + 128 ..][0..64].*), &sc, &mp);
            var isum: [C]@Vector(16, i32) = @splat(@splat(0));
            inline for (0..4) |h| {
                var lo: [8]V64 = undefined;
                var hi: [8]V64 = undefined;
                inline for (0..8) |g| {
                    const v: V64 = blk[P.qs + 64 * (8 * h + g) ..][0..64].*;
                    lo[g] = v & mask;
                    hi[g] = (v >> @splat(4)) & mask;
                }
                inline for (0..C) |ci| {
                    const ab = a + ci * act_bytes + b * A.type_size + A.off_qs + 64 * h;
                    // Sub-blocks 2h (low nibbles) and 2h + 1 (high): exact integer sums.
                    var s0: @Vector(16, i32) = @splat(0);
                    var s1: @Vector(16, i32) = @splat(0);
                    inline for (0..8) |g| {
                        s0 = @"llvm.x86.avx512.vpdpbusd.512"(s0, @bitCast(lo[g]), @splat(std.mem.readInt(i32, ab[4 * g ..][0..4], .little)));
                        s1 = @"llvm.x86.avx512.vpdpbusd.512"(s1, @bitCast(hi[g]), @splat(std.mem.readInt(i32, ab[32 + 4 * g ..][0..4], .little)));
                    }
                    isum[ci] +%= s0 *% sc[2 * h] +% s1 *% sc[2 * h + 1];
                }
            }
            const dw: @Vector(16, f32) = @floatCast(@as(@Vector(16, f16), @bitCast(blk[P.d..][0..32].*)));
            const dminw: @Vector(16, f32) = @floatCast(@as(@Vector(16, f16), @bitCast(blk[P.dmin..][0..32].*)));
            inline for (0..C) |ci| {
                const ab = a + ci * act_bytes + b * A.type_size;
                var msum: @Vector(16, i32) = @splat(0);
                inline for (0..8) |p| msum = @"llvm.x86.avx512.vpdpwssd.512"(msum, mp[p], @splat(std.mem.readInt(i32, ab[A.off_bsums + 4 * p ..][0..4], .little)));
                const da: @Vector(16, f32) = @splat(@bitCast(std.mem.readInt(u32, ab[A.off_d..][0..4], .little)));
                // repack.zig KLayout.dotChunk's float operations, in its order.
                const t = (dw * da) * @as(@Vector(16, f32), @floatFromInt(isum[ci]));
                accs[si][ci] += t - (dminw * da) * @as(@Vector(16, f32), @floatFromInt(msum));
            }
        };
        inline for (0..S) |si| {
            inline for (0..C) |ci| y[si][ci * y_stride ..][0..rows].* = accs[si][ci];
        }
    }
};

/// Bytes of w [n_out, k] packed (n_out % 16 == 0): the same as the tensor's.
pub fn packedBytes(t: GgmlType, n_out: usize, k: usize) usize {
    return n_out * quant.rowBytes(t, k);
}

/// Packs w [n_out, k] (rows of quant.rowBytes) into dst (packedBytes), on the thread pool. With
/// release_source (w must lie in a read-only file mapping), each task then drops its source
/// pages from the resident set, so packing never holds both copies: peak memory grows by about
/// one task's worth, not by the tensor.
pub fn pack(t: GgmlType, w: [*]const u8, n_out: usize, k: usize, dst: [*]u8, release_source: bool) void {
    if (comptime !built) unreachable;
    std.debug.assert(hasLayout(t) and n_out % rows == 0 and k % quant.blockSize(t) == 0);
    switch (t) {
        inline .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_k => |ct| {
            if (comptime !hasLayout(ct)) unreachable;
            const L = Layout(ct);
            const Ctx = struct { w: [*]const u8, row_bytes: usize, nb: usize, dst: [*]u8, groups_per_task: usize, n_groups: usize, release: bool };
            const run = struct {
                fn f(c: Ctx, task: usize) void {
                    const g0 = task * c.groups_per_task;
                    const g1 = @min(c.n_groups, g0 + c.groups_per_task);
                    for (g0..g1) |grp| L.packGroup(c.w, c.row_bytes, c.nb, grp, c.dst);
                    const group_bytes = rows * c.row_bytes;
                    if (c.release) memory.releaseFilePages(c.w + g0 * group_bytes, (g1 - g0) * group_bytes);
                }
            }.f;
            const nb = k / L.block_elems;
            const gpt = @max(1, task_bytes / (nb * L.block_bytes));
            const n_groups = n_out / rows;
            pool.parallelFor(std.math.divCeil(usize, n_groups, gpt) catch unreachable, Ctx{ .w = w, .row_bytes = quant.rowBytes(ct, k), .nb = nb, .dst = dst, .groups_per_task = gpt, .n_groups = n_groups, .release = release_source }, run);
        },
        else => unreachable,
    }
}

/// y[i·y_stride + j] = Σ_k W[j][k]·x[i][k] for packed weights p (pack's output) and m prepared
/// activation rows xq (ActQ8_0). k ≤ max_k.
///
/// Batches of more than max_invariant_rows (prefill only, as in matmul.zig) take the AMX kernel
/// where it is enabled, its B tiles read straight from the copy (amx.kernelPacked): the bits of
/// the AMX prefill on the unpacked rows. Up to max_invariant_rows, and without AMX, every row has
/// the bits of decoding it alone.
pub fn matmul(t: GgmlType, p: [*]const u8, n_out: usize, k: usize, xq: [*]const u8, m: usize, y: [*]f32, y_stride: usize) void {
    dispatch(t, p, null, n_out, k, xq, m, y, y_stride);
}

/// The second weight of a gated FFN and its activation: out = act(x·W_gateᵀ) ⊙ (x·W_upᵀ).
const Up = struct { p: [*]const u8, act: Activation };

/// out[i·out_stride + j] = act(gate_j · x_i) · (up_j · x_i) for packed gate and up (pack's
/// output, one type, [n_ff, k] each) and m prepared rows, in one pass: each product has the bits
/// matmul() gives that weight alone (the same kernel on the same rows) and the gated product the
/// bits of norm.siluMulRow/geluTanhMulRow, so the fusion changes no bit of matmul, matmul,
/// product; it saves the separate elementwise pass (single-threaded, over [m, n_ff] in memory)
/// and a dispatch.
pub fn gatedFfn(t: GgmlType, p_gate: [*]const u8, p_up: [*]const u8, n_ff: usize, k: usize, xq: [*]const u8, m: usize, out: [*]f32, out_stride: usize, act: Activation) void {
    dispatch(t, p_gate, .{ .p = p_up, .act = act }, n_ff, k, xq, m, out, out_stride);
}

/// matmul (up null) or gatedFfn: the AMX prefill or the invariant kernel.
fn dispatch(t: GgmlType, p: [*]const u8, up: ?Up, n_out: usize, k: usize, xq: [*]const u8, m: usize, y: [*]f32, y_stride: usize) void {
    if (comptime !built) unreachable;
    std.debug.assert(hasLayout(t) and n_out % rows == 0 and k % quant.blockSize(t) == 0 and k <= max_k);
    switch (t) {
        inline .q8_0, .q4_0, .q4_1, .q5_0, .q5_1 => |ct| {
            if (comptime amxReadsCopy(ct)) {
                // amx.enabled() decides (a self-check on first use) on the calling thread.
                if (m > max_invariant_rows and amx.enabled()) return matmulAmx(ct, p, up, n_out, k, xq, m, y, y_stride);
            }
            matmulTyped(ct, p, up, n_out, k, xq, m, y, y_stride);
        },
        .q4_k => if (comptime !hasLayout(.q4_k)) unreachable else if (m > max_invariant_rows) matmulPrefillQ4K(p, up, n_out, k, xq, m, y, y_stride) else matmulTyped(.q4_k, p, up, n_out, k, xq, m, y, y_stride),
        else => unreachable,
    }
}

/// The AMX prefill over the copy: tasks of amx_pieces_per_task × amx.max_rows weight rows (pieces
/// of two 16-row groups) × amx.max_acts activation rows, weight-row major within an activation
/// block (as matmul.zig's tiled tasks), so the threads share one block of activations at a time.
/// Each call prefetches the weights of the task's next call (amx.zig Ahead); gated (`up`), the
/// gate call prefetches up's same rows and the up call the gate's next ones, as matmul.zig's
/// gated FFN does.
fn matmulAmx(comptime t: GgmlType, p: [*]const u8, up: ?Up, n_out: usize, k: usize, xq: [*]const u8, m: usize, y: [*]f32, y_stride: usize) void {
    const L = Layout(t);
    const Ctx = struct { p: [*]const u8, up: ?Up, group_stride: usize, k: usize, xq: [*]const u8, act_bytes: usize, m: usize, n_out: usize, n_tasks_rows: usize, y: [*]f32, y_stride: usize };
    const run = struct {
        fn f(c: Ctx, task: usize) void {
            const j0 = (task % c.n_tasks_rows) * amx_pieces_per_task * amx.max_rows;
            const j1 = @min(c.n_out, j0 + amx_pieces_per_task * amx.max_rows);
            const i_0 = (task / c.n_tasks_rows) * amx.max_acts;
            const mm = @min(c.m, i_0 + amx.max_acts) - i_0;
            const a = c.xq + i_0 * c.act_bytes;
            // Bytes of weight rows [r0, r1) of a copy (rows of a piece are whole groups).
            const gs = c.group_stride;
            const span = struct {
                fn of(w: [*]const u8, r0: usize, r1: usize, stride: usize) []const u8 {
                    return w[r0 / rows * stride .. r1 / rows * stride];
                }
            }.of;
            amx.prefetchWeights(span(c.p, j0, @min(j1, j0 + amx.max_rows), gs));
            var j = j0;
            while (j < j1) : (j += amx.max_rows) {
                const n = @min(amx.max_rows, j1 - j);
                const next = span(c.p, j + n, @min(j1, j + n + amx.max_rows), gs);
                if (c.up) |u| {
                    var g: [amx.max_acts * amx.max_rows]f32 = undefined;
                    var v: [amx.max_acts * amx.max_rows]f32 = undefined;
                    amx.matmulPackedRows(t, c.p + (j / rows) * gs, gs, c.k, a, c.act_bytes, mm, n, &g, amx.max_rows, span(u.p, j, j + n, gs));
                    amx.matmulPackedRows(t, u.p + (j / rows) * gs, gs, c.k, a, c.act_bytes, mm, n, &v, amx.max_rows, next);
                    for (0..mm) |i| matmul_zig.gatedProduct(u.act, g[i * amx.max_rows ..].ptr, v[i * amx.max_rows ..].ptr, c.y + (i_0 + i) * c.y_stride + j, n);
                } else {
                    amx.matmulPackedRows(t, c.p + (j / rows) * gs, gs, c.k, a, c.act_bytes, mm, n, c.y + i_0 * c.y_stride + j, c.y_stride, next);
                }
            }
        }
    }.f;
    const n_tasks_rows = std.math.divCeil(usize, n_out, amx_pieces_per_task * amx.max_rows) catch unreachable;
    const n_blocks = std.math.divCeil(usize, m, amx.max_acts) catch unreachable;
    const ctx = Ctx{ .p = p, .up = up, .group_stride = k / 32 * L.block_bytes, .k = k, .xq = xq, .act_bytes = quant.actRowBytes(t, k), .m = m, .n_out = n_out, .n_tasks_rows = n_tasks_rows, .y = y, .y_stride = y_stride };
    if (n_tasks_rows * n_blocks == 1) run(ctx, 0) else pool.parallelFor(n_tasks_rows * n_blocks, ctx, run);
}
/// Pieces of amx.max_rows weight rows per AMX task: consecutive calls of one thread, so a call's
/// prefetch of the next call's weights lands in the cache of the core that reads them (tasks are
/// claimed dynamically: one piece per task would hand the next piece to the other thread).
const amx_pieces_per_task = 4;

/// 16-row groups per task of the decode-shaped matmul: at most task_bytes of the copy, and at
/// least tasks_per_thread tasks per thread where the matrix has that many groups, so a layer's
/// matrix (TinyLlama's 2048 × 2048 Q8_0: 4.5 MB, 4.3 tasks of 1 MB) is shared out evenly and its
/// small ones (its 256 × 2048 K and V: 0.5 MB) still run on every thread; a matrix under
/// min_parallel_bytes runs on the calling thread. Against 1 MB tasks only, on the Xeon EMR
/// (2026-12-06, `kiln generate` 64 tokens, 2 threads, alternated, 6 runs each): TinyLlama-shape
/// Q4_0 decode 37.1 → 39.0 tok/s (medians), Q8_0 the same within the host's noise (1, 2 or 4 per
/// thread: 21.7–22.1). The output heads keep their 1 MB tasks (they have thousands of groups).
const tasks_per_thread = 2;
fn groupsPerTask(n_groups: usize, group_bytes: usize) usize {
    if (n_groups * group_bytes < min_parallel_bytes) return n_groups;
    const by_threads = std.math.divCeil(usize, n_groups, pool.threadCount() * tasks_per_thread) catch unreachable;
    return @max(1, @min(task_bytes / group_bytes, by_threads));
}
const min_parallel_bytes = 64 * 1024;

/// Prefill batches (m > max_invariant_rows) of the Q4_K copy: repack.block16PackedQ4K per task
/// of one 16-row group × up to 64 activation rows, groups major within an activation block (the
/// threads share one block of activations at a time, as matmul.zig's tiled tasks).
fn matmulPrefillQ4K(p: [*]const u8, up: ?Up, n_out: usize, k: usize, xq: [*]const u8, m: usize, y: [*]f32, y_stride: usize) void {
    const acts = 64;
    const Ctx = struct { p: [*]const u8, up: ?Up, group_bytes: usize, k: usize, xq: [*]const u8, act_bytes: usize, m: usize, n_groups: usize, y: [*]f32, y_stride: usize };
    const run = struct {
        fn f(c: Ctx, task: usize) void {
            const grp = task % c.n_groups;
            const i_0 = (task / c.n_groups) * acts;
            const mm = @min(acts, c.m - i_0);
            const a = c.xq + i_0 * c.act_bytes;
            const out = c.y + i_0 * c.y_stride + grp * rows;
            if (c.up) |u| {
                var g: [acts * rows]f32 = undefined;
                var v: [acts * rows]f32 = undefined;
                repack.block16PackedQ4K(c.p + grp * c.group_bytes, c.k, a, c.act_bytes, mm, &g, rows);
                repack.block16PackedQ4K(u.p + grp * c.group_bytes, c.k, a, c.act_bytes, mm, &v, rows);
                for (0..mm) |i| matmul_zig.gatedProduct(u.act, g[i * rows ..].ptr, v[i * rows ..].ptr, out + i * c.y_stride, rows);
            } else repack.block16PackedQ4K(c.p + grp * c.group_bytes, c.k, a, c.act_bytes, mm, out, c.y_stride);
        }
    }.f;
    const n_groups = n_out / rows;
    const n_blocks = std.math.divCeil(usize, m, acts) catch unreachable;
    pool.parallelFor(n_groups * n_blocks, Ctx{ .p = p, .up = up, .group_bytes = rows * quant.rowBytes(.q4_k, k), .k = k, .xq = xq, .act_bytes = quant.actRowBytes(.q4_k, k), .m = m, .n_groups = n_groups, .y = y, .y_stride = y_stride }, run);
}

/// One pass of the invariant kernel over some activation rows (at most 16): what a task of
/// matmulTyped reads. The same fields for every type, so the tasks of three matrices of different
/// types can share one dispatch (matmul3).
const DecodeCtx = struct { p: [*]const u8, up: ?Up, nb: usize, a: [*]const u8, act_bytes: usize, m: usize, sums: [*]const i32, y: [*]f32, y_stride: usize, groups_per_task: usize, n_groups: usize, prefetch: bool };

/// Task `task` of a DecodeCtx: its groups_per_task groups of 16 rows against the pass's rows.
fn decodeTask(comptime t: GgmlType) fn (DecodeCtx, usize) void {
    const L = Layout(t);
    return struct {
        fn f(c: DecodeCtx, task: usize) void {
            @setEvalBranchQuota(100_000); // dotGroup(s) inlined for 1..4 rows, with and without the stream's prefetches (Q4_K: 64 unrolled dot products a block)
            const g0 = task * c.groups_per_task;
            const hint = legacy.prefetchHint(.l2);
            for (g0..@min(c.n_groups, g0 + c.groups_per_task)) |grp| {
                const blocks = c.p + grp * c.nb * L.block_bytes;
                var i: usize = 0;
                // Activation tiles of ≤ 4 rows re-read the group's blocks from L1/L2.
                while (i < c.m) : (i += 4) {
                    const a = c.a + i * c.act_bytes;
                    const s = c.sums + i * c.nb;
                    const out = c.y + i * c.y_stride + grp * rows;
                    switch (@min(4, c.m - i)) {
                        inline 1...4 => |C| if (c.up) |u| {
                            // Gated: both products of the group into 16-wide rows, then the product.
                            var g: [@as(usize, C) * rows]f32 = undefined;
                            var v: [@as(usize, C) * rows]f32 = undefined;
                            const up_blocks = u.p + grp * c.nb * L.block_bytes;
                            if (i == 0 and c.prefetch)
                                L.dotGroups(2, C, true, hint, .{ blocks, up_blocks }, c.nb, a, c.act_bytes, s, .{ &g, &v }, rows)
                            else
                                L.dotGroups(2, C, false, hint, .{ blocks, up_blocks }, c.nb, a, c.act_bytes, s, .{ &g, &v }, rows);
                            for (0..C) |ci| matmul_zig.gatedProduct(u.act, g[ci * rows ..].ptr, v[ci * rows ..].ptr, out + ci * c.y_stride, rows);
                        } else if (i == 0 and c.prefetch)
                            L.dotGroup(C, true, hint, blocks, c.nb, a, c.act_bytes, s, out, c.y_stride)
                        else
                            L.dotGroup(C, false, hint, blocks, c.nb, a, c.act_bytes, s, out, c.y_stride),
                        else => unreachable,
                    }
                }
            }
        }
    }.f;
}

/// Activation rows of one pass: those whose block sums fit the stack's max_sum_entries, ≤ 64.
/// Each pass streams the whole matrix; its tasks read a group's blocks once from memory and
/// again from cache for each tile of ≤ 4 rows. Passes of 16 rows (before 2026-12-07) read a
/// 512-token prefill's weights 32 times: on AMD Zen 3 (EPYC family 25 model 1, AVX2 copies,
/// `M=512 T=2 bun bench/model-matmul-ab.ts OLD.so:MODEL@packed NEW.so:MODEL@packed`, p50
/// GFLOP/s) TinyLlama-shape Q4_0 gate+up 170 → 178, ffn_down 204 → 212. Not measured on the
/// 512-bit kernel (Zen 4, or Intel with AMX off), which takes the same passes.
fn rowsPerPass(nb: usize) usize {
    return @max(1, @min(max_pass_rows, max_sum_entries / nb));
}

/// Σa per (activation row, block) of mm prepared rows (ActQ8_0) for the integer zero-point
/// correction, row i's at sums[i·nb ..].
fn blockSums(xq: [*]const u8, act_bytes: usize, nb: usize, mm: usize, sums: []i32) void {
    for (0..mm) |i| {
        for (0..nb) |b| {
            const q: @Vector(32, i8) = @bitCast((xq + i * act_bytes + b * ActQ8_0.type_size + 8)[0..32].*);
            sums[i * nb + b] = @reduce(.Add, @as(@Vector(32, i32), q));
        }
    }
}

/// The DecodeCtx of one pass (mm rows from xq) over w (n_out rows of type t), and its task count.
fn decodePass(comptime t: GgmlType, p: [*]const u8, up: ?Up, n_out: usize, k: usize, xq: [*]const u8, mm: usize, sums: [*]const i32, y: [*]f32, y_stride: usize) struct { ctx: DecodeCtx, tasks: usize } {
    const nb = k / Layout(t).block_elems;
    const group_bytes = rows * quant.rowBytes(t, k);
    const n_groups = n_out / rows;
    const gpt = groupsPerTask(n_groups, group_bytes);
    return .{
        .ctx = .{ .p = p, .up = up, .nb = nb, .a = xq, .act_bytes = quant.actRowBytes(t, k), .m = mm, .sums = sums, .y = y, .y_stride = y_stride, .groups_per_task = gpt, .n_groups = n_groups, .prefetch = softwarePrefetch(t, taskStreamBytes(t, n_out, k)) },
        .tasks = std.math.divCeil(usize, n_groups, gpt) catch unreachable,
    };
}

fn matmulTyped(comptime t: GgmlType, p: [*]const u8, up: ?Up, n_out: usize, k: usize, xq: [*]const u8, m: usize, y: [*]f32, y_stride: usize) void {
    const L = Layout(t);
    const nb = k / L.block_elems;
    const act_bytes = quant.actRowBytes(t, k);
    var sums: [max_sum_entries]i32 = undefined;
    const per_pass = rowsPerPass(nb);
    var first: usize = 0;
    while (first < m) : (first += per_pass) {
        const mm = @min(per_pass, m - first);
        if (L.zero != 0) blockSums(xq + first * act_bytes, act_bytes, nb, mm, &sums);
        const pass = decodePass(t, p, up, n_out, k, xq + first * act_bytes, mm, &sums, y + first * y_stride, y_stride);
        if (pass.tasks == 1) decodeTask(t)(pass.ctx, 0) else pool.parallelFor(pass.tasks, pass.ctx, decodeTask(t));
    }
}

/// One of matmul3's matrices: packed weights p of type t ([n_out, k]), its output rows y (n_out apart).
pub const Part = struct { t: GgmlType, p: [*]const u8, n_out: usize, y: [*]f32 };

/// The three projections of attention (Q, K, V) from the same m prepared rows xq, each
/// y_i [m, n_i] = x·W_iᵀ with the bits matmul() gives it, in one thread-pool dispatch for
/// batches up to max_invariant_rows: the tasks of the three matrices run as one job (a small
/// model's K and V are a few tasks each, and three dispatches cost more than their reads:
/// matmul.zig matmul3Prepared does the same for weights in place). The types may differ where
/// their prepared activations are the same (quant.actKind: Gemma's V is Q8_0 in some layers,
/// its Q and K Q5_0). Larger batches take three matmul calls.
pub fn matmul3(parts: [3]Part, k: usize, xq: [*]const u8, m: usize) void {
    if (comptime !built) unreachable;
    for (parts) |q| std.debug.assert(hasLayout(q.t) and quant.actKind(q.t) == quant.actKind(parts[0].t) and q.n_out % rows == 0 and k % quant.blockSize(q.t) == 0 and k <= max_k);
    if (m > max_invariant_rows) {
        for (parts) |q| matmul(q.t, q.p, q.n_out, k, xq, m, q.y, q.n_out);
        return;
    }
    const Three = struct { ctx: [3]DecodeCtx, run: [3]*const fn (DecodeCtx, usize) void, first: [3]usize };
    var three: Three = undefined;
    var sums: [max_sum_entries]i32 = undefined;
    var summed = false;
    var n_tasks: usize = 0;
    for (parts, 0..) |q, i| {
        switch (q.t) {
            inline .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_k => |ct| {
                if (comptime !hasLayout(ct)) unreachable;
                const L = Layout(ct);
                const nb = k / L.block_elems;
                // ≤ 16 rows × nb ≤ 1024 blocks: one pass. The sums depend on the rows alone.
                std.debug.assert(rowsPerPass(nb) >= m);
                if (L.zero != 0 and !summed) {
                    blockSums(xq, quant.actRowBytes(ct, k), nb, m, &sums);
                    summed = true;
                }
                const pass = decodePass(ct, q.p, null, q.n_out, k, xq, m, &sums, q.y, q.n_out);
                three.ctx[i] = pass.ctx;
                three.run[i] = decodeTask(ct);
                three.first[i] = n_tasks;
                n_tasks += pass.tasks;
            },
            else => unreachable,
        }
    }
    const run = struct {
        fn f(c: Three, task: usize) void {
            var i: usize = 2;
            while (task < c.first[i]) i -= 1;
            c.run[i](c.ctx[i], task - c.first[i]);
        }
    }.f;
    pool.parallelFor(n_tasks, three, run);
}

// ---- tests ----------------------------------------------------------------------------------

test "packed matmul: within rounding of the scalar dot, and every row bitwise the same at every batch size" {
    if (!built) return; // the packed layouts are built for x86_64-v4 and x86_64-v3 only
    const al = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(77);
    const rng = prng.random();
    inline for (.{ GgmlType.q8_0, GgmlType.q4_0, GgmlType.q4_1, GgmlType.q5_0, GgmlType.q5_1, GgmlType.q4_k }) |t| {
        if (comptime !hasLayout(t)) continue;
        // k: one block, several, and a width that is no multiple of a vector's 64 bytes (K-quants:
        // one 256-element block, 3, 2).
        // The last shape is several tasks (groups of 16 rows of 4096 columns are 70 KB of Q8_0,
        // 37 KB of Q4_0), run on 3 threads: tasks long enough for softwarePrefetch's hardware
        // streams (checked below).
        _ = pool.setThreads(3);
        defer _ = pool.setThreads(2);
        const shapes = if (comptime isK(t)) [_][2]usize{ .{ 16, 256 }, .{ 48, 768 }, .{ 80, 512 }, .{ 32, 4096 }, .{ 16 * 48, 4096 } } else [_][2]usize{ .{ 16, 32 }, .{ 48, 640 }, .{ 80, 96 }, .{ 32, 4096 }, .{ 16 * 48, 4096 } };
        for (shapes) |shape| {
            const n = shape[0];
            const k = shape[1];
            const rb = quant.rowBytes(t, k);
            const ab = quant.actRowBytes(t, k);
            const m_max = 67; // more than one pass of 64 activation rows
            const w = try al.alloc(u8, rb * n);
            defer al.free(w);
            const x = try al.alloc(f32, k * @max(n, m_max));
            defer al.free(x);
            for (x[0 .. k * n]) |*v| v.* = rng.floatNorm(f32);
            for (0..n) |r| try std.testing.expect(quant.quantizeRow(t, x[r * k ..].ptr, w[r * rb ..].ptr, k));
            for (x) |*v| v.* = rng.floatNorm(f32) + 0.3; // a mean: Σa ≠ 0 exercises the zero point
            const xq = try al.alloc(u8, ab * m_max);
            defer al.free(xq);
            quant.quantizeActivations(t, x.ptr, k, m_max, k, xq.ptr);
            const p = try al.alloc(u8, packedBytes(t, n, k));
            defer al.free(p);
            pack(t, w.ptr, n, k, p.ptr, false);

            // Row by row alone: the reference for bit-identity, and within rounding of vecDotRef.
            const alone = try al.alloc(f32, n * m_max);
            defer al.free(alone);
            for (0..m_max) |i| matmul(t, p.ptr, n, k, xq.ptr + i * ab, 1, alone.ptr + i * n, n);
            for (0..m_max) |i| for (0..n) |j| {
                const want = quant.Traits(t).vecDotRef(k, w.ptr + j * rb, xq.ptr + i * ab);
                const got = alone[i * n + j];
                // The K-quants follow vecDotRef's integer sums and float operations: bit for bit.
                if (comptime isK(t)) try std.testing.expectEqual(@as(u32, @bitCast(want)), @as(u32, @bitCast(got)));
                try std.testing.expect(@abs(got - want) <= 1e-5 * (@abs(want) + @sqrt(@as(f32, @floatFromInt(k)))));
            };
            // Every batch size, with a padded output stride: bitwise the rows computed alone,
            // nothing written past the rows asked for.
            const stride = n + 5;
            const got = try al.alloc(f32, stride * (m_max + 1));
            defer al.free(got);
            // Beyond max_invariant_rows where AMX is enabled: bitwise the AMX prefill of the rows
            // the copy was packed from (matmul.zig's path for them), B tiles from the copy.
            const in_place = try al.alloc(f32, stride * m_max);
            defer al.free(in_place);
            for ([_]usize{ 2, 3, 4, 5, 11, 16, 17, 64, m_max }) |m| {
                @memset(got, 12345);
                matmul(t, p.ptr, n, k, xq.ptr, m, got.ptr, stride);
                // K-quant prefill from the copy: repack.zig's kernel, the bits of the rows alone.
                if (m <= max_invariant_rows or !amx.enabled() or comptime isK(t)) {
                    for (0..m) |i| try std.testing.expectEqualSlices(f32, alone[i * n ..][0..n], got[i * stride ..][0..n]);
                } else try expectInPlaceBits(t, w.ptr, n, k, xq.ptr, m, got, in_place, stride);
                for (got[m * stride ..]) |g| try std.testing.expectEqual(@as(f32, 12345), g);
            }
            // The AMX path on the emulated tiles, on every machine (its wiring: groups, strides,
            // a partial last activation group of the 67 rows, two tasks of 32 rows at n = 80).
            if (comptime amxReadsCopy(t)) {
                amx.test_emulate = true;
                defer amx.test_emulate = false;
                @memset(got, 12345);
                matmul(t, p.ptr, n, k, xq.ptr, m_max, got.ptr, stride);
                try expectInPlaceBits(t, w.ptr, n, k, xq.ptr, m_max, got, in_place, stride);
                for (got[m_max * stride ..]) |g| try std.testing.expectEqual(@as(f32, 12345), g);
            }
            // Every prefetch policy (the stream's cache hint only), and long streams left to the
            // hardware or not: the same bits.
            defer legacy.test_prefetch_policy = null;
            defer test_long_streams = null;
            for ([_]cpu.LongStreams{ .software_prefetch, .hardware_prefetch }) |streams| {
                test_long_streams = streams;
                // The last shape's Q4_0 and Q4_K tasks go without prefetches under hardware_prefetch.
                if ((t == .q4_0 or t == .q4_k) and n == 16 * 48) try std.testing.expectEqual(streams == .software_prefetch, softwarePrefetch(t, taskStreamBytes(t, n, k)));
                for ([_]cpu.PrefetchPolicy{ .by_level, .non_temporal, .l2 }) |policy| {
                    legacy.test_prefetch_policy = policy;
                    matmul(t, p.ptr, n, k, xq.ptr, 3, got.ptr, stride);
                    for (0..3) |i| try std.testing.expectEqualSlices(f32, alone[i * n ..][0..n], got[i * stride ..][0..n]);
                }
            }
        }
    }
}

test "softwarePrefetch: short streams and other types always, long Q4_0 and Q4_K ones unless the CPU leaves them to the hardware" {
    defer test_long_streams = null;
    test_long_streams = .hardware_prefetch;
    try std.testing.expect(softwarePrefetch(.q4_0, hardware_stream_min_bytes - 1));
    try std.testing.expect(!softwarePrefetch(.q4_0, hardware_stream_min_bytes));
    try std.testing.expect(!softwarePrefetch(.q4_0, task_bytes));
    try std.testing.expect(softwarePrefetch(.q8_0, task_bytes));
    try std.testing.expect(softwarePrefetch(.q4_1, task_bytes));
    try std.testing.expect(!softwarePrefetch(.q4_k, hardware_stream_min_bytes));
    try std.testing.expect(softwarePrefetch(.q4_k, hardware_stream_min_bytes - 1));
    test_long_streams = .software_prefetch;
    try std.testing.expect(softwarePrefetch(.q4_k, task_bytes));
    try std.testing.expect(softwarePrefetch(.q4_0, hardware_stream_min_bytes));
    try std.testing.expect(softwarePrefetch(.q4_0, task_bytes));
}

test "packed gated FFN: bitwise the two packed matmuls and the gated product, on every path" {
    if (!built) return;
    const al = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(78);
    const rng = prng.random();
    const norm = @import("norm.zig");
    inline for (.{ GgmlType.q8_0, GgmlType.q4_0, GgmlType.q4_1, GgmlType.q5_0, GgmlType.q5_1, GgmlType.q4_k }) |t| {
        if (comptime !hasLayout(t)) continue;
        _ = pool.setThreads(3);
        defer _ = pool.setThreads(2);
        // n_ff: one group; five pieces of 32 rows and a half (two AMX tasks of 4 pieces); k odd in blocks.
        const shapes = if (comptime isK(t)) [_][2]usize{ .{ 16, 256 }, .{ 176, 512 }, .{ 48, 768 } } else [_][2]usize{ .{ 16, 64 }, .{ 176, 96 }, .{ 48, 640 } };
        for (shapes) |shape| {
            const n = shape[0];
            const k = shape[1];
            const rb = quant.rowBytes(t, k);
            const ab = quant.actRowBytes(t, k);
            // Beyond max_invariant_rows with a partial activation group (37), and beyond one AMX
            // call's amx.max_acts rows (260: a second activation block in the AMX tasks).
            const m_max = amx.max_acts + 4;
            const x = try al.alloc(f32, k * @max(n, m_max));
            defer al.free(x);
            // The file's rows (ws) and their packed copies (ps) of gate and up.
            const ws = [2][]u8{ try al.alloc(u8, rb * n), try al.alloc(u8, rb * n) };
            defer for (ws) |w| al.free(w);
            const ps = [2][]u8{ try al.alloc(u8, packedBytes(t, n, k)), try al.alloc(u8, packedBytes(t, n, k)) };
            defer for (ps) |pw| al.free(pw);
            for (ws, ps, 0..) |w, pw, wi| {
                for (x[0 .. k * n]) |*v| v.* = rng.floatNorm(f32) * @as(f32, if (wi == 0) 1 else 0.5);
                for (0..n) |r| try std.testing.expect(quant.quantizeRow(t, x[r * k ..].ptr, w[r * rb ..].ptr, k));
                pack(t, w.ptr, n, k, pw.ptr, false);
            }
            for (x) |*v| v.* = rng.floatNorm(f32) + 0.3;
            const xq = try al.alloc(u8, ab * m_max);
            defer al.free(xq);
            quant.quantizeActivations(t, x.ptr, k, m_max, k, xq.ptr);
            const stride = n + 3;
            const g = try al.alloc(f32, n * m_max);
            defer al.free(g);
            const u = try al.alloc(f32, n * m_max);
            defer al.free(u);
            const want = try al.alloc(f32, n * m_max);
            defer al.free(want);
            const got = try al.alloc(f32, stride * (m_max + 1));
            defer al.free(got);
            for (0..2) |emulate| {
                if (emulate == 1 and !amxReadsCopy(t)) continue;
                amx.test_emulate = emulate == 1;
                defer amx.test_emulate = false;
                for ([_]usize{ 1, 3, 16, 17, 37, m_max }) |m| {
                    matmul(t, ps[0].ptr, n, k, xq.ptr, m, g.ptr, n);
                    matmul(t, ps[1].ptr, n, k, xq.ptr, m, u.ptr, n);
                    // On AMX the packed matmuls share matmulAmx's task arithmetic with the fused
                    // call: hold them to matmul.zig's own tasks over the file's rows as well.
                    if (m > max_invariant_rows and amx.enabled() and amxReadsCopy(t)) {
                        try expectInPlaceBits(t, ws[0].ptr, n, k, xq.ptr, m, g, want, n);
                        try expectInPlaceBits(t, ws[1].ptr, n, k, xq.ptr, m, u, want, n);
                    }
                    inline for (.{ Activation.silu, Activation.gelu_tanh }) |act| {
                        for (0..m) |i| (if (act == .silu) norm.siluMulRow else norm.geluTanhMulRow)(g[i * n ..].ptr, u[i * n ..].ptr, want[i * n ..].ptr, n);
                        @memset(got, 12345);
                        gatedFfn(t, ps[0].ptr, ps[1].ptr, n, k, xq.ptr, m, got.ptr, stride, act);
                        for (0..m) |i| {
                            try std.testing.expectEqualSlices(f32, want[i * n ..][0..n], got[i * stride ..][0..n]);
                            for (got[i * stride + n ..][0 .. stride - n]) |v| try std.testing.expectEqual(@as(f32, 12345), v);
                        }
                        for (got[m * stride ..]) |v| try std.testing.expectEqual(@as(f32, 12345), v);
                    }
                }
            }
        }
    }
}

test "packed matmul3: each output bitwise its matmul, types mixed where their activations agree" {
    if (!built) return;
    const al = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(79);
    const rng = prng.random();
    _ = pool.setThreads(3);
    defer _ = pool.setThreads(2);
    // Gemma's layers (Q and K Q5_0, V Q8_0), one type, Q4_K's own activations; k: 20 and 3
    // blocks; the middle matrix one group (a single task), the others several.
    const cases = [_]struct { ts: [3]GgmlType, k: usize }{
        .{ .ts = .{ .q5_0, .q5_0, .q8_0 }, .k = 640 },
        .{ .ts = .{ .q4_1, .q4_1, .q4_1 }, .k = 640 },
        .{ .ts = .{ .q4_0, .q5_1, .q4_0 }, .k = 4096 },
        .{ .ts = .{ .q4_k, .q4_k, .q4_k }, .k = 768 },
    };
    const ns = [3]usize{ 16 * 40, 16, 16 * 5 };
    for (cases) |cs| {
        if (!hasLayout(cs.ts[0])) continue; // Q4_K: 512-bit VNNI only
        const k = cs.k;
        const m_max = 17;
        const x = try al.alloc(f32, k * 16 * 40);
        defer al.free(x);
        var ws: [3][]u8 = undefined;
        var ps: [3][]u8 = undefined;
        for (0..3) |i| {
            const t = cs.ts[i];
            const rb = quant.rowBytes(t, k);
            ws[i] = try al.alloc(u8, rb * ns[i]);
            ps[i] = try al.alloc(u8, packedBytes(t, ns[i], k));
            for (x[0 .. k * ns[i]]) |*v| v.* = rng.floatNorm(f32);
            for (0..ns[i]) |r| try std.testing.expect(quant.quantizeRow(t, x[r * k ..].ptr, ws[i][r * rb ..].ptr, k));
            pack(t, ws[i].ptr, ns[i], k, ps[i].ptr, false);
        }
        defer for (0..3) |i| {
            al.free(ws[i]);
            al.free(ps[i]);
        };
        for (x) |*v| v.* = rng.floatNorm(f32) + 0.3;
        const ab = quant.actRowBytes(cs.ts[0], k);
        const xq = try al.alloc(u8, ab * m_max);
        defer al.free(xq);
        quant.quantizeActivations(cs.ts[0], x.ptr, k, m_max, k, xq.ptr);
        for ([_]usize{ 1, 3, 16, 17 }) |m| {
            var want: [3][]f32 = undefined;
            var got: [3][]f32 = undefined;
            for (0..3) |i| {
                want[i] = try al.alloc(f32, ns[i] * m);
                got[i] = try al.alloc(f32, ns[i] * m + 8);
                @memset(got[i], 12345);
                matmul(cs.ts[i], ps[i].ptr, ns[i], k, xq.ptr, m, want[i].ptr, ns[i]);
            }
            defer for (0..3) |i| {
                al.free(want[i]);
                al.free(got[i]);
            };
            var parts: [3]Part = undefined;
            for (0..3) |i| parts[i] = .{ .t = cs.ts[i], .p = ps[i].ptr, .n_out = ns[i], .y = got[i].ptr };
            matmul3(parts, k, xq.ptr, m);
            for (0..3) |i| {
                try std.testing.expectEqualSlices(f32, want[i], got[i][0 .. ns[i] * m]);
                for (got[i][ns[i] * m ..]) |v| try std.testing.expectEqual(@as(f32, 12345), v);
            }
        }
    }
}

/// got's m rows (stride apart) are bitwise matmul.zig's result on the unpacked rows w.
fn expectInPlaceBits(t: GgmlType, w: [*]const u8, n: usize, k: usize, xq: [*]const u8, m: usize, got: []const f32, want: []f32, stride: usize) !void {
    @import("matmul.zig").matmulPrepared(.{ .t = t, .w = w, .n_out = n, .k = k, .xq = xq, .m = m, .y = want.ptr, .y_stride = stride });
    for (0..m) |i| try std.testing.expectEqualSlices(f32, want[i * stride ..][0..n], got[i * stride ..][0..n]);
}
