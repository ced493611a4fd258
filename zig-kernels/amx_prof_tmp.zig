const std = @import("std");
const amx = @import("amx.zig");
const quant = @import("quant.zig");
const k = 2048;
const n = 32;
pub fn main() !void {
    const t = comptime quant.GgmlType.q4_0;
    const rb = comptime quant.rowBytes(t, k);
    const ab = comptime quant.actRowBytes(t, k);
    const st = amx.status();
    std.debug.print("{s}\n", .{@tagName(st)});
    const w = try std.heap.page_allocator.alloc(u8, n * rb);
    const xq = try std.heap.page_allocator.alloc(u8, 64 * ab + 64);
    var prng = std.Random.DefaultPrng.init(1);
    const rng = prng.random();
    var x: [k]f32 = undefined;
    for (0..n) |j| {
        for (&x) |*v| v.* = rng.floatNorm(f32);
        _ = quant.quantizeRow(t, &x, w[j * rb ..].ptr, k);
    }
    for (0..64) |i| {
        for (&x) |*v| v.* = rng.floatNorm(f32);
        quant.quantizeActivations(t, &x, k, 1, k, xq[i * ab ..].ptr);
    }
    var y: [64 * n]f32 = undefined;
    const m = try std.fmt.parseInt(usize, std.mem.span(std.os.argv[1]), 10);
    var timer = try std.time.Timer.start();
    const reps: usize = 20000;
    for (0..reps) |_| amx.kernel(amx.Hw, t, w.ptr, rb, k, xq.ptr, ab, m, n, &y, n);
    const ns: f64 = @floatFromInt(timer.read());
    std.debug.print("m={d}: {d:.1} MAC/ns, {d:.1} us/call\n", .{ m, @as(f64, @floatFromInt(reps * m * n * k)) / ns, ns / @as(f64, @floatFromInt(reps)) / 1000 });
}
