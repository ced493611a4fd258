//! Prefill attention's two products on AMX-BF16 tiles (TDPBF16PS), where AMX-BF16 is enabled
//! and the cache is f16: attention.zig's flash attention hands its prefill calls (more than
//! attention.max_invariant_queries query rows) here instead of to its f32 rows-in-lanes tasks.
//!
//! A 16 × 16 × 32 TDPBF16PS does 8192 multiply-adds where an AVX-512 FMA does 16, but on bf16
//! operands (8 significant bits), coarser than the f16 cache (11) and the f32 queries and
//! probabilities. So every operand is split in two bf16, x = hi + lo, and a product is taken as
//! hi·hi + lo·hi + hi·lo (three TDPBF16PS; lo·lo is below 2⁻¹⁶ of it): an f16 value splits
//! exactly (splitF16), an f32 one to within 2⁻¹⁶ (split), where llama.cpp's CPU flash attention
//! rounds the queries to f16 (2⁻¹¹). Sums and the softmax are f32.
//!
//! A task is up to 64 (query position, head) rows of one KV head, position-major, in four lane
//! groups of 16; each tile of keys (64, or 32 for heads over 128 dims: ≤ 8K elements) is split
//! once into bf16 buffers and serves every group. Per group and tile:
//!   scores  Sᵀ = K·Qᵀ: A = 16 keys × 32 dims (the key rows as they are), B = the group's
//!           queries in the pair layout (B[k][2r + i] = Q[r][2k + i], made once per task),
//!           C = 16 keys × 16 rows: stored, key j is a vector of the 16 rows' scores.
//!   softmax the lanes kernel's: scale, softcap, mask, running max and sum, rescale (f32).
//!   values  O += P·V: A = 16 rows × 32 keys of probabilities (key pairs interleaved, then a
//!           16 × 16 word transpose), B = 32 keys × 16 dims of V (two key rows interleaved),
//!           C = 16 rows × 16 dims of the rows' f32 accumulators, loaded and stored back.
//! Consecutive TDPBF16PS go to different C tiles (four chains in flight).
//!
//! Not bit-identical to the f32 lanes kernel (another order, split operands); prefill calls
//! promise no batch invariance. Tests run it on the hardware where enabled and on amx.Emu
//! everywhere against attention.zig's f64 reference, and a variant without the lo halves must
//! miss it. Measured on an Intel Xeon (Emerald Rapids, 2 threads, 128 queries over 512 keys,
//! f16 cache, the builds before and after alternated): 0.50–0.70× the f32 lanes kernel's time
//! (docs/optimization.md; `NQ=128 bun bench/attention-ab.ts OLD.so NEW.so 9/3/64,4/1/256 512`).
const std = @import("std");
const builtin = @import("builtin");
const amx = @import("amx.zig");
const pool = @import("pool.zig");
const attention = @import("attention.zig");

const AttentionArgs = attention.AttentionArgs;

/// Tests: leave out the lo halves (plain bf16 operands), which must miss the reference.
pub var test_hi_only: bool = false;

inline fn withLo() bool {
    return !(builtin.is_test and test_hi_only);
}

const V16f = @Vector(16, f32);
const V16u = @Vector(16, u32);
const V16i = @Vector(16, i32);
const inf = std.math.inf(f32);

/// Rows per lane group (a C tile's 16 rows or columns), keys per tile at most, dims per
/// TDPBF16PS.
const lanes = 16;
const max_keys = 64;
const step = 32;
/// Largest head the task buffers hold.
pub const max_head_dim = 256;

/// Every tile 16 rows × 64 bytes: tmm0/1 B, tmm2/3 A, tmm4..7 C.
const config: amx.TileConfig = blk: {
    var c: amx.TileConfig = .{ .palette = 1 };
    for (0..8) |t| {
        c.rows[t] = 16;
        c.colsb[t] = 64;
    }
    break :blk c;
};
const tb0 = 0;
const tb1 = 1;
const ta0 = 2;
const ta1 = 3;
const tc0 = 4;

/// x split in two bf16, as f32 bit patterns whose low 16 bits are zero: hi = x rounded to
/// nearest even (by an add: a NaN may come out as another NaN or an infinity, poisoning the sums
/// as the NaN would), lo = x − hi (exact in f32, below 2⁻⁸ of x's leading power of two)
/// truncated to bf16, so |x − hi − lo| < 2⁻¹⁶·|x| for finite normal x.
inline fn split(x: V16f) Bf16Pair {
    const b: V16u = @bitCast(x);
    const mask: V16u = @splat(0xffff0000);
    const hi = (b +% @as(V16u, @splat(0x7fff)) +% ((b >> @splat(16)) & @as(V16u, @splat(1)))) & mask;
    return .{ .hi = hi, .lo = @as(V16u, @bitCast(x - @as(V16f, @bitCast(hi)))) & mask };
}

const Bf16Pair = struct { hi: V16u, lo: V16u };

/// 16 f16 as f32.
inline fn f16x16(p: [*]const f16) V16f {
    return @floatCast(@as(@Vector(16, f16), p[0..16].*));
}

/// An f16 value (as f32) split exactly, as f32 bit patterns whose low 16 bits are zero: hi its
/// top 8 significant bits (truncated), lo the other ≤ 3 (x − hi, exact in f32 and in bf16).
inline fn splitF16(x: V16f) Bf16Pair {
    const hi = @as(V16u, @bitCast(x)) & @as(V16u, @splat(0xffff0000));
    return .{ .hi = hi, .lo = @bitCast(x - @as(V16f, @bitCast(hi))) };
}

/// The bf16 halves (high 16 bits) of a's then b's 16 words: 32 consecutive elements.
inline fn highHalves(a: V16u, b: V16u) @Vector(32, u16) {
    const odd = comptime blk: {
        var m: [32]i32 = undefined;
        for (0..16) |i| {
            m[i] = @intCast(2 * i + 1);
            m[16 + i] = ~@as(i32, @intCast(2 * i + 1));
        }
        break :blk m;
    };
    return @shuffle(u16, @as(@Vector(32, u16), @bitCast(a)), @as(@Vector(32, u16), @bitCast(b)), odd);
}

/// Word i = (a[i]'s bf16, b[i]'s bf16): the pair layout of two rows, from bit patterns whose low
/// 16 bits are zero.
inline fn pairWords(a: V16u, b: V16u) V16u {
    return (a >> @splat(16)) | b;
}

// ---------------------------------------------------------------------------------------------
// The prefill: tasks of up to 64 (query position, head) rows of one KV head
// ---------------------------------------------------------------------------------------------

/// Rows a task carries: four lane groups of 16 share each converted K/V tile.
const max_rows = 64;
const max_groups = max_rows / lanes;
/// Elements of a tile's K (or V) rows, as the lanes kernel's tiles: 8K (16 KB of each bf16 half).
const tile_elems = 8 * 1024;

/// Keys per tile: 64, or 32 where 64 keys of the head would not fit tile_elems. Whole pairs of
/// 16-key blocks, so the buffers' rounded-up keys (K to 16, V to 32) stay within tile_elems.
fn tileKeys(hd: usize) usize {
    return if (max_keys * hd <= tile_elems) max_keys else 32;
}

/// Whether the tiles take a call of this shape (whole TDPBF16PS steps, heads within the buffers).
pub fn fits(a: AttentionArgs) bool {
    return a.head_dim % step == 0 and a.head_dim <= max_head_dim;
}

const Plan = struct {
    heads: usize, // query heads per task (of one KV head)
    n_head_chunks: usize,
    positions: usize, // query positions per task
    n_q_blocks: usize,
    n_tasks: usize,
    tile: usize, // keys per tile
};

fn makePlan(a: AttentionArgs) Plan {
    const group = a.n_head / a.n_kv_head;
    const heads = @min(group, max_rows);
    const positions = max_rows / heads;
    const n_q_blocks = std.math.divCeil(usize, a.n_q, positions) catch unreachable;
    const n_head_chunks = std.math.divCeil(usize, group, heads) catch unreachable;
    return .{
        .heads = heads,
        .n_head_chunks = n_head_chunks,
        .positions = positions,
        .n_q_blocks = n_q_blocks,
        .n_tasks = n_q_blocks * a.n_kv_head * n_head_chunks,
        .tile = tileKeys(a.head_dim),
    };
}

/// Flash attention of a prefill call (attention.flashAttention's contract) on the tiles of
/// `Tiles` (amx.Hw, or amx.Emu in tests): f16 cache, fits(a), more than 16 query rows.
pub fn prefill(comptime Tiles: type, a: AttentionArgs) void {
    std.debug.assert(a.kv_type == .f16 and fits(a));
    const plan = makePlan(a);
    const Ctx = struct { a: AttentionArgs, plan: Plan };
    const run = struct {
        fn f(c: Ctx, t: usize) void {
            runTask(Tiles, c.a, c.plan, t);
        }
    }.f;
    pool.parallelFor(plan.n_tasks, Ctx{ .a = a, .plan = plan }, run);
}

/// One lane group: 16 rows' queries (B tiles), online-softmax state and accumulators.
const Group = struct {
    n: usize, // rows in use
    out: [lanes][*]f32,
    /// B tiles of the queries per 32-dim step: q[s][dp·32 + 2r + i] = Q[r][32s + 2dp + i].
    q_hi: [max_head_dim / step][lanes * 32]u16 align(64),
    q_lo: [max_head_dim / step][lanes * 32]u16 align(64),
    /// Row r's accumulator at [r·hd, (r + 1)·hd) (the C tiles of the values' product).
    acc: [lanes * max_head_dim]f32 align(64),
    m: V16f,
    l: V16f,
    lo: V16i, // allowed keys [lo, end) of each lane; (0, 0) in unused lanes
    end: V16i,

    fn sees(g: *const Group, t0: usize, n: usize) bool {
        const a: V16i = @splat(@intCast(t0));
        const b: V16i = @splat(@intCast(t0 + n));
        return @reduce(.Or, @max(g.lo, a) < @min(g.end, b));
    }
};

/// A task's state (≈ 200 KB at head_dim 256; the pool's threads have 1 MB stacks).
const State = struct {
    groups: [max_groups]Group,
    n_groups: usize,
    /// The tile's keys, row-major (key j at j·hd); keys n.. up to a multiple of 16 zero.
    k_hi: [tile_elems]u16 align(64),
    k_lo: [tile_elems]u16 align(64),
    /// The tile's values in pairs: v[p·2hd + 2d + i] = V[2p + i][d]; pairs past n up to a
    /// multiple of 32 keys zero (their probabilities are zero, and 0·NaN would not be).
    v_hi: [tile_elems]u16 align(64),
    v_lo: [tile_elems]u16 align(64),
    /// Probabilities row-major (the values' A tiles): p[r·64 + j].
    p_hi: [lanes * max_keys]u16 align(64),
    p_lo: [lanes * max_keys]u16 align(64),
    /// Scores, then probabilities, of the tile: sc[j] holds key j of every lane.
    sc: [max_keys]V16f align(64),
};

fn runTask(comptime Tiles: type, a: AttentionArgs, plan: Plan, t: usize) void {
    const hd = a.head_dim;
    const hc = t % plan.n_head_chunks;
    const g = (t / plan.n_head_chunks) % a.n_kv_head;
    // Latest query blocks first: under the causal mask they are the longest.
    const qb = plan.n_q_blocks - 1 - t / (plan.n_head_chunks * a.n_kv_head);
    const group = a.n_head / a.n_kv_head;
    const h0 = g * group + hc * plan.heads;
    const heads = @min(plan.heads, group - hc * plan.heads);
    const q0 = qb * plan.positions;
    const q1 = @min(a.n_q, q0 + plan.positions);

    var st: State = undefined;
    const n_rows = (q1 - q0) * heads;
    st.n_groups = std.math.divCeil(usize, n_rows, lanes) catch unreachable;
    var span_lo: usize = std.math.maxInt(usize);
    var span_end: usize = 0;
    for (st.groups[0..st.n_groups], 0..) |*grp, gi| {
        grp.n = @min(lanes, n_rows - gi * lanes);
        grp.m = @splat(-inf);
        grp.l = @splat(0);
        grp.lo = @splat(0);
        grp.end = @splat(0);
        @memset(grp.acc[0 .. lanes * hd], 0);
        var qt: [max_head_dim]V16f = undefined;
        @memset(qt[0..hd], @as(V16f, @splat(0)));
        for (0..grp.n) |r| {
            const row = gi * lanes + r;
            const i = q0 + row / heads;
            const h = h0 + row % heads;
            const kr = attention.keyRange(a, a.q_pos0 + i);
            grp.lo[r] = @intCast(kr.lo);
            grp.end[r] = @intCast(kr.end);
            if (kr.lo < kr.end) {
                span_lo = @min(span_lo, kr.lo);
                span_end = @max(span_end, kr.end);
            }
            grp.out[r] = a.out + i * a.out_row_stride + h * a.out_head_stride;
            const q = a.q + i * a.q_row_stride + h * a.q_head_stride;
            for (0..hd) |d| qt[d][r] = q[d];
        }
        for (0..hd / step) |s| {
            for (0..step / 2) |dp| {
                const e = split(qt[s * step + 2 * dp]);
                const o = split(qt[s * step + 2 * dp + 1]);
                grp.q_hi[s][dp * 32 ..][0..32].* = @bitCast(pairWords(e.hi, o.hi));
                grp.q_lo[s][dp * 32 ..][0..32].* = @bitCast(pairWords(e.lo, o.lo));
            }
        }
    }
    if (span_end > 0) {
        const cfg: amx.TileConfig align(64) = config;
        var tiles = Tiles.init(&cfg);
        defer tiles.release();
        // Tiles at absolute multiples of the tile size, over the union of allowed keys.
        var t0 = span_lo - span_lo % plan.tile;
        while (t0 < span_end) : (t0 += plan.tile) {
            const n = @min(plan.tile, span_end - t0);
            loadKv(&st, hd, attention.kvRow(f16, a, a.k, t0, g), attention.kvRow(f16, a, a.v, t0, g), a.kv_pos_stride, n);
            for (st.groups[0..st.n_groups]) |*grp| {
                if (!grp.sees(t0, n)) continue;
                scores(Tiles, &tiles, &st, grp, hd, n);
                softmax(a, grp, &st.sc, t0, n, hd);
                values(Tiles, &tiles, &st, grp, hd, n);
            }
        }
    }
    for (st.groups[0..st.n_groups]) |*grp| {
        for (0..grp.n) |r| {
            @memcpy(grp.out[r][0..hd], grp.acc[r * hd ..][0..hd]);
            attention.normalizeRow(grp.out[r], grp.l[r], hd);
        }
    }
}

/// Keys/values [0, n) of the tile from f16 rows `stride` elements apart, split into the buffers.
fn loadKv(st: *State, hd: usize, k: [*]const f16, v: [*]const f16, stride: usize, n: usize) void {
    std.debug.assert(n >= 1 and std.mem.alignForward(usize, n, 32) * hd <= tile_elems);
    const zero: V16f = @splat(0);
    const n16 = std.mem.alignForward(usize, n, 16);
    for (0..n16) |j| {
        var d: usize = 0;
        while (d < hd) : (d += 32) {
            const s0 = splitF16(if (j < n) f16x16(k + j * stride + d) else zero);
            const s1 = splitF16(if (j < n) f16x16(k + j * stride + d + 16) else zero);
            st.k_hi[j * hd + d ..][0..32].* = highHalves(s0.hi, s1.hi);
            st.k_lo[j * hd + d ..][0..32].* = highHalves(s0.lo, s1.lo);
        }
    }
    const n32 = std.mem.alignForward(usize, n, 32);
    var p: usize = 0;
    while (2 * p < n32) : (p += 1) {
        const r0 = v + 2 * p * stride;
        var d: usize = 0;
        while (d < hd) : (d += 16) {
            const s0 = splitF16(if (2 * p < n) f16x16(r0 + d) else zero);
            const s1 = splitF16(if (2 * p + 1 < n) f16x16(r0 + stride + d) else zero);
            st.v_hi[p * 2 * hd + 2 * d ..][0..32].* = @bitCast(pairWords(s0.hi, s1.hi));
            st.v_lo[p * 2 * hd + 2 * d ..][0..32].* = @bitCast(pairWords(s0.lo, s1.lo));
        }
    }
}

/// Raw dot products of the tile's keys [0, n) (n rounded up to 16) with the group's rows into
/// st.sc. Three passes per 32-dim step (hi·hi, lo·hi, hi·lo), each over the key blocks, so that
/// consecutive TDPBF16PS go to different C tiles (four chains in flight).
fn scores(comptime Tiles: type, t: *Tiles, st: *State, grp: *const Group, hd: usize, n: usize) void {
    const nb = (n + 15) / 16;
    inline for (0..4) |kb| t.zero(tc0 + kb);
    for (0..hd / step) |s| {
        t.load(tb0, @ptrCast(&grp.q_hi[s]), 64);
        t.load(tb1, @ptrCast(&grp.q_lo[s]), 64);
        inline for (.{ .{ true, tb0 }, .{ false, tb0 }, .{ true, tb1 } }, 0..) |term, ti| {
            if (ti == 0 or withLo()) {
                const k_src = if (term[0]) &st.k_hi else &st.k_lo;
                inline for (0..4) |kb| {
                    if (kb < nb) {
                        const ta = if (kb % 2 == 0) ta0 else ta1; // alternating A registers
                        t.load(ta, @ptrCast(k_src[kb * 16 * hd + s * step ..].ptr), 2 * hd);
                        t.dpbf16ps(tc0 + kb, ta, term[1]);
                    }
                }
            }
        }
    }
    inline for (0..4) |kb| {
        if (kb < nb) t.store(tc0 + kb, @ptrCast(&st.sc[16 * kb]), 64);
    }
}

/// The lanes kernel's tile softmax on the group's scores: scaled, softcapped, masked to −inf;
/// new running max, rescale of the running sums and accumulators, scores → probabilities.
fn softmax(a: AttentionArgs, grp: *Group, sc: *[max_keys]V16f, t0: usize, n: usize, hd: usize) void {
    var mt: V16f = @splat(-inf);
    for (sc[0..n], 0..) |*x, j| {
        var s = x.* * @as(V16f, @splat(a.scale));
        if (a.softcap != 0) {
            for (0..lanes) |r| s[r] = a.softcap * std.math.tanh(s[r] / a.softcap);
        }
        const pos: V16i = @splat(@intCast(t0 + j));
        x.* = @select(f32, (pos >= grp.lo) & (pos < grp.end), s, @as(V16f, @splat(-inf)));
        mt = attention.maxN(16, mt, x.*);
    }
    const m_new = attention.maxN(16, grp.m, mt);
    const none = m_new == @as(V16f, @splat(-inf)); // lanes with no key yet: nothing to rescale
    const alpha = @select(f32, none, @as(V16f, @splat(1)), attention.expN(16, grp.m - m_new));
    var sum: V16f = @splat(0);
    for (sc[0..n]) |*x| {
        const e = @select(f32, none, @as(V16f, @splat(0)), attention.expN(16, x.* - m_new));
        x.* = e;
        sum += e;
    }
    grp.l = grp.l * alpha + sum;
    grp.m = m_new;
    for (0..grp.n) |r| {
        if (alpha[r] == 1) continue;
        const row = grp.acc[r * hd ..][0..hd];
        var d: usize = 0;
        while (d < hd) : (d += 16) row[d..][0..16].* = @as(V16f, row[d..][0..16].*) * @as(V16f, @splat(alpha[r]));
    }
}

/// acc[r·hd + d] += Σ_j<n P[j][r]·V[j][d] for the group's rows.
fn values(comptime Tiles: type, t: *Tiles, st: *State, grp: *Group, hd: usize, n: usize) void {
    const nc = (n + 31) / 32;
    // Probabilities into A tiles: per 32 keys, word p of row r = keys (2p, 2p + 1) of row r:
    // pairs of key vectors interleaved, then a 16 × 16 word transpose.
    for (0..nc) |c| {
        var w_hi: [16]V16u = undefined;
        var w_lo: [16]V16u = undefined;
        for (0..16) |p| {
            const j = 32 * c + 2 * p;
            const zero: V16f = @splat(0);
            const s0 = split(if (j < n) st.sc[j] else zero);
            const s1 = split(if (j + 1 < n) st.sc[j + 1] else zero);
            w_hi[p] = pairWords(s0.hi, s1.hi);
            w_lo[p] = pairWords(s0.lo, s1.lo);
        }
        const th = transpose16(w_hi);
        const tl = transpose16(w_lo);
        for (0..16) |r| {
            st.p_hi[r * max_keys + 32 * c ..][0..32].* = @bitCast(th[r]);
            st.p_lo[r * max_keys + 32 * c ..][0..32].* = @bitCast(tl[r]);
        }
    }
    var d0: usize = 0;
    while (d0 < hd) : (d0 += 64) {
        const nd = @min(4, (hd - d0) / 16);
        inline for (0..4) |db| {
            if (db < nd) t.load(tc0 + db, @ptrCast(grp.acc[d0 + 16 * db ..].ptr), 4 * hd);
        }
        for (0..nc) |c| {
            t.load(ta0, @ptrCast(st.p_hi[32 * c ..].ptr), 2 * max_keys);
            t.load(ta1, @ptrCast(st.p_lo[32 * c ..].ptr), 2 * max_keys);
            // hi·hi, lo·hi, hi·lo, each over the dim blocks (four chains in flight).
            inline for (.{ .{ ta0, true }, .{ ta1, true }, .{ ta0, false } }, 0..) |term, ti| {
                if (ti == 0 or withLo()) {
                    const v_src = if (term[1]) &st.v_hi else &st.v_lo;
                    inline for (0..4) |db| {
                        if (db < nd) {
                            const tb = if (db % 2 == 0) tb0 else tb1; // alternating B registers
                            t.load(tb, @ptrCast(v_src[c * 16 * 2 * hd + 2 * (d0 + 16 * db) ..].ptr), 4 * hd);
                            t.dpbf16ps(tc0 + db, term[0], tb);
                        }
                    }
                }
            }
        }
        inline for (0..4) |db| {
            if (db < nd) t.store(tc0 + db, @ptrCast(grp.acc[d0 + 16 * db ..].ptr), 4 * hd);
        }
    }
}

/// y[c][r] = x[r][c] for a 16 × 16 matrix of words: four stages, stage k exchanging bit k of the
/// row with bit k of the column between the rows that differ in it (two-source shuffles).
fn transpose16(x: [16]V16u) [16]V16u {
    var v = x;
    inline for (0..4) |k| {
        const bit = 1 << k;
        const masks = comptime blk: {
            var m0: [16]i32 = undefined; // rows with bit k clear
            var m1: [16]i32 = undefined; // rows with bit k set
            for (0..16) |c| {
                // out0[c] = c's bit k clear ? v0[c] : v1[c − bit]; out1[c] = clear ? v0[c + bit] : v1[c]
                m0[c] = if (c & bit == 0) @intCast(c) else ~@as(i32, @intCast(c - bit));
                m1[c] = if (c & bit == 0) @intCast(c + bit) else ~@as(i32, @intCast(c));
            }
            break :blk .{ m0, m1 };
        };
        var out: [16]V16u = undefined;
        for (0..16) |r| {
            if (r & bit != 0) continue;
            out[r] = @shuffle(u32, v[r], v[r + bit], masks[0]);
            out[r + bit] = @shuffle(u32, v[r], v[r + bit], masks[1]);
        }
        v = out;
    }
    return v;
}
test "split: an f16 value is hi + lo exactly (splitF16); an f32 one within 2^-16 (split)" {
    var rng = std.Random.DefaultPrng.init(7);
    const r = rng.random();
    const f = struct {
        fn back(p: Bf16Pair) V16f {
            const lo16: V16u = @splat(0xffff);
            std.debug.assert(@reduce(.And, (p.hi & lo16) == @as(V16u, @splat(0))) and @reduce(.And, (p.lo & lo16) == @as(V16u, @splat(0))));
            return @as(V16f, @bitCast(p.hi)) + @as(V16f, @bitCast(p.lo));
        }
    };
    for (0..1000) |_| {
        var x: V16f = undefined;
        var h: V16f = undefined;
        for (0..16) |i| {
            x[i] = (r.float(f32) - 0.5) * std.math.pow(f32, 2, @floatFromInt(r.intRangeAtMost(i32, -14, 14)));
            h[i] = @floatCast(@as(f16, @floatCast(x[i])));
        }
        try std.testing.expectEqual(h, f.back(splitF16(h)));
        const back = f.back(split(x));
        for (0..16) |i| try std.testing.expect(@abs(back[i] - x[i]) <= @abs(x[i]) * std.math.pow(f32, 2, -16));
    }
}

test "transpose16 is the transpose" {
    var x: [16]V16u = undefined;
    for (0..16) |r| for (0..16) |c| {
        x[r][c] = @intCast(100 * r + c);
    };
    const y = transpose16(x);
    for (0..16) |r| for (0..16) |c| try std.testing.expectEqual(x[c][r], y[r][c]);
}
