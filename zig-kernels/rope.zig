//! Rotary position embedding, in place, for every head of every row.
//!
//! Pair k (k < n_rot/2) of a head is rotated by θ_k = freq_scale · pos · base^(-2k/n_rot) / ff[k]:
//!   normal (ggml mode 0, llama): the pair is (x[2k], x[2k+1]);
//!   neox   (ggml mode 2, qwen2, gemma3): the pair is (x[k], x[k + n_rot/2]).
//! Dimensions at or beyond n_rot are left untouched.
//!
//! Computation order follows ggml's CPU rope (ops.cpp, ggml_rope_cache_init + rope_yarn with
//! ext_factor 0, mscale 1), all in f32: theta_scale = powf(base, -2.0f/n_rot); θ starts at
//! (float)pos and is multiplied by theta_scale once per pair; the angle is
//! freq_scale · (θ / ff[k]); then x0·cos − x1·sin and x0·sin + x1·cos. So results agree with
//! llama.cpp to float rounding (powf/cosf/sinf are taken as the correctly rounded f32 of an f64
//! evaluation, which glibc's < 1 ulp versions match except in rare last-bit cases).
const std = @import("std");
const pool = @import("pool.zig");
const assert = std.debug.assert;

pub const RopeMode = enum(u32) { normal = 0, neox = 2 };

/// Largest n_rot supported (the per-row cos/sin cache lives on the stack: 2 × 4 KiB).
pub const max_rot = 1024;

const vec_len = std.simd.suggestVectorLength(f32) orelse 4;
const V = @Vector(vec_len, f32);
/// Below this many rotated elements per task, waking pool workers costs more than it saves.
const min_task_elems = 16 * 1024;

/// Swaps adjacent lanes (0↔1, 2↔3, ...): the partner of each element in a normal-mode pair.
const swap_pairs_mask: @Vector(vec_len, i32) = blk: {
    var m: [vec_len]i32 = undefined;
    for (&m, 0..) |*e, i| e.* = @as(i32, @intCast(i)) ^ 1;
    break :blk m;
};

const Args = struct {
    x: [*]f32,
    n_head: usize,
    row_stride: usize,
    head_stride: usize,
    positions: [*]const i32,
    n_rot: usize,
    mode: RopeMode,
    theta_scale: f32,
    freq_scale: f32,
    freq_factors: ?[*]const f32,
};

/// Rotates the first n_rot dims of each head in place. Row r, head h starts at
/// x[r·row_stride + h·head_stride] and uses position positions[r]. cos/sin are computed once per
/// (row, pair) and reused by every head. Rows are spread over the pool when there are many.
pub fn rope(x: [*]f32, n_rows: usize, n_head: usize, head_dim: usize, row_stride: usize, head_stride: usize, positions: [*]const i32, n_rot: usize, mode: RopeMode, freq_base: f32, freq_scale: f32, freq_factors: ?[*]const f32) void {
    assert(n_rot % 2 == 0 and n_rot <= head_dim and n_rot <= max_rot);
    assert(n_head <= 1 or head_stride >= head_dim);
    assert(n_rows <= 1 or n_head == 0 or row_stride >= (n_head - 1) * head_stride + head_dim);
    assert(freq_base > 0);
    if (n_rot == 0 or n_head == 0 or n_rows == 0) return;
    const args = Args{
        .x = x,
        .n_head = n_head,
        .row_stride = row_stride,
        .head_stride = head_stride,
        .positions = positions,
        .n_rot = n_rot,
        .mode = mode,
        .theta_scale = thetaScale(freq_base, n_rot),
        .freq_scale = freq_scale,
        .freq_factors = freq_factors,
    };
    if (n_rows == 1) return ropeRow(args, 0);
    const Task = struct { a: Args, n_rows: usize, n_tasks: usize };
    const run = struct {
        fn f(t: Task, i: usize) void {
            const r = pool.splitRange(t.n_rows, t.n_tasks, i);
            for (r.start..r.end) |row| ropeRow(t.a, row);
        }
    }.f;
    const n_tasks = pool.taskCount(n_rows, @max(1, min_task_elems / (n_head * n_rot)));
    pool.parallelFor(n_tasks, Task{ .a = args, .n_rows = n_rows, .n_tasks = n_tasks }, run);
}

/// ggml's powf(base, -2.0f/n_rot): the exponent is rounded to f32 first, as in C.
fn thetaScale(freq_base: f32, n_rot: usize) f32 {
    const e: f32 = -2.0 / @as(f32, @floatFromInt(n_rot));
    return @floatCast(std.math.pow(f64, freq_base, e));
}

/// cosf/sinf as the nearest f32 to the f64 result.
inline fn cosSin(angle: f32) [2]f32 {
    const a: f64 = angle;
    return .{ @floatCast(@cos(a)), @floatCast(@sin(a)) };
}

fn ropeRow(a: Args, r: usize) void {
    var cs: [table_floats_per_rot * max_rot]f32 = undefined;
    tableRow(a.positions[r], a.n_rot, a.mode, a.theta_scale, a.freq_scale, a.freq_factors, &cs);
    applyRow(a.x + r * a.row_stride, a.n_head, a.head_stride, a.n_rot, a.mode, &cs);
}

/// One row's cos/sin table (2·n_rot floats: cos entries, then sin entries). normal: cos/sin
/// expanded to one entry per element, with the sign of sin folded in, so a pair rotates as
/// x·c + swap(x)·s. neox: one entry per pair (the first n_rot/2 of each half).
fn tableRow(pos: i32, n_rot: usize, mode: RopeMode, theta_scale: f32, freq_scale: f32, freq_factors: ?[*]const f32, out: [*]f32) void {
    const cos_buf = out;
    const sin_buf = out + n_rot;
    const half = n_rot / 2;
    var theta: f32 = @floatFromInt(pos);
    for (0..half) |k| {
        const ff: f32 = if (freq_factors) |f| f[k] else 1.0;
        const cs = cosSin(freq_scale * (theta / ff));
        switch (mode) {
            .normal => {
                cos_buf[2 * k] = cs[0];
                cos_buf[2 * k + 1] = cs[0];
                sin_buf[2 * k] = -cs[1];
                sin_buf[2 * k + 1] = cs[1];
            },
            .neox => {
                cos_buf[k] = cs[0];
                sin_buf[k] = cs[1];
            },
        }
        theta *= theta_scale;
    }
}

/// Rotates every head of one row with its table row (tableRow's layout).
fn applyRow(row: [*]f32, n_head: usize, head_stride: usize, n_rot: usize, mode: RopeMode, cs: [*]const f32) void {
    for (0..n_head) |h| {
        const p = row + h * head_stride;
        switch (mode) {
            .normal => rotateNormal(p, cs, cs + n_rot, n_rot),
            .neox => rotateNeox(p, cs, cs + n_rot, n_rot / 2),
        }
    }
}

/// Floats of a rope table row per rotated dimension: its cos entries, then its sin entries
/// (exported as a kernel limit: the binding sizes and checks tables with it).
pub const table_floats_per_rot = 2;

/// Floats of one row of a rope table (ropeTable).
pub fn tableRowFloats(n_rot: usize) usize {
    return table_floats_per_rot * n_rot;
}

/// The cos/sin of every (row, pair) of `rope` at these positions into `table` (n_rows rows of
/// tableRowFloats(n_rot)): a forward pass rotates Q and K of every layer at the same positions,
/// so it computes them once (the same values rope computes per call) and applies them with
/// ropeApply, bit for bit what rope gives.
pub fn ropeTable(positions: [*]const i32, n_rows: usize, n_rot: usize, mode: RopeMode, freq_base: f32, freq_scale: f32, freq_factors: ?[*]const f32, table: [*]f32) void {
    assert(n_rot % 2 == 0 and n_rot <= max_rot and freq_base > 0);
    if (n_rot == 0 or n_rows == 0) return;
    const T = struct { positions: [*]const i32, n_rows: usize, n_tasks: usize, n_rot: usize, mode: RopeMode, theta_scale: f32, freq_scale: f32, ff: ?[*]const f32, table: [*]f32 };
    const run = struct {
        fn f(t: T, i: usize) void {
            const r = pool.splitRange(t.n_rows, t.n_tasks, i);
            for (r.start..r.end) |row| tableRow(t.positions[row], t.n_rot, t.mode, t.theta_scale, t.freq_scale, t.ff, t.table + row * tableRowFloats(t.n_rot));
        }
    }.f;
    // A (row, pair) costs a sin and a cos in f64: about as much as rotating 64 elements.
    const n_tasks = pool.taskCount(n_rows, @max(1, min_task_elems / (32 * n_rot)));
    const t = T{ .positions = positions, .n_rows = n_rows, .n_tasks = n_tasks, .n_rot = n_rot, .mode = mode, .theta_scale = thetaScale(freq_base, n_rot), .freq_scale = freq_scale, .ff = freq_factors, .table = table };
    if (n_tasks <= 1) return run(t, 0);
    pool.parallelFor(n_tasks, t, run);
}

/// rope with the cos/sin of ropeTable (built for these rows' positions, n_rot and mode).
pub fn ropeApply(x: [*]f32, n_rows: usize, n_head: usize, head_dim: usize, row_stride: usize, head_stride: usize, n_rot: usize, mode: RopeMode, table: [*]const f32) void {
    assert(n_rot % 2 == 0 and n_rot <= head_dim and n_rot <= max_rot);
    assert(n_head <= 1 or head_stride >= head_dim);
    assert(n_rows <= 1 or n_head == 0 or row_stride >= (n_head - 1) * head_stride + head_dim);
    if (n_rot == 0 or n_head == 0 or n_rows == 0) return;
    const T = struct { x: [*]f32, n_rows: usize, n_tasks: usize, n_head: usize, row_stride: usize, head_stride: usize, n_rot: usize, mode: RopeMode, table: [*]const f32 };
    const run = struct {
        fn f(t: T, i: usize) void {
            const r = pool.splitRange(t.n_rows, t.n_tasks, i);
            for (r.start..r.end) |row| applyRow(t.x + row * t.row_stride, t.n_head, t.head_stride, t.n_rot, t.mode, t.table + row * tableRowFloats(t.n_rot));
        }
    }.f;
    const n_tasks = pool.taskCount(n_rows, @max(1, min_task_elems / (n_head * n_rot)));
    const t = T{ .x = x, .n_rows = n_rows, .n_tasks = n_tasks, .n_head = n_head, .row_stride = row_stride, .head_stride = head_stride, .n_rot = n_rot, .mode = mode, .table = table };
    if (n_tasks <= 1) return run(t, 0);
    pool.parallelFor(n_tasks, t, run);
}

/// out[2k] = x0·c − x1·s, out[2k+1] = x0·s + x1·c, with sin_e[2k] = −s (negation is exact, so
/// x0·c + x1·(−s) rounds exactly like ggml's x0·c − x1·s).
fn rotateNormal(p: [*]f32, cos_e: [*]const f32, sin_e: [*]const f32, n_rot: usize) void {
    var i: usize = 0;
    while (i + vec_len <= n_rot) : (i += vec_len) {
        const v: V = p[i..][0..vec_len].*;
        const swapped = @shuffle(f32, v, undefined, swap_pairs_mask);
        const c: V = cos_e[i..][0..vec_len].*;
        const s: V = sin_e[i..][0..vec_len].*;
        p[i..][0..vec_len].* = v * c + swapped * s;
    }
    while (i < n_rot) : (i += 2) {
        const x0 = p[i];
        const x1 = p[i + 1];
        p[i] = x0 * cos_e[i] + x1 * sin_e[i];
        p[i + 1] = x1 * cos_e[i + 1] + x0 * sin_e[i + 1];
    }
}

/// lo = x_lo·c − x_hi·s, hi = x_lo·s + x_hi·c over the two halves of the rotated dims.
fn rotateNeox(p: [*]f32, cos_k: [*]const f32, sin_k: [*]const f32, half: usize) void {
    const hi = p + half;
    var i: usize = 0;
    while (i + vec_len <= half) : (i += vec_len) {
        const x0: V = p[i..][0..vec_len].*;
        const x1: V = hi[i..][0..vec_len].*;
        const c: V = cos_k[i..][0..vec_len].*;
        const s: V = sin_k[i..][0..vec_len].*;
        p[i..][0..vec_len].* = x0 * c - x1 * s;
        hi[i..][0..vec_len].* = x0 * s + x1 * c;
    }
    while (i < half) : (i += 1) {
        const x0 = p[i];
        const x1 = hi[i];
        p[i] = x0 * cos_k[i] - x1 * sin_k[i];
        hi[i] = x0 * sin_k[i] + x1 * cos_k[i];
    }
}

/// Reference: the formula evaluated directly in f64 (θ from pow, not the f32 recurrence),
/// rounded to f32 once per element.
pub fn ropeRef(x: [*]f32, n_rows: usize, n_head: usize, head_dim: usize, row_stride: usize, head_stride: usize, positions: [*]const i32, n_rot: usize, mode: RopeMode, freq_base: f32, freq_scale: f32, freq_factors: ?[*]const f32) void {
    assert(n_rot % 2 == 0 and n_rot <= head_dim);
    const half = n_rot / 2;
    for (0..n_rows) |r| for (0..n_head) |h| {
        const p = x + r * row_stride + h * head_stride;
        for (0..half) |k| {
            const ff: f64 = if (freq_factors) |f| f[k] else 1.0;
            const expo = -2.0 * @as(f64, @floatFromInt(k)) / @as(f64, @floatFromInt(n_rot));
            const theta = @as(f64, freq_scale) * @as(f64, @floatFromInt(positions[r])) * std.math.pow(f64, freq_base, expo) / ff;
            const idx0 = if (mode == .normal) 2 * k else k;
            const idx1 = if (mode == .normal) 2 * k + 1 else k + half;
            const x0: f64 = p[idx0];
            const x1: f64 = p[idx1];
            p[idx0] = @floatCast(x0 * @cos(theta) - x1 * @sin(theta));
            p[idx1] = @floatCast(x0 * @sin(theta) + x1 * @cos(theta));
        }
    };
}

// ---- tests -----------------------------------------------------------------------------------

const testing = std.testing;

/// A literal scalar transcription of ggml's f32 loop (cache recomputed per head), used to check
/// that the vectorized kernel rounds exactly like it.
fn ropeGgmlScalar(x: [*]f32, n_rows: usize, n_head: usize, row_stride: usize, head_stride: usize, positions: [*]const i32, n_rot: usize, mode: RopeMode, freq_base: f32, freq_scale: f32, freq_factors: ?[*]const f32) void {
    const theta_scale = thetaScale(freq_base, n_rot);
    for (0..n_rows) |r| for (0..n_head) |h| {
        const p = x + r * row_stride + h * head_stride;
        var theta: f32 = @floatFromInt(positions[r]);
        for (0..n_rot / 2) |k| {
            const ff: f32 = if (freq_factors) |f| f[k] else 1.0;
            const cs = cosSin(freq_scale * (theta / ff));
            const off: usize = if (mode == .normal) 1 else n_rot / 2;
            const base: usize = if (mode == .normal) 2 * k else k;
            const x0 = p[base];
            const x1 = p[base + off];
            p[base] = x0 * cs[0] - x1 * cs[1];
            p[base + off] = x0 * cs[1] + x1 * cs[0];
            theta *= theta_scale;
        }
    };
}

const Shape = struct { n_rows: usize, n_head: usize, head_dim: usize, n_rot: usize };

fn layoutLen(s: Shape) struct { head_stride: usize, row_stride: usize, len: usize } {
    // Gaps between heads and rows, so writes outside a head's n_rot dims are caught.
    const head_stride = s.head_dim + 2;
    const row_stride = s.n_head * head_stride + 3;
    return .{ .head_stride = head_stride, .row_stride = row_stride, .len = s.n_rows * row_stride + 8 };
}

/// Runs rope, the ggml transcription and the f64 reference on the same random input, and
/// checks: bit-equality with ggml's order; the reference within ggml's own θ error; every
/// element outside the rotated dims unchanged.
fn checkShape(rng: std.Random, s: Shape, mode: RopeMode, base: f32, scale: f32, with_ff: bool) !void {
    const l = layoutLen(s);
    const a = testing.allocator;
    const x0 = try a.alloc(f32, l.len);
    defer a.free(x0);
    for (x0) |*v| v.* = 2 * rng.float(f32) - 1;
    const pos = try a.alloc(i32, s.n_rows);
    defer a.free(pos);
    for (pos, 0..) |*p, i| p.* = if (i == 0) 0 else rng.intRangeAtMost(i32, -5, 20000);
    var ff: [max_rot / 2]f32 = undefined;
    for (&ff) |*f| f.* = 1 + 7 * rng.float(f32);
    const ffp: ?[*]const f32 = if (with_ff) &ff else null;

    const got = try a.dupe(f32, x0);
    defer a.free(got);
    const ggml = try a.dupe(f32, x0);
    defer a.free(ggml);
    const ref = try a.dupe(f32, x0);
    defer a.free(ref);
    rope(got.ptr, s.n_rows, s.n_head, s.head_dim, l.row_stride, l.head_stride, pos.ptr, s.n_rot, mode, base, scale, ffp);
    ropeGgmlScalar(ggml.ptr, s.n_rows, s.n_head, l.row_stride, l.head_stride, pos.ptr, s.n_rot, mode, base, scale, ffp);
    ropeRef(ref.ptr, s.n_rows, s.n_head, s.head_dim, l.row_stride, l.head_stride, pos.ptr, s.n_rot, mode, base, scale, ffp);
    try testing.expectEqualSlices(f32, ggml, got);
    try checkAgainstRef(s, l.row_stride, l.head_stride, x0, got, ref, pos, mode, base, scale, ffp);

    // The table once, then applied: rope's bits, and nothing written past the table's rows.
    const guard = 16;
    const table = try a.alloc(f32, s.n_rows * tableRowFloats(s.n_rot) + guard);
    defer a.free(table);
    @memset(table, -7777.25);
    ropeTable(pos.ptr, s.n_rows, s.n_rot, mode, base, scale, ffp, table.ptr);
    for (table[s.n_rows * tableRowFloats(s.n_rot) ..]) |g| try testing.expectEqual(@as(f32, -7777.25), g);
    const applied = try a.dupe(f32, x0);
    defer a.free(applied);
    ropeApply(applied.ptr, s.n_rows, s.n_head, s.head_dim, l.row_stride, l.head_stride, s.n_rot, mode, table.ptr);
    try testing.expectEqualSlices(f32, got, applied);
}

fn checkAgainstRef(s: Shape, row_stride: usize, head_stride: usize, x0: []const f32, got: []const f32, ref: []const f32, pos: []const i32, mode: RopeMode, base: f32, scale: f32, ffp: ?[*]const f32) !void {
    for (got, 0..) |v, i| {
        const in_row = i % row_stride;
        const in_head = in_row % head_stride;
        const rotated = i < s.n_rows * row_stride and in_row < s.n_head * head_stride and in_head < s.n_rot;
        if (!rotated) {
            try testing.expectEqual(x0[i], v); // tails, gaps and guards are untouched
            continue;
        }
        const r = i / row_stride;
        const k = if (mode == .normal) in_head / 2 else in_head % (s.n_rot / 2);
        const ff: f64 = if (ffp) |f| f[k] else 1.0;
        const theta = @abs(@as(f64, scale) * @as(f64, @floatFromInt(pos[r])) * std.math.pow(f64, base, -2.0 * @as(f64, @floatFromInt(k)) / @as(f64, @floatFromInt(s.n_rot))) / ff);
        // ggml's f32 θ recurrence drifts by ~1 rounding per multiplication: relative error of θ
        // ≤ (k + 4)·1.2e-7; plus ~4 roundings in cos/sin and the rotation. |x| ≤ 1, so the
        // rotated value moves by at most 2·Δθ.
        const tol = 2 * theta * @as(f64, @floatFromInt(k + 4)) * 1.2e-7 + 1e-6;
        const err = @abs(@as(f64, v) - @as(f64, ref[i]));
        if (err > tol) {
            std.debug.print("i {} k {} theta {d} got {e} ref {e} tol {e}\n", .{ i, k, theta, v, ref[i], tol });
            return error.TestExpectedApproxEq;
        }
    }
}

test "rope matches ggml's f32 order exactly and the f64 reference within θ error" {
    var prng = std.Random.DefaultPrng.init(11);
    const rng = prng.random();
    _ = pool.setThreads(1);
    for ([_]usize{ 2, 4, 6, 8, 14, 16, 18, 34, 64, 100, 128, 256 }) |hd| {
        for ([_]usize{ hd, hd / 2 - (hd / 2) % 2 }) |n_rot| {
            for ([_]RopeMode{ .normal, .neox }) |mode| {
                const s = Shape{ .n_rows = 3, .n_head = 3, .head_dim = hd, .n_rot = n_rot };
                try checkShape(rng, s, mode, 10000, 1, false);
                try checkShape(rng, s, mode, 1e6, 0.125, true);
                try checkShape(rng, s, mode, 500000, 1, true);
            }
        }
    }
    _ = pool.setThreads(2);
}

test "rope over many rows is the same at 1 and 3 threads" {
    var prng = std.Random.DefaultPrng.init(12);
    const rng = prng.random();
    for ([_]usize{ 1, 3 }) |threads| {
        _ = pool.setThreads(threads);
        for ([_]RopeMode{ .normal, .neox }) |mode| {
            // 8 heads × 128 rotated dims: 16 rows a task, so 97 rows make several tasks.
            try checkShape(rng, .{ .n_rows = 97, .n_head = 8, .head_dim = 128, .n_rot = 128 }, mode, 10000, 1, false);
            try checkShape(rng, .{ .n_rows = 97, .n_head = 8, .head_dim = 160, .n_rot = 96 }, mode, 1e6, 1, true);
        }
    }
    _ = pool.setThreads(2);
}

test "rope at position 0 is the identity" {
    var x: [3 * 64]f32 = undefined;
    for (&x, 0..) |*v, i| v.* = @floatFromInt(i);
    const before = x;
    const pos = [_]i32{0};
    rope(&x, 1, 3, 64, 3 * 64, 64, &pos, 64, .normal, 10000, 1, null);
    try testing.expectEqualSlices(f32, &before, &x);
    rope(&x, 1, 3, 64, 3 * 64, 64, &pos, 32, .neox, 10000, 1, null);
    try testing.expectEqualSlices(f32, &before, &x);
}

test "rope hand-computed values, head_dim 4, pos 1, base 10000" {
    // Pair 0 turns by 1 rad, pair 1 by 10000^(-1/2) = 0.01 rad.
    const c1: f32 = 0.5403023058681398;
    const s1: f32 = 0.8414709848078965;
    const c2: f32 = 0.9999500004166653;
    const s2: f32 = 0.009999833334166664;
    const pos = [_]i32{1};
    // normal: pairs (0,1) and (2,3).
    var a = [_]f32{ 1, 0, 0, 1 };
    rope(&a, 1, 1, 4, 4, 4, &pos, 4, .normal, 10000, 1, null);
    for (a, [_]f32{ c1, s1, -s2, c2 }) |got, want| try testing.expectApproxEqAbs(want, got, 2e-7);
    // neox: pairs (0,2) and (1,3).
    var b = [_]f32{ 1, 0, 0, 1 };
    rope(&b, 1, 1, 4, 4, 4, &pos, 4, .neox, 10000, 1, null);
    for (b, [_]f32{ c1, -s2, s1, c2 }) |got, want| try testing.expectApproxEqAbs(want, got, 2e-7);
    // freq_scale 0.5 and a freq factor of 2 on pair 0: 1 rad · 0.5 / 2 = 0.25 rad.
    var c = [_]f32{ 1, 0, 0, 0 };
    const ff = [_]f32{ 2, 1 };
    rope(&c, 1, 1, 4, 4, 4, &pos, 4, .normal, 10000, 0.5, &ff);
    try testing.expectApproxEqAbs(@as(f32, @floatCast(@cos(0.25))), c[0], 2e-7);
    try testing.expectApproxEqAbs(@as(f32, @floatCast(@sin(0.25))), c[1], 2e-7);
}

test "normal and neox differ exactly in the pairing" {
    // Moving element 2k to k and 2k+1 to k+n_rot/2 turns normal pairs into neox pairs, so
    // neox on the permuted head equals the permuted result of normal, bit for bit.
    const hd = 40;
    const n_rot = 24;
    var prng = std.Random.DefaultPrng.init(13);
    const rng = prng.random();
    var x: [hd]f32 = undefined;
    for (&x) |*v| v.* = 2 * rng.float(f32) - 1;
    var y = x;
    for (0..n_rot / 2) |k| {
        y[k] = x[2 * k];
        y[k + n_rot / 2] = x[2 * k + 1];
    }
    const pos = [_]i32{1234};
    rope(&x, 1, 1, hd, hd, hd, &pos, n_rot, .normal, 10000, 1, null);
    rope(&y, 1, 1, hd, hd, hd, &pos, n_rot, .neox, 10000, 1, null);
    for (0..n_rot / 2) |k| {
        try testing.expectEqual(x[2 * k], y[k]);
        try testing.expectEqual(x[2 * k + 1], y[k + n_rot / 2]);
    }
    try testing.expectEqualSlices(f32, x[n_rot..], y[n_rot..]);
}
