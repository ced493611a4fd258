//! Memory read-bandwidth probe: the number the benchmarks divide matmul throughput by.
//!
//! Every pool thread streams one contiguous slice of the buffer with wide vector loads and
//! sums them (wrapping u64 lanes). The sum is the checksum: it depends on every byte, so the
//! compiler cannot drop the loads, and tests can compare it with a plain scalar loop.
const std = @import("std");
const builtin = @import("builtin");
const pool = @import("pool.zig");
const assert = std.debug.assert;

/// Widest vector the target prefers (16 B SSE2/NEON, 32 B AVX2, 64 B AVX-512), as u64 lanes.
const vec_bytes = std.simd.suggestVectorLength(u8) orelse 16;
const VU = @Vector(vec_bytes / 8, u64);
/// Four independent loads + adds per step keep enough requests in flight for one core.
const step = 4 * vec_bytes;
/// Thread slices start on multiples of this (a page) so each slice is prefetch-friendly and
/// the word grid (multiples of 8 from buf) is the same whatever the thread count.
const slice_align = 4096;

/// The checksum: wrapping sum of the buffer as native-endian u64 words, the last partial word
/// zero-padded. Computed with all pool threads, one contiguous slice each.
pub fn readChecksum(buf: [*]const u8, len: usize) u64 {
    var partial: [pool.max_threads]u64 = undefined;
    const n_tasks = pool.threadCount();
    assert(n_tasks <= pool.max_threads);
    const Ctx = struct { buf: [*]const u8, len: usize, n_tasks: usize, partial: *[pool.max_threads]u64 };
    pool.parallelFor(n_tasks, Ctx{ .buf = buf, .len = len, .n_tasks = n_tasks, .partial = &partial }, struct {
        fn f(c: Ctx, i: usize) void {
            const r = pool.splitRange(c.len / slice_align, c.n_tasks, i);
            const start = r.start * slice_align;
            // The last slice also takes the bytes past the last whole page.
            const end = if (i + 1 == c.n_tasks) c.len else r.end * slice_align;
            c.partial[i] = sumWords(c.buf + start, end - start);
        }
    }.f);
    var sum: u64 = 0;
    for (partial[0..n_tasks]) |p| sum +%= p;
    return sum;
}

/// Wrapping sum of p[0..len] as native-endian u64 words (p is at a multiple of 8 from buf).
fn sumWords(p: [*]const u8, len: usize) u64 {
    var a0: VU = @splat(0);
    var a1: VU = @splat(0);
    var a2: VU = @splat(0);
    var a3: VU = @splat(0);
    var i: usize = 0;
    while (i + step <= len) : (i += step) {
        a0 +%= @as(VU, @bitCast(p[i..][0..vec_bytes].*));
        a1 +%= @as(VU, @bitCast(p[i + vec_bytes ..][0..vec_bytes].*));
        a2 +%= @as(VU, @bitCast(p[i + 2 * vec_bytes ..][0..vec_bytes].*));
        a3 +%= @as(VU, @bitCast(p[i + 3 * vec_bytes ..][0..vec_bytes].*));
    }
    const lanes: [vec_bytes / 8]u64 = (a0 +% a1) +% (a2 +% a3);
    var sum: u64 = 0;
    for (lanes) |l| sum +%= l;
    return sum +% sumWordsScalar(p + i, len - i);
}

/// Plain loop over words, then the zero-padded last partial word.
fn sumWordsScalar(p: [*]const u8, len: usize) u64 {
    var sum: u64 = 0;
    var i: usize = 0;
    while (i + 8 <= len) : (i += 8) sum +%= std.mem.readInt(u64, p[i..][0..8], builtin.cpu.arch.endian());
    if (i < len) {
        var last: [8]u8 = @splat(0);
        @memcpy(last[0 .. len - i], p[i..len]);
        sum +%= std.mem.readInt(u64, &last, builtin.cpu.arch.endian());
    }
    return sum;
}

/// Scalar reference for readChecksum: one thread, one word at a time.
pub fn readChecksumRef(buf: [*]const u8, len: usize) u64 {
    return sumWordsScalar(buf, len);
}

/// Best read bandwidth in bytes/s over `iterations` full passes of buf[0..len] with every pool
/// thread. The buffer should be much larger than the last-level cache (e.g. 1 GiB) and already
/// written: untouched anonymous pages all map the one shared zero page, which reads from cache.
/// Returns 0 if no monotonic clock is available.
pub fn readBandwidth(buf: [*]const u8, len: usize, iterations: usize) f64 {
    assert(len > 0 and iterations > 0);
    var timer = std.time.Timer.start() catch return 0;
    var best_ns: u64 = std.math.maxInt(u64);
    for (0..iterations) |_| {
        timer.reset();
        const sum = readChecksum(buf, len);
        const ns = timer.read();
        std.mem.doNotOptimizeAway(sum);
        best_ns = @min(best_ns, ns);
    }
    return @as(f64, @floatFromInt(len)) * 1e9 / @as(f64, @floatFromInt(@max(best_ns, 1)));
}

// ---- tests -----------------------------------------------------------------------------------

const testing = std.testing;

test "readChecksum equals the scalar reference at 1 and 3 threads, and sees every byte" {
    const a = testing.allocator;
    const max_len = (1 << 20) + 13;
    const buf = try a.alloc(u8, max_len);
    defer a.free(buf);
    var prng = std.Random.DefaultPrng.init(21);
    prng.random().bytes(buf);
    for ([_]usize{ 1, 3 }) |threads| {
        _ = pool.setThreads(threads);
        for ([_]usize{ 0, 1, 3, 7, 8, 9, 15, 16, 17, 63, 100, 1000, 4097, 3 * 4096 + 5, max_len }) |len| {
            // Offset 1: the buffer need not be aligned.
            const p = buf.ptr + 1;
            const l = @min(len, max_len - 1);
            const want = readChecksumRef(p, l);
            try testing.expectEqual(want, readChecksum(p, l));
            if (l == 0) continue;
            // Changing any one byte changes the sum: no load is skipped.
            for ([_]usize{ 0, l / 2, l - 1 }) |i| {
                p[i] +%= 1;
                try testing.expect(readChecksum(p, l) != want);
                p[i] -%= 1;
            }
        }
    }
    _ = pool.setThreads(2);
}

test "readBandwidth is finite, positive, and its time grows with the buffer" {
    const a = testing.allocator;
    const big = 16 << 20;
    const small = 1 << 20;
    const buf = try a.alloc(u8, big);
    defer a.free(buf);
    @memset(buf, 0x5a); // touch every page (see readBandwidth)
    for ([_]usize{ 1, 2 }) |threads| {
        _ = pool.setThreads(threads);
        const bw = readBandwidth(buf.ptr, big, 3);
        try testing.expect(std.math.isFinite(bw) and bw > 0);
        // No small machine streams 10 TB/s; a dropped loop would time only the dispatch.
        try testing.expect(bw < 1e13);
    }
    // The scaling check runs on one thread: with more, a worker that is slow to be scheduled
    // (a busy machine) inflates the small pass's time and makes the ratio noisy.
    _ = pool.setThreads(1);
    const bw_small = readBandwidth(buf.ptr, small, 10);
    const bw_big = readBandwidth(buf.ptr, big, 3);
    // 16x the bytes must take well over 2x the time (bw_big < 8·bw_small). If the loads were
    // optimized away both would cost only the call overhead and bandwidth would scale with len.
    try testing.expect(bw_big < 8 * bw_small);
    _ = pool.setThreads(2);
}
