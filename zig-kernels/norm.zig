//! RMSNorm (plain, fused with the residual add, per head for QK-norm), elementwise helpers and
//! the gated activations silu(g)·u and gelu_tanh(g)·u, each with a plain scalar reference.
//!
//! Numerics follow ggml's CPU rms_norm: squares are rounded to f32, summed in f64, the mean is
//! rounded to f32, scale = 1/sqrtf(mean + eps), and out = (x·scale)·w in that order (ggml scales
//! in rms_norm and multiplies by the weight in a separate ggml_mul).
//!
//! In-place use: `out` may be exactly `x` (every element is read before it is written at the
//! same index); partially overlapping buffers are not supported.
const std = @import("std");
const pool = @import("pool.zig");
const assert = std.debug.assert;

/// f32 lanes per SIMD vector: 4 on SSE2 / NEON, 8 on AVX2, 16 on AVX-512.
pub const vec_len = std.simd.suggestVectorLength(f32) orelse 4;
const V = @Vector(vec_len, f32);
const VD = @Vector(vec_len, f64);

/// Below this many elements per task, waking pool workers costs more than it saves.
const min_task_elems = 16 * 1024;

inline fn load(p: [*]const f32, i: usize) V {
    return p[i..][0..vec_len].*;
}

inline fn store(p: [*]f32, i: usize, v: V) void {
    p[i..][0..vec_len].* = v;
}

// ---- RMSNorm ---------------------------------------------------------------------------------

/// out = x / sqrt(mean(x²) + eps) · weight (weight null: no scale).
pub fn rmsNormRow(x: [*]const f32, weight: ?[*]const f32, out: [*]f32, n: usize, eps: f32) void {
    assert(n > 0);
    scaleWeighted(x, weight, out, n, rmsScale(sumSquares(x, n), n, eps));
}

/// Fused residual add + RMSNorm: x += residual (x is the residual stream, updated in place),
/// then out = rmsnorm(x) · weight. The sum of squares is taken in the same pass as the add, so
/// x is read twice instead of three times.
pub fn addRmsNormRow(x: [*]f32, residual: [*]const f32, weight: ?[*]const f32, out: [*]f32, n: usize, eps: f32) void {
    assert(n > 0);
    scaleWeighted(x, weight, out, n, rmsScale(addSumSquares(x, residual, n), n, eps));
}

/// ggml's rounding order: the f64 mean is rounded to f32 before eps is added.
fn rmsScale(sum_sq: f64, n: usize, eps: f32) f32 {
    const mean: f32 = @floatCast(sum_sq / @as(f64, @floatFromInt(n)));
    return 1.0 / @sqrt(mean + eps);
}

/// Σ x², each square rounded to f32 (as ggml does), accumulated in f64 lanes so long rows
/// lose nothing to the sum. Two accumulators keep two independent add chains in flight.
fn sumSquares(x: [*]const f32, n: usize) f64 {
    var acc0: VD = @splat(0);
    var acc1: VD = @splat(0);
    var i: usize = 0;
    while (i + 2 * vec_len <= n) : (i += 2 * vec_len) {
        const a = load(x, i);
        const b = load(x, i + vec_len);
        acc0 += @as(VD, @floatCast(a * a));
        acc1 += @as(VD, @floatCast(b * b));
    }
    if (i + vec_len <= n) {
        const a = load(x, i);
        acc0 += @as(VD, @floatCast(a * a));
        i += vec_len;
    }
    var sum: f64 = @reduce(.Add, acc0 + acc1);
    while (i < n) : (i += 1) sum += @as(f64, x[i] * x[i]);
    return sum;
}

/// x += residual, returning Σ x² of the updated x (same rounding as sumSquares).
fn addSumSquares(x: [*]f32, residual: [*]const f32, n: usize) f64 {
    var acc: VD = @splat(0);
    var i: usize = 0;
    while (i + vec_len <= n) : (i += vec_len) {
        const s = load(x, i) + load(residual, i);
        store(x, i, s);
        acc += @as(VD, @floatCast(s * s));
    }
    var sum: f64 = @reduce(.Add, acc);
    while (i < n) : (i += 1) {
        x[i] += residual[i];
        sum += @as(f64, x[i] * x[i]);
    }
    return sum;
}

/// out = (x · scale) · w, rounded after each product like ggml's two separate ops.
fn scaleWeighted(x: [*]const f32, weight: ?[*]const f32, out: [*]f32, n: usize, scale: f32) void {
    const sv: V = @splat(scale);
    var i: usize = 0;
    if (weight) |w| {
        while (i + vec_len <= n) : (i += vec_len) store(out, i, (load(x, i) * sv) * load(w, i));
        while (i < n) : (i += 1) out[i] = (x[i] * scale) * w[i];
    } else {
        while (i + vec_len <= n) : (i += vec_len) store(out, i, load(x, i) * sv);
        while (i < n) : (i += 1) out[i] = x[i] * scale;
    }
}

/// Reference: everything in f64, rounded to f32 once at the end.
pub fn rmsNormRowRef(x: [*]const f32, weight: ?[*]const f32, out: [*]f32, n: usize, eps: f32) void {
    assert(n > 0);
    var sum: f64 = 0;
    for (0..n) |i| sum += @as(f64, x[i]) * @as(f64, x[i]);
    const scale = 1.0 / @sqrt(sum / @as(f64, @floatFromInt(n)) + @as(f64, eps));
    for (0..n) |i| {
        const w: f64 = if (weight) |wp| wp[i] else 1.0;
        out[i] = @floatCast(@as(f64, x[i]) * scale * w);
    }
}

/// Reference: the add in f32 (that is the residual stream's own rounding), the norm in f64.
pub fn addRmsNormRowRef(x: [*]f32, residual: [*]const f32, weight: ?[*]const f32, out: [*]f32, n: usize, eps: f32) void {
    for (0..n) |i| x[i] += residual[i];
    rmsNormRowRef(x, weight, out, n, eps);
}

/// Runs body(ctx, r) for every row r in [0, n_rows): one row on the calling thread, more as
/// contiguous row ranges over the pool (a few tasks per thread, each worth waking a worker).
fn forEachRow(n_rows: usize, row_len: usize, ctx: anytype, comptime body: fn (@TypeOf(ctx), usize) void) void {
    if (n_rows == 0) return;
    if (n_rows == 1) return body(ctx, 0);
    const Task = struct { inner: @TypeOf(ctx), n_rows: usize, n_tasks: usize };
    const run = struct {
        fn f(t: Task, i: usize) void {
            const r = pool.splitRange(t.n_rows, t.n_tasks, i);
            for (r.start..r.end) |row| body(t.inner, row);
        }
    }.f;
    const n_tasks = pool.taskCount(n_rows, @max(1, min_task_elems / @max(1, row_len)));
    pool.parallelFor(n_tasks, Task{ .inner = ctx, .n_rows = n_rows, .n_tasks = n_tasks }, run);
}

/// rmsNormRow over n_rows rows: row r reads x[r·x_stride ..] and writes out[r·out_stride ..].
pub fn rmsNormRows(x: [*]const f32, x_stride: usize, weight: ?[*]const f32, out: [*]f32, out_stride: usize, n_rows: usize, n: usize, eps: f32) void {
    assert(n > 0 and (n_rows <= 1 or (x_stride >= n and out_stride >= n)));
    const Ctx = struct { x: [*]const f32, xs: usize, w: ?[*]const f32, out: [*]f32, os: usize, n: usize, eps: f32 };
    forEachRow(n_rows, n, Ctx{ .x = x, .xs = x_stride, .w = weight, .out = out, .os = out_stride, .n = n, .eps = eps }, struct {
        fn f(c: Ctx, r: usize) void {
            rmsNormRow(c.x + r * c.xs, c.w, c.out + r * c.os, c.n, c.eps);
        }
    }.f);
}

/// addRmsNormRow over n_rows rows, each of x, residual and out with its own row stride.
pub fn addRmsNormRows(x: [*]f32, x_stride: usize, residual: [*]const f32, residual_stride: usize, weight: ?[*]const f32, out: [*]f32, out_stride: usize, n_rows: usize, n: usize, eps: f32) void {
    assert(n > 0 and (n_rows <= 1 or (x_stride >= n and residual_stride >= n and out_stride >= n)));
    const Ctx = struct { x: [*]f32, xs: usize, res: [*]const f32, rs: usize, w: ?[*]const f32, out: [*]f32, os: usize, n: usize, eps: f32 };
    const ctx = Ctx{ .x = x, .xs = x_stride, .res = residual, .rs = residual_stride, .w = weight, .out = out, .os = out_stride, .n = n, .eps = eps };
    forEachRow(n_rows, n, ctx, struct {
        fn f(c: Ctx, r: usize) void {
            addRmsNormRow(c.x + r * c.xs, c.res + r * c.rs, c.w, c.out + r * c.os, c.n, c.eps);
        }
    }.f);
}

/// QK-norm (Gemma 3): each head_dim-long head of each row is RMS-normalized in place and
/// scaled by the one head_dim weight shared by all heads. Heads are contiguous in a row.
pub fn rmsNormHeads(x: [*]f32, n_rows: usize, n_head: usize, head_dim: usize, row_stride: usize, weight: [*]const f32, eps: f32) void {
    assert(head_dim > 0 and (n_rows <= 1 or row_stride >= n_head * head_dim));
    const Ctx = struct { x: [*]f32, n_head: usize, hd: usize, rs: usize, w: [*]const f32, eps: f32 };
    forEachRow(n_rows, n_head * head_dim, Ctx{ .x = x, .n_head = n_head, .hd = head_dim, .rs = row_stride, .w = weight, .eps = eps }, struct {
        fn f(c: Ctx, r: usize) void {
            for (0..c.n_head) |h| {
                const p = c.x + r * c.rs + h * c.hd;
                rmsNormRow(p, c.w, p, c.hd, c.eps);
            }
        }
    }.f);
}

// ---- elementwise -----------------------------------------------------------------------------

/// x *= s.
pub fn scaleRow(x: [*]f32, n: usize, s: f32) void {
    const sv: V = @splat(s);
    var i: usize = 0;
    while (i + vec_len <= n) : (i += vec_len) store(x, i, load(x, i) * sv);
    while (i < n) : (i += 1) x[i] *= s;
}

pub fn scaleRowRef(x: [*]f32, n: usize, s: f32) void {
    for (0..n) |i| x[i] *= s;
}

const BinOp = enum { add, mul };

inline fn applyBin(comptime op: BinOp, a: anytype, b: @TypeOf(a)) @TypeOf(a) {
    return switch (op) {
        .add => a + b,
        .mul => a * b,
    };
}

fn binaryRow(comptime op: BinOp, dst: [*]f32, src: [*]const f32, n: usize) void {
    var i: usize = 0;
    while (i + vec_len <= n) : (i += vec_len) store(dst, i, applyBin(op, load(dst, i), load(src, i)));
    while (i < n) : (i += 1) dst[i] = applyBin(op, dst[i], src[i]);
}

/// dst += src.
pub fn addRow(dst: [*]f32, src: [*]const f32, n: usize) void {
    binaryRow(.add, dst, src, n);
}

/// dst *= src.
pub fn mulRow(dst: [*]f32, src: [*]const f32, n: usize) void {
    binaryRow(.mul, dst, src, n);
}

pub fn addRowRef(dst: [*]f32, src: [*]const f32, n: usize) void {
    for (0..n) |i| dst[i] += src[i];
}

pub fn mulRowRef(dst: [*]f32, src: [*]const f32, n: usize) void {
    for (0..n) |i| dst[i] *= src[i];
}

// ---- exp and gated activations -----------------------------------------------------------------

/// e^x per lane without libm: x = n·ln2 + r with |r| ≤ ln2/2 (Cody-Waite split of ln2), e^r
/// from the Cephes expf polynomial, then · 2^n. Relative error < 1e-7 (measured 7.9e-8) over
/// the whole normal f32 range (see the test). Overflows to +inf, underflows through subnormals to 0, NaN → NaN.
/// Uses no FMA, no rounding instructions (SSE2 has none) and no lookup table.
pub fn expVec(comptime L: usize, x: @Vector(L, f32)) @Vector(L, f32) {
    const F = @Vector(L, f32);
    const I = @Vector(L, i32);
    const S = @Vector(L, u5);
    // Beyond these bounds e^x is 0 / inf in f32 anyway; clamping keeps n within [-150, 128].
    const xc = @min(@max(x, @as(F, @splat(-104.0))), @as(F, @splat(88.8)));
    // Adding 1.5·2^23 rounds x·log2(e) to the nearest integer and leaves it in the low bits.
    const magic: F = @splat(0x1.8p23);
    const t = xc * @as(F, @splat(1.44269504088896341)) + magic;
    const n = t - magic;
    var r = xc - n * @as(F, @splat(0.693359375)); // ln2 high part: n·hi is exact
    r = r - n * @as(F, @splat(-2.12194440e-4)); // ln2 low part
    var p: F = @splat(1.9875691500e-4);
    p = p * r + @as(F, @splat(1.3981999507e-3));
    p = p * r + @as(F, @splat(8.3334519073e-3));
    p = p * r + @as(F, @splat(4.1665795894e-2));
    p = p * r + @as(F, @splat(1.6666665459e-1));
    p = p * r + @as(F, @splat(5.0000001201e-1));
    const er = p * (r * r) + r + @as(F, @splat(1.0));
    // 2^n as two factors 2^h · 2^(n-h), each a normal float, so subnormal results and
    // n = 128 (just below FLT_MAX) come out right instead of flushing or overflowing early.
    const ni: I = @as(I, @bitCast(t)) - @as(I, @bitCast(magic));
    const h = ni >> @as(S, @splat(1));
    const s1: F = @bitCast((h + @as(I, @splat(127))) << @as(S, @splat(23)));
    const s2: F = @bitCast((ni - h + @as(I, @splat(127))) << @as(S, @splat(23)));
    return @select(f32, x != x, x, er * s1 * s2);
}

/// silu(g) = g / (1 + e^-g).
inline fn siluVec(comptime L: usize, g: @Vector(L, f32)) @Vector(L, f32) {
    const one: @Vector(L, f32) = @splat(1.0);
    return g / (one + expVec(L, -g));
}

/// ggml's GELU, 0.5·g·(1 + tanh(u)) with u = sqrt(2/π)·g·(1 + 0.044715·g²), evaluated as the
/// identical g / (1 + e^(-2u)): no tanh and no cancellation in 1 + tanh(u) when u ≪ 0.
inline fn geluTanhVec(comptime L: usize, g: @Vector(L, f32)) @Vector(L, f32) {
    const F = @Vector(L, f32);
    const one: F = @splat(1.0);
    const u = @as(F, @splat(0.79788456080286535587989211986876)) * g * (one + @as(F, @splat(0.044715)) * g * g);
    return g / (one + expVec(L, @as(F, @splat(-2.0)) * u));
}

/// Scalar silu, bit-identical to siluMulRow's lanes (the fused matmul and the unfused path agree).
pub inline fn silu(x: f32) f32 {
    return siluVec(1, @as(@Vector(1, f32), @splat(x)))[0];
}

/// Scalar gelu_tanh, bit-identical to geluTanhMulRow's lanes.
pub inline fn geluTanh(x: f32) f32 {
    return geluTanhVec(1, @as(@Vector(1, f32), @splat(x)))[0];
}

const Act = enum { silu, gelu_tanh };

/// out = act(gate) · up. The tail runs through the same vector code on a padded copy so every
/// element gets identical rounding, whatever its index.
fn gatedRow(comptime act: Act, gate: [*]const f32, up: [*]const f32, out: [*]f32, n: usize) void {
    const f = switch (act) {
        .silu => siluVec,
        .gelu_tanh => geluTanhVec,
    };
    var i: usize = 0;
    while (i + vec_len <= n) : (i += vec_len) store(out, i, f(vec_len, load(gate, i)) * load(up, i));
    if (i == n) return;
    var g: [vec_len]f32 = @splat(0);
    var u: [vec_len]f32 = @splat(0);
    @memcpy(g[0 .. n - i], gate[i..n]);
    @memcpy(u[0 .. n - i], up[i..n]);
    const y: [vec_len]f32 = f(vec_len, g) * @as(V, u);
    @memcpy(out[i..n], y[0 .. n - i]);
}

/// out = silu(gate) · up.
pub fn siluMulRow(gate: [*]const f32, up: [*]const f32, out: [*]f32, n: usize) void {
    gatedRow(.silu, gate, up, out, n);
}

/// out = gelu_tanh(gate) · up.
pub fn geluTanhMulRow(gate: [*]const f32, up: [*]const f32, out: [*]f32, n: usize) void {
    gatedRow(.gelu_tanh, gate, up, out, n);
}

pub fn siluMulRowRef(gate: [*]const f32, up: [*]const f32, out: [*]f32, n: usize) void {
    for (0..n) |i| {
        const g: f64 = gate[i];
        out[i] = @floatCast(g / (1.0 + @exp(-g)) * @as(f64, up[i]));
    }
}

/// The literal tanh formula in f64, except that 1 + tanh(u) is taken as the identical
/// 2 / (1 + e^(-2u)) when u < -1, where the literal form cancels to 0 even in f64.
pub fn geluTanhMulRowRef(gate: [*]const f32, up: [*]const f32, out: [*]f32, n: usize) void {
    for (0..n) |i| {
        const g: f64 = gate[i];
        const u = @sqrt(2.0 / std.math.pi) * g * (1.0 + 0.044715 * g * g);
        const one_plus_tanh = if (u < -1) 2.0 / (1.0 + @exp(-2.0 * u)) else 1.0 + std.math.tanh(u);
        out[i] = @floatCast(0.5 * g * one_plus_tanh * @as(f64, up[i]));
    }
}

// ---- tests -----------------------------------------------------------------------------------

const testing = std.testing;
const test_lengths = [_]usize{ 1, 3, 7, 8, 15, 16, 17, 63, 100, 1000, 4097 };
const guard_len = 8;
const guard_value: f32 = -7777.25;

/// A buffer of n random values in [lo, hi) followed by guard_len guard values.
fn randomBuf(rng: std.Random, n: usize, lo: f32, hi: f32) ![]f32 {
    const b = try testing.allocator.alloc(f32, n + guard_len);
    for (b[0..n]) |*v| v.* = lo + (hi - lo) * rng.float(f32);
    @memset(b[n..], guard_value);
    return b;
}

fn expectGuard(b: []const f32, n: usize) !void {
    for (b[n..]) |v| try testing.expectEqual(guard_value, v);
}

/// |got - want| ≤ rel·|want| + abs.
fn expectClose(got: f32, want: f32, rel: f64, abs: f64) !void {
    const err = @abs(@as(f64, got) - @as(f64, want));
    if (err > rel * @abs(@as(f64, want)) + abs) {
        std.debug.print("got {e}, want {e}, err {e}\n", .{ got, want, err });
        return error.TestExpectedApproxEq;
    }
}

test "rmsNormRow and addRmsNormRow match the f64 reference" {
    var prng = std.Random.DefaultPrng.init(1);
    const rng = prng.random();
    for (test_lengths) |n| {
        for ([_]bool{ false, true }) |with_weight| {
            const x = try randomBuf(rng, n, -3, 3);
            defer testing.allocator.free(x);
            const res = try randomBuf(rng, n, -3, 3);
            defer testing.allocator.free(res);
            const w = try randomBuf(rng, n, 0.5, 1.5);
            defer testing.allocator.free(w);
            const out = try randomBuf(rng, n, 0, 0);
            defer testing.allocator.free(out);
            const ref = try randomBuf(rng, n, 0, 0);
            defer testing.allocator.free(ref);
            const wp: ?[*]const f32 = if (with_weight) w.ptr else null;

            rmsNormRow(x.ptr, wp, out.ptr, n, 1e-6);
            rmsNormRowRef(x.ptr, wp, ref.ptr, n, 1e-6);
            // Products only (no cancellation): ≤ ~4 f32 roundings per element.
            for (0..n) |i| try expectClose(out[i], ref[i], 1e-6, 0);
            try expectGuard(out, n);

            const x2 = try testing.allocator.dupe(f32, x);
            defer testing.allocator.free(x2);
            addRmsNormRow(x.ptr, res.ptr, wp, out.ptr, n, 1e-5);
            addRmsNormRowRef(x2.ptr, res.ptr, wp, ref.ptr, n, 1e-5);
            try testing.expectEqualSlices(f32, x2, x); // the f32 residual add is exact-same
            for (0..n) |i| try expectClose(out[i], ref[i], 1e-6, 0);
            try expectGuard(out, n);
            try expectGuard(x, n);
        }
    }
}

test "rmsNormRow works in place and on an all-zero row" {
    var x = [_]f32{ 3, -4, 0 };
    rmsNormRow(&x, null, &x, 3, 0);
    // mean(x²) = 25/3, so the scale is sqrt(3)/5.
    const s: f32 = @sqrt(3.0) / 5.0;
    try expectClose(x[0], 3 * s, 1e-6, 0);
    try expectClose(x[1], -4 * s, 1e-6, 0);
    var z = [_]f32{ 0, 0, 0, 0, 0 };
    rmsNormRow(&z, null, &z, 5, 1e-6);
    for (z) |v| try testing.expectEqual(@as(f32, 0), v);
}

test "rmsNormRows, addRmsNormRows, rmsNormHeads equal the row kernel at 1 and 3 threads" {
    var prng = std.Random.DefaultPrng.init(2);
    const rng = prng.random();
    const n_rows = 37;
    const n = 1000; // small enough that several rows share a task, large enough for many tasks
    const stride = n + 5;
    const len = n_rows * stride;
    const x = try randomBuf(rng, len, -2, 2);
    defer testing.allocator.free(x);
    const res = try randomBuf(rng, len, -2, 2);
    defer testing.allocator.free(res);
    const w = try randomBuf(rng, n, 0.5, 1.5);
    defer testing.allocator.free(w);
    const out = try randomBuf(rng, len, 0, 0);
    defer testing.allocator.free(out);
    const want = try testing.allocator.dupe(f32, out);
    defer testing.allocator.free(want);
    const xa = try testing.allocator.dupe(f32, x);
    defer testing.allocator.free(xa);
    const xb = try testing.allocator.dupe(f32, x);
    defer testing.allocator.free(xb);
    for ([_]usize{ 1, 3 }) |threads| {
        _ = pool.setThreads(threads);
        rmsNormRows(x.ptr, stride, w.ptr, out.ptr, stride, n_rows, n, 1e-6);
        for (0..n_rows) |r| rmsNormRow(x.ptr + r * stride, w.ptr, want.ptr + r * stride, n, 1e-6);
        try testing.expectEqualSlices(f32, want, out);

        @memcpy(xa, x);
        @memcpy(xb, x);
        addRmsNormRows(xa.ptr, stride, res.ptr, stride, w.ptr, out.ptr, stride, n_rows, n, 1e-6);
        for (0..n_rows) |r| addRmsNormRow(xb.ptr + r * stride, res.ptr + r * stride, w.ptr, want.ptr + r * stride, n, 1e-6);
        try testing.expectEqualSlices(f32, xb, xa);
        try testing.expectEqualSlices(f32, want, out);

        // Heads: 8 heads of 125 per row, normalized in place.
        @memcpy(xa, x);
        @memcpy(xb, x);
        rmsNormHeads(xa.ptr, n_rows, 8, 125, stride, w.ptr, 1e-6);
        for (0..n_rows) |r| for (0..8) |h| {
            const p = xb.ptr + r * stride + h * 125;
            rmsNormRowRef(p, w.ptr, p, 125, 1e-6);
        };
        for (xa, xb) |got, ref| try expectClose(got, ref, 1e-6, 0);
        // The 5 padding elements of each row are untouched.
        for (0..n_rows) |r| try testing.expectEqualSlices(f32, x[r * stride + n ..][0..5], xa[r * stride + n ..][0..5]);
    }
    _ = pool.setThreads(2);
}

test "scaleRow, addRow, mulRow equal their references exactly" {
    var prng = std.Random.DefaultPrng.init(3);
    const rng = prng.random();
    for (test_lengths) |n| {
        const a = try randomBuf(rng, n, -10, 10);
        defer testing.allocator.free(a);
        const b = try randomBuf(rng, n, -10, 10);
        defer testing.allocator.free(b);
        const a2 = try testing.allocator.dupe(f32, a);
        defer testing.allocator.free(a2);
        // One f32 operation per element: the results must be bit-identical.
        scaleRow(a.ptr, n, 0.37);
        scaleRowRef(a2.ptr, n, 0.37);
        try testing.expectEqualSlices(f32, a2, a);
        addRow(a.ptr, b.ptr, n);
        addRowRef(a2.ptr, b.ptr, n);
        try testing.expectEqualSlices(f32, a2, a);
        mulRow(a.ptr, b.ptr, n);
        mulRowRef(a2.ptr, b.ptr, n);
        try testing.expectEqualSlices(f32, a2, a);
        try expectGuard(a, n);
    }
}

test "expVec: relative error below 2e-7 across the f32 range; inf, 0, NaN at the edges" {
    const L = vec_len;
    var worst: f64 = 0;
    var x: f32 = -87.0;
    while (x < 88.7) : (x += 0.0137) {
        var v: [L]f32 = undefined;
        for (&v, 0..) |*e, j| e.* = x + @as(f32, @floatFromInt(j)) * 0.0011;
        const got: [L]f32 = expVec(L, v);
        for (v, got) |xi, gi| {
            const want = @exp(@as(f64, xi));
            worst = @max(worst, @abs(@as(f64, gi) - want) / want);
        }
    }
    // Measured 7.9e-8 (under one f32 ulp); the bound leaves 2.5x room.
    try testing.expect(worst < 2e-7);
    const edge: [4]f32 = expVec(4, .{ 89.0, -105.0, std.math.nan(f32), 0.0 });
    try testing.expect(std.math.isPositiveInf(edge[0]));
    try testing.expectEqual(@as(f32, 0), edge[1]);
    try testing.expect(std.math.isNan(edge[2]));
    try testing.expectEqual(@as(f32, 1), edge[3]);
    // A subnormal result: e^-100 ≈ 3.72e-44.
    const sub: [1]f32 = expVec(1, .{-100.0});
    try expectClose(sub[0], @floatCast(@exp(@as(f64, -100))), 0.05, 0);
}

test "siluMulRow and geluTanhMulRow match the f64 reference; scalar forms agree bitwise" {
    var prng = std.Random.DefaultPrng.init(4);
    const rng = prng.random();
    for (test_lengths) |n| {
        const g = try randomBuf(rng, n, -12, 12);
        defer testing.allocator.free(g);
        const u = try randomBuf(rng, n, -3, 3);
        defer testing.allocator.free(u);
        const out = try randomBuf(rng, n, 0, 0);
        defer testing.allocator.free(out);
        const ref = try randomBuf(rng, n, 0, 0);
        defer testing.allocator.free(ref);

        siluMulRow(g.ptr, u.ptr, out.ptr, n);
        siluMulRowRef(g.ptr, u.ptr, ref.ptr, n);
        // exp error ~2e-7 plus 3 roundings; abs term for results that underflow.
        for (0..n) |i| try expectClose(out[i], ref[i], 1e-6, 1e-37);
        for (0..n) |i| try testing.expectEqual(silu(g[i]) * u[i], out[i]);
        try expectGuard(out, n);

        geluTanhMulRow(g.ptr, u.ptr, out.ptr, n);
        geluTanhMulRowRef(g.ptr, u.ptr, ref.ptr, n);
        for (0..n) |i| {
            // The f32 rounding of the exp argument a (|a| up to ~170 here) is amplified by |a|
            // in e^a: relative error ≤ ~1.5e-7·(4 + |a|) when g ≪ 0.
            const a = 1.6 * @abs(g[i]) * (1 + 0.045 * g[i] * g[i]);
            try expectClose(out[i], ref[i], 1.5e-7 * (4 + a), 1e-37);
            try testing.expectEqual(geluTanh(g[i]) * u[i], out[i]);
        }
        try expectGuard(out, n);
    }
}

test "silu and geluTanh known values" {
    try testing.expectEqual(@as(f32, 0), silu(0));
    try expectClose(silu(1), 0.7310585786300049, 3e-7, 0);
    try expectClose(silu(-20), -20.0 / (1.0 + 4.851651954097903e8), 3e-7, 0);
    try expectClose(geluTanh(1), 0.8411919906082768, 3e-7, 0);
    try expectClose(geluTanh(-3), -0.0036373920817729943, 2e-6, 0);
    try testing.expectEqual(@as(f32, 100), geluTanh(100));
    try testing.expect(geluTanh(-100) == 0);
}
