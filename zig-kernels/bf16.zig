//! Prefill matmul for BF16 weights on AVX512-BF16: `vdpbf16ps` multiplies 32 bf16 pairs into 16
//! f32 lanes per instruction, twice the multiply-adds of an f32 FMA, so BF16 weights prefill at
//! about twice the rate quant_legacy.floatPrefillTile's f32 arithmetic allows (Zen 4 and
//! Sapphire Rapids both have the instructions; kiln's x86_64-v4 library is not compiled for them,
//! so they go through inline asm behind a run-time check).
//!
//! The activations are rounded to bf16 (`vcvtne2ps2bf16`, round to nearest even) as they are
//! loaded: llama.cpp's arithmetic for BF16 weights (its vec_dot_type for BF16 is BF16). Prefill
//! batches beyond matmul.max_invariant_rows take the tiles (weightTile); decode and verification
//! batches take decodeRows, row by row with the same rounding (so a verified row has the bits of
//! decoding it alone). Without the instructions both keep quant_legacy's f32 kernels.
//!
//! The two instructions go through one small interface with two implementations: `Hw` (inline
//! asm) and `Emu` (their documented semantics in plain vector code, Intel SDM vol. 2:
//! VCVTNE2PS2BF16 and VDPBF16PS), and the tile kernel is written once over it. Every level's
//! tests run the kernel on `Emu` against a scalar reference; where the CPU has AVX512-BF16, `Hw`
//! must equal `Emu` bit for bit (tests, and a self-check on first use: `status`), else the
//! process keeps the f32 path.
//!
//! Semantics (measured on an AMD EPYC Zen 4 to agree with the SDM, and what `Emu` does):
//!   VCVTNE2PS2BF16: round to nearest even; denormal inputs become signed zeros; a NaN keeps its
//!     top bits with the quiet bit set. (ggml's fp32→bf16 is the same except that it keeps
//!     denormals, which round to bf16 denormals: activations that small do not occur.)
//!   VDPBF16PS: lane i of the f32 accumulator gains the product of pair element 2i+1, rounded,
//!     then that of element 2i, rounded (products of two bf16 are exact in f32); denormal inputs
//!     (bf16 and accumulator) count as zero and denormal results are flushed to zero.
const std = @import("std");
const builtin = @import("builtin");
const cpu = @import("cpu.zig");

/// The asm takes zmm operands: only the AVX-512 (x86_64-v4) library has the hardware path.
pub const hw_built = cpu.is_x86 and cpu.has_avx512bw;

/// Elements per step: one 64-byte load of bf16 weights, two of f32 activations.
pub const step = 32;

const V16f = @Vector(16, f32);
const V16u = @Vector(16, u32);
const V32h = @Vector(32, u16);

/// The instructions themselves.
pub const Hw = struct {
    /// 32 bf16 (round to nearest even): elements 0..15 from lo, 16..31 from hi.
    pub inline fn cvt2(lo: V16f, hi: V16f) V32h {
        return asm ("vcvtne2ps2bf16 %[lo], %[hi], %[out]"
            : [out] "=v" (-> V32h),
            : [lo] "v" (lo),
              [hi] "v" (hi),
        );
    }
    /// acc[i] += a[2i+1]·b[2i+1], then += a[2i]·b[2i].
    pub inline fn dot(acc: V16f, a: V32h, b: V32h) V16f {
        return asm ("vdpbf16ps %[b], %[a], %[out]"
            : [out] "=v" (-> V16f),
            : [a] "v" (a),
              [b] "v" (b),
              [acc] "0" (acc),
        );
    }
};

/// The same operations in plain vector code, bit for bit (see the file comment).
pub const Emu = struct {
    /// Denormals to zeros of the same sign (DAZ / FTZ).
    inline fn flush(x: V16f) V16f {
        const u: V16u = @bitCast(x);
        const denormal = (u & @as(V16u, @splat(0x7f80_0000))) == @as(V16u, @splat(0));
        return @bitCast(@select(u32, denormal, u & @as(V16u, @splat(0x8000_0000)), u));
    }
    inline fn round(x: V16f) @Vector(16, u16) {
        const u: V16u = @bitCast(x);
        const nan = (u & @as(V16u, @splat(0x7fff_ffff))) > @as(V16u, @splat(0x7f80_0000));
        const zero = (u & @as(V16u, @splat(0x7f80_0000))) == @as(V16u, @splat(0));
        const rne = (u +% (@as(V16u, @splat(0x7fff)) + ((u >> @splat(16)) & @as(V16u, @splat(1))))) >> @splat(16);
        const quiet = (u >> @splat(16)) | @as(V16u, @splat(0x40));
        const signed_zero = (u & @as(V16u, @splat(0x8000_0000))) >> @splat(16);
        return @truncate(@select(u32, nan, quiet, @select(u32, zero, signed_zero, rne)));
    }
    pub inline fn cvt2(lo: V16f, hi: V16f) V32h {
        return std.simd.join(round(lo), round(hi));
    }
    pub inline fn dot(acc: V16f, a: V32h, b: V32h) V16f {
        const ua: V16u = @bitCast(a);
        const ub: V16u = @bitCast(b);
        const high: V16u = @splat(0xffff_0000);
        const a_odd = flush(@bitCast(ua & high));
        const b_odd = flush(@bitCast(ub & high));
        const a_even = flush(@bitCast(ua << @splat(16)));
        const b_even = flush(@bitCast(ub << @splat(16)));
        const t = flush(@mulAdd(V16f, a_odd, b_odd, flush(acc)));
        return flush(@mulAdd(V16f, a_even, b_even, t));
    }
};

inline fn loadF32s(p: [*]const u8) V16f {
    return @bitCast(p[0..64].*);
}

/// R bf16 weight rows (row_bytes apart) × C f32 activation rows (act_bytes apart):
/// out[c·out_stride + r] = Σ_k w[r][k]·bf16(a[c][k]), 16 lanes per (r, c) pair summed in the
/// instruction's order, then @reduce. The activation rows are rounded once per step and shared
/// by the R weight rows; a last partial step is zero-padded (zero products leave the sums alone).
pub inline fn prefillTile(comptime Ops: type, comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
    var acc: [C][R]V16f = @splat(@splat(@splat(0)));
    accumulate(Ops, R, C, .f32, n, w, row_bytes, 64, a, act_bytes, &acc);
    inline for (0..R) |r| {
        inline for (0..C) |c| out[c * out_stride + r] = @reduce(.Add, acc[c][r]);
    }
}

/// How accumulate reads activations: f32 rounded as they are loaded (prefillTile), or the bf16
/// half of a prepared row (prepareRow: the same roundings, made once per call).
const ActForm = enum { f32, bf16 };

/// prefillTile's steps over `len` elements into acc[c][r]: step s of weight row r at
/// w + r·row_bytes + s·step_bytes (64 for plain rows), of activation row c at a + c·act_bytes +
/// s·step·(4 or 2 bytes); a len that is not a multiple of step ends with the zero-padded
/// partial step.
inline fn accumulate(comptime Ops: type, comptime R: usize, comptime C: usize, comptime form: ActForm, len: usize, w: [*]const u8, row_bytes: usize, step_bytes: usize, a: [*]const u8, act_bytes: usize, acc_out: *[C][R]V16f) void {
    @setEvalBranchQuota(100_000);
    var acc = acc_out.*;
    var i: usize = 0;
    var wp = w;
    while (i + step <= len) : (i += step) {
        var x: [C]V32h = undefined;
        inline for (0..C) |c| {
            x[c] = switch (form) {
                .f32 => Ops.cvt2(loadF32s(a + c * act_bytes + i * 4), loadF32s(a + c * act_bytes + i * 4 + 64)),
                .bf16 => @bitCast((a + c * act_bytes + i * 2)[0..64].*),
            };
        }
        inline for (0..R) |r| {
            const wv: V32h = @bitCast((wp + r * row_bytes)[0..64].*);
            inline for (0..C) |c| acc[c][r] = Ops.dot(acc[c][r], wv, x[c]);
        }
        wp += step_bytes;
    }
    if (i < len) {
        const left = len - i;
        var x: [C]V32h = undefined;
        inline for (0..C) |c| {
            switch (form) {
                .f32 => {
                    var buf: [step]f32 = @splat(0);
                    @memcpy(std.mem.sliceAsBytes(buf[0..left]), (a + c * act_bytes + i * 4)[0 .. left * 4]);
                    x[c] = Ops.cvt2(buf[0..16].*, buf[16..32].*);
                },
                .bf16 => {
                    var buf: [step]u16 = @splat(0);
                    @memcpy(std.mem.sliceAsBytes(buf[0..left]), (a + c * act_bytes + i * 2)[0 .. left * 2]);
                    x[c] = buf;
                },
            }
        }
        inline for (0..R) |r| {
            var buf: [step]u16 = @splat(0);
            @memcpy(std.mem.sliceAsBytes(buf[0..left]), (wp + r * row_bytes)[0 .. left * 2]);
            inline for (0..C) |c| acc[c][r] = Ops.dot(acc[c][r], buf, x[c]);
        }
    }
    acc_out.* = acc;
}

/// The activation row BF16 weights consume (quant.zig's .f32_bf16 kind, prepare_row_bytes per
/// element): the n f32 values, which decode and the batch-invariant tiles read, then their bf16
/// roundings by vcvtne2ps2bf16's rule (Emu.cvt2, which the instruction equals bit for bit),
/// which weightTile reads: rounded once per call instead of once per weight tile, and half the
/// bytes to stream.
pub const prepare_row_bytes = 6;
pub fn prepareRow(src: [*]const f32, dst: [*]u8, n: usize) void {
    @memcpy(dst[0 .. n * 4], std.mem.sliceAsBytes(src[0..n]));
    // Only builds that can take weightTile read the bf16 half; the others leave it unwritten.
    if (comptime !wired) return;
    const h = dst + 4 * n;
    var i: usize = 0;
    while (i + step <= n) : (i += step) {
        h[2 * i ..][0..64].* = @bitCast(Emu.cvt2(src[i..][0..16].*, src[i + 16 ..][0..16].*));
    }
    if (i < n) {
        var buf: [step]f32 = @splat(0);
        @memcpy(buf[0 .. n - i], src[i..n]);
        const v: [64]u8 = @bitCast(Emu.cvt2(buf[0..16].*, buf[16..32].*));
        @memcpy(h[2 * i ..][0 .. 2 * (n - i)], v[0 .. 2 * (n - i)]);
    }
}

/// Activation rows one weightTile call takes at most (matmul.zig's activation block).
pub const max_act_rows = 64;
/// Elements per chunk in weightTile: an 8-row weight tile's chunk is 16 KB, in L1 while the
/// activation tiles pass it.
pub const chunk_k = 1024;
comptime {
    std.debug.assert(chunk_k % step == 0); // a partial step only at a row's end
}

/// R weight rows against m ≤ max_act_rows prepared activation rows (prepareRow, act_bytes
/// apart), out[c·out_stride + r], in chunks of chunk_k elements: each chunk of the R rows is read
/// from L2 once and used by every activation tile (tile_c rows) of the m, the tiles'
/// accumulators parked between chunks. Each pair's lanes run through the same steps in the same
/// order as in prefillTile (a chunk only pauses them), so every output has prefillTile's bits.
/// Why: prefillTile over whole rows, activation tiles outer, read each weight byte from L2 once
/// per tile_c activation rows, and that, not the vdpbf16ps issue rate, held BF16 prefill to
/// ~240 GFLOP/s per core on AMD Zen 5. Stack: ~50 KB at R = 8 (parked accumulators 34 KB, the
/// chunk 16 KB), well inside the pool's 1 MiB worker stacks.
pub fn weightTile(comptime Ops: type, comptime R: usize, m: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
    const C = tile_c;
    std.debug.assert(m >= 1 and m <= max_act_rows);
    var accs: [(max_act_rows + C - 1) / C][C][R]V16f = undefined;
    const tiles = (m + C - 1) / C;
    for (accs[0..tiles]) |*t| t.* = @splat(@splat(@splat(0)));
    // The chunk's R rows, step-interleaved: step s of row r at (s·R + r)·64 bytes, one sequential
    // run (R rows at a power-of-two stride would share L1 sets with each other and the activations).
    var wbuf: [chunk_k / step * R][64]u8 align(64) = undefined;
    const wb: [*]const u8 = @ptrCast(&wbuf);
    var k0: usize = 0;
    while (k0 < n) : (k0 += chunk_k) {
        const k1 = @min(n, k0 + chunk_k);
        const full = (k1 - k0) / step;
        for (0..full) |st| {
            inline for (0..R) |r| wbuf[st * R + r] = (w + r * row_bytes + (k0 + st * step) * 2)[0..64].*;
        }
        const left = k1 - k0 - full * step;
        for (0..tiles) |t| {
            const x = a + 4 * n + t * C * act_bytes; // the rows' bf16 halves
            switch (@min(C, m - t * C)) {
                inline 1...C => |cc| {
                    accumulate(Ops, R, cc, .bf16, full * step, wb, 64, 64 * R, x + k0 * 2, act_bytes, @ptrCast(&accs[t]));
                    if (left > 0) accumulate(Ops, R, cc, .bf16, left, w + (k0 + full * step) * 2, row_bytes, 64, x + (k0 + full * step) * 2, act_bytes, @ptrCast(&accs[t]));
                },
                else => unreachable,
            }
        }
    }
    for (0..m) |i| {
        inline for (0..R) |r| out[i * out_stride + r] = @reduce(.Add, accs[i / C][i % C][r]);
    }
}

/// Decode: n_rows BF16 weight rows (row_bytes apart) against one prepared activation row's bf16
/// half `x` (prepareRow), out[r] = Σ w[r]·x, the rows read one after another: one sequential
/// stream per task, one vdpbf16ps per 64 bytes of weights, no software prefetch, as llama.cpp's
/// ggml_vec_dot_bf16 reads them. Each row's bits depend on n and its own bytes only (decodeRow).
///
/// Why not quant_legacy's f32 groups (8 rows side by side, the next group prefetched, each
/// weight widened to f32 against the f32 activations): on a Zen 4 (AMD EPYC family 25 model 17,
/// 2026-12-07, TinyLlama-shape BF16 through the file's mapping, bench/model-matmul-ab.ts, p50
/// GB/s, builds alternated round by round) one thread read gate+up 26.7 → 29.4, ffn_down 27.5 →
/// 28.1, attn_q 22.0 → 24.0 (25.1 → 29.2 in another run), the probe's sequential read giving
/// ~33; two threads at the host's higher bandwidth state gate+up 49.2 → 55.6, ffn_down 34.0 →
/// 48.3, attn_q 44.8 → 50.0, and alike (31–35) at its lower one. Cache-warm (2048×2048, one
/// thread, bench/matmul-hot.ts) 36 → 92 GFLOP/s. What did not pay, measured the same way: the
/// f32 arithmetic without widening (a 64-byte load as u32 lanes: `<< 16` the even weights, `&
/// 0xffff0000` the odd ones, against de-interleaved activations) ran 1.7× faster cache-warm but
/// read the file 20% slower in 8-row prefetched groups (21 against 27 GB/s), whatever the
/// prefetch distance or hint, and one row at a time read 2048-wide rows at 28 but ffn_down's
/// 5632-wide ones at 15 (each row re-reads 22 KB of f32 activations); these bf16 rows in 8-row
/// prefetched groups read 22–23.
pub inline fn decodeRows(comptime Ops: type, n: usize, w: [*]const u8, row_bytes: usize, x: [*]const u8, out: [*]f32, n_rows: usize) void {
    for (0..n_rows) |r| out[r] = decodeRow(Ops, n, w + r * row_bytes, x);
}

/// One row: two accumulators (steps 2s and 2s + 1: two dependency chains), a last whole step into
/// the first, a last partial one zero-padded into the second, summed acc0 + acc1 and @reduce.
pub inline fn decodeRow(comptime Ops: type, n: usize, w: [*]const u8, x: [*]const u8) f32 {
    var acc: [2]V16f = @splat(@splat(0));
    var i: usize = 0;
    while (i + 2 * step <= n) : (i += 2 * step) {
        inline for (0..2) |h| acc[h] = Ops.dot(acc[h], @bitCast(w[(i + h * step) * 2 ..][0..64].*), @bitCast(x[(i + h * step) * 2 ..][0..64].*));
    }
    if (i + step <= n) {
        acc[0] = Ops.dot(acc[0], @bitCast(w[i * 2 ..][0..64].*), @bitCast(x[i * 2 ..][0..64].*));
        i += step;
    }
    if (i < n) {
        var wb: [step]u16 = @splat(0);
        var xb: [step]u16 = @splat(0);
        @memcpy(std.mem.sliceAsBytes(wb[0 .. n - i]), w[i * 2 .. n * 2]);
        @memcpy(std.mem.sliceAsBytes(xb[0 .. n - i]), x[i * 2 .. n * 2]);
        acc[1] = Ops.dot(acc[1], wb, xb);
    }
    return @reduce(.Add, acc[0] + acc[1]);
}

/// Scalar reference of prefillTile: Σ w·bf16(x) over n elements in f64 (w bf16, x f32 bytes).
pub fn dotRef(n: usize, w: [*]const u8, x: [*]const u8) f32 {
    var s: f64 = 0;
    for (0..n) |k| {
        const wk = widen(std.mem.readInt(u16, w[2 * k ..][0..2], .little));
        const xk: f32 = @bitCast(std.mem.readInt(u32, x[4 * k ..][0..4], .little));
        s += @as(f64, wk) * @as(f64, widen(roundRef(xk)));
    }
    return @floatCast(s);
}

/// NMSE of this path's outputs against f32 activations on Gaussian data: rounding each
/// activation to bf16 errs by up to 2^-9 relative, (2^-9)²/3 ≈ 1.3e-6 on average.
pub const activation_rounding_nmse = 1e-5;

// ---------------------------------------------------------------------------------------------
// Run-time gating
// ---------------------------------------------------------------------------------------------

/// The tile shape matmul.zig's prefill uses here: R weight rows × C activation rows.
pub const tile_r = 8;
pub const tile_c = 3;

/// matmul.zig's tile: the instructions where enabled, the emulation under test_emulate.
pub fn tile(comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
    if (builtin.is_test and test_emulate) return prefillTile(Emu, R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
    if (comptime hw_built) return prefillTile(Hw, R, C, n, w, row_bytes, a, act_bytes, out, out_stride);
    unreachable; // enabled() is false outside the v4 build
}

/// matmul.zig's weight tiles (weightTile): the instructions where enabled, the emulation under
/// test_emulate.
pub fn rows(comptime R: usize, m: usize, n: usize, w: [*]const u8, row_bytes: usize, a: [*]const u8, act_bytes: usize, out: [*]f32, out_stride: usize) void {
    if (builtin.is_test and test_emulate) return weightTile(Emu, R, m, n, w, row_bytes, a, act_bytes, out, out_stride);
    if (comptime hw_built) return weightTile(Hw, R, m, n, w, row_bytes, a, act_bytes, out, out_stride);
    unreachable; // enabled() is false outside the v4 build
}

/// matmul.zig's decode rows (decodeRows; x is the prepared row's bf16 half): the instructions
/// where enabled, the emulation under test_emulate.
pub fn decode(n: usize, w: [*]const u8, row_bytes: usize, x: [*]const u8, out: [*]f32, n_rows: usize) void {
    if (builtin.is_test and test_emulate) return decodeRows(Emu, n, w, row_bytes, x, out, n_rows);
    if (comptime hw_built) return decodeRows(Hw, n, w, row_bytes, x, out, n_rows);
    unreachable; // enabled() is false outside the v4 build
}

/// Test builds only: matmul.zig's BF16 prefill takes this path on the emulation, so its wiring
/// (tile shape, task ranges, strides) is tested on CPUs without AVX512-BF16.
pub var test_emulate: bool = false;

/// Whether matmul.zig may route BF16 prefill and decode here in this build.
pub const wired = hw_built or builtin.is_test;

/// Why the BF16 prefill path is or is not used (kiln_bf16_status; names mirrored in
/// src/ffi/library.ts).
pub const Status = enum(i32) {
    enabled = 0,
    /// KILN_BF16=0 in the environment.
    disabled_by_env = 1,
    /// This library has no hardware path (only the x86_64-v4 build has one).
    not_built = 2,
    /// CPUID (or the OS's AVX-512 state) lacks AVX512_BF16.
    no_cpu_support = 3,
    /// The instructions differed from their emulation on the self-check problem.
    self_check_failed = 4,
};

/// Whether BF16 prefill tiles and decode rows take vdpbf16ps (comptime false outside the v4 build).
pub inline fn enabled() bool {
    if (builtin.is_test and test_emulate) return true;
    if (comptime !hw_built) return false;
    return status() == .enabled;
}

/// Decides once per process (environment, CPU, self-check) and remembers.
pub fn status() Status {
    return decision.get();
}
const decision = cpu.Decision(Status, decide);

fn decide() Status {
    if (cpu.disabledByEnv("KILN_BF16")) return .disabled_by_env;
    if (comptime !hw_built) return .not_built;
    if (!cpuHasBf16()) return .no_cpu_support;
    if (!selfCheck()) return .self_check_failed;
    return .enabled;
}

/// CPUID.(7,1):EAX[5] with the OS saving AVX-512 state (cpu.detect's test).
pub fn cpuHasBf16() bool {
    return cpu.detect() & cpu.bit(.avx512_bf16) != 0;
}

/// 2^e for a normal-range e (no libm call).
fn pow2(e: i32) f32 {
    return @bitCast(@as(u32, @intCast(127 + e)) << 23);
}

/// A fixed problem through both implementations: 4 × 4 rows over 77 elements (two whole steps and
/// a partial one), values over the exponent range with signs mixed so the sums cancel and round.
fn selfCheck() bool {
    if (comptime !hw_built) return false;
    const n = 77;
    var w: [4 * n]u16 = undefined;
    var x: [4 * n]f32 = undefined;
    var prng = std.Random.DefaultPrng.init(0x4b494c4e);
    const rng = prng.random();
    for (&w) |*v| v.* = @truncate(@as(u32, @bitCast(rng.floatNorm(f32) * pow2(rng.intRangeAtMost(i32, -8, 8)))) >> 16);
    for (&x) |*v| v.* = rng.floatNorm(f32) * pow2(rng.intRangeAtMost(i32, -8, 8));
    var hw: [16]f32 = undefined;
    var emu: [16]f32 = undefined;
    const wb = std.mem.sliceAsBytes(&w).ptr;
    const xb = std.mem.sliceAsBytes(&x).ptr;
    prefillTile(Hw, 4, 4, n, wb, n * 2, xb, n * 4, &hw, 4);
    prefillTile(Emu, 4, 4, n, wb, n * 2, xb, n * 4, &emu, 4);
    return std.mem.eql(u8, std.mem.sliceAsBytes(&hw), std.mem.sliceAsBytes(&emu));
}

// ---------------------------------------------------------------------------------------------
// Tests (every level runs the emulated kernel; the hardware one only where the CPU has it)
// ---------------------------------------------------------------------------------------------

const testing = std.testing;

/// ggml's fp32→bf16 (quant_legacy.f32ToBf16's rule), with denormals flushed as the instruction does.
fn roundRef(x: f32) u16 {
    const u: u32 = @bitCast(x);
    if ((u & 0x7fff_ffff) > 0x7f80_0000) return @truncate((u >> 16) | 64);
    if (u & 0x7f80_0000 == 0) return @truncate((u & 0x8000_0000) >> 16);
    return @truncate((u +% (0x7fff + ((u >> 16) & 1))) >> 16);
}

fn widen(h: u16) f32 {
    return @bitCast(@as(u32, h) << 16);
}

fn flushRef(x: f32) f32 {
    const u: u32 = @bitCast(x);
    return if (u & 0x7f80_0000 == 0) @bitCast(u & 0x8000_0000) else x;
}

/// One lane of VDPBF16PS, scalar.
fn dotLaneRef(acc: f32, a_even: u16, a_odd: u16, b_even: u16, b_odd: u16) f32 {
    const t = flushRef(@mulAdd(f32, flushRef(widen(a_odd)), flushRef(widen(b_odd)), flushRef(acc)));
    return flushRef(@mulAdd(f32, flushRef(widen(a_even)), flushRef(widen(b_even)), t));
}

/// Awkward f32 values: every exponent band, ties, NaNs, infinities, denormals, signed zeros.
fn awkwardF32(rng: std.Random) f32 {
    return switch (rng.uintLessThan(u8, 10)) {
        0 => @bitCast(rng.int(u32)), // anything, NaNs and denormals included
        1 => @bitCast((rng.int(u32) & 0xffff_0000) | 0x8000), // an exact tie
        2 => @bitCast(rng.int(u32) & 0x807f_ffff), // a denormal or zero
        3 => if (rng.boolean()) std.math.inf(f32) else -std.math.inf(f32),
        else => rng.floatNorm(f32) * pow2(rng.intRangeAtMost(i32, -30, 30)),
    };
}

fn sameBits(a: f32, b: f32) bool {
    const ua: u32 = @bitCast(a);
    const ub: u32 = @bitCast(b);
    return ua == ub or (std.math.isNan(a) and std.math.isNan(b));
}

test "emulated vcvtne2ps2bf16 rounds as ggml's fp32→bf16 (denormals flushed) over awkward values" {
    var prng = std.Random.DefaultPrng.init(1);
    const rng = prng.random();
    for (0..2000) |_| {
        var lo: [16]f32 = undefined;
        var hi: [16]f32 = undefined;
        for (&lo) |*v| v.* = awkwardF32(rng);
        for (&hi) |*v| v.* = awkwardF32(rng);
        const got: [32]u16 = Emu.cvt2(lo, hi);
        for (0..16) |i| {
            try testing.expectEqual(roundRef(lo[i]), got[i]);
            try testing.expectEqual(roundRef(hi[i]), got[16 + i]);
        }
    }
}

test "emulated vdpbf16ps adds the odd pair element's product, then the even one's, each rounded, denormals flushed" {
    var prng = std.Random.DefaultPrng.init(2);
    const rng = prng.random();
    for (0..2000) |_| {
        var acc: [16]f32 = undefined;
        var a: [32]u16 = undefined;
        var b: [32]u16 = undefined;
        for (&acc) |*v| v.* = awkwardF32(rng);
        for (&a) |*v| v.* = roundRef(awkwardF32(rng));
        for (&b) |*v| v.* = roundRef(awkwardF32(rng));
        const got: [16]f32 = Emu.dot(acc, a, b);
        for (0..16) |i| {
            const want = dotLaneRef(acc[i], a[2 * i], a[2 * i + 1], b[2 * i], b[2 * i + 1]);
            if (!sameBits(want, got[i])) {
                std.debug.print("lane {d}: acc {x} a {x},{x} b {x},{x}: want {x}, got {x}\n", .{ i, @as(u32, @bitCast(acc[i])), a[2 * i], a[2 * i + 1], b[2 * i], b[2 * i + 1], @as(u32, @bitCast(want)), @as(u32, @bitCast(got[i])) });
                return error.TestUnexpectedResult;
            }
        }
    }
    // The order has teeth: from 1 + 2^-23, adding 2^-24 (odd) then -2^-24 (even), each rounded
    // to even, ends at 1 + 2^-22; the even element first would end at 1, the exact sum 1 + 2^-23.
    const start_acc: V16f = @splat(@bitCast(@as(u32, 0x3f80_0001)));
    var b: V32h = @splat(0);
    b[1] = 0x3380; // 2^-24
    b[0] = 0xb380; // -2^-24
    const r: [16]f32 = Emu.dot(start_acc, @splat(0x3f80), b);
    try testing.expectEqual(@as(u32, 0x3f80_0002), @as(u32, @bitCast(r[0])));
}

test "vdpbf16ps and vcvtne2ps2bf16 on this CPU equal their emulation bit for bit (where the CPU has AVX512_BF16)" {
    if (comptime !hw_built) return;
    if (!cpuHasBf16()) {
        std.debug.print("(no AVX512_BF16 on this CPU: the hardware bf16 path is not tested here) ", .{});
        return;
    }
    var prng = std.Random.DefaultPrng.init(3);
    const rng = prng.random();
    for (0..5000) |_| {
        var lo: [16]f32 = undefined;
        var hi: [16]f32 = undefined;
        var acc: [16]f32 = undefined;
        var a: [32]u16 = undefined;
        for (&lo) |*v| v.* = awkwardF32(rng);
        for (&hi) |*v| v.* = awkwardF32(rng);
        for (&acc) |*v| v.* = awkwardF32(rng);
        for (&a) |*v| v.* = roundRef(awkwardF32(rng));
        const hw_c: [32]u16 = Hw.cvt2(lo, hi);
        const emu_c: [32]u16 = Emu.cvt2(lo, hi);
        try testing.expectEqual(emu_c, hw_c);
        const hw_d: [16]f32 = Hw.dot(acc, a, hw_c);
        const emu_d: [16]f32 = Emu.dot(acc, a, emu_c);
        for (hw_d, emu_d) |h, e| try testing.expect(sameBits(h, e));
    }
    try testing.expect(selfCheck());
    try testing.expectEqual(Status.enabled, status());
}

/// len bytes and 64 past them, all 0xA5 (guard bytes), from the testing allocator.
fn guarded(len: usize) ![]u8 {
    const b = try testing.allocator.alloc(u8, len + 64);
    @memset(b, 0xA5);
    return b;
}

/// n_rows weight rows of n random bf16 values, row_bytes apart, in a guarded buffer.
fn randomWeightRows(n_rows: usize, n: usize, row_bytes: usize, rng: std.Random) ![]u8 {
    const w = try guarded(n_rows * row_bytes);
    for (0..n_rows) |r| for (0..n) |k| std.mem.writeInt(u16, w[r * row_bytes + 2 * k ..][0..2], roundRef(rng.floatNorm(f32)), .little);
    return w;
}

/// How many of an R × C tile's outputs miss Σ w·bf16(x) (f64) by more than f32 summation can,
/// with guard values around the tile checked too.
fn tileMisses(comptime Ops: type, comptime R: usize, comptime C: usize, n: usize, rng: std.Random) !usize {
    const row_bytes = n * 2 + 6; // rows and activations off any alignment
    const act_bytes = n * 4 + 12;
    const a = testing.allocator;
    const w = try randomWeightRows(R, n, row_bytes, rng);
    defer a.free(w);
    const x = try guarded(C * act_bytes);
    defer a.free(x);
    for (0..C) |c| for (0..n) |k| std.mem.writeInt(u32, x[c * act_bytes + 4 * k ..][0..4], @bitCast(rng.floatNorm(f32) * 3), .little);
    const stride = tile_r + 1;
    var out: [(tile_c + 1) * stride]f32 = @splat(@bitCast(@as(u32, 0xDEADBEEF)));
    prefillTile(Ops, R, C, n, w.ptr, row_bytes, x.ptr, act_bytes, &out, stride);
    var misses: usize = 0;
    for (0..tile_c + 1) |c| for (0..stride) |r| {
        const got = out[c * stride + r];
        if (c < C and r < R) {
            const want = dotRef(n, w.ptr + r * row_bytes, x.ptr + c * act_bytes);
            if (!(@abs(want - got) <= 2e-6 * (1 + @abs(want)) * @sqrt(@as(f64, @floatFromInt(n))))) misses += 1;
        } else try testing.expectEqual(@as(u32, 0xDEADBEEF), @as(u32, @bitCast(got)));
    };
    return misses;
}

test "bf16 prefill tile (emulated; the hardware too where the CPU has it) matches Σ w·bf16(x) for every tile shape, lengths off every step" {
    var prng = std.Random.DefaultPrng.init(4);
    const rng = prng.random();
    const hw = hw_built and cpuHasBf16();
    for ([_]usize{ 1, 7, 31, 32, 33, 64, 95, 130, 200 }) |n| {
        inline for (1..tile_r + 1) |R| {
            inline for (1..tile_c + 1) |C| {
                try testing.expectEqual(@as(usize, 0), try tileMisses(Emu, R, C, n, rng));
                if (comptime hw_built) {
                    if (hw) try testing.expectEqual(@as(usize, 0), try tileMisses(Hw, R, C, n, rng));
                }
            }
        }
    }
}

test "a wrong rounding rule fails the tile check (truncating the activations instead of rounding them)" {
    const Truncating = struct {
        pub inline fn cvt2(lo: V16f, hi: V16f) V32h {
            const l: V16u = @bitCast(lo);
            const h: V16u = @bitCast(hi);
            return std.simd.join(@as(@Vector(16, u16), @truncate(l >> @splat(16))), @as(@Vector(16, u16), @truncate(h >> @splat(16))));
        }
        pub const dot = Emu.dot;
    };
    var prng = std.Random.DefaultPrng.init(5);
    try testing.expect(try tileMisses(Truncating, tile_r, tile_c, 130, prng.random()) > 0);
}

test "prepareRow: the f32 values, then each one's bf16 rounding (vcvtne2ps2bf16's rule), nothing past the row" {
    var prng = std.Random.DefaultPrng.init(6);
    const rng = prng.random();
    for ([_]usize{ 1, 15, 31, 32, 33, 64, 100 }) |n| {
        var src: [100]f32 = undefined;
        for (src[0..n]) |*v| v.* = awkwardF32(rng);
        var dst: [100 * prepare_row_bytes + 16]u8 = @splat(0xA5);
        prepareRow(&src, &dst, n);
        try testing.expectEqualSlices(u8, std.mem.sliceAsBytes(src[0..n]), dst[0 .. 4 * n]);
        for (0..n) |i| try testing.expectEqual(roundRef(src[i]), std.mem.readInt(u16, dst[4 * n + 2 * i ..][0..2], .little));
        for (dst[n * prepare_row_bytes ..]) |b| try testing.expectEqual(@as(u8, 0xA5), b);
    }
}

/// How many of decodeRows' outputs miss Σ w·bf16(x) (f64) by more than f32 summation can, for
/// n_rows rows and one prepared activation row off any alignment, the output's guard checked too.
fn decodeMisses(comptime Ops: type, n_rows: usize, n: usize, rng: std.Random) !usize {
    const a = testing.allocator;
    const row_bytes = n * 2 + 6;
    const w = try randomWeightRows(n_rows, n, row_bytes, rng);
    defer a.free(w);
    const x = try guarded(n * prepare_row_bytes + 12);
    defer a.free(x);
    const src = try a.alloc(f32, n);
    defer a.free(src);
    for (src) |*v| v.* = rng.floatNorm(f32) * 3;
    const act = x.ptr + 12;
    prepareRow(src.ptr, act, n);
    const out = try a.alloc(f32, n_rows + 1);
    defer a.free(out);
    @memset(out, @bitCast(@as(u32, 0xDEADBEEF)));
    decodeRows(Ops, n, w.ptr, row_bytes, act + 4 * n, out.ptr, n_rows);
    try testing.expectEqual(@as(u32, 0xDEADBEEF), @as(u32, @bitCast(out[n_rows])));
    var misses: usize = 0;
    for (0..n_rows) |r| {
        const want = dotRef(n, w.ptr + r * row_bytes, act);
        if (!(@abs(want - out[r]) <= 2e-6 * (1 + @abs(want)) * @sqrt(@as(f64, @floatFromInt(n))))) misses += 1;
        // Each row's bits are its own: the same row decoded alone.
        try testing.expectEqual(@as(u32, @bitCast(decodeRow(Ops, n, w.ptr + r * row_bytes, act + 4 * n))), @as(u32, @bitCast(out[r])));
    }
    return misses;
}

test "decodeRows (emulated; the hardware too where the CPU has it, bit for bit) matches Σ w·bf16(x): lengths off every step and step pair, rows off alignment" {
    var prng = std.Random.DefaultPrng.init(8);
    const rng = prng.random();
    const hw = hw_built and cpuHasBf16();
    for ([_]usize{ 1, 7, 31, 32, 33, 63, 64, 65, 95, 96, 97, 130, 2050 }) |n| {
        for ([_]usize{ 1, 3, 9 }) |n_rows| {
            const seed = rng.int(u64);
            var p1 = std.Random.DefaultPrng.init(seed);
            try testing.expectEqual(@as(usize, 0), try decodeMisses(Emu, n_rows, n, p1.random()));
            if (comptime hw_built) {
                if (hw) {
                    // The instructions on the same problem, then on one of awkward values
                    // (decodeBitsEqual): the emulation's bits.
                    var p2 = std.Random.DefaultPrng.init(seed);
                    var p3 = std.Random.DefaultPrng.init(seed);
                    try testing.expectEqual(@as(usize, 0), try decodeMisses(Hw, n_rows, n, p2.random()));
                    try testing.expect(try decodeBitsEqual(n_rows, n, p3.random()));
                }
            }
        }
    }
}

/// decodeRows on the instructions and on the emulation, one random problem: the same bits?
fn decodeBitsEqual(n_rows: usize, n: usize, rng: std.Random) !bool {
    const a = testing.allocator;
    const row_bytes = n * 2;
    const w = try randomWeightRows(n_rows, n, row_bytes, rng);
    defer a.free(w);
    const x = try a.alloc(u8, n * prepare_row_bytes);
    defer a.free(x);
    const src = try a.alloc(f32, n);
    defer a.free(src);
    for (src) |*v| v.* = awkwardF32(rng);
    prepareRow(src.ptr, x.ptr, n);
    const hw = try a.alloc(f32, n_rows);
    defer a.free(hw);
    const emu = try a.alloc(f32, n_rows);
    defer a.free(emu);
    decodeRows(Hw, n, w.ptr, row_bytes, x.ptr + 4 * n, hw.ptr, n_rows);
    decodeRows(Emu, n, w.ptr, row_bytes, x.ptr + 4 * n, emu.ptr, n_rows);
    return std.mem.eql(u8, std.mem.sliceAsBytes(hw), std.mem.sliceAsBytes(emu));
}

test "a wrong product rule fails the decode check (the even elements' products dropped)" {
    const OddOnly = struct {
        pub inline fn dot(acc: V16f, a: V32h, b: V32h) V16f {
            const high: V16u = @splat(0xffff_0000);
            return @mulAdd(V16f, @bitCast(@as(V16u, @bitCast(a)) & high), @bitCast(@as(V16u, @bitCast(b)) & high), acc);
        }
    };
    var prng = std.Random.DefaultPrng.init(9);
    try testing.expect(try decodeMisses(OddOnly, 3, 130, prng.random()) > 0);
}

/// weightTile against prefillTile: the same bits for every output, guard values around them.
fn weightTileMatches(comptime Ops: type, comptime R: usize, m: usize, n: usize, rng: std.Random) !void {
    const a = testing.allocator;
    const row_bytes = n * 2 + 6; // weight rows off any alignment
    const act_bytes = n * prepare_row_bytes + 12;
    const w = try randomWeightRows(R, n, row_bytes, rng);
    defer a.free(w);
    const x = try guarded(m * act_bytes);
    defer a.free(x);
    const src = try a.alloc(f32, n);
    defer a.free(src);
    for (0..m) |i| {
        for (src) |*v| v.* = rng.floatNorm(f32) * 3;
        prepareRow(src.ptr, x.ptr + i * act_bytes, n);
    }
    const stride = R + 1;
    const out = try a.alloc(f32, (m + 1) * stride);
    defer a.free(out);
    @memset(out, @bitCast(@as(u32, 0xDEADBEEF)));
    weightTile(Ops, R, m, n, w.ptr, row_bytes, x.ptr, act_bytes, out.ptr, stride);
    for (0..m + 1) |i| for (0..stride) |r| {
        const got: u32 = @bitCast(out[i * stride + r]);
        if (i < m and r < R) {
            var want: f32 = undefined;
            prefillTile(Ops, 1, 1, n, w.ptr + r * row_bytes, row_bytes, x.ptr + i * act_bytes, act_bytes, @ptrCast(&want), 1);
            try testing.expectEqual(@as(u32, @bitCast(want)), got);
        } else try testing.expectEqual(@as(u32, 0xDEADBEEF), got);
    };
}

test "weightTile (K in chunks, prepared bf16 activations) equals prefillTile bit for bit: every row count, activation counts off the tile, lengths across chunks and off every step" {
    var prng = std.Random.DefaultPrng.init(7);
    const rng = prng.random();
    const hw = hw_built and cpuHasBf16();
    for ([_]usize{ 1, 33, chunk_k, chunk_k + 31, 2 * chunk_k + 77 }) |n| {
        for ([_]usize{ 1, 2, 4, 22, max_act_rows }) |m| {
            inline for (.{ 1, 3, tile_r }) |R| {
                try weightTileMatches(Emu, R, m, n, rng);
                if (comptime hw_built) {
                    if (hw) try weightTileMatches(Hw, R, m, n, rng);
                }
            }
        }
    }
}
