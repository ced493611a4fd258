//! The AMX kernel's speed on the machine it runs on, in int8 multiply-adds per ns (MAC/ns), next
//! to what the tile unit and AVX-512 VNNI do alone. Not part of the library: a measurement tool
//! for machines with AMX (the 2-core CI machine has none), built and run by scripts/gpu-check.sh
//! (a GPU machine's host is often an AMX Xeon):
//!
//!   bash scripts/zig.sh build-exe zig-kernels/amx_probe.zig -O ReleaseFast \
//!     -mcpu=x86_64_v4+avx512vnni -femit-bin=amx-probe && ./amx-probe
//!
//! Every kernel it times is first compared with the emulated kernel, bit for bit ("MISMATCH"
//! otherwise). Where AMX is not usable it says why and stops.
const std = @import("std");
const amx = @import("amx.zig");
const quant = @import("quant.zig");
const Hw = amx.Hw;

/// Palette 1 with K bytes per A row: B tiles K/4 rows × 64 bytes, A and C tiles 16 × K / 16 × 64.
fn configK(comptime kb: usize) amx.TileConfig {
    var c: amx.TileConfig = .{ .palette = 1 };
    for (0..2) |g| {
        c.rows[g] = kb / 4;
        c.colsb[g] = 64;
        c.rows[2 + g] = 16;
        c.colsb[2 + g] = kb;
    }
    for (4..8) |g| {
        c.rows[g] = 16;
        c.colsb[g] = 64;
    }
    return c;
}

var tile_src: [16 * 64]u8 align(64) = undefined;
var tile_dst: [16][16]i32 align(64) = undefined;

/// The tile unit's timed work: four independent TDPBSSDs on resident tiles (A tmm2, tmm3 ×
/// B tmm0, tmm1 → C tmm4..tmm7), after loading the operands from tile_src (64 bytes apart).
fn loadOperands(comptime Tiles: type, t: *Tiles) void {
    inline for (0..4) |i| t.load(i, &tile_src, 64);
}
fn fourProducts(comptime Tiles: type, t: *Tiles) void {
    t.dpbssd(4, 2, 0);
    t.dpbssd(5, 2, 1);
    t.dpbssd(6, 3, 0);
    t.dpbssd(7, 3, 1);
}

/// Four independent TDPBSSDs per iteration on resident tiles: the tile unit's own rate.
fn tileUnitRate(comptime kb: usize, iters: usize) f64 {
    const cfg: amx.TileConfig align(64) = configK(kb);
    var t = Hw.init(&cfg);
    defer t.release();
    loadOperands(Hw, &t);
    var timer = std.time.Timer.start() catch unreachable;
    for (0..iters) |_| fourProducts(Hw, &t);
    t.store(4, @ptrCast(&tile_dst), 64);
    const ns: f64 = @floatFromInt(timer.read());
    return @as(f64, @floatFromInt(iters * 4 * 16 * 16 * kb)) / ns;
}

/// Eight independent 512-bit VPDPBUSDs per iteration: AVX-512 VNNI's own rate.
fn vnniRate(iters: usize) f64 {
    var timer = std.time.Timer.start() catch unreachable;
    for (0..iters) |_| {
        asm volatile (
            \\vpdpbusd %%zmm1, %%zmm2, %%zmm8
            \\vpdpbusd %%zmm1, %%zmm2, %%zmm9
            \\vpdpbusd %%zmm1, %%zmm2, %%zmm10
            \\vpdpbusd %%zmm1, %%zmm2, %%zmm11
            \\vpdpbusd %%zmm1, %%zmm2, %%zmm12
            \\vpdpbusd %%zmm1, %%zmm2, %%zmm13
            \\vpdpbusd %%zmm1, %%zmm2, %%zmm14
            \\vpdpbusd %%zmm1, %%zmm2, %%zmm15
            ::: .{ .zmm8 = true, .zmm9 = true, .zmm10 = true, .zmm11 = true, .zmm12 = true, .zmm13 = true, .zmm14 = true, .zmm15 = true });
    }
    const ns: f64 = @floatFromInt(timer.read());
    return @as(f64, @floatFromInt(iters * 8 * 64)) / ns;
}

const k = 2048;
const n = 32;

/// One kernel problem: 32 weight rows × k of type t and 64 activation rows, seeded.
fn Problem(comptime t: quant.GgmlType) type {
    return struct {
        const rb = quant.rowBytes(t, k);
        const ab = quant.actRowBytes(t, k);
        w: [n * rb]u8 = undefined,
        xq: [64 * ab + 64]u8 = undefined,

        fn init(p: *@This()) void {
            var prng = std.Random.DefaultPrng.init(@intFromEnum(t) + 1);
            const rng = prng.random();
            var x: [k]f32 = undefined;
            for (0..n) |j| {
                for (&x) |*v| v.* = rng.floatNorm(f32);
                _ = quant.quantizeRow(t, &x, p.w[j * rb ..].ptr, k);
            }
            for (0..64) |i| {
                for (&x) |*v| v.* = rng.floatNorm(f32);
                quant.quantizeActivations(t, &x, k, 1, k, p.xq[i * ab ..].ptr);
            }
        }

        /// MAC/ns of `reps` kernel calls on m activation rows, after checking Hw against Emu.
        fn rate(p: *const @This(), m: usize, reps: usize) f64 {
            var y: [64 * n]f32 = undefined;
            var want: [64 * n]f32 = undefined;
            amx.kernel(amx.Hw, t, &p.w, rb, k, &p.xq, ab, m, n, &y, n, &.{});
            amx.kernel(amx.Emu, t, &p.w, rb, k, &p.xq, ab, m, n, &want, n, &.{});
            if (!std.mem.eql(u8, std.mem.sliceAsBytes(y[0 .. m * n]), std.mem.sliceAsBytes(want[0 .. m * n])))
                std.debug.print("MISMATCH: {s} m={d}, the hardware kernel differs from the emulated one\n", .{ @tagName(t), m });
            var timer = std.time.Timer.start() catch unreachable;
            for (0..reps) |_| amx.kernel(amx.Hw, t, &p.w, rb, k, &p.xq, ab, m, n, &y, n, &.{});
            const ns: f64 = @floatFromInt(timer.read());
            return @as(f64, @floatFromInt(reps * m * n * k)) / ns;
        }
    };
}

/// A seeded Problem of type t on the heap (the caller destroys it with the page allocator).
fn newProblem(comptime t: quant.GgmlType) !*Problem(t) {
    const p = try std.heap.page_allocator.create(Problem(t));
    p.* = .{};
    p.init();
    return p;
}

/// Stand-in B tiles: any bytes serve a timing (the products are not checked).
fn fillPackedB(b: anytype) void {
    for (b, 0..) |*s, i| for (s, 0..) |*g, j| for (g, 0..) |*v, o| {
        v.* = @truncate(i *% 31 +% j *% 7 +% o);
    };
}

/// The parts of the kernel's per-sub-block work at m = 16 (one A tile, both B tiles, K = 32),
/// each cumulative on the one before, in ns per sub-block over 64 sub-blocks (k = 2048): where
/// the ~400 ns a sub-block cost on Emerald Rapids go. A rows come from Q8_0 activation rows
/// (their real stride), B tiles from a 32 KB packed chunk, C tiles are read back in place.
fn subBlockParts() !void {
    const P = Problem(.q8_0);
    const p = try newProblem(.q8_0);
    defer std.heap.page_allocator.destroy(p);
    var packed_b: [32][2][512]u8 align(64) = undefined;
    fillPackedB(&packed_b);
    var cbuf: [2][16][16]i32 align(64) = undefined;
    const names = [_][]const u8{ "tile loads (A 16 × 32 B at the activation stride, 2 B)", "+ tilezero and 2 tdpbssd", "+ 2 tilestored", "+ the 32 stored rows read back (cvt, add)" };
    const blocks = k / 32;
    const reps = 2000;
    inline for (0..4) |part| {
        const cfg: amx.TileConfig align(64) = amx.config;
        var t = Hw.init(&cfg);
        var acc: [16][2]@Vector(16, f32) = @splat(.{ @splat(0), @splat(0) });
        var timer = try std.time.Timer.start();
        for (0..reps) |_| {
            for (0..blocks) |b| {
                t.load(2, p.xq[b * (P.ab / blocks) + 8 ..].ptr, P.ab);
                t.load(0, &packed_b[b % 32][0], 64);
                t.load(1, &packed_b[b % 32][1], 64);
                if (part >= 1) {
                    t.zero(4);
                    t.dpbssd(4, 2, 0);
                    t.zero(5);
                    t.dpbssd(5, 2, 1);
                }
                if (part >= 2) {
                    t.store(4, @ptrCast(&cbuf[0]), 64);
                    t.store(5, @ptrCast(&cbuf[1]), 64);
                }
                if (part >= 3) {
                    // Each row through a pointer: indexing the array value made LLVM copy it whole.
                    for (0..16) |r| inline for (0..2) |g| {
                        const row: *const [16]i32 = &cbuf[g][r];
                        acc[r][g] += @as(@Vector(16, f32), @floatFromInt(@as(@Vector(16, i32), row.*)));
                    };
                }
            }
        }
        const ns: f64 = @floatFromInt(timer.read());
        t.release();
        var sum: f32 = 0;
        for (acc) |a| sum += @reduce(.Add, a[0]) + @reduce(.Add, a[1]);
        std.mem.doNotOptimizeAway(sum);
        std.debug.print("sub-block parts, m = 16: {s}: {d:.0} ns per sub-block\n", .{ names[part], ns / @as(f64, @floatFromInt(reps * blocks)) });
    }
}

/// Whether the legacy epilogue overlaps the tile work: per Q8_0 block at m = 16 (one A tile, two
/// B tiles, two products and stores into one of two buffers), the tile work alone, the epilogue
/// alone (the kernel's: per row, acc += (d_w·d_a)·sumi for both C tiles of the block before),
/// both in the kernel's order, and both with the row's d_a a constant (so d_w·d_a leaves the
/// row loop: no d_a load and two fewer multiplies per row). If the two sides overlapped, "both" would cost about
/// the larger of the two alone.
fn epilogueOverlap() !void {
    const P = Problem(.q8_0);
    const p = try newProblem(.q8_0);
    defer std.heap.page_allocator.destroy(p);
    const blocks = k / 32;
    const S = struct {
        packed_b: [blocks][2][512]u8 align(64) = undefined,
        cbuf: [2][2][16][16]i32 align(64) = @splat(@splat(@splat(@splat(1)))),
        acc: [16][2]@Vector(16, f32) = @splat(.{ @splat(0), @splat(0) }),
        dw: [blocks][2]@Vector(16, f32) = @splat(.{ @splat(0.5), @splat(0.25) }),
    };
    const st = try std.heap.page_allocator.create(S);
    defer std.heap.page_allocator.destroy(st);
    st.* = .{};
    fillPackedB(&st.packed_b);
    const names = [_][]const u8{ "tiles alone", "epilogue alone", "tiles + epilogue", "tiles + epilogue, d_a constant" };
    inline for (0..4) |part| {
        const cfg: amx.TileConfig align(64) = amx.config;
        var t = Hw.init(&cfg);
        const reps = 3000;
        var timer = try std.time.Timer.start();
        for (0..reps) |_| {
            for (0..blocks) |b| {
                if (part != 1) {
                    t.load(2, p.xq[b * 40 + 8 ..].ptr, P.ab);
                    t.load(0, &st.packed_b[b][0], 64);
                    t.load(1, &st.packed_b[b][1], 64);
                    t.zero(4);
                    t.zero(5);
                    t.dpbssd(4, 2, 0);
                    t.dpbssd(5, 2, 1);
                    t.store(4, @ptrCast(&st.cbuf[b & 1][0]), 64);
                    t.store(5, @ptrCast(&st.cbuf[b & 1][1]), 64);
                }
                if (part != 0 and (part == 1 or b > 0)) {
                    const e = if (part == 1) b else b - 1;
                    const cb = &st.cbuf[e & 1];
                    const dw = st.dw[e]; // in registers, as the kernel's d_w
                    for (0..16) |r| {
                        inline for (0..2) |g| {
                            const sumi: @Vector(16, i32) = (&cb[g][r]).*;
                            // d_a constant: d_w·d_a is the same for every row, one multiply fewer per row and tile.
                            const dd = if (part == 3) dw[g] * @as(@Vector(16, f32), @splat(0.5)) else dw[g] * @as(@Vector(16, f32), @splat(@as(*align(1) const f32, @ptrCast(&p.xq[r * P.ab + e * 40])).*));
                            st.acc[r][g] = st.acc[r][g] + dd * @as(@Vector(16, f32), @floatFromInt(sumi));
                        }
                    }
                }
            }
        }
        const ns: f64 = @floatFromInt(timer.read());
        t.release();
        std.debug.print("legacy epilogue overlap, m = 16: {s}: {d:.0} ns per block\n", .{ names[part], ns / @as(f64, @floatFromInt(reps * blocks)) });
    }
    var sum: f32 = 0;
    for (st.acc) |a| sum += @reduce(.Add, a[0]) + @reduce(.Add, a[1]);
    std.mem.doNotOptimizeAway(sum);
}

fn kernelRates(comptime t: quant.GgmlType) !void {
    const P = Problem(t);
    const p = try newProblem(t);
    defer std.heap.page_allocator.destroy(p);
    var two: [2]f64 = undefined;
    const run = struct {
        fn f(q: *const P, r: *f64) void {
            r.* = q.rate(64, 2000);
        }
    }.f;
    const th = try std.Thread.spawn(.{}, run, .{ p, &two[0] });
    run(p, &two[1]);
    th.join();
    std.debug.print("kernel {s}, {d} rows × {d}: 1 thread m=1 {d:.2}, m=16 {d:.1}, m=32 {d:.1}, m=64 {d:.1}; 2 threads m=64 {d:.1} MAC/ns\n", .{
        @tagName(t), n, k, p.rate(1, 2000), p.rate(16, 2000), p.rate(32, 2000), p.rate(64, 2000), two[0] + two[1],
    });
}

pub fn main() !void {
    const status = amx.status();
    std.debug.print("amx status: {s}\n", .{@tagName(status)});
    if (status != .enabled) return;
    for (&tile_src, 0..) |*v, i| v.* = @truncate(i *% 7);
    std.debug.print("vpdpbusd zmm alone: {d:.1} MAC/ns\n", .{vnniRate(2_000_000)});
    std.debug.print("tdpbssd alone, K = 64 bytes: {d:.1}, K = 32: {d:.1} MAC/ns\n", .{ tileUnitRate(64, 1_000_000), tileUnitRate(32, 1_000_000) });
    inline for (amx.types) |t| try kernelRates(t);
    try subBlockParts();
    try epilogueOverlap();
}

// ---------------------------------------------------------------------------------------------
// Tests (every level: the probe's tile work on the emulated tiles against a scalar product)
// ---------------------------------------------------------------------------------------------

test "amx probe: its 32-byte configuration is the kernel's" {
    try std.testing.expectEqual(amx.config, configK(32));
}

test "amx probe: the timed tile work is a legal TDPBSSD sequence and computes C = A·B (int8, scalar reference), K = 64 and 32" {
    for (&tile_src, 0..) |*v, i| v.* = @truncate(i *% 7 +% 3);
    inline for (.{ 64, 32 }) |kb| {
        const cfg: amx.TileConfig align(64) = configK(kb);
        var t = amx.Emu.init(&cfg);
        defer t.release();
        loadOperands(amx.Emu, &t);
        fourProducts(amx.Emu, &t);
        fourProducts(amx.Emu, &t); // C accumulates: twice the product
        t.store(4, @ptrCast(&tile_dst), 64);
        // tmm4 = A (tmm2: rows m of tile_src, kb bytes) × B (tmm0: kb/4 rows of 64 bytes).
        for (0..16) |m| for (0..16) |col| {
            var want: i32 = 0;
            for (0..kb / 4) |k4| for (0..4) |i| {
                const a: i8 = @bitCast(tile_src[m * 64 + 4 * k4 + i]);
                const b: i8 = @bitCast(tile_src[k4 * 64 + 4 * col + i]);
                want += @as(i32, a) * b;
            };
            try std.testing.expectEqual(2 * want, tile_dst[m][col]);
        };
    }
}
