//! Candidate selection over one row of logits, for the host samplers of src/runtime/sampling.ts:
//! argmax (greedy decoding) and top-k (llama.cpp's default chain keeps 40). Over Gemma 3's
//! 262,144 logits the JavaScript loops took ~0.15 ms (argmax) and ~0.45 ms (top-k) a token,
//! 1.5–4% of a Gemma 3 270M decode step on an AMD Zen 4 (docs/optimization.md, "Sampling");
//! here one vector compare rejects `lanes` logits at a time.
//!
//! Order: the total order the samplers use, higher logit first and equal logits by lower id, so
//! each result is unique (the same for every vector width) and equals the scalar references
//! below. NaN and −Infinity are never candidates: they carry no probability (+Infinity is one).
const std = @import("std");

const lanes = std.simd.suggestVectorLength(f32) orelse 4;
const F = @Vector(lanes, f32);
/// One bit per lane of a vector comparison.
const LaneBits = std.meta.Int(.unsigned, lanes);
const neg_inf = -std.math.inf(f32);

/// Index of the largest of x[0..n) (the first of equal ones, −0 equal to +0); −1 when no entry
/// is above −Infinity. A maximum pass, then a pass that stops at the first entry equal to it.
pub fn argmax(x: [*]const f32, n: usize) isize {
    var m: F = @splat(neg_inf);
    var i: usize = 0;
    while (i + lanes <= n) : (i += lanes) {
        const v: F = x[i..][0..lanes].*;
        m = @select(f32, v > m, v, m); // a NaN lane compares false: never taken
    }
    var best = @reduce(.Max, m); // m holds no NaN
    while (i < n) : (i += 1) {
        if (x[i] > best) best = x[i];
    }
    if (!(best > neg_inf)) return -1;
    const b: F = @splat(best);
    i = 0;
    while (i + lanes <= n) : (i += lanes) {
        const v: F = x[i..][0..lanes].*;
        const eq: LaneBits = @bitCast(v == b);
        if (eq != 0) return @intCast(i + @ctz(eq));
    }
    while (i < n) : (i += 1) {
        if (x[i] == best) return @intCast(i);
    }
    unreachable; // best is one of the entries
}

/// The k best of x[0..n) (k ≥ 1), best first, into ids[0..) and vals[0..); returns how many
/// (fewer than k when fewer entries are candidates). A min-heap of the k best so far, its root
/// the worst of them: a vector of logits none of which beats the root costs one compare; the
/// k survivors are heap-sorted at the end. ids and vals must not overlap x.
pub fn topK(x: [*]const f32, n: usize, k: usize, ids: [*]i32, vals: [*]f32) usize {
    std.debug.assert(k >= 1 and n <= std.math.maxInt(i32));
    var size: usize = 0;
    var i: usize = 0;
    while (i < n and size < k) : (i += 1) {
        const v = x[i];
        if (!(v > neg_inf)) continue;
        ids[size] = @intCast(i);
        vals[size] = v;
        siftUp(ids, vals, size);
        size += 1;
    }
    if (size == 0) return 0;
    var root = vals[0];
    while (i + lanes <= n) : (i += lanes) {
        const v: F = x[i..][0..lanes].*;
        var gt: LaneBits = @bitCast(v > @as(F, @splat(root)));
        while (gt != 0) : (gt &= gt - 1) {
            const j = i + @ctz(gt);
            // Strict: an equal logit has a higher id than every entry, so it is the worse one.
            // The root may have risen since the compare, so each lane is tested again.
            if (x[j] > root) {
                ids[0] = @intCast(j);
                vals[0] = x[j];
                siftDown(ids, vals, 0, size);
                root = vals[0];
            }
        }
    }
    while (i < n) : (i += 1) {
        if (x[i] > root) {
            ids[0] = @intCast(i);
            vals[0] = x[i];
            siftDown(ids, vals, 0, size);
            root = vals[0];
        }
    }
    // Heapsort: popping the worst to the end leaves the entries best first.
    var end = size;
    while (end > 1) {
        end -= 1;
        swap(ids, vals, 0, end);
        siftDown(ids, vals, 0, end);
    }
    return size;
}

/// a is worse than b: a lower logit, or an equal one with a higher id.
inline fn worse(ids: [*]const i32, vals: [*]const f32, a: usize, b: usize) bool {
    return vals[a] < vals[b] or (vals[a] == vals[b] and ids[a] > ids[b]);
}

inline fn swap(ids: [*]i32, vals: [*]f32, a: usize, b: usize) void {
    std.mem.swap(i32, &ids[a], &ids[b]);
    std.mem.swap(f32, &vals[a], &vals[b]);
}

fn siftUp(ids: [*]i32, vals: [*]f32, start: usize) void {
    var i = start;
    while (i > 0) {
        const parent = (i - 1) / 2;
        if (!worse(ids, vals, i, parent)) return;
        swap(ids, vals, i, parent);
        i = parent;
    }
}

fn siftDown(ids: [*]i32, vals: [*]f32, start: usize, size: usize) void {
    var i = start;
    while (true) {
        const l = 2 * i + 1;
        if (l >= size) return;
        const r = l + 1;
        const c = if (r < size and worse(ids, vals, r, l)) r else l;
        if (!worse(ids, vals, c, i)) return;
        swap(ids, vals, i, c);
        i = c;
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar references and tests
// ---------------------------------------------------------------------------------------------

/// argmax as one plain loop: a strictly greater entry replaces the best.
pub fn argmaxRef(x: []const f32) isize {
    var best: isize = -1;
    var best_val = neg_inf;
    for (x, 0..) |v, i| {
        if (v > best_val) {
            best_val = v;
            best = @intCast(i);
        }
    }
    return best;
}

const Candidate = struct { id: i32, val: f32 };

fn better(_: void, a: Candidate, b: Candidate) bool {
    return a.val > b.val or (a.val == b.val and a.id < b.id);
}

/// topK by sorting every candidate and keeping the first k.
pub fn topKRef(allocator: std.mem.Allocator, x: []const f32, k: usize, ids: []i32, vals: []f32) !usize {
    var all: std.ArrayList(Candidate) = .empty;
    defer all.deinit(allocator);
    for (x, 0..) |v, i| {
        if (v > neg_inf) try all.append(allocator, .{ .id = @intCast(i), .val = v });
    }
    std.mem.sort(Candidate, all.items, {}, better);
    const count = @min(k, all.items.len);
    for (all.items[0..count], 0..) |c, j| {
        ids[j] = c.id;
        vals[j] = c.val;
    }
    return count;
}

/// Logits that stress the order: few distinct values (many ties), NaN, ±Infinity, ±0.
fn awkwardLogits(rng: std.Random, x: []f32, distinct: u32) void {
    for (x) |*v| {
        const r = rng.uintLessThan(u32, 100);
        v.* = switch (r) {
            0 => std.math.nan(f32),
            1 => neg_inf,
            2 => -0.0,
            3 => 0.0,
            4 => if (rng.uintLessThan(u32, 8) == 0) std.math.inf(f32) else 1.5,
            else => @as(f32, @floatFromInt(rng.uintLessThan(u32, distinct))) * 0.25 - 3.0,
        };
    }
}

test "argmax equals the plain loop over awkward lengths, ties, NaN and infinities" {
    var prng = std.Random.DefaultPrng.init(0x5a17);
    const rng = prng.random();
    var buf: [1100]f32 = undefined;
    for (0..600) |trial| {
        const n = if (trial < 80) trial else rng.uintLessThan(usize, buf.len) + 1;
        const x = buf[0..n];
        awkwardLogits(rng, x, if (trial % 3 == 0) 4 else 1000);
        try std.testing.expectEqual(argmaxRef(x), argmax(x.ptr, n));
    }
    // No candidate at all; the maximum only in the last (tail) lane; the first of equal maxima.
    @memset(buf[0..37], std.math.nan(f32));
    buf[5] = neg_inf;
    try std.testing.expectEqual(@as(isize, -1), argmax(&buf, 37));
    buf[36] = -1e30;
    try std.testing.expectEqual(@as(isize, 36), argmax(&buf, 37));
    @memset(buf[0..64], 2.0);
    try std.testing.expectEqual(@as(isize, 0), argmax(&buf, 64));
    buf[0] = 0.0;
    buf[40] = 3.0;
    buf[63] = 3.0;
    try std.testing.expectEqual(@as(isize, 40), argmax(&buf, 64));
}

test "topK equals sorting every candidate, for every k, with ties at the cut" {
    var prng = std.Random.DefaultPrng.init(0x70bc);
    const rng = prng.random();
    const a = std.testing.allocator;
    var buf: [700]f32 = undefined;
    var ids: [720]i32 = undefined;
    var vals: [720]f32 = undefined;
    var ref_ids: [720]i32 = undefined;
    var ref_vals: [720]f32 = undefined;
    for (0..400) |trial| {
        const n = if (trial < 70) trial + 1 else rng.uintLessThan(usize, buf.len) + 1;
        const x = buf[0..n];
        awkwardLogits(rng, x, if (trial % 2 == 0) 3 else 500);
        const ks = [_]usize{ 1, 2, 3, 40, rng.uintLessThan(usize, n) + 1, n, n + 3 };
        for (ks) |k| {
            const got = topK(x.ptr, n, k, &ids, &vals);
            const want = try topKRef(a, x, k, &ref_ids, &ref_vals);
            try std.testing.expectEqual(want, got);
            try std.testing.expectEqualSlices(i32, ref_ids[0..want], ids[0..got]);
            for (ref_vals[0..want], vals[0..got]) |w, g| try std.testing.expect(@as(u32, @bitCast(w)) == @as(u32, @bitCast(g)));
        }
    }
    // Only NaN and −Infinity: no candidates.
    @memset(buf[0..50], neg_inf);
    buf[7] = std.math.nan(f32);
    try std.testing.expectEqual(@as(usize, 0), topK(&buf, 50, 4, &ids, &vals));
}

test "topK over a Gemma-sized row: the same as sorting, and the strict tie rule matters" {
    const a = std.testing.allocator;
    const n = 262_144;
    const x = try a.alloc(f32, n);
    defer a.free(x);
    var prng = std.Random.DefaultPrng.init(0x9e3779b9);
    const rng = prng.random();
    for (x) |*v| v.* = @as(f32, @floatFromInt(rng.uintLessThan(u32, 2000))) * 0.01;
    const k = 40;
    var ids: [k]i32 = undefined;
    var vals: [k]f32 = undefined;
    var ref_ids: [k]i32 = undefined;
    var ref_vals: [k]f32 = undefined;
    try std.testing.expectEqual(topKRef(a, x, k, &ref_ids, &ref_vals), topK(x.ptr, n, k, &ids, &vals));
    try std.testing.expectEqualSlices(i32, &ref_ids, &ids);
    try std.testing.expectEqualSlices(f32, &ref_vals, &vals);
    // With 2000 distinct values over 262,144 entries the cut falls inside a run of equal logits:
    // the kept ones must be the lowest ids of that run (a rule of ≥ in the scan would keep later ones).
    try std.testing.expect(vals[k - 1] == vals[k - 2]);
    try std.testing.expect(ids[k - 2] < ids[k - 1]);
}
