//! Preparing the activations the next matmul reads: the fused RMSNorm (optionally after the
//! residual add) that also emits the 8-bit blocks of the weight type that comes next, row by
//! row while the row is still in L1 — so the normalized f32 row is never re-read from memory.
const std = @import("std");
const pool = @import("pool.zig");
const quant = @import("quant.zig");
const norm = @import("norm.zig");

/// Rows at or above this count are split over the pool (prefill); decode stays on one thread.
const min_parallel_rows = 4;

/// For each of `rows` rows (row stride `stride`): x += residual (when given), out = rmsnorm(x)
/// · weight, and when act_type is given act_out[row] = the prepared activations of out.
pub fn rmsNormFused(x: [*]f32, residual: ?[*]const f32, weight: ?[*]const f32, out: [*]f32, n: usize, rows: usize, stride: usize, eps: f32, act_type: ?quant.GgmlType, act_out: ?[*]u8) void {
    const Ctx = struct { x: [*]f32, res: ?[*]const f32, w: ?[*]const f32, out: [*]f32, n: usize, stride: usize, eps: f32, act: ?quant.GgmlType, act_out: ?[*]u8, act_bytes: usize };
    const run = struct {
        fn f(c: Ctx, r: usize) void {
            const xr = c.x + r * c.stride;
            const o = c.out + r * c.stride;
            if (c.res) |res| norm.addRmsNormRow(xr, res + r * c.stride, c.w, o, c.n, c.eps) else norm.rmsNormRow(xr, c.w, o, c.n, c.eps);
            if (c.act) |t| quant.quantizeActivations(t, o, c.n, 1, c.n, c.act_out.? + r * c.act_bytes);
        }
    }.f;
    const act_bytes = if (act_type) |t| quant.actRowBytes(t, n) else 0;
    const ctx = Ctx{ .x = x, .res = residual, .w = weight, .out = out, .n = n, .stride = stride, .eps = eps, .act = act_type, .act_out = act_out, .act_bytes = act_bytes };
    if (rows < min_parallel_rows) {
        for (0..rows) |r| run(ctx, r);
    } else {
        pool.parallelFor(rows, ctx, run);
    }
}

test "fused norm + quantize equals norm then quantize" {
    const a = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(7);
    const rng = prng.random();
    for ([_]usize{ 1, 5 }) |rows| {
        const n: usize = 256 * 3;
        const x = try a.alloc(f32, rows * n);
        defer a.free(x);
        const res = try a.alloc(f32, rows * n);
        defer a.free(res);
        const w = try a.alloc(f32, n);
        defer a.free(w);
        for (x) |*v| v.* = rng.floatNorm(f32);
        for (res) |*v| v.* = rng.floatNorm(f32);
        for (w) |*v| v.* = rng.floatNorm(f32);
        const x2 = try a.dupe(f32, x);
        defer a.free(x2);
        const out = try a.alloc(f32, rows * n);
        defer a.free(out);
        const out2 = try a.alloc(f32, rows * n);
        defer a.free(out2);
        inline for (.{ quant.GgmlType.q4_0, quant.GgmlType.q4_k }) |t| {
            const ab = quant.actRowBytes(t, n) * rows;
            const act = try a.alloc(u8, ab);
            defer a.free(act);
            const act2 = try a.alloc(u8, ab);
            defer a.free(act2);
            @memcpy(x2, x);
            const x1 = try a.dupe(f32, x);
            defer a.free(x1);
            rmsNormFused(x1.ptr, res.ptr, w.ptr, out.ptr, n, rows, n, 1e-6, t, act.ptr);
            for (0..rows) |r| norm.addRmsNormRow(x2[r * n ..].ptr, res[r * n ..].ptr, w.ptr, out2[r * n ..].ptr, n, 1e-6);
            quant.quantizeActivations(t, out2.ptr, n, rows, n, act2.ptr);
            try std.testing.expectEqualSlices(f32, x2, x1);
            try std.testing.expectEqualSlices(f32, out2, out);
            try std.testing.expectEqualSlices(u8, act2, act);
        }
    }
}
