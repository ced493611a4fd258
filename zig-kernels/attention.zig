//! Attention kernels.
//!
//! `flashAttention` is the fused path: online softmax (running max, running sum, rescaled
//! accumulator) over K/V tiles, so the n_q × n_kv score matrix never exists. Each task owns
//! up to `max_rows` (query row, head) pairs that share one KV head, so a loaded (and, for f16,
//! converted) K/V tile is reused by the whole GQA group.
//!
//! Two layouts of a task's rows: dot products (a row's scores are R-row × K-key dot products,
//! each finished by a horizontal sum), and rows in the lanes of 4-, 8- or 16-wide vectors (Q and
//! the scores transposed, no horizontal sums, the softmax elementwise across rows). Both
//! accumulate V the same way (`accumulateRows`: dims in vectors, 512-bit on AVX-512 builds, each
//! row's probability broadcast).
//! Prefill (more than 16 query rows) always takes the lanes, where a task has 16 rows to fill
//! them (or, over an f16 cache where AMX-BF16 is enabled, attention_amx.zig's tiles); decode
//! and speculative verification take the lanes where a KV head has enough query heads to fill
//! 8 lanes (`lanes_min_group`), else the dot products (`layoutFor`).
//!
//! Batch invariance: within a layout, a (query row, head) pair's result never depends on which
//! other rows share its call. Tiles start at absolute multiples of the tile size and the key
//! range is never split across threads (decode spreads a KV head's query heads over tasks
//! instead), so a row decoded alone and the same row inside a speculative-verification batch
//! (≤ 16 rows, the same layout, chosen by the model's shape) give bitwise-identical outputs;
//! speculative decoding relies on that to reproduce plain decoding.
//!
//! `attentionNaive` is the unfused path (full score rows + softmaxRow + ·V), kept as a second
//! reference and as the baseline benchmarks compare against.
const std = @import("std");
const builtin = @import("builtin");
const pool = @import("pool.zig");
const cpu = @import("cpu.zig");
const amx = @import("amx.zig");
const attention_amx = @import("attention_amx.zig");

const assert = std.debug.assert;
const inf = std.math.inf(f32);

/// K/V element types, by GGML type id. Q8_0 (blocks of 32: an f16 scale, 32 int8) halves the
/// bytes a long-context decode reads per key against f16; tiles are dequantized once per task.
pub const KvType = enum(u32) { f32 = 0, f16 = 1, q8_0 = 8 };

/// Q8_0 block layout (quant_legacy.zig Q8_0: f16 d, then 32 int8 quants).
pub const q8_block = 32;
const q8_block_bytes = 34;

/// One Q8_0 block as it lies in the cache (byte-aligned, 34 bytes), so an in-place row of a
/// Q8_0 cache is a `[*]const Q8Block` indexed by element / q8_block, as f16 rows are by element.
const Q8Block = extern struct {
    d: [2]u8, // f16 scale, little-endian
    q: [q8_block]i8,

    inline fn scale(b: *const Q8Block) f32 {
        return cpu.f16BitsToF32(std.mem.readInt(u16, &b.d, .little));
    }
};
comptime {
    assert(@sizeOf(Q8Block) == q8_block_bytes and @alignOf(Q8Block) == 1);
}

pub const AttentionArgs = struct {
    q: [*]const f32,
    q_row_stride: usize,
    q_head_stride: usize, // q[i*q_row_stride + h*q_head_stride + d]
    k: [*]const u8,
    v: [*]const u8,
    kv_type: KvType,
    kv_pos_stride: usize,
    kv_head_stride: usize, // k[p*kv_pos_stride + g*kv_head_stride + d], same for v
    out: [*]f32,
    out_row_stride: usize,
    out_head_stride: usize,
    n_q: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    n_kv: usize, // keys present: positions 0..n_kv-1
    q_pos0: usize, // query i sits at q_pos0 + i and sees keys p <= q_pos0 + i
    window: usize, // 0 = none; else key p allowed only if (q_pos - p) < window
    scale: f32, // multiplies q·k
    softcap: f32, // 0 = off; else s = softcap * tanh(s / softcap)
};

pub const max_head_dim = 512;

const vlen = std.simd.suggestVectorLength(f32) orelse 4;
const F32V = @Vector(vlen, f32);
const F16V = @Vector(vlen, f16);
const I32V = @Vector(vlen, i32);
const zero_v: F32V = @splat(0);

/// @mulAdd is a strict fused op: without hardware FMA it becomes a libm call per lane.
const has_fma = @import("cpu.zig").has_fma;

extern fn @"llvm.x86.avx512.vpdpbusd.128"(acc: @Vector(4, i32), a: @Vector(4, i32), b: @Vector(4, i32)) @Vector(4, i32);
extern fn @"llvm.x86.avx512.vpdpbusd.256"(acc: @Vector(8, i32), a: @Vector(8, i32), b: @Vector(8, i32)) @Vector(8, i32);
extern fn @"llvm.x86.avx512.vpdpbusd.512"(acc: @Vector(16, i32), a: @Vector(16, i32), b: @Vector(16, i32)) @Vector(16, i32);

/// (query row, head) pairs one task carries: 16 × 512 f32 accumulators = 32 KB of stack.
const max_rows = 16;
/// Keys per tile: at most 64, and at most tile_floats / head_dim so a converted f16 tile
/// (32 KB) stays in L1 while every row of the task reads it; 64 KB tiles measured ~15% slower.
const max_tile = 64;
const tile_floats = 8 * 1024;

// ---------------------------------------------------------------------------------------
// SIMD helpers

inline fn loadV(p: [*]const f32) F32V {
    return p[0..vlen].*;
}

inline fn storeV(p: [*]f32, x: F32V) void {
    p[0..vlen].* = x;
}

inline fn fmaV(a: F32V, b: F32V, c: F32V) F32V {
    return if (has_fma) @mulAdd(F32V, a, b, c) else a * b + c;
}

/// exp on a vector (Cephes expf polynomial, ~2 ulp). Inputs below -87.3 give 0 (softmax
/// inputs are max-subtracted, so only underflow matters); -inf gives 0; NaN stays NaN.
fn expV(x: F32V) F32V {
    return expN(vlen, x);
}

/// expV on a vector of any width (the flash kernel's 16 rows-in-lanes).
pub fn expN(comptime N: usize, x: @Vector(N, f32)) @Vector(N, f32) {
    const V = @Vector(N, f32);
    const I = @Vector(N, i32);
    const lo: V = @splat(-87.3);
    const xc = minN(N, @splat(88.3), maxN(N, lo, x)); // NaN → lo; put back below
    // Round-to-nearest via the 1.5·2^23 trick: @round would be a libcall per lane on SSE2.
    const magic: V = @splat(12582912.0);
    const n = (xc * @as(V, @splat(1.44269504088896341)) + magic) - magic;
    var r = fmaN(N, -n, @splat(0.693359375), xc);
    r = fmaN(N, -n, @splat(-2.12194440e-4), r);
    var p: V = @splat(1.9875691500e-4);
    p = fmaN(N, p, r, @splat(1.3981999507e-3));
    p = fmaN(N, p, r, @splat(8.3334519073e-3));
    p = fmaN(N, p, r, @splat(4.1665795894e-2));
    p = fmaN(N, p, r, @splat(1.6666665459e-1));
    p = fmaN(N, p, r, @splat(5.0000001201e-1));
    const e = fmaN(N, p, r * r, r + @as(V, @splat(1.0)));
    const ni: I = @intFromFloat(n);
    const pow2: V = @bitCast((ni + @as(I, @splat(127))) << @splat(23));
    const y = @select(f32, x < lo, @as(V, @splat(0)), e * pow2);
    return @select(f32, x != x, x, y);
}

/// The larger of a and b (the smaller, for minN) as one vmaxps (vminps): a unless b compares
/// greater. @max lowers to maxnum, whose NaN rule costs a compare and a blend per vector on x86
/// (a third of a decode's max-over-scores loop). They differ only where a is NaN, which no
/// caller passes (running maxima start at -inf and only take values that compared greater;
/// expN's clamps put the constant first), and on +0 vs -0, which give the same exp.
pub inline fn maxN(comptime N: usize, a: @Vector(N, f32), b: @Vector(N, f32)) @Vector(N, f32) {
    return @select(f32, b > a, b, a);
}

inline fn minN(comptime N: usize, a: @Vector(N, f32), b: @Vector(N, f32)) @Vector(N, f32) {
    return @select(f32, b < a, b, a);
}

inline fn fmaN(comptime N: usize, a: @Vector(N, f32), b: @Vector(N, f32), c: @Vector(N, f32)) @Vector(N, f32) {
    return if (has_fma) @mulAdd(@Vector(N, f32), a, b, c) else a * b + c;
}

/// W elements of a K/V row from element d, as f32: f32 read as is, f16 converted (exact), Q8_0
/// dequantized as d · q (dequantQ8Row's one rounding), so a row read in place gives the same
/// values as the tile buffers loadTile fills. For Q8_0, [d, d + W) lies in one block
/// (W divides the block; rows are whole blocks).
inline fn rowVec(comptime W: usize, comptime E: type, row: [*]const E, d: usize) @Vector(W, f32) {
    switch (E) {
        f32 => return row[d..][0..W].*,
        f16 => return @floatCast(@as(@Vector(W, f16), row[d..][0..W].*)),
        Q8Block => {
            comptime assert(q8_block % W == 0);
            const blk = &row[d / q8_block];
            const q: @Vector(W, i8) = blk.q[d % q8_block ..][0..W].*;
            const x: @Vector(W, f32) = @floatFromInt(q);
            return x * @as(@Vector(W, f32), @splat(blk.scale()));
        },
        else => @compileError("K/V rows are f32, f16 or Q8_0"),
    }
}

/// N consecutive vectors of a row from element d (rowVec's values; for Q8_0 each block's scale
/// read once). For Q8_0, d is a multiple of the block when the vectors span a block or more,
/// else [d, d + N·vlen) lies in one block.
inline fn rowVecs(comptime N: usize, comptime E: type, row: [*]const E, d: usize) [N]F32V {
    var out: [N]F32V = undefined;
    if (E == Q8Block) {
        const per_block = q8_block / vlen;
        if (N >= per_block) assert(d % q8_block == 0);
        inline for (0..(N + per_block - 1) / per_block) |b| {
            const blk = &row[d / q8_block + b];
            const sv: F32V = @splat(blk.scale());
            inline for (b * per_block..@min(N, (b + 1) * per_block)) |i| {
                const q: @Vector(vlen, i8) = blk.q[(d + i * vlen) % q8_block ..][0..vlen].*;
                out[i] = @as(F32V, @floatFromInt(q)) * sv;
            }
        }
    } else {
        inline for (0..N) |i| out[i] = rowVec(vlen, E, row, d + i * vlen);
    }
    return out;
}

inline fn rowElem(comptime E: type, row: [*]const E, d: usize) f32 {
    return switch (E) {
        Q8Block => row[d / q8_block].scale() * @as(f32, @floatFromInt(row[d / q8_block].q[d % q8_block])),
        else => row[d],
    };
}

/// Bytes of one K/V row of head_dim elements read in place.
inline fn rowBytes(comptime E: type, hd: usize) usize {
    return if (E == Q8Block) hd / q8_block * q8_block_bytes else hd * @sizeOf(E);
}

/// R query rows against K keys (R·K ≤ 8 independent accumulators hide FMA latency; each
/// loaded k vector feeds R rows). Every (row, key) pair has the same arithmetic whatever R and
/// K are (an FMA chain over whole vectors, one @reduce, then the scalar tail), so the grouping
/// never changes a bit: decode's one-row tasks take R = 1 × K = 8 instead of padding to 4 rows.
/// Keys are f32 (a converted tile), or f16 / Q8_0 read from the cache and converted in
/// registers (`rowVec`: the same values the tile conversion makes, so the bits are the same).
inline fn dotRK(comptime R: usize, comptime K: usize, comptime E: type, q: [R][*]const f32, kp: [K][*]const E, n: usize) [R][K]f32 {
    @setEvalBranchQuota(10_000);
    var acc: [R][K]F32V = @splat(@splat(zero_v));
    // A step is one vector, or for Q8_0 one block (its scale converted once); each (row, key)
    // chain still takes the vectors in order.
    const step = if (E == Q8Block) q8_block else vlen;
    var d: usize = 0;
    while (d + step <= n) : (d += step) {
        var kv: [K][step / vlen]F32V = undefined;
        inline for (0..K) |k| kv[k] = rowVecs(step / vlen, E, kp[k], d);
        inline for (0..step / vlen) |s| inline for (0..R) |r| {
            const qv = loadV(q[r] + d + s * vlen);
            inline for (0..K) |k| acc[r][k] = fmaV(qv, kv[k][s], acc[r][k]);
        };
    }
    var out: [R][K]f32 = undefined;
    inline for (0..R) |r| inline for (0..K) |k| {
        out[r][k] = @reduce(.Add, acc[r][k]);
    };
    while (d < n) : (d += 1) {
        inline for (0..R) |r| inline for (0..K) |k| {
            out[r][k] += q[r][d] * rowElem(E, kp[k], d);
        };
    }
    return out;
}

/// Plain dot product with two accumulators (the unfused path's inner loop).
fn dot1(q: [*]const f32, k: [*]const f32, n: usize) f32 {
    var a0 = zero_v;
    var a1 = zero_v;
    var d: usize = 0;
    while (d + 2 * vlen <= n) : (d += 2 * vlen) {
        a0 = fmaV(loadV(q + d), loadV(k + d), a0);
        a1 = fmaV(loadV(q + d + vlen), loadV(k + d + vlen), a1);
    }
    while (d + vlen <= n) : (d += vlen) a0 = fmaV(loadV(q + d), loadV(k + d), a0);
    var s = @reduce(.Add, a0 + a1);
    while (d < n) : (d += 1) s += q[d] * k[d];
    return s;
}

/// acc += Σ_k p[k] · v[k*stride ..] for K keys per pass, so acc is loaded and stored once per
/// K multiply-adds (the store was the hot spot of long-context decode at K = 4). Each element
/// gets the same chain of multiply-adds, key by key, whatever K is, so K never changes a bit.
inline fn axpyK(comptime K: usize, acc: [*]f32, p: [K]f32, v: [*]const f32, stride: usize, n: usize) void {
    var d: usize = 0;
    while (d + vlen <= n) : (d += vlen) {
        var x = loadV(acc + d);
        inline for (0..K) |k| x = fmaV(@splat(p[k]), loadV(v + k * stride + d), x);
        storeV(acc + d, x);
    }
    while (d < n) : (d += 1) {
        inline for (0..K) |k| acc[d] += p[k] * v[k * stride + d];
    }
}

fn axpy1(acc: [*]f32, p: f32, v: [*]const f32, n: usize) void {
    var d: usize = 0;
    while (d + vlen <= n) : (d += vlen) storeV(acc + d, fmaV(@splat(p), loadV(v + d), loadV(acc + d)));
    while (d < n) : (d += 1) acc[d] += p * v[d];
}

fn scaleRow(x: [*]f32, s: f32, n: usize) void {
    var d: usize = 0;
    while (d + vlen <= n) : (d += vlen) storeV(x + d, loadV(x + d) * @as(F32V, @splat(s)));
    while (d < n) : (d += 1) x[d] *= s;
}

/// f16 → f32 on whole vectors (one vcvtph2ps per 8 lanes with F16C, fcvtl on aarch64).
fn convertRow(src: [*]const f16, dst: [*]f32, n: usize) void {
    var d: usize = 0;
    while (d + 32 <= n) : (d += 32) {
        const h: @Vector(32, f16) = src[d..][0..32].*;
        dst[d..][0..32].* = @as(@Vector(32, f32), @floatCast(h));
    }
    while (d + vlen <= n) : (d += vlen) {
        const h: F16V = src[d..][0..vlen].*;
        storeV(dst + d, @floatCast(h));
    }
    while (d < n) : (d += 1) dst[d] = src[d];
}

// ---------------------------------------------------------------------------------------
// Softmax

/// In-place softmax of x[0..n] in f32, max-subtracted. Entries of -inf get 0; a row that is
/// all -inf (nothing allowed) becomes all zeros rather than NaN.
pub fn softmaxRow(x: [*]f32, n: usize) void {
    if (n == 0) return;
    var mv: F32V = @splat(-inf);
    var i: usize = 0;
    while (i + vlen <= n) : (i += vlen) mv = maxN(vlen, mv, loadV(x + i));
    var m = cpu.maxLanes(vlen, mv);
    while (i < n) : (i += 1) m = @max(m, x[i]);
    if (m == -inf) return @memset(x[0..n], 0);
    const mvec: F32V = @splat(m);
    var sv = zero_v;
    i = 0;
    while (i + vlen <= n) : (i += vlen) {
        const e = expV(loadV(x + i) - mvec);
        storeV(x + i, e);
        sv += e;
    }
    if (i < n) {
        // Tail through one padded vector so every element sees the same exp.
        var tmp = [_]f32{-inf} ** vlen;
        @memcpy(tmp[0 .. n - i], x[i..n]);
        const e: [vlen]f32 = expV(loadV(&tmp) - mvec);
        @memcpy(x[i..n], e[0 .. n - i]);
        for (e[0 .. n - i]) |t| sv[0] += t;
    }
    scaleRow(x, 1.0 / @reduce(.Add, sv), n);
}

/// Scalar reference for softmaxRow, computed in f64.
pub fn softmaxRowRef(x: [*]f32, n: usize) void {
    if (n == 0) return;
    var m: f64 = -std.math.inf(f64);
    for (x[0..n]) |t| m = @max(m, @as(f64, t));
    if (m == -std.math.inf(f64)) return @memset(x[0..n], 0);
    var sum: f64 = 0;
    for (x[0..n]) |t| sum += @exp(@as(f64, t) - m);
    for (x[0..n]) |*t| t.* = @floatCast(@exp(@as(f64, t.*) - m) / sum);
}

// ---------------------------------------------------------------------------------------
// Shared mask / argument logic

const KeyRange = struct { lo: usize, end: usize };

/// Keys a query at position qp may see: causal (p <= qp), inside the cache, and inside the
/// sliding window (qp - p < window). Empty when lo == end.
pub fn keyRange(a: AttentionArgs, qp: usize) KeyRange {
    const end = @min(qp + 1, a.n_kv);
    const lo = if (a.window > 0 and qp + 1 > a.window) qp + 1 - a.window else 0;
    return .{ .lo = @min(lo, end), .end = end };
}

inline fn finishScore(a: AttentionArgs, dot: f32) f32 {
    const s = dot * a.scale;
    return if (a.softcap == 0) s else a.softcap * std.math.tanh(s / a.softcap);
}

fn checkArgs(a: AttentionArgs) void {
    assert(a.head_dim > 0 and a.head_dim <= max_head_dim);
    assert(a.n_kv_head > 0 and a.n_head % a.n_kv_head == 0);
    // Distinct heads/rows/positions must not overlap within a head_dim vector.
    assert(a.n_head <= 1 or a.q_head_stride >= a.head_dim);
    assert(a.n_head <= 1 or a.out_head_stride >= a.head_dim);
    assert(a.n_kv_head <= 1 or a.kv_head_stride >= a.head_dim);
    assert(a.n_q <= 1 or (a.q_row_stride >= a.head_dim and a.out_row_stride >= a.head_dim));
    assert(a.n_kv <= 1 or a.kv_pos_stride >= a.head_dim);
    switch (a.kv_type) {
        .f32, .f16 => {
            const elem: usize = if (a.kv_type == .f32) 4 else 2;
            assert(@intFromPtr(a.k) % elem == 0 and @intFromPtr(a.v) % elem == 0);
        },
        // Whole blocks: rows and strides are multiples of the block (checked at the C ABI).
        .q8_0 => assert(a.head_dim % q8_block == 0 and a.kv_pos_stride % q8_block == 0 and a.kv_head_stride % q8_block == 0),
    }
    assert(!std.math.isNan(a.scale) and a.softcap >= 0);
}

pub fn kvRow(comptime T: type, a: AttentionArgs, base: [*]const u8, p: usize, g: usize) [*]const T {
    const ptr: [*]const T = @ptrCast(@alignCast(base));
    return ptr + p * a.kv_pos_stride + g * a.kv_head_stride;
}

/// The first block of a Q8_0 row (strides count elements, as for f32/f16).
fn q8Row(a: AttentionArgs, base: [*]const u8, p: usize, g: usize) [*]const u8 {
    return base + (p * a.kv_pos_stride + g * a.kv_head_stride) / q8_block * q8_block_bytes;
}

/// Q8_0 → f32 for n elements (a whole number of blocks): x = d · q.
fn dequantQ8Row(src: [*]const u8, dst: [*]f32, n: usize) void {
    var b: usize = 0;
    while (b < n / q8_block) : (b += 1) {
        const blk = src + b * q8_block_bytes;
        const d: f32 = cpu.f16BitsToF32(std.mem.readInt(u16, blk[0..2], .little));
        const q: @Vector(q8_block, i8) = @bitCast(blk[2..][0..q8_block].*);
        const x: @Vector(q8_block, f32) = @floatFromInt(q);
        dst[b * q8_block ..][0..q8_block].* = x * @as(@Vector(q8_block, f32), @splat(d));
    }
}

/// One K/V element (tests' reference).
fn q8Elem(a: AttentionArgs, base: [*]const u8, p: usize, g: usize, d: usize) f32 {
    const blk = q8Row(a, base, p, g) + d / q8_block * q8_block_bytes;
    const scale: f32 = cpu.f16BitsToF32(std.mem.readInt(u16, blk[0..2], .little));
    return scale * @as(f32, @floatFromInt(@as(i8, @bitCast(blk[2 + d % q8_block]))));
}

/// Where the rows-in-lanes kernel scores a Q8_0 cache with integer dot products (vpdpbusd,
/// 512-bit VNNI builds): the query row is quantized to Q8_0 once per task (`quantizeQueryBlock`)
/// and each (row, key, block) score part is d_q·d_k·Σ q·k summed exactly in int32, as llama.cpp
/// scores a quantized K. Elsewhere the tile is dequantized to f32 as for f16.
pub const q8_int_scores = @import("cpu.zig").has_vnni512;

/// Whether a call's scores come from the Q8_0 query (tests' reference must then use it too).
pub fn quantizesQuery(a: AttentionArgs, layout: Layout) bool {
    _ = layout; // both layouts
    return q8_int_scores and a.kv_type == .q8_0;
}

/// One 32-element block of a query row to Q8_0 (ActQ8_0's rule: d = amax/127, q = round(x/d)):
/// returns d. The kernel and the tests' reference share it, so both see the same q.
pub fn quantizeQueryBlock(x: *const [q8_block]f32, q: *[q8_block]i8) f32 {
    const v: @Vector(q8_block, f32) = x.*;
    const amax = cpu.maxLanes(q8_block, @abs(v));
    const d = amax / 127.0;
    const id: f32 = if (d != 0) 1.0 / d else 0.0;
    const lim: @Vector(q8_block, f32) = @splat(127.0);
    const y = @min(@max(v * @as(@Vector(q8_block, f32), @splat(id)), -lim), lim);
    const qi: @Vector(q8_block, i8) = @intFromFloat(@round(y));
    q.* = qi;
    return d;
}

/// The query rows of a dot-product task quantized for integer scores of a Q8_0 cache
/// (quantizesQuery): per row and block, the 32 quant bytes, the scale, and the vpdpbusd
/// accumulator's start, -128·Σq in lane 0 (the key bytes are biased to unsigned), so the 8 lanes
/// sum to Σ q·k exactly.
const QueryQ8 = struct {
    const blocks = max_head_dim / q8_block;
    const I32x8 = @Vector(8, i32);
    q: [max_rows][blocks]I32x8, // 32 bytes as 8 words
    d: [max_rows][blocks]f32,
    start: [max_rows][blocks]I32x8,

    fn init(qs: *QueryQ8, rows: *const Rows, hd: usize) void {
        for (0..rows.n) |r| for (0..hd / q8_block) |b| {
            var qb: [q8_block]i8 = undefined;
            qs.d[r][b] = quantizeQueryBlock(rows.q[r][b * q8_block ..][0..q8_block], &qb);
            var sum: i32 = 0;
            for (qb) |x| sum += x;
            qs.q[r][b] = @bitCast(qb);
            qs.start[r][b] = .{ -128 * sum, 0, 0, 0, 0, 0, 0, 0 };
        };
    }
};

/// dotRK's integer twin for a Q8_0 cache (quantizesQuery): per (row, key, block), Σ q·k exact
/// in 8 int32 lanes of a vpdpbusd, converted and scaled by d_q·d_k into 8 f32 lanes, summed over
/// blocks in order and reduced at the end (sumLanes' tree). Keys go in pairs, one per 256-bit
/// half of a 512-bit vpdpbusd, conversion and FMA, reduced together (sumHalves): every lane
/// sees the arithmetic it would alone, so each (row, key) pair has the same bits whatever R and
/// K are. Two keys a vector took 9/3/64 decode scores from 12 instructions per (row, key) pair
/// and block plus a 6-instruction reduction each to about half that.
inline fn dotRKQ8(comptime R: usize, comptime K: usize, qs: *const QueryQ8, r0: usize, kp: [K][*]const Q8Block, n: usize) [R][K]f32 {
    comptime assert(K % 2 == 0);
    const KP = K / 2;
    const F16x = @Vector(16, f32);
    const I16x = @Vector(16, i32);
    const spread = comptime blk: {
        var m: [16]i32 = undefined;
        for (0..16) |l| m[l] = @intCast(l / 8);
        break :blk m;
    };
    var acc: [R][KP]F16x = @splat(@splat(@splat(0)));
    for (0..n / q8_block) |b| {
        var kx: [KP]I16x = undefined;
        var dk: [KP]@Vector(2, f32) = undefined;
        inline for (0..KP) |k| {
            const u = std.simd.join(@as(@Vector(q8_block, u8), @bitCast(kp[2 * k][b].q)), @as(@Vector(q8_block, u8), @bitCast(kp[2 * k + 1][b].q)));
            kx[k] = @bitCast(u ^ @as(@Vector(2 * q8_block, u8), @splat(0x80)));
            dk[k] = .{ kp[2 * k][b].scale(), kp[2 * k + 1][b].scale() };
        }
        inline for (0..R) |r| {
            const qv = qs.q[r0 + r][b];
            const st = qs.start[r0 + r][b];
            const dq: @Vector(2, f32) = @splat(qs.d[r0 + r][b]);
            inline for (0..KP) |k| {
                const isum = @"llvm.x86.avx512.vpdpbusd.512"(std.simd.join(st, st), kx[k], std.simd.join(qv, qv));
                const scale: F16x = @shuffle(f32, dq * dk[k], undefined, spread);
                acc[r][k] = fmaN(16, @floatFromInt(isum), scale, acc[r][k]);
            }
        }
    }
    var out: [R][K]f32 = undefined;
    inline for (0..R) |r| inline for (0..KP) |k| {
        const s2 = sumHalves(acc[r][k]);
        out[r][2 * k] = s2[0];
        out[r][2 * k + 1] = s2[1];
    };
    return out;
}

/// sumLanes(8, ·) of both 8-lane halves of v at once: the same additions, in the same order.
inline fn sumHalves(v: @Vector(16, f32)) [2]f32 {
    const a = v + @shuffle(f32, v, undefined, [16]i32{ 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11 });
    const b = a + @shuffle(f32, a, undefined, [16]i32{ 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13 });
    const c = b + @shuffle(f32, b, undefined, [16]i32{ 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14 });
    return .{ c[0], c[8] };
}

/// Sum of N lanes as a pairwise tree, low half + high half down to one lane (log2 N dependent
/// adds; @reduce(.Add) on floats is the ordered sum, N - 1 of them). A fixed order, so the
/// same vector always gives the same bits.
inline fn sumLanes(comptime N: usize, v: @Vector(N, f32)) f32 {
    if (N == 1) return v[0];
    const H = N / 2;
    comptime assert(H * 2 == N);
    const masks = comptime blk: {
        var m: [2][H]i32 = undefined;
        for (0..H) |i| {
            m[0][i] = i;
            m[1][i] = H + i;
        }
        break :blk m;
    };
    return sumLanes(H, @shuffle(f32, v, undefined, masks[0]) + @shuffle(f32, v, undefined, masks[1]));
}

// ---------------------------------------------------------------------------------------
// Flash attention

/// How the work is cut into tasks. A task = (query block, KV head, chunk of that KV head's
/// query heads); its rows are the block's query rows × the chunk's heads.
const Plan = struct {
    group: usize, // query heads per KV head
    heads_per_task: usize,
    n_head_chunks: usize,
    rows_per_block: usize, // query rows per task
    n_q_blocks: usize,
    n_base: usize, // tasks
    tile: usize, // keys per tile

    fn rowsPerTask(p: Plan) usize {
        return p.rows_per_block * p.heads_per_task;
    }
};

fn makePlan(a: AttentionArgs, threads: usize) Plan {
    const group = a.n_head / a.n_kv_head;
    var p = Plan{
        .group = group,
        .heads_per_task = @min(group, max_rows),
        .n_head_chunks = 0,
        .rows_per_block = 0,
        .n_q_blocks = 0,
        .n_base = 0,
        .tile = @min(max_tile, tile_floats / a.head_dim),
    };
    p = withHeadsPerTask(a, p, p.heads_per_task);
    // Too few tasks to occupy the threads (decode): spread each KV head's query heads over more
    // tasks, until there is one per thread (each task converts its KV head's f16 tiles itself,
    // so more tasks than threads only repeat that work). Splitting the key range instead would
    // change the summation order, and with it the bits, between a row decoded alone and the
    // same row in a batch.
    while (threads > 1 and p.n_base < threads and p.heads_per_task > 1) {
        p = withHeadsPerTask(a, p, std.math.divCeil(usize, p.heads_per_task, 2) catch unreachable);
    }
    return p;
}

fn withHeadsPerTask(a: AttentionArgs, plan: Plan, hpt: usize) Plan {
    var p = plan;
    p.heads_per_task = hpt;
    p.rows_per_block = @max(1, max_rows / hpt);
    p.n_head_chunks = std.math.divCeil(usize, p.group, hpt) catch unreachable;
    p.n_q_blocks = std.math.divCeil(usize, a.n_q, p.rows_per_block) catch unreachable;
    p.n_base = p.n_q_blocks * a.n_kv_head * p.n_head_chunks;
    return p;
}

/// The (query row, head) pairs of one base task, with their pointers and key ranges.
const Rows = struct {
    n: usize,
    g: usize, // KV head
    q: [max_rows][*]const f32,
    out: [max_rows][*]f32,
    lo: [max_rows]usize,
    end: [max_rows]usize,

    /// Union of the rows' allowed keys (rows are consecutive positions, so it is contiguous).
    fn span(r: *const Rows) KeyRange {
        var lo: usize = std.math.maxInt(usize);
        var end: usize = 0;
        for (0..r.n) |i| {
            if (r.lo[i] == r.end[i]) continue;
            lo = @min(lo, r.lo[i]);
            end = @max(end, r.end[i]);
        }
        return if (end == 0) .{ .lo = 0, .end = 0 } else .{ .lo = lo, .end = end };
    }
};

fn taskRows(a: AttentionArgs, p: Plan, base: usize) Rows {
    const hc = base % p.n_head_chunks;
    const g = (base / p.n_head_chunks) % a.n_kv_head;
    // Latest query blocks first: under the causal mask they are the longest, and the pool's
    // dynamic scheduling then fills in with the short ones.
    const qb = p.n_q_blocks - 1 - base / (p.n_head_chunks * a.n_kv_head);
    const row0 = qb * p.rows_per_block;
    const h0 = g * p.group + hc * p.heads_per_task;
    const h1 = @min((g + 1) * p.group, h0 + p.heads_per_task);
    var rows: Rows = undefined;
    rows.n = 0;
    rows.g = g;
    for (row0..@min(a.n_q, row0 + p.rows_per_block)) |i| {
        const kr = keyRange(a, a.q_pos0 + i);
        for (h0..h1) |h| {
            rows.q[rows.n] = a.q + i * a.q_row_stride + h * a.q_head_stride;
            rows.out[rows.n] = a.out + i * a.out_row_stride + h * a.out_head_stride;
            rows.lo[rows.n] = kr.lo;
            rows.end[rows.n] = kr.end;
            rows.n += 1;
        }
    }
    return rows;
}

/// Online-softmax state of a task's rows; acc rows are head_dim apart.
const State = struct {
    m: [max_rows]f32,
    l: [max_rows]f32,
    acc: [max_rows * max_head_dim]f32,
};

const Scores = [max_rows][max_tile]f32;

fn TileOf(comptime E: type) type {
    return struct { ptr: [*]const E, stride: usize };
}
/// K or V rows of a tile as f32 (read in place, or converted into a task buffer).
const Tile = TileOf(f32);

/// Asks for the row one tile ahead while this tile converts: a KV head's rows are strided
/// (n_kv_head · head_dim apart), a pattern the hardware prefetchers follow poorly, and without
/// this a long-context decode spent over a third of its attention time waiting on these loads.
/// Prefetches past the cache's end are harmless (they never fault).
inline fn prefetchRow(p: [*]const u8, bytes: usize) void {
    var off: usize = 0;
    while (off < bytes) : (off += 64) @prefetch(p + off, .{});
}

/// Keys ahead that the in-place paths prefetch: at least 32 KB of f16 rows (16 KB of Q8_0).
inline fn kvAheadKeys(hd: usize) usize {
    return @max(16, 32 * 1024 / (hd * 2));
}

/// One cache row into L2 (into L1 the lines would hold its miss buffers; see
/// quant_legacy.zig Prefetch). Addresses past the cache never fault.
inline fn prefetchKvRow(p: [*]const u8, bytes: usize) void {
    var off: usize = 0;
    while (off < bytes) : (off += 64) @prefetch(p + off, .{ .locality = 2 });
}

/// K or V rows from position t0 of KV head g read in place from the cache, as E (f16, or Q8_0
/// blocks: the stride then counts blocks).
fn inPlaceRows(comptime E: type, a: AttentionArgs, base: [*]const u8, t0: usize, g: usize) TileOf(E) {
    if (E == Q8Block) return .{ .ptr = @ptrCast(q8Row(a, base, t0, g)), .stride = a.kv_pos_stride / q8_block };
    return .{ .ptr = kvRow(E, a, base, t0, g), .stride = a.kv_pos_stride };
}

/// K or V rows [t0, t0+n) of KV head g as f32: read in place for f32, converted (f16) or
/// dequantized (Q8_0) once into buf so the whole GQA group reuses the conversion.
fn loadTile(a: AttentionArgs, base: [*]const u8, g: usize, t0: usize, n: usize, buf: *[tile_floats]f32) Tile {
    switch (a.kv_type) {
        .f32 => return .{ .ptr = kvRow(f32, a, base, t0, g), .stride = a.kv_pos_stride },
        .f16 => {
            for (0..n) |j| {
                prefetchRow(@ptrCast(kvRow(f16, a, base, t0 + j + n, g)), a.head_dim * 2);
                convertRow(kvRow(f16, a, base, t0 + j, g), buf[j * a.head_dim ..].ptr, a.head_dim);
            }
            return .{ .ptr = buf, .stride = a.head_dim };
        },
        .q8_0 => {
            for (0..n) |j| {
                prefetchRow(q8Row(a, base, t0 + j + n, g), a.head_dim / q8_block * q8_block_bytes);
                dequantQ8Row(q8Row(a, base, t0 + j, g), buf[j * a.head_dim ..].ptr, a.head_dim);
            }
            return .{ .ptr = buf, .stride = a.head_dim };
        },
    }
}

/// Scores of rows [r0, r0 + R) for the keys any of them may see in the tile, K keys per dot
/// (a last partial step repeats its last key).
inline fn groupScores(comptime R: usize, comptime K: usize, comptime E: type, a: AttentionArgs, rows: *const Rows, qs: ?*const QueryQ8, kt: TileOf(E), t0: usize, n: usize, r0: usize, sc: *Scores) void {
    var q: [R][*]const f32 = undefined;
    var ja: usize = n;
    var jb: usize = 0;
    inline for (0..R) |k| {
        const r = r0 + k;
        q[k] = rows.q[r];
        const lo = @max(rows.lo[r], t0);
        const hi = @min(rows.end[r], t0 + n);
        if (lo < hi) {
            ja = @min(ja, lo - t0);
            jb = @max(jb, hi - t0);
        }
    }
    var j = ja;
    while (j < jb) : (j += K) {
        var kp: [K][*]const E = undefined;
        inline for (0..K) |k| kp[k] = kt.ptr + @min(j + k, jb - 1) * kt.stride;
        if (E != f32) {
            // Read in place from the cache: ask for the rows kvAheadKeys later, a few lines per
            // step rather than a burst per tile.
            const ahead = kvAheadKeys(a.head_dim);
            inline for (0..K) |k| prefetchKvRow(@ptrCast(kt.ptr + (j + k + ahead) * kt.stride), rowBytes(E, a.head_dim));
        }
        const d = if (E == Q8Block and q8_int_scores) dotRKQ8(R, K, qs.?, r0, kp, a.head_dim) else dotRK(R, K, E, q, kp, a.head_dim);
        inline for (0..R) |r| inline for (0..K) |k| {
            sc[r0 + r][@min(j + k, jb - 1)] = d[r][k];
        };
    }
}

/// Scores of every row against keys [t0, t0+n), already scaled, softcapped and masked
/// (-inf). Row groups of up to four skip the tile's columns none of them may see.
fn tileScores(comptime E: type, a: AttentionArgs, rows: *const Rows, qs: ?*const QueryQ8, kt: TileOf(E), t0: usize, n: usize, sc: *Scores) void {
    var r0: usize = 0;
    while (r0 < rows.n) : (r0 += 4) {
        switch (@min(4, rows.n - r0)) {
            inline 1...4 => |R| groupScores(R, if (R == 1) 8 else if (R == 2) 4 else 2, E, a, rows, qs, kt, t0, n, r0, sc),
            else => unreachable,
        }
    }
    // Columns up to the vector-rounded width are written so the softmax reads whole vectors.
    const nv = std.mem.alignForward(usize, n, vlen);
    for (0..rows.n) |r| {
        const row: [*]f32 = &sc[r];
        if (a.softcap == 0 and rows.lo[r] <= t0 and rows.end[r] >= t0 + n) {
            // The row sees the whole tile (decode, mostly): finishScore's product on whole
            // vectors, -inf past n.
            var j: usize = 0;
            while (j + vlen <= n) : (j += vlen) storeV(row + j, loadV(row + j) * @as(F32V, @splat(a.scale)));
            while (j < nv) : (j += 1) row[j] = if (j < n) row[j] * a.scale else -inf;
            continue;
        }
        for (0..nv) |j| {
            const p = t0 + j;
            const ok = j < n and p >= rows.lo[r] and p < rows.end[r];
            row[j] = if (ok) finishScore(a, row[j]) else -inf;
        }
    }
}

/// Online-softmax update of every row that sees part of the tile: new max, rescale of the
/// running sum and accumulator, and scores turned into probabilities in place.
fn tileSoftmax(rows: *const Rows, st: *State, sc: *Scores, t0: usize, n: usize, hd: usize) void {
    const nv = std.mem.alignForward(usize, n, vlen);
    for (0..rows.n) |r| {
        if (@max(rows.lo[r], t0) >= @min(rows.end[r], t0 + n)) continue;
        const row: [*]f32 = &sc[r];
        var mv: F32V = @splat(-inf);
        var j: usize = 0;
        while (j < nv) : (j += vlen) mv = maxN(vlen, mv, loadV(row + j));
        const m_new = @max(st.m[r], cpu.maxLanes(vlen, mv));
        const alpha = @exp(st.m[r] - m_new); // 0 on the first tile (m = -inf)
        var sum = zero_v;
        j = 0;
        if (acc_lanes > vlen) {
            // exp on acc_lanes-wide vectors (lane by lane: the same bits), summed vlen lanes at
            // a time in order, as below.
            const XV = @Vector(acc_lanes, f32);
            while (j + acc_lanes <= nv) : (j += acc_lanes) {
                const e = expN(acc_lanes, @as(XV, row[j..][0..acc_lanes].*) - @as(XV, @splat(m_new)));
                row[j..][0..acc_lanes].* = e;
                inline for (0..acc_lanes / vlen) |k| sum += std.simd.extract(e, k * vlen, vlen);
            }
        }
        while (j < nv) : (j += vlen) {
            const e = expV(loadV(row + j) - @as(F32V, @splat(m_new)));
            storeV(row + j, e);
            sum += e;
        }
        if (alpha != 1 and st.l[r] != 0) scaleRow(st.acc[r * hd ..].ptr, alpha, hd);
        st.l[r] = st.l[r] * alpha + @reduce(.Add, sum);
        st.m[r] = m_new;
    }
}

fn tileAccumulate(rows: *const Rows, st: *State, vt: Tile, sc: *const Scores, t0: usize, n: usize, hd: usize) void {
    for (0..rows.n) |r| {
        const lo = @max(rows.lo[r], t0);
        const hi = @min(rows.end[r], t0 + n);
        if (lo >= hi) continue;
        const acc = st.acc[r * hd ..].ptr;
        var j = lo - t0;
        while (j + 8 <= hi - t0) : (j += 8) axpyK(8, acc, sc[r][j..][0..8].*, vt.ptr + j * vt.stride, vt.stride, hd);
        while (j + 4 <= hi - t0) : (j += 4) axpyK(4, acc, sc[r][j..][0..4].*, vt.ptr + j * vt.stride, vt.stride, hd);
        while (j < hi - t0) : (j += 1) axpy1(acc, sc[r][j], vt.ptr + j * vt.stride, hd);
    }
}

/// tileAccumulate for an f16 or Q8_0 V cache when every row of the task sees the same keys of
/// the tile (decode, and any batch away from the mask's edges): V is read from the cache and
/// converted in registers, once for up to four rows, instead of converted into a buffer and read
/// back once per row; each row's accumulator chunk is loaded and stored once per tile instead of
/// once per 8 keys. For f16 every element gets axpyK's chain (fused multiply-adds key by key on
/// the vector part of the row, mul-then-add on the scalar tail) of the same V values, so the
/// bits are tileAccumulate's. A Q8_0 cache is always accumulated here (`tileAccumulateQ8`), as
/// fma(p·d, q, acc) key by key: the block scale multiplies the probability once instead of
/// every element.
fn tileAccumulateInPlace(comptime E: type, a: AttentionArgs, rows: *const Rows, st: *State, sc: *const Scores, t0: usize, lo: usize, hi: usize, hd: usize) void {
    const v0 = inPlaceRows(E, a, a.v, lo, rows.g);
    var r0: usize = 0;
    while (r0 < rows.n) : (r0 += 4) {
        switch (@min(4, rows.n - r0)) {
            inline 1...4 => |R| {
                var acc: [R][*]f32 = undefined;
                var p: [R][*]const f32 = undefined;
                inline for (0..R) |r| {
                    acc[r] = st.acc[(r0 + r) * hd ..].ptr;
                    p[r] = sc[r0 + r][lo - t0 ..].ptr;
                }
                accumulateRows(R, E, 1, acc, p, v0.ptr, v0.stride, hi - lo, hd);
            },
            else => unreachable,
        }
    }
}

/// Vectors per pass of accumulateRows at R rows: R·N accumulators plus N values within the
/// vector registers (32 with AVX-512 or on aarch64, 16 with AVX2 or SSE).
fn chunkVectors(comptime R: usize) usize {
    const regs = if (@import("cpu.zig").has_avx512bw or @import("builtin").cpu.arch == .aarch64) 32 else 16;
    var n: usize = 8;
    while (n > 1 and (R + 1) * n > regs - 4) n /= 2;
    return n;
}

/// The V accumulation of a Q8_0 cache in the dot-product layout: rows seeing the same keys of
/// the tile in groups of up to four, else each row over its own keys, with the same chain per
/// element either way (a row's bits never depend on its batch).
fn tileAccumulateQ8(a: AttentionArgs, rows: *const Rows, st: *State, sc: *const Scores, t0: usize, n: usize, hd: usize) void {
    if (uniformRange(rows, t0, n)) |kr| return tileAccumulateInPlace(Q8Block, a, rows, st, sc, t0, kr.lo, kr.end, hd);
    for (0..rows.n) |r| {
        const lo = @max(rows.lo[r], t0);
        const hi = @min(rows.end[r], t0 + n);
        if (lo >= hi) continue;
        const v0 = inPlaceRows(Q8Block, a, a.v, lo, rows.g);
        accumulateRows(1, Q8Block, 1, .{st.acc[r * hd ..].ptr}, .{sc[r][lo - t0 ..].ptr}, v0.ptr, v0.stride, hi - lo, hd);
    }
}

/// Lanes of accumulateRows' first pass: 16 on AVX-512 builds, else vlen. A 64-wide head of
/// three rows took 12 ymm FMAs, 4 sign extensions and 4 conversions per key and Q8_0 block; zmm
/// halves the instructions (Zen 5 and Intel's cores run 512-bit FMAs at full width; Zen 4 splits
/// them in two: measured on Zen 5 only). Each element's chain (one FMA per key, keys in order)
/// is the same at any width, so the bits are the vlen pass's.
const acc_lanes = if (@import("cpu.zig").has_avx512bw) 16 else vlen;

/// acc[r][d] += Σ_j p[r][j·PS] · v[j][d] for R rows, keys in order, V read in place (f32, f16,
/// or Q8_0 blocks). PS = 1: each row's probabilities are contiguous (the dot-product layout's
/// scores); PS = W: the lanes layout's, key-major with one lane per row. A Q8_0 V is taken as
/// fma(p·d, q, acc) in the dot-product layout (the scale multiplies each row's probability once)
/// and as fma(p, d·q, acc) in the lanes layout (dequantized once for all its rows, the values
/// its tile buffer held before): each layout keeps its own bits.
inline fn accumulateRows(comptime R: usize, comptime E: type, comptime PS: usize, acc: [R][*]f32, p: [R][*]const f32, v: [*]const E, stride: usize, nk: usize, hd: usize) void {
    // axpyK's vector part [0, hd/vlen·vlen) gets FMAs, the rest its scalar tail's mul-then-add.
    var d: usize = 0;
    if (acc_lanes != vlen) accumulatePass(acc_lanes, R, E, PS, acc, p, v, stride, nk, hd, hd / acc_lanes * acc_lanes, &d);
    accumulatePass(vlen, R, E, PS, acc, p, v, stride, nk, hd, hd / vlen * vlen, &d);
    while (d < hd) : (d += 1) {
        for (0..nk) |j| {
            const vf = rowElem(E, v + j * stride, d);
            inline for (0..R) |r| acc[r][d] += p[r][j * PS] * vf;
        }
    }
}

/// accumulateRows over elements [d, end) in W-lane vectors; advances d.
inline fn accumulatePass(comptime W: usize, comptime R: usize, comptime E: type, comptime PS: usize, acc: [R][*]f32, p: [R][*]const f32, v: [*]const E, stride: usize, nk: usize, hd: usize, end: usize, d: *usize) void {
    @setEvalBranchQuota(10_000);
    const V = @Vector(W, f32);
    const ahead = kvAheadKeys(hd);
    // Chunks of N vectors: each (row, vector) is a chain of FMAs, key after key, so a pass over
    // the keys has R·N independent chains to cover the FMA latency: 2 vectors per pass left
    // 1-3 rows latency-bound (hd = 64 took four passes of 6 chains at 3 rows).
    inline for (.{ comptime chunkVectors(R), 2, 1 }) |N| {
        while (d.* + N * W <= end) : (d.* += N * W) {
            const d0 = d.*;
            var x: [R][N]V = undefined;
            inline for (0..R) |r| inline for (0..N) |i| {
                x[r][i] = acc[r][d0 + i * W ..][0..W].*;
            };
            for (0..nk) |j| {
                // The first pass over the keys asks for the rows `ahead` keys later.
                if (E != f32 and d0 == 0) prefetchKvRow(@ptrCast(v + (j + ahead) * stride), rowBytes(E, hd));
                if (E == Q8Block and PS == 1) {
                    // fma(p·d_v, q, acc), block by block (a chunk holds whole blocks, or lies in one).
                    const per_block = @min(N, q8_block / W);
                    inline for (0..N / per_block) |bi| {
                        const e0 = d0 + bi * per_block * W;
                        const blk = &v[j * stride + e0 / q8_block];
                        const scale = blk.scale();
                        var qf: [per_block]V = undefined;
                        inline for (0..per_block) |i| {
                            const q: @Vector(W, i8) = blk.q[e0 % q8_block + i * W ..][0..W].*;
                            qf[i] = @floatFromInt(q);
                        }
                        inline for (0..R) |r| {
                            const pr: V = @splat(p[r][j * PS] * scale);
                            inline for (0..per_block) |i| x[r][bi * per_block + i] = fmaN(W, pr, qf[i], x[r][bi * per_block + i]);
                        }
                    }
                } else {
                    var vv: [N]V = undefined;
                    inline for (0..N) |i| vv[i] = rowVec(W, E, v + j * stride, d0 + i * W);
                    inline for (0..R) |r| {
                        const pr: V = @splat(p[r][j * PS]);
                        inline for (0..N) |i| x[r][i] = fmaN(W, pr, vv[i], x[r][i]);
                    }
                }
            }
            inline for (0..R) |r| inline for (0..N) |i| {
                acc[r][d0 + i * W ..][0..W].* = x[r][i];
            };
        }
    }
}

/// The tile's key range [lo, hi) when every row of the task sees exactly that range, else null.
fn uniformRange(rows: *const Rows, t0: usize, n: usize) ?KeyRange {
    const lo = @max(rows.lo[0], t0);
    const hi = @min(rows.end[0], t0 + n);
    for (1..rows.n) |r| {
        if (@max(rows.lo[r], t0) != lo or @min(rows.end[r], t0 + n) != hi) return null;
    }
    return if (lo < hi) .{ .lo = lo, .end = hi } else null;
}

const Ctx = struct {
    a: AttentionArgs,
    plan: Plan,
};

fn runTask(c: Ctx, t: usize) void {
    const a = c.a;
    const hd = a.head_dim;
    const rows = taskRows(a, c.plan, t);
    const span = rows.span();
    var st: State = undefined;
    @memset(st.m[0..rows.n], -inf);
    @memset(st.l[0..rows.n], 0);
    @memset(st.acc[0 .. rows.n * hd], 0);
    var buf: [tile_floats]f32 = undefined;
    var sc: Scores = undefined;
    var qs: QueryQ8 = undefined;
    const int_scores = quantizesQuery(a, .dots);
    if (int_scores) qs.init(&rows, hd);
    // Tiles cover only the union of allowed keys (fully masked tiles are never touched) and
    // start at absolute multiples of the tile size, so every row sees the same tile boundaries
    // whatever batch it is in.
    var t0 = span.lo - span.lo % c.plan.tile;
    const t_end = span.end;
    while (t0 < t_end) : (t0 += c.plan.tile) {
        const n = @min(c.plan.tile, t_end - t0);
        // One group of ≤ 4 rows converts each K vector once either way: read an f16 or Q8_0
        // cache in place and convert in registers rather than through the buffer. Integer
        // scores of a Q8_0 cache always read it in place (every task, the same arithmetic).
        switch (a.kv_type) {
            inline .f16, .q8_0 => |kt| if (rows.n <= 4 or int_scores) {
                const E = if (kt == .f16) f16 else Q8Block;
                tileScores(E, a, &rows, &qs, inPlaceRows(E, a, a.k, t0, rows.g), t0, n, &sc);
            } else {
                tileScores(f32, a, &rows, null, loadTile(a, a.k, rows.g, t0, n, &buf), t0, n, &sc);
            },
            .f32 => tileScores(f32, a, &rows, null, loadTile(a, a.k, rows.g, t0, n, &buf), t0, n, &sc),
        }
        tileSoftmax(&rows, &st, &sc, t0, n, hd);
        switch (a.kv_type) {
            .f16 => if (uniformRange(&rows, t0, n)) |kr| {
                tileAccumulateInPlace(f16, a, &rows, &st, &sc, t0, kr.lo, kr.end, hd);
                continue;
            },
            .q8_0 => {
                tileAccumulateQ8(a, &rows, &st, &sc, t0, n, hd);
                continue;
            },
            .f32 => {},
        }
        tileAccumulate(&rows, &st, loadTile(a, a.v, rows.g, t0, n, &buf), &sc, t0, n, hd);
    }
    for (0..rows.n) |r| {
        @memcpy(rows.out[r][0..hd], st.acc[r * hd ..][0..hd]);
        normalizeRow(rows.out[r], st.l[r], hd);
    }
}

/// out = acc / l, the accumulator already copied to out. l == 0 only when the row may see no
/// key: it gets zeros, not 0/0.
pub fn normalizeRow(o: [*]f32, l: f32, hd: usize) void {
    if (l == 0) @memset(o[0..hd], 0) else scaleRow(o, 1.0 / l, hd);
}

// ---------------------------------------------------------------------------------------
// Flash attention, rows in lanes
//
// The task's rows live in the LANES of W-wide vectors (W = 4, 8 or 16: the fewest lanes that
// hold the task's rows, so decode's 8 query heads of one KV head fill one ymm instead of half a
// zmm): Q is transposed once per task (qt[d] = element d of every row), so a score is a chain
// of FMAs of qt[d] by a broadcast key element, with no horizontal sum; the online softmax
// (running max m, running sum l, rescale factor) is elementwise across rows; and the
// accumulator is kept transposed too (acc[d] = output element d of every row), updated by the
// probabilities of a key times a broadcast value element. Per (row, key) the score is Σ_d in
// order and per (row, d) the accumulator adds keys in order, whatever rows share the vector and
// whatever W is (every operation is lane by lane): a row's bits never depend on its batch. Keys
// outside a row's range get probability +0, which leaves its accumulator and sum exactly as
// they were.
fn Lanes(comptime W: usize) type {
    return struct {
        const RV = @Vector(W, f32);
        const RI = @Vector(W, i32);

        const RU = @Vector(W, u32);
        const q8_blocks_max = max_head_dim / q8_block;

        const LaneState = struct {
            qt: [max_head_dim]RV,
            // Q8_0 path (quantizesQuery): 4 quant bytes of every row per vector, per block the
            // rows' scales and 128·Σq (the bias of the unsigned key bytes, taken back out).
            qt8: [max_head_dim / 4]RU,
            dq: [q8_blocks_max]RV,
            qsum128: [q8_blocks_max]RI,
            // The same, each row in two adjacent lanes of a 16-lane vector (pairScoresQ8).
            qt8x: [if (pair_scores) max_head_dim / 4 else 0]@Vector(16, u32),
            dqx: [if (pair_scores) q8_blocks_max else 0]@Vector(16, f32),
            qsumx: [if (pair_scores) q8_blocks_max else 0]@Vector(16, i32),
            // qt with each row in two adjacent lanes (pairScoresF16).
            qtx: [if (pair_f16_scores) max_head_dim else 0]@Vector(16, f32),
            acc: [W * max_head_dim]f32, // row r's accumulator at [r·head_dim, (r + 1)·head_dim)
            m: RV,
            l: RV,
            lo: RI, // allowed keys of each row: [lo, end); empty (0, 0) in unused lanes
            end: RI,
        };

        /// Probabilities of every row for the tile's keys (scores first), one RV per key.
        const LaneScores = [max_tile]RV;

        /// Raw dot products of keys [j, j + KB) into sc[j..]: scaled, softcapped, masked to -inf.
        inline fn finishScores(comptime KB: usize, a: AttentionArgs, st: *const LaneState, acc: *const [KB]RV, t0: usize, j: usize, sc: *LaneScores) void {
            inline for (0..KB) |k| {
                var s = acc[k] * @as(RV, @splat(a.scale));
                if (a.softcap != 0) {
                    const c = a.softcap;
                    for (0..W) |r| s[r] = c * std.math.tanh(s[r] / c);
                }
                const pos: RI = @splat(@intCast(t0 + j + k));
                const ok = (pos >= st.lo) & (pos < st.end);
                sc[j + k] = @select(f32, ok, s, @as(RV, @splat(-inf)));
            }
        }

        /// Scores of keys [j, j + KB) of the tile for every row: scaled, softcapped, masked to -inf.
        /// kt is a tile of rows (stride apart), or with `paired` loadTilePairsF16's layout.
        inline fn scoreKeys(comptime KB: usize, comptime paired: bool, a: AttentionArgs, st: *const LaneState, kt: Tile, t0: usize, j: usize, sc: *LaneScores) void {
            var acc: [KB]RV = @splat(@splat(0));
            for (0..a.head_dim) |d| {
                const q = st.qt[d];
                inline for (0..KB) |k| {
                    const i = if (paired) pairIndex(a.head_dim, j + k, d) else (j + k) * kt.stride + d;
                    acc[k] = fmaN(W, q, @splat(kt.ptr[i]), acc[k]);
                }
            }
            finishScores(KB, a, st, &acc, t0, j, sc);
        }

        /// Element d of key j in loadTilePairsF16's layout: keys in pairs, the pair's elements
        /// interleaved (k_j[d], k_j+1[d]), so one 8-byte broadcast gives both keys' element d.
        inline fn pairIndex(hd: usize, j: usize, d: usize) usize {
            return (j & ~@as(usize, 1)) * hd + 2 * d + (j & 1);
        }

        /// Key rows [t0, t0+n) of an f16 cache as f32 in pairIndex's layout (a lone last key's
        /// partner is zeros: its pair reaches hd floats past n·hd, what TileBuf adds).
        fn loadTilePairsF16(a: AttentionArgs, g: usize, t0: usize, n: usize, buf: *TileBuf) Tile {
            const hd = a.head_dim;
            const V16 = @Vector(16, f32);
            const lo_idx = comptime interleaveMask(8, 0);
            const hi_idx = comptime interleaveMask(8, 8);
            var j: usize = 0;
            while (j < n) : (j += 2) {
                const has_second = j + 1 < n;
                const r0 = kvRow(f16, a, a.k, t0 + j, g);
                const r1 = kvRow(f16, a, a.k, t0 + j + @intFromBool(has_second), g);
                prefetchRow(@ptrCast(kvRow(f16, a, a.k, t0 + j + n, g)), hd * 2);
                prefetchRow(@ptrCast(kvRow(f16, a, a.k, t0 + j + 1 + n, g)), hd * 2);
                const out = buf[j * hd ..];
                var d: usize = 0;
                while (d + 16 <= hd) : (d += 16) {
                    const f0: V16 = @floatCast(@as(@Vector(16, f16), r0[d..][0..16].*));
                    const f1: V16 = if (has_second) @floatCast(@as(@Vector(16, f16), r1[d..][0..16].*)) else @splat(0);
                    out[2 * d ..][0..16].* = @shuffle(f32, f0, f1, lo_idx);
                    out[2 * d + 16 ..][0..16].* = @shuffle(f32, f0, f1, hi_idx);
                }
                while (d < hd) : (d += 1) {
                    out[2 * d] = r0[d];
                    out[2 * d + 1] = if (has_second) r1[d] else 0;
                }
            }
            return .{ .ptr = buf, .stride = 0 };
        }

        /// @shuffle mask taking elements first.. of two vectors alternately: a[first], b[first],
        /// a[first + 1], b[first + 1], … (n of each): the pair layouts of both key tiles.
        fn interleaveMask(comptime n: usize, comptime first: usize) [2 * n]i32 {
            var m: [2 * n]i32 = undefined;
            for (0..n) |i| {
                m[2 * i] = @intCast(first + i);
                m[2 * i + 1] = ~@as(i32, @intCast(first + i));
            }
            return m;
        }

        /// Decode's 8 rows on AVX-512 with an f16 cache: scoreKeys for keys [j, j + 2P), two keys
        /// per 512-bit FMA (row r of key j + 2p in lane 2r, of key j + 2p + 1 in lane 2r + 1),
        /// half the FMAs and broadcasts of one key per 256-bit vector; P = 8 gives 8 independent
        /// chains, enough to cover the FMA latency. Per lane the same chain of FMAs over d in
        /// order as scoreKeys: the same bits.
        inline fn pairScoresF16(comptime P: usize, a: AttentionArgs, st: *const LaneState, kp: [*]const f32, t0: usize, j: usize, sc: *LaneScores) void {
            const V = @Vector(16, f32);
            const hd = a.head_dim;
            var acc: [P]V = @splat(@splat(0));
            for (0..hd) |d| {
                const q = st.qtx[d];
                inline for (0..P) |p| {
                    const k2: u64 = @bitCast(kp[pairIndex(hd, j + 2 * p, d)..][0..2].*);
                    acc[p] = fmaN(16, q, @bitCast(@as(@Vector(8, u64), @splat(k2))), acc[p]);
                }
            }
            var out: [2 * P]RV = undefined;
            inline for (0..P) |p| {
                out[2 * p] = @shuffle(f32, acc[p], undefined, pair_even);
                out[2 * p + 1] = @shuffle(f32, acc[p], undefined, pair_odd);
            }
            finishScores(2 * P, a, st, &out, t0, j, sc);
        }

        /// Lanes 0, 2, …, 14 (the first key of each pair) and 1, 3, …, 15 (the second).
        const pair_even = std.simd.iota(i32, 8) * @as(@Vector(8, i32), @splat(2));
        const pair_odd = pair_even + @as(@Vector(8, i32), @splat(1));

        /// Whether pairScoresF16 scores an f16 cache at this lane width.
        const pair_f16_scores = W == 8 and acc_lanes == 16;

        /// The task's tile buffer: a tile of f32 rows, and room for loadTilePairsF16's last pair.
        const TileBuf = [tile_floats + max_head_dim]f32;

        /// Key rows [t0, t0+n) of a Q8_0 cache for integer scores: each key's quant bytes biased
        /// to unsigned (q + 128, what vpdpbusd's unsigned operand needs) into kx, keys in pairs
        /// with their 4-byte words interleaved (kxWord: one 8-byte load broadcasts a word of
        /// both keys, pairScoresQ8), and the block scales as f32 into dk, block-major (dk[b·max_tile
        /// + j]: the two keys' scales of a block are adjacent too). The scales are gathered as
        /// f16 bits and converted 16 at a time (a scalar conversion per block cost as much as
        /// the copy); rows are walked by pointer, a tile ahead prefetched.
        fn loadTileQ8(a: AttentionArgs, g: usize, t0: usize, n: usize, kx: []u8, dk: *[max_tile * q8_blocks_max]f32) [*]const u8 {
            const nb = a.head_dim / q8_block;
            const row_bytes = nb * q8_block_bytes;
            const pos_bytes = a.kv_pos_stride / q8_block * q8_block_bytes;
            const B = @Vector(q8_block, u8);
            const bias: B = @splat(0x80);
            // Word i of the pair's block: key 0's word i/2 in even slots, key 1's in odd ones.
            const interleave = comptime interleaveMask(q8_block / 4, 0);
            var dh: [max_tile * q8_blocks_max]u16 align(64) = undefined;
            var row = q8Row(a, a.k, t0, g);
            var out = kx.ptr;
            var j: usize = 0;
            while (j < n) : (j += 2) {
                const has_second = j + 1 < n;
                prefetchRow(row + n * pos_bytes, row_bytes);
                if (has_second) prefetchRow(row + (n + 1) * pos_bytes, row_bytes);
                for (0..nb) |b| {
                    const b0 = row + b * q8_block_bytes;
                    const b1 = b0 + pos_bytes;
                    dh[b * max_tile + j] = std.mem.readInt(u16, b0[0..2], .little);
                    const q0: B = b0[2..][0..q8_block].*;
                    var q1: B = bias; // a missing second key: zeros once biased (never read)
                    if (has_second) {
                        dh[b * max_tile + j + 1] = std.mem.readInt(u16, b1[0..2], .little);
                        q1 = b1[2..][0..q8_block].*;
                    }
                    const w0: @Vector(q8_block / 4, u32) = @bitCast(q0 ^ bias);
                    const w1: @Vector(q8_block / 4, u32) = @bitCast(q1 ^ bias);
                    const pair: [2 * q8_block]u8 = @bitCast(@shuffle(u32, w0, w1, interleave));
                    out[2 * b * q8_block ..][0 .. 2 * q8_block].* = pair;
                }
                row += 2 * pos_bytes;
                out += 2 * a.head_dim;
            }
            const H = 16;
            for (0..nb) |b| {
                const d = dh[b * max_tile ..];
                @memset(d[n..std.mem.alignForward(usize, n, H)], 0);
                var i: usize = 0;
                while (i < n) : (i += H) {
                    const hv: @Vector(H, f16) = @bitCast(@as(@Vector(H, u16), d[i..][0..H].*));
                    dk[b * max_tile + i ..][0..H].* = @as(@Vector(H, f32), @floatCast(hv));
                }
            }
            return kx.ptr;
        }

        /// Byte offset of word w (bytes 4w..4w+3 of the row) of key j in loadTileQ8's pair layout;
        /// for an even j the 8 bytes there are word w of keys j and j + 1.
        inline fn kxOffset(hd: usize, j: usize, w: usize) usize {
            return (j & ~@as(usize, 1)) * hd + 8 * w + 4 * (j & 1);
        }

        inline fn kxWord(kx: [*]const u8, hd: usize, j: usize, w: usize) u32 {
            return std.mem.readInt(u32, kx[kxOffset(hd, j, w)..][0..4], .little);
        }

        fn dpbusd(acc: RI, k4: RU, q4: RU) RI {
            const f = switch (W) {
                4 => @"llvm.x86.avx512.vpdpbusd.128",
                8 => @"llvm.x86.avx512.vpdpbusd.256",
                16 => @"llvm.x86.avx512.vpdpbusd.512",
                else => unreachable,
            };
            return f(acc, @bitCast(k4), @bitCast(q4));
        }

        /// scoreKeys on a Q8_0 cache: per block, Σ (k + 128)·q over 8 vpdpbusd (4 bytes of the
        /// key broadcast to every row's lane), minus 128·Σq, exact in int32; the block's part
        /// d_q·d_k·that is added in block order (the same for every row whatever its batch).
        inline fn scoreKeysQ8(comptime KB: usize, a: AttentionArgs, st: *const LaneState, kx: [*]const u8, dk: *const [max_tile * q8_blocks_max]f32, t0: usize, j: usize, sc: *LaneScores) void {
            @setEvalBranchQuota(10_000);
            const nb = a.head_dim / q8_block;
            var acc: [KB]RV = @splat(@splat(0));
            for (0..nb) |b| {
                var isum: [KB]RI = @splat(@splat(0));
                inline for (0..q8_block / 4) |w| {
                    const q4 = st.qt8[b * (q8_block / 4) + w];
                    inline for (0..KB) |k| {
                        const k4: RU = @splat(kxWord(kx, a.head_dim, j + k, b * (q8_block / 4) + w));
                        isum[k] = dpbusd(isum[k], k4, q4);
                    }
                }
                inline for (0..KB) |k| {
                    const part: RV = @floatFromInt(isum[k] - st.qsum128[b]);
                    acc[k] = fmaN(W, part, st.dq[b] * @as(RV, @splat(dk[b * max_tile + j + k])), acc[k]);
                }
            }
            finishScores(KB, a, st, &acc, t0, j, sc);
        }

        /// Decode's 8 rows on AVX-512 VNNI: scoreKeysQ8 for keys [j, j + 2P), two keys per 512-bit
        /// vpdpbusd (row r of key j + 2p in lane 2r, of key j + 2p + 1 in lane 2r + 1: one 8-byte
        /// broadcast of the pair's word against every row's query word, twice over), half the
        /// instructions and broadcasts of one key per 256-bit vector. Per lane it is the same
        /// integer sum and the same float operations as scoreKeysQ8: the same bits.
        inline fn pairScoresQ8(comptime P: usize, a: AttentionArgs, st: *const LaneState, kx: [*]const u8, dk: *const [max_tile * q8_blocks_max]f32, t0: usize, j: usize, sc: *LaneScores) void {
            const V = @Vector(16, f32);
            const VI = @Vector(16, i32);
            const nb = a.head_dim / q8_block;
            var acc: [P]V = @splat(@splat(0));
            for (0..nb) |b| {
                var isum: [P]VI = @splat(@splat(0));
                inline for (0..q8_block / 4) |w| {
                    const word = b * (q8_block / 4) + w;
                    const q4 = st.qt8x[word];
                    inline for (0..P) |p| {
                        const k8 = std.mem.readInt(u64, kx[kxOffset(a.head_dim, j + 2 * p, word)..][0..8], .little);
                        const k2: @Vector(16, u32) = @bitCast(@as(@Vector(8, u64), @splat(k8)));
                        isum[p] = @"llvm.x86.avx512.vpdpbusd.512"(isum[p], @bitCast(k2), @bitCast(q4));
                    }
                }
                inline for (0..P) |p| {
                    const part: V = @floatFromInt(isum[p] - st.qsumx[b]);
                    const d2: u64 = @bitCast(dk[b * max_tile + j + 2 * p ..][0..2].*);
                    const dkp: V = @bitCast(@as(@Vector(8, u64), @splat(d2)));
                    acc[p] = fmaN(16, part, st.dqx[b] * dkp, acc[p]);
                }
            }
            var out: [2 * P]RV = undefined;
            inline for (0..P) |p| {
                out[2 * p] = @shuffle(f32, acc[p], undefined, pair_even);
                out[2 * p + 1] = @shuffle(f32, acc[p], undefined, pair_odd);
            }
            finishScores(2 * P, a, st, &out, t0, j, sc);
        }

        /// Whether pairScoresQ8 scores this lane width's keys.
        const pair_scores = W == 8 and q8_int_scores;

        /// One K/V tile for the task's rows: scores, online-softmax update, accumulate.
        fn tileStep(comptime int_scores: bool, a: AttentionArgs, st: *LaneState, g: usize, t0: usize, n: usize, tbuf: *TileBuf, sc: *LaneScores) void {
            const buf = tbuf[0..tile_floats];
            const hd = a.head_dim;
            var j: usize = 0;
            if (int_scores) {
                var dk: [max_tile * q8_blocks_max]f32 = undefined;
                const kx = loadTileQ8(a, g, t0, n, std.mem.sliceAsBytes(buf), &dk);
                if (pair_scores) {
                    // 8 pairs: 8 independent vpdpbusd chains (4 left them latency-bound).
                    while (j + 16 <= n) : (j += 16) pairScoresQ8(8, a, st, kx, &dk, t0, j, sc);
                    if (j + 8 <= n) {
                        pairScoresQ8(4, a, st, kx, &dk, t0, j, sc);
                        j += 8;
                    }
                } else {
                    while (j + 8 <= n) : (j += 8) scoreKeysQ8(8, a, st, kx, &dk, t0, j, sc);
                }
                switch (n - j) {
                    inline 0...7 => |r| if (r > 0) scoreKeysQ8(r, a, st, kx, &dk, t0, j, sc),
                    else => unreachable,
                }
            } else if (pair_f16_scores and a.kv_type == .f16) {
                const kt = loadTilePairsF16(a, g, t0, n, tbuf);
                // 8 pairs: 8 independent FMA chains (4 left them latency-bound).
                while (j + 16 <= n) : (j += 16) pairScoresF16(8, a, st, kt.ptr, t0, j, sc);
                if (j + 8 <= n) {
                    pairScoresF16(4, a, st, kt.ptr, t0, j, sc);
                    j += 8;
                }
                switch (n - j) {
                    inline 0...7 => |r| if (r > 0) scoreKeys(r, true, a, st, kt, t0, j, sc),
                    else => unreachable,
                }
            } else {
                const kt = loadTile(a, a.k, g, t0, n, buf);
                while (j + 8 <= n) : (j += 8) scoreKeys(8, false, a, st, kt, t0, j, sc);
                switch (n - j) {
                    inline 0...7 => |r| if (r > 0) scoreKeys(r, false, a, st, kt, t0, j, sc),
                    else => unreachable,
                }
            }

            var mt: RV = @splat(-inf);
            var jm: usize = 0;
            if (keys_per_exp > 1) {
                // Several keys' score vectors per max, halves folded after (max is exact).
                const XV = @Vector(keys_per_exp * W, f32);
                var mx: XV = @splat(-inf);
                while (jm + keys_per_exp <= n) : (jm += keys_per_exp) {
                    const xp: *const [keys_per_exp * W]f32 = @ptrCast(&sc[jm]);
                    mx = maxN(keys_per_exp * W, mx, xp.*);
                }
                inline for (0..keys_per_exp) |k| mt = maxN(W, mt, std.simd.extract(mx, k * W, W));
            }
            for (sc[jm..n]) |x| mt = maxN(W, mt, x);
            const m_new = @max(st.m, mt);
            const none = m_new == @as(RV, @splat(-inf)); // rows with no key yet: nothing to rescale
            const alpha = @select(f32, none, @as(RV, @splat(1)), expN(W, st.m - m_new)); // 0 on a row's first keys
            var sum: RV = @splat(0);
            var j2: usize = 0;
            if (keys_per_exp > 1) {
                // Several keys' score vectors per exp (lane by lane: the same bits), summed key
                // by key as below.
                const XV = @Vector(keys_per_exp * W, f32);
                const m_rep = std.simd.repeat(keys_per_exp * W, m_new);
                const none_rep = m_rep == @as(XV, @splat(-inf));
                while (j2 + keys_per_exp <= n) : (j2 += keys_per_exp) {
                    const xp: *[keys_per_exp * W]f32 = @ptrCast(&sc[j2]);
                    const e = @select(f32, none_rep, @as(XV, @splat(0)), expN(keys_per_exp * W, @as(XV, xp.*) - m_rep));
                    xp.* = e;
                    inline for (0..keys_per_exp) |k| sum += std.simd.extract(e, k * W, W);
                }
            }
            for (sc[j2..n]) |*x| {
                const e = @select(f32, none, @as(RV, @splat(0)), expN(W, x.* - m_new));
                x.* = e;
                sum += e;
            }
            st.l = st.l * alpha + sum;
            st.m = m_new;
            inline for (0..W) |r| scaleRow(st.acc[r * hd ..].ptr, alpha[r], hd);

            // V read in place, dims in vectors and each row's probability broadcast from its
            // lane (accumulateRows, as the dot-product layout accumulates): a key's V row is
            // loaded once per group of rows, where the rows-in-lanes order broadcast every
            // element and ran one 8-lane FMA per (key, dim), from a tile converted first. The
            // bits are those of that order (one FMA per key, in order) except in a head dim's
            // last hd % vlen elements, which now take accumulateRows' mul-then-add tail.
            const p0: [*]const f32 = @ptrCast(sc);
            switch (a.kv_type) {
                inline else => |kt| {
                    // Q8_0 is dequantized into the tile buffer first (the same values) without
                    // 512-bit vectors, and for 16 rows (prefill): there a 16-lane pass costs one
                    // dequantization per 16 rows and in place ran 1.2x slower (256 queries ×
                    // 4096 keys; buffered, as fast as before), while 8 rows (decode) read it in
                    // place in 0.81x the time of the old transposed accumulator.
                    const buffered = kt == .q8_0 and (acc_lanes == vlen or W == 16);
                    const E = switch (kt) {
                        .f32 => f32,
                        .f16 => f16,
                        .q8_0 => if (buffered) f32 else Q8Block,
                    };
                    const vt = if (buffered) loadTile(a, a.v, g, t0, n, buf) else inPlaceRows(E, a, a.v, t0, g);
                    inline for (0..W / rows_per_pass) |grp| {
                        var acc: [rows_per_pass][*]f32 = undefined;
                        var p: [rows_per_pass][*]const f32 = undefined;
                        inline for (0..rows_per_pass) |i| {
                            acc[i] = st.acc[(grp * rows_per_pass + i) * hd ..].ptr;
                            p[i] = p0 + grp * rows_per_pass + i;
                        }
                        accumulateRows(rows_per_pass, E, W, acc, p, vt.ptr, vt.stride, n, hd);
                    }
                },
            }
        }

        /// Keys whose score vectors one exp takes: a 512-bit vector's worth on AVX-512 builds.
        const keys_per_exp = @max(1, acc_lanes / W);

        /// Rows accumulateRows takes at once: their accumulators stay in registers (32 vector
        /// registers with AVX-512 or on aarch64, 16 otherwise).
        const rows_per_pass = @min(W, if (@import("cpu.zig").has_avx512bw or @import("builtin").cpu.arch == .aarch64) 16 else 8);

        fn run(a: AttentionArgs, plan: Plan, rows: *const Rows) void {
            const hd = a.head_dim;
            assert(rows.n <= W);
            const span = rows.span();
            var st: LaneState = undefined;
            st.m = @splat(-inf);
            st.l = @splat(0);
            st.lo = @splat(0);
            st.end = @splat(0);
            for (0..hd) |d| {
                var q: RV = @splat(0);
                for (0..rows.n) |r| q[r] = rows.q[r][d];
                st.qt[d] = q;
            }
            @memset(st.acc[0 .. W * hd], 0);
            for (0..rows.n) |r| {
                st.lo[r] = @intCast(rows.lo[r]);
                st.end[r] = @intCast(rows.end[r]);
            }
            const int_scores = comptime q8_int_scores and (W == 4 or W == 8 or W == 16);
            if (int_scores and a.kv_type == .q8_0) {
                for (0..hd / q8_block) |b| {
                    st.dq[b] = @splat(0);
                    st.qsum128[b] = @splat(0);
                }
                for (0..hd / 4) |w| st.qt8[w] = @splat(0);
                for (0..rows.n) |r| {
                    for (0..hd / q8_block) |b| {
                        var qb: [q8_block]i8 = undefined;
                        st.dq[b][r] = quantizeQueryBlock(rows.q[r][b * q8_block ..][0..q8_block], &qb);
                        var sum: i32 = 0;
                        for (qb) |x| sum += x;
                        st.qsum128[b][r] = 128 * sum;
                        const words: [q8_block / 4]u32 = @bitCast(qb);
                        for (0..q8_block / 4) |w| st.qt8[b * (q8_block / 4) + w][r] = words[w];
                    }
                }
                if (pair_scores) {
                    // Every lane r of the 8-lane state into lanes 2r and 2r + 1.
                    const twice = comptime std.simd.iota(i32, 16) >> @splat(1);
                    for (0..hd / 4) |w| st.qt8x[w] = @shuffle(u32, st.qt8[w], undefined, twice);
                    for (0..hd / q8_block) |b| {
                        st.dqx[b] = @shuffle(f32, st.dq[b], undefined, twice);
                        st.qsumx[b] = @shuffle(i32, st.qsum128[b], undefined, twice);
                    }
                }
            }
            if (pair_f16_scores and a.kv_type == .f16) {
                const twice = comptime std.simd.iota(i32, 16) >> @splat(1);
                for (0..hd) |d| st.qtx[d] = @shuffle(f32, st.qt[d], undefined, twice);
            }
            var buf: TileBuf = undefined;
            var sc: LaneScores = undefined;
            // Tiles cover only the union of allowed keys (fully masked tiles are never touched)
            // and start at absolute multiples of the tile size, so every row sees the same tile
            // boundaries whatever batch it is in.
            var t0 = span.lo - span.lo % plan.tile;
            const t_end = span.end;
            if (int_scores and a.kv_type == .q8_0) {
                while (t0 < t_end) : (t0 += plan.tile) tileStep(true, a, &st, rows.g, t0, @min(plan.tile, t_end - t0), &buf, &sc);
            } else {
                while (t0 < t_end) : (t0 += plan.tile) tileStep(false, a, &st, rows.g, t0, @min(plan.tile, t_end - t0), &buf, &sc);
            }
            for (0..rows.n) |r| {
                @memcpy(rows.out[r][0..hd], st.acc[r * hd ..][0..hd]);
                normalizeRow(rows.out[r], st.l[r], hd);
            }
        }
    };
}

/// The lane width a task's rows need: the fewest of 4, 8, 16 lanes that hold them all.
fn laneWidth(rows: usize) usize {
    return if (rows <= 4) 4 else if (rows <= 8) 8 else max_rows;
}

fn runTaskLanes(c: Ctx, t: usize) void {
    const rows = taskRows(c.a, c.plan, t);
    switch (laneWidth(rows.n)) {
        inline 4, 8, max_rows => |w| Lanes(w).run(c.a, c.plan, &rows),
        else => unreachable,
    }
}

/// Fused causal (optionally sliding-window, softcapped) attention over a KV cache.
/// Extra memory: ≤ ~120 KB of stack per task (the 16-lane state with the Q8_0 query, a tile,
/// its scores), no heap allocation.
///
/// Calls of more than max_invariant_queries query rows (prefill) take the rows-in-lanes layout,
/// 2–3× faster there than dot products but summed in another order, as the matmuls do beyond
/// matmul.max_invariant_rows; over an f16 cache where AMX-BF16 is enabled they take
/// attention_amx.zig's tiles instead (useTiles). Smaller calls (decode, speculative
/// verification) take a layout chosen by the model's shape alone, so that a row decoded alone
/// and the same row in a verification batch always take the same one: rows in lanes where a KV
/// head has at least
/// `lanes_min_group` query heads (a decode task then fills a vector of 8 lanes), else dot
/// products (few query heads per KV head leave most lanes empty).
pub fn flashAttention(args: AttentionArgs) void {
    flashAttentionLayout(args, layoutFor(args));
}

pub const max_invariant_queries = 16;

/// Query heads per KV head from which decode takes the rows-in-lanes layout. Measured on a
/// 2-core AMD EPYC (Zen 4), one decode query, f16 cache, bench/attention-decode.bench.ts:
/// lanes vs dot products at 512 / 16K keys: 32 heads / 4 KV heads / dim 64 (group 8) 0.65× /
/// 0.67× the time; 14/2/64 (group 7) 0.70× / 0.55×; 12/2/128 (group 6) about equal / 0.93×;
/// 32/8/64 (group 4) equal; 9/3/64 (group 3) and 4/1/256 (MQA, 4 heads) 1.15–1.45× slower.
pub const lanes_min_group = 6;

fn layoutFor(a: AttentionArgs) Layout {
    if (a.n_q > max_invariant_queries) return .lanes;
    return if (a.n_head / a.n_kv_head >= lanes_min_group) .lanes else .dots;
}

const Layout = enum { dots, lanes };

/// Whether a lanes-layout call takes attention_amx.zig's AMX-BF16 prefill instead of the f32
/// lanes tasks: prefill calls (beyond the batch sizes that promise invariance) over an f16 cache
/// whose shape the tiles take, where AMX-BF16 is enabled (amx.bf16Enabled: the CPU, the OS,
/// KILN_AMX, its self-check; decided on the calling thread).
fn useTiles(a: AttentionArgs) bool {
    if (!tilesApply(a)) return false;
    if (builtin.is_test) {
        if (test_tiles_emulate) return true;
        if (test_tiles_off) return false;
    }
    return amx.bf16Enabled();
}

/// Whether a call is one the tiles take (useTiles without the machine).
fn tilesApply(a: AttentionArgs) bool {
    return a.kv_type == .f16 and a.n_q > max_invariant_queries and attention_amx.fits(a);
}

/// Tests: run the tiles emulated (amx.Emu) on any machine, or keep the f32 lanes kernel where
/// the hardware would take the tiles.
pub var test_tiles_emulate: bool = false;
pub var test_tiles_off: bool = false;

fn flashAttentionLayout(args: AttentionArgs, layout: Layout) void {
    checkArgs(args);
    if (args.n_q == 0 or args.n_head == 0) return;
    if (layout == .lanes and useTiles(args)) {
        if (comptime amx.hw_built) {
            if (!(builtin.is_test and test_tiles_emulate)) return attention_amx.prefill(amx.Hw, args);
        }
        if (builtin.is_test) return attention_amx.prefill(amx.Emu, args);
        unreachable;
    }
    const plan = makePlan(args, pool.threadCount());
    const ctx = Ctx{ .a = args, .plan = plan };
    switch (layout) {
        .dots => pool.parallelFor(plan.n_base, ctx, runTask),
        .lanes => pool.parallelFor(plan.n_base, ctx, runTaskLanes),
    }
}

// ---------------------------------------------------------------------------------------
// Unfused path

const NaiveCtx = struct { a: AttentionArgs, scores: [*]f32 };

fn naiveRow(c: NaiveCtx, t: usize) void {
    const a = c.a;
    const hd = a.head_dim;
    const i = t / a.n_head;
    const h = t % a.n_head;
    const g = h / (a.n_head / a.n_kv_head);
    const q = a.q + i * a.q_row_stride + h * a.q_head_stride;
    const o = a.out + i * a.out_row_stride + h * a.out_head_stride;
    const s = c.scores + t * a.n_kv;
    const kr = keyRange(a, a.q_pos0 + i);
    @memset(o[0..hd], 0);
    if (kr.lo == kr.end) return;
    var row: [max_head_dim]f32 = undefined;
    for (0..a.n_kv) |p| {
        if (p < kr.lo or p >= kr.end) {
            s[p] = -inf;
            continue;
        }
        s[p] = finishScore(a, dot1(q, naiveKvRow(a, a.k, p, g, &row), hd));
    }
    softmaxRow(s, a.n_kv);
    for (kr.lo..kr.end) |p| axpy1(o, s[p], naiveKvRow(a, a.v, p, g, &row), hd);
}

fn naiveKvRow(a: AttentionArgs, base: [*]const u8, p: usize, g: usize, row: *[max_head_dim]f32) [*]const f32 {
    return switch (a.kv_type) {
        .f32 => kvRow(f32, a, base, p, g),
        .f16 => blk: {
            convertRow(kvRow(f16, a, base, p, g), row, a.head_dim);
            break :blk row;
        },
        .q8_0 => blk: {
            dequantQ8Row(q8Row(a, base, p, g), row, a.head_dim);
            break :blk row;
        },
    };
}

/// Unfused reference: materializes each (query, head) score row in `scores`
/// (n_q*n_head*n_kv floats, caller-provided), masks, softmaxRow, then ·V.
pub fn attentionNaive(args: AttentionArgs, scores: [*]f32) void {
    checkArgs(args);
    pool.parallelFor(args.n_q * args.n_head, NaiveCtx{ .a = args, .scores = scores }, naiveRow);
}

// ---------------------------------------------------------------------------------------
// Tests

/// Scalar f64 reference. out64 is compact [n_q][n_head][head_dim].
fn attentionRef(a: AttentionArgs, out64: []f64, scores: []f64) void {
    attentionRefQ(a, out64, scores, false);
}

/// The reference; quantized_q: scores from the query's Q8_0 values (quantizesQuery's kernels).
fn attentionRefQ(a: AttentionArgs, out64: []f64, scores: []f64, quantized_q: bool) void {
    const hd = a.head_dim;
    for (0..a.n_q) |i| {
        const kr = keyRange(a, a.q_pos0 + i);
        for (0..a.n_head) |h| {
            const g = h / (a.n_head / a.n_kv_head);
            const o = out64[(i * a.n_head + h) * hd ..][0..hd];
            @memset(o, 0);
            if (kr.lo == kr.end) continue;
            const q = a.q + i * a.q_row_stride + h * a.q_head_stride;
            var qv: [max_head_dim]f64 = undefined;
            for (0..hd) |d| qv[d] = q[d];
            if (quantized_q) {
                for (0..hd / q8_block) |b| {
                    var qb: [q8_block]i8 = undefined;
                    const dq = quantizeQueryBlock(q[b * q8_block ..][0..q8_block], &qb);
                    for (0..q8_block) |e| qv[b * q8_block + e] = @as(f64, dq) * @as(f64, @floatFromInt(qb[e]));
                }
            }
            var m: f64 = -std.math.inf(f64);
            for (kr.lo..kr.end) |p| {
                var s: f64 = 0;
                for (0..hd) |d| s += qv[d] * refKv(a, a.k, p, g, d);
                s *= a.scale;
                if (a.softcap != 0) s = a.softcap * std.math.tanh(s / a.softcap);
                scores[p] = s;
                m = @max(m, s);
            }
            var sum: f64 = 0;
            for (kr.lo..kr.end) |p| {
                const w = @exp(scores[p] - m);
                sum += w;
                for (0..hd) |d| o[d] += w * refKv(a, a.v, p, g, d);
            }
            for (o) |*x| x.* /= sum;
        }
    }
}

fn refKv(a: AttentionArgs, base: [*]const u8, p: usize, g: usize, d: usize) f64 {
    return switch (a.kv_type) {
        .f32 => kvRow(f32, a, base, p, g)[d],
        .f16 => kvRow(f16, a, base, p, g)[d],
        .q8_0 => q8Elem(a, base, p, g, d),
    };
}

const TestCase = struct {
    n_q: usize,
    n_kv: usize,
    q_pos0: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    window: usize = 0,
    softcap: f32 = 0,
    kv_type: KvType = .f32,
    scale_mul: f32 = 1, // scale = scale_mul / sqrt(head_dim); > 1 gives peaky softmax
    pad: usize = 0, // extra elements between heads and rows: strides not tightly packed
    head_major: bool = false, // [head][pos][d] layouts instead of [pos][head][d]
};

const sentinel: f32 = 7777.0;
const guard_len = 16;

/// Buffers for one case; out holds `sentinel` everywhere the kernel must not write.
const Fixture = struct {
    q: []f32,
    kv: [2][]align(4) u8,
    out: []f32,
    args: AttentionArgs,

    fn deinit(f: *Fixture, al: std.mem.Allocator) void {
        al.free(f.q);
        for (f.kv) |b| al.free(b);
        al.free(f.out);
    }
};

fn extent(n0: usize, s0: usize, n1: usize, s1: usize, hd: usize) usize {
    if (n0 == 0 or n1 == 0) return 0;
    return (n0 - 1) * s0 + (n1 - 1) * s1 + hd;
}

fn makeFixture(al: std.mem.Allocator, c: TestCase, rng: std.Random) !Fixture {
    const hd = c.head_dim;
    const w = hd + c.pad;
    // Row-major: [row][head][d]; head-major: [head][row][d]. Either way padded.
    const q_rs = if (c.head_major) w else c.n_head * w + c.pad;
    const q_hs = if (c.head_major) c.n_q * w + c.pad else w;
    const kv_ps = if (c.head_major) w else c.n_kv_head * w + c.pad;
    const kv_hs = if (c.head_major) (c.n_kv + 3) * w + c.pad else w;
    const o_rs = c.n_head * w + c.pad;
    var f: Fixture = undefined;
    f.q = try al.alloc(f32, extent(c.n_q, q_rs, c.n_head, q_hs, hd));
    for (f.q) |*x| x.* = rng.float(f32) * 2 - 1;
    const kv_elems = @max(1, extent(c.n_kv, kv_ps, c.n_kv_head, kv_hs, hd));
    for (&f.kv) |*b| {
        if (c.kv_type == .q8_0) {
            // Whole blocks of random quants with small positive scales (strides are block multiples).
            const n_blocks = (kv_elems + q8_block - 1) / q8_block;
            b.* = try al.alignedAlloc(u8, .@"4", n_blocks * q8_block_bytes);
            rng.bytes(b.*);
            for (0..n_blocks) |i| std.mem.writeInt(u16, b.*[i * q8_block_bytes ..][0..2], @bitCast(@as(f16, @floatCast(rng.float(f32) / 64 + 1.0 / 256.0))), .little);
            continue;
        }
        const esz: usize = if (c.kv_type == .f32) 4 else 2;
        b.* = try al.alignedAlloc(u8, .@"4", kv_elems * esz);
        for (0..kv_elems) |e| {
            const x = rng.float(f32) * 2 - 1;
            if (c.kv_type == .f32) std.mem.bytesAsSlice(f32, b.*)[e] = x else std.mem.bytesAsSlice(f16, b.*)[e] = @floatCast(x);
        }
    }
    f.out = try al.alloc(f32, extent(c.n_q, o_rs, c.n_head, w, hd) + guard_len);
    f.args = .{
        .q = f.q.ptr,
        .q_row_stride = q_rs,
        .q_head_stride = q_hs,
        .k = f.kv[0].ptr,
        .v = f.kv[1].ptr,
        .kv_type = c.kv_type,
        .kv_pos_stride = kv_ps,
        .kv_head_stride = kv_hs,
        .out = f.out.ptr,
        .out_row_stride = o_rs,
        .out_head_stride = w,
        .n_q = c.n_q,
        .n_head = c.n_head,
        .n_kv_head = c.n_kv_head,
        .head_dim = hd,
        .n_kv = c.n_kv,
        .q_pos0 = c.q_pos0,
        .window = c.window,
        .scale = c.scale_mul / @sqrt(@as(f32, @floatFromInt(hd))),
        .softcap = c.softcap,
    };
    return f;
}

/// Checks out against the f64 reference and that every non-output slot (padding and the
/// guard after the last output) still holds the sentinel.
/// Bound: max |out - ref| <= 1e-4 · max(max |ref|, 1e-3). Both read the same f16/f32 K/V
/// values, so the bound holds for f16 too; it covers f32 dot/exp rounding (~1e-6 typical).
fn expectMatches(f: *const Fixture, ref: []const f64) !void {
    const a = f.args;
    const hd = a.head_dim;
    var written = try std.testing.allocator.alloc(bool, f.out.len);
    defer std.testing.allocator.free(written);
    @memset(written, false);
    var max_ref: f64 = 0;
    var max_err: f64 = 0;
    for (0..a.n_q) |i| for (0..a.n_head) |h| for (0..hd) |d| {
        const idx = i * a.out_row_stride + h * a.out_head_stride + d;
        written[idx] = true;
        const r = ref[(i * a.n_head + h) * hd + d];
        max_ref = @max(max_ref, @abs(r));
        const err = @abs(@as(f64, f.out[idx]) - r);
        if (!(err <= max_err)) max_err = if (std.math.isNan(err)) std.math.inf(f64) else err;
    };
    for (f.out, written) |x, wr| if (!wr) try std.testing.expectEqual(sentinel, x);
    const tol = 1e-4 * @max(max_ref, 1e-3);
    if (!(max_err <= tol)) {
        std.debug.print("max_err {e} tol {e} (max_ref {e})\n", .{ max_err, tol, max_ref });
        return error.TestExpectedApproxEq;
    }
}

fn checkCase(c: TestCase, seed: u64) !void {
    const al = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(seed);
    var f = try makeFixture(al, c, prng.random());
    defer f.deinit(al);
    const ref = try al.alloc(f64, c.n_q * c.n_head * c.head_dim);
    defer al.free(ref);
    const ref_scores = try al.alloc(f64, @max(1, c.n_kv));
    defer al.free(ref_scores);
    attentionRef(f.args, ref, ref_scores);
    // Kernels that score a Q8_0 cache from the Q8_0 query are held to the reference on that
    // query (the query's own rounding is the point of the path, checked end to end by the
    // logits NMSE tests); the rest of their arithmetic to the same 1e-4.
    const ref_qq = try al.alloc(f64, ref.len);
    defer al.free(ref_qq);
    attentionRefQ(f.args, ref_qq, ref_scores, true);
    const scores = try al.alloc(f32, @max(1, c.n_q * c.n_head * c.n_kv));
    defer al.free(scores);
    for ([_]usize{ 1, 2, 3 }) |threads| {
        _ = pool.setThreads(threads);
        for ([_]Layout{ .dots, .lanes }) |layout| {
            @memset(f.out, sentinel);
            flashAttentionLayout(f.args, layout);
            expectMatches(&f, if (quantizesQuery(f.args, layout)) ref_qq else ref) catch |e| {
                std.debug.print("flash ({s}) failed: threads {d} case {any}\n", .{ @tagName(layout), threads, c });
                return e;
            };
        }
        // Prefill on AMX-BF16 tiles: emulated here on every machine (the lanes run above took
        // the hardware tiles where they are enabled), and with the tiles off the f32 lanes
        // tasks, which the hardware run replaced.
        if (tilesApply(f.args)) {
            for ([_]bool{ true, false }) |emulate| {
                test_tiles_emulate = emulate;
                test_tiles_off = !emulate;
                defer test_tiles_emulate = false;
                defer test_tiles_off = false;
                @memset(f.out, sentinel);
                flashAttentionLayout(f.args, .lanes);
                expectMatches(&f, ref) catch |e| {
                    std.debug.print("flash (lanes, tiles {s}) failed: threads {d} case {any}\n", .{ if (emulate) "emulated" else "off", threads, c });
                    return e;
                };
            }
        }
        @memset(f.out, sentinel);
        attentionNaive(f.args, scores.ptr);
        expectMatches(&f, ref) catch |e| {
            std.debug.print("naive failed: threads {d} case {any}\n", .{ threads, c });
            return e;
        };
    }
}

test "softmaxRow matches f64 reference" {
    var prng = std.Random.DefaultPrng.init(1);
    const rng = prng.random();
    for ([_]usize{ 1, 3, 17, 1000 }) |n| {
        var a: [1000]f32 = undefined;
        var b: [1000]f32 = undefined;
        for (a[0..n]) |*x| x.* = (rng.float(f32) * 2 - 1) * 30;
        if (n > 2) a[1] = -inf; // masked entry
        b = a;
        softmaxRow(&a, n);
        softmaxRowRef(&b, n);
        var sum: f64 = 0;
        for (a[0..n], b[0..n]) |x, y| {
            try std.testing.expect(@abs(x - y) <= 2e-6); // values in [0, 1]: ~ a few ulp of 1
            sum += x;
        }
        try std.testing.expectApproxEqAbs(1.0, sum, 1e-5);
        if (n > 2) try std.testing.expectEqual(@as(f32, 0), a[1]);
    }
    var all_masked = [_]f32{ -inf, -inf, -inf };
    softmaxRow(&all_masked, 3);
    for (all_masked) |x| try std.testing.expectEqual(@as(f32, 0), x);
}

test "expV is accurate across the softmax input range" {
    var x: f32 = -90;
    while (x < 10) : (x += 0.37) {
        const got: [vlen]f32 = expV(@splat(x));
        const want = @exp(@as(f64, x));
        const tol = if (x < -87.3) 2e-38 else want * 3e-7;
        try std.testing.expect(@abs(got[0] - want) <= tol);
    }
}

test "expV: -inf gives 0, NaN stays NaN, inputs past the clamps stay finite" {
    const x: @Vector(8, f32) = .{ -inf, std.math.nan(f32), inf, -1000, 1000, 0, -0.0, 1 };
    const e: [8]f32 = expN(8, x);
    try std.testing.expectEqual(@as(f32, 0), e[0]);
    try std.testing.expect(std.math.isNan(e[1]));
    try std.testing.expect(std.math.isFinite(e[2]) and e[2] > 1e38);
    try std.testing.expectEqual(@as(f32, 0), e[3]);
    try std.testing.expect(std.math.isFinite(e[4]) and e[4] > 1e38);
    try std.testing.expectEqual(@as(f32, 1), e[5]);
    try std.testing.expectEqual(@as(f32, 1), e[6]);
}

test "maxN and minN: maxnum's results wherever the first operand is not NaN" {
    const vals = [_]f32{ -inf, -87.3, -1, -0.0, 0, 0.5, 88.3, inf, std.math.nan(f32) };
    for (vals[0 .. vals.len - 1]) |a| for (vals) |b| {
        const mx = maxN(1, @splat(a), @splat(b))[0];
        const mn = minN(1, @splat(a), @splat(b))[0];
        const want_max = @max(a, b);
        const want_min = @min(a, b);
        // +0 and -0 compare equal: either is maxnum's answer.
        if (a == 0 and b == 0) continue;
        try std.testing.expectEqual(want_max, mx);
        try std.testing.expectEqual(want_min, mn);
    };
}

test "flash attention and naive: Q8_0 K/V against the f64 reference over the dequantized values" {
    // Decode, GQA, prefill in both layouts, a window, softcap, head-major strides.
    try checkCase(.{ .n_q = 1, .n_kv = 300, .q_pos0 = 299, .n_head = 8, .n_kv_head = 2, .head_dim = 64, .kv_type = .q8_0 }, 90);
    try checkCase(.{ .n_q = 5, .n_kv = 130, .q_pos0 = 125, .n_head = 4, .n_kv_head = 1, .head_dim = 256, .softcap = 20, .kv_type = .q8_0 }, 91);
    try checkCase(.{ .n_q = 40, .n_kv = 40, .q_pos0 = 0, .n_head = 6, .n_kv_head = 3, .head_dim = 128, .kv_type = .q8_0 }, 92);
    try checkCase(.{ .n_q = 1, .n_kv = 1000, .q_pos0 = 999, .n_head = 4, .n_kv_head = 1, .head_dim = 96, .window = 300, .kv_type = .q8_0 }, 93);
    try checkCase(.{ .n_q = 17, .n_kv = 50, .q_pos0 = 33, .n_head = 2, .n_kv_head = 2, .head_dim = 32, .head_major = true, .kv_type = .q8_0 }, 94);
    // Decode in the lanes layout (group 8 and 7: 8 lanes, keys scored in pairs on AVX-512),
    // odd key counts and a tile's last keys fewer than 8.
    try checkCase(.{ .n_q = 1, .n_kv = 301, .q_pos0 = 300, .n_head = 32, .n_kv_head = 4, .head_dim = 64, .kv_type = .q8_0 }, 95);
    try checkCase(.{ .n_q = 1, .n_kv = 77, .q_pos0 = 76, .n_head = 14, .n_kv_head = 2, .head_dim = 128, .softcap = 30, .window = 50, .kv_type = .q8_0 }, 96);
    try checkCase(.{ .n_q = 3, .n_kv = 203, .q_pos0 = 200, .n_head = 16, .n_kv_head = 2, .head_dim = 32, .kv_type = .q8_0 }, 97);
}

test "Q8_0 rows dequantize as d · q" {
    var blk: [2 * q8_block_bytes]u8 = undefined;
    for (0..2) |b| {
        std.mem.writeInt(u16, blk[b * q8_block_bytes ..][0..2], @bitCast(@as(f16, if (b == 0) 0.5 else -0.25)), .little);
        for (0..q8_block) |i| blk[b * q8_block_bytes + 2 + i] = @bitCast(@as(i8, @intCast(@as(i32, @intCast(i)) - 16)));
    }
    var out: [2 * q8_block]f32 = undefined;
    dequantQ8Row(&blk, &out, 2 * q8_block);
    for (0..2 * q8_block) |i| {
        const d: f32 = if (i < q8_block) 0.5 else -0.25;
        try std.testing.expectEqual(d * @as(f32, @floatFromInt(@as(i32, @intCast(i % q8_block)) - 16)), out[i]);
    }
}

test "flash attention: causal prefill" {
    try checkCase(.{ .n_q = 37, .n_kv = 37, .q_pos0 = 0, .n_head = 4, .n_kv_head = 4, .head_dim = 64 }, 10);
    try checkCase(.{ .n_q = 20, .n_kv = 100, .q_pos0 = 80, .n_head = 8, .n_kv_head = 2, .head_dim = 80 }, 11);
    try checkCase(.{ .n_q = 150, .n_kv = 150, .q_pos0 = 0, .n_head = 8, .n_kv_head = 2, .head_dim = 72, .pad = 3 }, 12);
    try checkCase(.{ .n_q = 70, .n_kv = 130, .q_pos0 = 60, .n_head = 6, .n_kv_head = 1, .head_dim = 128, .kv_type = .f16 }, 13);
    try checkCase(.{ .n_q = 33, .n_kv = 33, .q_pos0 = 0, .n_head = 3, .n_kv_head = 3, .head_dim = 256, .head_major = true, .pad = 5 }, 14);
    // Group larger than max_rows: heads split into chunks.
    try checkCase(.{ .n_q = 9, .n_kv = 40, .q_pos0 = 31, .n_head = 20, .n_kv_head = 1, .head_dim = 64 }, 15);
}

test "flash attention: decode over cache lengths, GQA and MQA" {
    for ([_]usize{ 1, 7, 63, 64, 65, 1000 }, 0..) |n_kv, s| {
        try checkCase(.{ .n_q = 1, .n_kv = n_kv, .q_pos0 = n_kv - 1, .n_head = 8, .n_kv_head = 2, .head_dim = 128 }, 20 + s);
        try checkCase(.{ .n_q = 1, .n_kv = n_kv, .q_pos0 = n_kv - 1, .n_head = 8, .n_kv_head = 1, .head_dim = 256, .kv_type = .f16, .pad = 2 }, 30 + s);
        try checkCase(.{ .n_q = 1, .n_kv = n_kv, .q_pos0 = n_kv - 1, .n_head = 4, .n_kv_head = 4, .head_dim = 72, .scale_mul = 4, .head_major = true }, 40 + s);
    }
    // A few query rows (speculative verification, chunked decode).
    try checkCase(.{ .n_q = 3, .n_kv = 700, .q_pos0 = 697, .n_head = 4, .n_kv_head = 1, .head_dim = 64, .kv_type = .f16 }, 50);
}

test "flash attention: head dims, softcap, f16" {
    for ([_]usize{ 64, 80, 128, 256, 72, 512, 5 }, 0..) |hd, s| {
        for ([_]f32{ 0, 20 }) |cap| for ([_]KvType{ .f32, .f16 }) |kt| {
            try checkCase(.{ .n_q = 5, .n_kv = 300, .q_pos0 = 295, .n_head = 4, .n_kv_head = 2, .head_dim = hd, .softcap = cap, .kv_type = kt, .scale_mul = 3, .pad = 1 }, 60 + s);
            try checkCase(.{ .n_q = 1, .n_kv = 300, .q_pos0 = 299, .n_head = 2, .n_kv_head = 1, .head_dim = hd, .softcap = cap, .kv_type = kt, .scale_mul = 3 }, 70 + s);
            // 8 query heads per KV head: decode's 8-lane layout (paired f16 scores on AVX-512,
            // head dims off the 16-element step), an odd key count.
            try checkCase(.{ .n_q = 1, .n_kv = 301, .q_pos0 = 300, .n_head = 8, .n_kv_head = 1, .head_dim = hd, .softcap = cap, .kv_type = kt }, 80 + s);
        };
    }
}

test "flash attention: sliding window" {
    try checkCase(.{ .n_q = 50, .n_kv = 50, .q_pos0 = 0, .n_head = 4, .n_kv_head = 2, .head_dim = 64, .window = 4 }, 80);
    try checkCase(.{ .n_q = 1, .n_kv = 1000, .q_pos0 = 999, .n_head = 4, .n_kv_head = 1, .head_dim = 256, .window = 512, .kv_type = .f16 }, 81);
    try checkCase(.{ .n_q = 1, .n_kv = 1000, .q_pos0 = 999, .n_head = 8, .n_kv_head = 2, .head_dim = 64, .window = 4 }, 82);
    try checkCase(.{ .n_q = 64, .n_kv = 964, .q_pos0 = 900, .n_head = 4, .n_kv_head = 1, .head_dim = 256, .window = 512 }, 83);
    try checkCase(.{ .n_q = 600, .n_kv = 600, .q_pos0 = 0, .n_head = 2, .n_kv_head = 1, .head_dim = 64, .window = 512, .softcap = 10, .kv_type = .f16 }, 84);
}

test "flash attention: prefill on AMX-BF16 tiles (emulated everywhere, the hardware where enabled)" {
    // SmolLM2's heads (9 / 3 / 64: 21 positions × 3 heads a task, four lane groups, the last of
    // 15 rows), odd key counts (tiles cut short inside a 16-key block and a pair), Gemma 3's
    // 256-wide heads with a window, MQA with 8 heads, a softcap, a head-major cache, queries past
    // the cache whose window leaves some rows no key, a group of 80 heads split in chunks.
    try checkCase(.{ .n_q = 40, .n_kv = 101, .q_pos0 = 61, .n_head = 9, .n_kv_head = 3, .head_dim = 64, .kv_type = .f16 }, 300);
    try checkCase(.{ .n_q = 19, .n_kv = 19, .q_pos0 = 0, .n_head = 4, .n_kv_head = 1, .head_dim = 256, .window = 7, .kv_type = .f16, .pad = 2 }, 301);
    try checkCase(.{ .n_q = 33, .n_kv = 95, .q_pos0 = 62, .n_head = 8, .n_kv_head = 1, .head_dim = 128, .softcap = 20, .scale_mul = 3, .kv_type = .f16, .head_major = true }, 302);
    try checkCase(.{ .n_q = 20, .n_kv = 10, .q_pos0 = 20, .n_head = 2, .n_kv_head = 1, .head_dim = 32, .window = 15, .kv_type = .f16 }, 303);
    try checkCase(.{ .n_q = 17, .n_kv = 200, .q_pos0 = 183, .n_head = 80, .n_kv_head = 1, .head_dim = 32, .kv_type = .f16 }, 304);
    // Heads whose 64 keys would not fit a tile's buffers (32-key tiles) and one that does.
    for ([_]usize{ 160, 192, 224, 96 }, 0..) |hd, s| {
        try checkCase(.{ .n_q = 18, .n_kv = 117, .q_pos0 = 99, .n_head = 4, .n_kv_head = 2, .head_dim = hd, .kv_type = .f16 }, 310 + s);
    }
}

test "AMX-BF16 prefill tiles: without the lo halves (plain bf16 operands) they miss the reference" {
    const c: TestCase = .{ .n_q = 40, .n_kv = 101, .q_pos0 = 61, .n_head = 9, .n_kv_head = 3, .head_dim = 64, .kv_type = .f16, .scale_mul = 3 };
    const al = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(300);
    var f = try makeFixture(al, c, prng.random());
    defer f.deinit(al);
    const ref = try al.alloc(f64, c.n_q * c.n_head * c.head_dim);
    defer al.free(ref);
    const ref_scores = try al.alloc(f64, c.n_kv);
    defer al.free(ref_scores);
    attentionRef(f.args, ref, ref_scores);
    test_tiles_emulate = true;
    defer test_tiles_emulate = false;
    @memset(f.out, sentinel);
    flashAttentionLayout(f.args, .lanes);
    try expectMatches(&f, ref);
    attention_amx.test_hi_only = true;
    defer attention_amx.test_hi_only = false;
    @memset(f.out, sentinel);
    flashAttentionLayout(f.args, .lanes);
    try std.testing.expectError(error.TestExpectedApproxEq, expectMatches(&f, ref));
}

test "flash attention: rows with no allowed key write zeros" {
    // Queries past the cache end, with a window that excludes every cached key.
    try checkCase(.{ .n_q = 3, .n_kv = 10, .q_pos0 = 20, .n_head = 2, .n_kv_head = 1, .head_dim = 64, .window = 4 }, 90);
    // Mixed: the first rows see keys, the last ones none.
    try checkCase(.{ .n_q = 6, .n_kv = 10, .q_pos0 = 8, .n_head = 2, .n_kv_head = 2, .head_dim = 64, .window = 4 }, 91);
    // Empty cache.
    try checkCase(.{ .n_q = 2, .n_kv = 0, .q_pos0 = 0, .n_head = 4, .n_kv_head = 2, .head_dim = 80 }, 92);
}

test "flash attention: random shapes" {
    var prng = std.Random.DefaultPrng.init(99);
    const rng = prng.random();
    const dims = [_]usize{ 64, 80, 128, 256, 72, 40, 3 };
    for (0..25) |s| {
        const n_kv_head = rng.intRangeAtMost(usize, 1, 3);
        const n_kv = rng.intRangeAtMost(usize, 1, 400);
        const n_q = rng.intRangeAtMost(usize, 1, @min(n_kv, 40));
        try checkCase(.{
            .n_q = n_q,
            .n_kv = n_kv,
            .q_pos0 = n_kv - n_q,
            .n_head = n_kv_head * rng.intRangeAtMost(usize, 1, 6),
            .n_kv_head = n_kv_head,
            .head_dim = dims[rng.uintLessThan(usize, dims.len)],
            .window = if (rng.boolean()) 0 else rng.intRangeAtMost(usize, 1, 300),
            .softcap = if (rng.boolean()) 0 else 15,
            .kv_type = if (rng.boolean()) .f32 else .f16,
            .scale_mul = 1 + rng.float(f32) * 3,
            .pad = rng.uintLessThan(usize, 4),
            .head_major = rng.boolean(),
        }, 1000 + s);
    }
    _ = pool.setThreads(2);
}

test "plan: decode spreads query heads over tasks instead of splitting keys" {
    const a = AttentionArgs{
        .q = undefined, .q_row_stride = 256, .q_head_stride = 256, .k = undefined, .v = undefined,
        .kv_type = .f16, .kv_pos_stride = 256, .kv_head_stride = 256, .out = undefined,
        .out_row_stride = 256, .out_head_stride = 256, .n_q = 1, .n_head = 8, .n_kv_head = 1,
        .head_dim = 256, .n_kv = 1000, .q_pos0 = 999, .window = 0, .scale = 1, .softcap = 0,
    };
    try std.testing.expectEqual(@as(usize, 1), makePlan(a, 1).n_base);
    // At least one task per thread; more would convert the same K/V tiles once more each.
    try std.testing.expectEqual(@as(usize, 2), makePlan(a, 2).n_base);
    try std.testing.expectEqual(@as(usize, 4), makePlan(a, 3).n_base);
    var prefill = a;
    prefill.n_q = 512;
    try std.testing.expectEqual(@as(usize, 8), makePlan(prefill, 16).heads_per_task);
}

test "sumHalves: each half summed as sumLanes(8) sums it, bit for bit" {
    var prng = std.Random.DefaultPrng.init(3);
    const rng = prng.random();
    for (0..1000) |_| {
        var v: @Vector(16, f32) = undefined;
        // Magnitudes 2^-20..2^20, so another order of the same additions would round differently.
        for (0..16) |l| v[l] = rng.floatNorm(f32) * std.math.pow(f32, 2, @floatFromInt(rng.intRangeAtMost(i32, -20, 20)));
        const got = sumHalves(v);
        try std.testing.expectEqual(sumLanes(8, std.simd.extract(v, 0, 8)), got[0]);
        try std.testing.expectEqual(sumLanes(8, std.simd.extract(v, 8, 8)), got[1]);
    }
}

test "dotRKQ8: keys in pairs give every (row, key) the bits of the one-key arithmetic" {
    if (!q8_int_scores) return; // integer scores exist only on 512-bit VNNI builds
    var prng = std.Random.DefaultPrng.init(11);
    const rng = prng.random();
    const hd = 128;
    const nb = hd / q8_block;
    var keys: [8][nb]Q8Block = undefined;
    for (&keys) |*row| for (row) |*blk| {
        const d: f16 = @floatCast(rng.float(f32) * std.math.pow(f32, 2, @floatFromInt(rng.intRangeAtMost(i32, -12, 4))));
        std.mem.writeInt(u16, &blk.d, @bitCast(d), .little);
        for (&blk.q) |*x| x.* = rng.int(i8);
    };
    var qrows: [4][hd]f32 = undefined;
    for (&qrows) |*row| for (row) |*x| {
        x.* = rng.floatNorm(f32);
    };
    var rows: Rows = undefined;
    rows.n = 4;
    for (0..4) |r| rows.q[r] = &qrows[r];
    var qs: QueryQ8 = undefined;
    qs.init(&rows, hd);
    // The one-key arithmetic: a 256-bit vpdpbusd per (row, key, block), FMA into 8 lanes, sumLanes.
    var want: [4][8]f32 = undefined;
    for (0..4) |r| for (0..8) |k| {
        var acc: @Vector(8, f32) = @splat(0);
        for (0..nb) |b| {
            const u: @Vector(q8_block, u8) = @bitCast(keys[k][b].q);
            const kx: QueryQ8.I32x8 = @bitCast(u ^ @as(@Vector(q8_block, u8), @splat(0x80)));
            const isum = @"llvm.x86.avx512.vpdpbusd.256"(qs.start[r][b], kx, qs.q[r][b]);
            acc = fmaN(8, @floatFromInt(isum), @splat(qs.d[r][b] * keys[k][b].scale()), acc);
        }
        want[r][k] = sumLanes(8, acc);
    };
    inline for (.{ .{ 1, 8 }, .{ 2, 4 }, .{ 3, 2 }, .{ 4, 2 } }) |rk| {
        const R = rk[0];
        const K = rk[1];
        for (0..4 - R + 1) |r0| for (0..8 / K) |k0| {
            var kp: [K][*]const Q8Block = undefined;
            inline for (0..K) |k| kp[k] = &keys[k0 * K + k];
            const got = dotRKQ8(R, K, &qs, r0, kp, hd);
            inline for (0..R) |r| inline for (0..K) |k| {
                try std.testing.expectEqual(want[r0 + r][k0 * K + k], got[r][k]);
            };
        };
    }
}

test "batch invariance: a row alone and the same row in a batch give identical bits" {
    // 16 query rows: the largest speculative-verification batch, the last call size that must
    // take decode's layout (max_invariant_queries). Group 4 takes the dot products; group 8
    // the lanes, where the batch's tasks are 16 lanes wide, a row alone 8 (one thread) or 4
    // (three threads split its 8 heads): lane width must never change a bit.
    const n_q = max_invariant_queries;
    const alloc = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(99);
    const rng = prng.random();
    const hd = 64;
    const n_kv = 300;
    const max_head = 8;
    // The cache in each K/V type: f32 read in place; f16 and Q8_0 read in place by a task of ≤ 4
    // rows (a row alone) and converted into the tile buffer by a task of 16 (the batch).
    const kv = try alloc.alloc(f32, n_kv * hd);
    defer alloc.free(kv);
    for (kv) |*x| x.* = rng.floatNorm(f32);
    const kv16 = try alloc.alloc(f16, n_kv * hd);
    defer alloc.free(kv16);
    for (kv16, kv) |*h, x| h.* = @floatCast(x);
    const kv8 = try alloc.alloc(u8, n_kv * hd / q8_block * q8_block_bytes);
    defer alloc.free(kv8);
    for (0..n_kv * hd / q8_block) |b| {
        const blk = kv8[b * q8_block_bytes ..];
        var qb: [q8_block]i8 = undefined;
        const d = quantizeQueryBlock(kv[b * q8_block ..][0..q8_block], &qb);
        std.mem.writeInt(u16, blk[0..2], @bitCast(@as(f16, @floatCast(d))), .little);
        @memcpy(blk[2..][0..q8_block], std.mem.sliceAsBytes(&qb));
    }
    const caches = [_]struct { KvType, [*]const u8 }{ .{ .f32, std.mem.sliceAsBytes(kv).ptr }, .{ .f16, std.mem.sliceAsBytes(kv16).ptr }, .{ .q8_0, kv8.ptr } };
    const q = try alloc.alloc(f32, n_q * max_head * hd);
    defer alloc.free(q);
    for (q) |*x| x.* = rng.floatNorm(f32);
    const batch_out = try alloc.alloc(f32, n_q * max_head * hd);
    defer alloc.free(batch_out);
    const one_out = try alloc.alloc(f32, max_head * hd);
    defer alloc.free(one_out);
    for ([_]usize{ 4, max_head }, [_]Layout{ .dots, .lanes }) |n_head, layout| for (caches) |cache| {
        for ([_]usize{ 0, 50 }) |window| {
            for ([_]usize{ 1, 2, 3 }) |threads| {
                _ = pool.setThreads(threads);
                const base = AttentionArgs{
                    .q = q.ptr, .q_row_stride = n_head * hd, .q_head_stride = hd,
                    .k = cache[1], .v = cache[1], .kv_type = cache[0],
                    .kv_pos_stride = hd, .kv_head_stride = hd, .out = batch_out.ptr,
                    .out_row_stride = n_head * hd, .out_head_stride = hd, .n_q = n_q, .n_head = n_head,
                    .n_kv_head = 1, .head_dim = hd, .n_kv = n_kv, .q_pos0 = n_kv - n_q, .window = window,
                    .scale = 0.125, .softcap = 0,
                };
                try std.testing.expectEqual(layout, layoutFor(base));
                flashAttention(base);
                for (0..n_q) |i| {
                    var one = base;
                    one.q = q.ptr + i * n_head * hd;
                    one.out = one_out.ptr;
                    one.n_q = 1;
                    one.n_kv = n_kv - n_q + 1 + i;
                    one.q_pos0 = n_kv - n_q + i;
                    flashAttention(one);
                    try std.testing.expectEqualSlices(f32, batch_out[i * n_head * hd ..][0 .. n_head * hd], one_out[0 .. n_head * hd]);
                }
            }
        }
    };
    _ = pool.setThreads(2);
}

test "lane width: the same rows in 4, 8 and 16 lanes give identical bits" {
    // The lanes kernel at each width over one task's rows (a softcap and a window so every
    // per-lane branch runs), f16 and Q8_0 (whose 8-lane width scores keys in pairs, 4 and 16
    // lanes one key at a time); a width-dependent operation would show here. 7 rows fill all
    // but one lane of 8; 151 keys leave an odd key in the last tile.
    const alloc = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(7);
    const rng = prng.random();
    const hd = 96;
    const n_kv = 151;
    inline for (.{ KvType.f16, KvType.q8_0 }) |kv_type| inline for (.{ 4, 7 }) |n_head| {
        const row_bytes = if (kv_type == .f16) 2 * hd else hd / q8_block * q8_block_bytes;
        const kv = try alloc.alloc(u8, n_kv * row_bytes);
        defer alloc.free(kv);
        for (0..n_kv) |p| {
            const row = kv[p * row_bytes ..][0..row_bytes];
            if (kv_type == .f16) {
                for (0..hd) |d| std.mem.writeInt(u16, row[2 * d ..][0..2], @bitCast(@as(f16, @floatCast(rng.floatNorm(f32)))), .little);
            } else for (0..hd / q8_block) |blk| {
                const b = row[blk * q8_block_bytes ..];
                std.mem.writeInt(u16, b[0..2], @bitCast(@as(f16, @floatCast(rng.float(f32) / 64 + 1.0 / 256.0))), .little);
                for (b[2..q8_block_bytes]) |*x| x.* = @bitCast(rng.intRangeAtMost(i8, -127, 127));
            }
        }
        const q = try alloc.alloc(f32, n_head * hd);
        defer alloc.free(q);
        for (q) |*x| x.* = rng.floatNorm(f32);
        var outs: [3][n_head * hd]f32 = undefined;
        const a = AttentionArgs{
            .q = q.ptr, .q_row_stride = n_head * hd, .q_head_stride = hd,
            .k = kv.ptr, .v = kv.ptr, .kv_type = kv_type,
            .kv_pos_stride = hd, .kv_head_stride = hd, .out = undefined,
            .out_row_stride = n_head * hd, .out_head_stride = hd, .n_q = 1, .n_head = n_head,
            .n_kv_head = 1, .head_dim = hd, .n_kv = n_kv, .q_pos0 = n_kv - 1, .window = 100,
            .scale = 0.1, .softcap = 20,
        };
        const plan = makePlan(a, 1);
        inline for (.{ 4, 8, max_rows }, 0..) |w, i| {
            var b = a;
            b.out = &outs[i];
            const rows = taskRows(b, plan, 0);
            try std.testing.expectEqual(@as(usize, n_head), rows.n);
            if (n_head <= w) Lanes(w).run(b, plan, &rows) else outs[i] = outs[2 - i];
        }
        // 7 rows do not fit 4 lanes: 8 and 16 are compared.
        if (n_head <= 4) try std.testing.expectEqualSlices(f32, &outs[0], &outs[1]);
        try std.testing.expectEqualSlices(f32, &outs[1], &outs[2]);
    };
}
