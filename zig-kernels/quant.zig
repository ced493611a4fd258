//! The traits table: GGUF type id → block layout, dequantizer, activation format, dot product.
//!
//! Kernels dispatch through `switch (t) { inline else => |ct| ... Traits(ct) ... }`, which
//! stamps out one specialised loop per type (ggml's type_traits, resolved at compile time).
const std = @import("std");
const legacy = @import("quant_legacy.zig");
const kquant = @import("quant_k.zig");
const pool = @import("pool.zig");
const bf16 = @import("bf16.zig");

pub const ActKind = legacy.ActKind;

/// GGUF/ggml type ids kiln's kernels support (the values are ggml's).
pub const GgmlType = enum(u32) {
    f32 = 0,
    f16 = 1,
    q4_0 = 2,
    q4_1 = 3,
    q5_0 = 6,
    q5_1 = 7,
    q8_0 = 8,
    q4_k = 12,
    q5_k = 13,
    q6_k = 14,
    bf16 = 30,

    pub fn fromInt(id: u32) ?GgmlType {
        return std.meta.intToEnum(GgmlType, id) catch null;
    }
};

pub fn Traits(comptime t: GgmlType) type {
    return switch (t) {
        .f32 => legacy.F32,
        .f16 => legacy.F16,
        .bf16 => legacy.BF16,
        .q4_0 => legacy.Q4_0,
        .q4_1 => legacy.Q4_1,
        .q5_0 => legacy.Q5_0,
        .q5_1 => legacy.Q5_1,
        .q8_0 => legacy.Q8_0,
        .q4_k => kquant.Q4_K,
        .q5_k => kquant.Q5_K,
        .q6_k => kquant.Q6_K,
    };
}

/// The activation format a weight type's dot product consumes.
pub fn ActTraits(comptime kind: ActKind) type {
    return switch (kind) {
        .f32 => F32Act,
        .f32_bf16 => F32Bf16Act,
        .q8_0 => legacy.ActQ8_0,
        .q8_k => kquant.ActQ8_K,
    };
}

/// f32 activations are used as they are; the "quantizer" is a copy (used only when a caller
/// asks for a prepared activation buffer for an F32/F16/BF16 weight).
const F32Act = struct {
    pub const block_size: usize = 1;
    pub const type_size: usize = 4;
    pub fn quantizeRow(src: [*]const f32, dst: [*]u8, n: usize) void {
        @memcpy(dst[0 .. n * 4], std.mem.sliceAsBytes(src[0..n]));
    }
};

/// BF16 weights' rows: the f32 values, then their bf16 roundings (bf16.prepareRow).
const F32Bf16Act = struct {
    pub const block_size: usize = 1;
    pub const type_size: usize = bf16.prepare_row_bytes;
    pub const quantizeRow = bf16.prepareRow;
};

pub fn blockSize(t: GgmlType) usize {
    return switch (t) {
        inline else => |ct| Traits(ct).block_size,
    };
}

pub fn typeSize(t: GgmlType) usize {
    return switch (t) {
        inline else => |ct| Traits(ct).type_size,
    };
}

pub fn actKind(t: GgmlType) ActKind {
    return switch (t) {
        inline else => |ct| Traits(ct).act,
    };
}

/// Bytes of one row of `n` elements (n % block_size == 0 is checked by callers).
pub fn rowBytes(t: GgmlType, n: usize) usize {
    return n / blockSize(t) * typeSize(t);
}

/// Bytes of one activation row of `n` elements prepared for weights of type `t`.
pub fn actRowBytes(t: GgmlType, n: usize) usize {
    return switch (actKind(t)) {
        inline else => |k| n / ActTraits(k).block_size * ActTraits(k).type_size,
    };
}

/// Quantizes `m` activation rows (stride `x_stride` floats) into `dst` (rows of actRowBytes).
pub fn quantizeActivations(t: GgmlType, x: [*]const f32, x_stride: usize, m: usize, n: usize, dst: [*]u8) void {
    const row_bytes = actRowBytes(t, n);
    switch (actKind(t)) {
        inline else => |k| {
            const Ctx = struct { x: [*]const f32, x_stride: usize, n: usize, dst: [*]u8, row_bytes: usize };
            const run = struct {
                fn f(c: Ctx, i: usize) void {
                    ActTraits(k).quantizeRow(c.x + i * c.x_stride, c.dst + i * c.row_bytes, c.n);
                }
            }.f;
            const ctx = Ctx{ .x = x, .x_stride = x_stride, .n = n, .dst = dst, .row_bytes = row_bytes };
            if (m < 4) {
                for (0..m) |i| run(ctx, i);
            } else {
                pool.parallelFor(m, ctx, run);
            }
        },
    }
}

pub fn dequantizeRow(t: GgmlType, src: [*]const u8, dst: [*]f32, n: usize) void {
    switch (t) {
        inline else => |ct| Traits(ct).dequantizeRow(src, dst, n),
    }
}

/// Embedding lookup: dequantizes rows `ids[i]` of a [n_rows][n] table into out[i].
/// Callers have checked every id is in range.
pub fn getRows(t: GgmlType, table: [*]const u8, n: usize, ids: [*]const i32, n_ids: usize, out: [*]f32) void {
    const rb = rowBytes(t, n);
    for (0..n_ids) |i| {
        const row: usize = @intCast(ids[i]);
        dequantizeRow(t, table + row * rb, out + i * n, n);
    }
}

/// Quantizes rows of f32 into a weight type (every supported type; false is kept for API
/// compatibility should an unquantizable type be added).
pub fn quantizeRow(t: GgmlType, src: [*]const f32, dst: [*]u8, n: usize) bool {
    switch (t) {
        .f32 => @memcpy(dst[0 .. n * 4], std.mem.sliceAsBytes(src[0..n])),
        .f16 => legacy.F16.quantizeRow(src, dst, n),
        .bf16 => legacy.BF16.quantizeRow(src, dst, n),
        .q8_0 => legacy.Q8_0.quantizeRow(src, dst, n),
        .q4_0 => legacy.Q4_0.quantizeRow(src, dst, n),
        .q4_1 => legacy.Q4_1.quantizeRow(src, dst, n),
        .q5_0 => legacy.Q5_0.quantizeRow(src, dst, n),
        .q5_1 => legacy.Q5_1.quantizeRow(src, dst, n),
        .q4_k => kquant.Q4_K.quantizeRow(src, dst, n),
        .q5_k => kquant.Q5_K.quantizeRow(src, dst, n),
        .q6_k => kquant.Q6_K.quantizeRow(src, dst, n),
    }
    return true;
}

test "traits table is consistent" {
    inline for (std.meta.fields(GgmlType)) |f| {
        const t: GgmlType = @enumFromInt(f.value);
        try std.testing.expect(blockSize(t) >= 1);
        try std.testing.expect(typeSize(t) >= 2);
        try std.testing.expectEqual(t, GgmlType.fromInt(f.value).?);
    }
    try std.testing.expectEqual(@as(?GgmlType, null), GgmlType.fromInt(10)); // Q2_K: not supported
    try std.testing.expectEqual(@as(usize, 18), rowBytes(.q4_0, 32));
    try std.testing.expectEqual(@as(usize, 210 * 2), rowBytes(.q6_k, 512));
}
