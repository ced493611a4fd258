//! The flat C ABI of libkiln: shims only. Pointers plus explicit lengths and strides, integer
//! status codes, no structs by value, no callbacks. TypeScript (src/ffi/library.ts) validates
//! every size before calling; these shims re-check what is cheap and return a status.
const std = @import("std");
const cpu = @import("cpu.zig");
const pool = @import("pool.zig");
const quant = @import("quant.zig");
const matmul = @import("matmul.zig");
const packed_rows = @import("packed.zig");
const norm = @import("norm.zig");
const activations = @import("activations.zig");
const rope = @import("rope.zig");
const attention = @import("attention.zig");
const bandwidth = @import("bandwidth.zig");
const memory = @import("memory.zig");
const amx = @import("amx.zig");
const bf16_dot = @import("bf16.zig");
const cuda = @import("cuda_loader.zig");
const sampling = @import("sampling.zig");

/// Status codes (mirrored in src/ffi/library.ts).
const ok: i32 = 0;
const err_bad_type: i32 = -1;
const err_bad_shape: i32 = -2;
const err_bad_arg: i32 = -3;

/// Bumped whenever an exported signature changes; the binding refuses a mismatched library.
export fn kiln_abi_version() u32 {
    return 15;
}

/// The CPU level this copy of the library was compiled for: 0 x86-64 baseline, 1 x86-64-v3,
/// 2 x86-64-v4 (AVX-512 + VNNI), 3 aarch64 (NEON + dotprod).
export fn kiln_cpu_level() u32 {
    return cpu.build_level;
}

/// The kernels' limits the binding checks against (ids mirrored in src/ffi/library.ts).
const Limit = enum(u32) {
    /// Largest batch whose rows the matmul and attention kernels compute bit for bit as each
    /// row alone (speculative verification relies on it).
    max_invariant_rows = 0,
    /// Largest k kiln_pack_rows / kiln_matmul_packed take.
    packed_max_k = 1,
    /// Largest head_dim the attention kernels take.
    max_head_dim = 2,
    /// Largest n_rot the rope kernels take.
    rope_max_rot = 3,
    /// Floats per rotated dimension in a row of kiln_rope_table's table.
    rope_table_floats_per_rot = 4,
};

/// The value of one of the kernels' limits, or err_bad_arg for an unknown id.
export fn kiln_limit(id: u32) i64 {
    const limit = std.meta.intToEnum(Limit, id) catch return err_bad_arg;
    return switch (limit) {
        .max_invariant_rows => @min(matmul.max_invariant_rows, attention.max_invariant_queries),
        .packed_max_k => packed_rows.max_k,
        .max_head_dim => attention.max_head_dim,
        .rope_max_rot => rope.max_rot,
        .rope_table_floats_per_rot => rope.table_floats_per_rot,
    };
}

// Compiled at the architecture's baseline (exports_baseline.zig): callable on any CPU.
extern fn kiln_baseline_cpu_best_level() u32;
extern fn kiln_baseline_cpu_features() u64;

/// The best kiln_cpu_level() this CPU runs, or 0xffffffff when it runs none (an aarch64 core
/// without dotprod and fp16).
export fn kiln_cpu_best_level() u32 {
    return kiln_baseline_cpu_best_level();
}

/// The CPU's features as a bit set (cpu.zig Feature; names in src/ffi/library.ts).
export fn kiln_cpu_features() u64 {
    return kiln_baseline_cpu_features();
}

/// Whether the prefill matmuls (every quantized weight type) use Intel AMX, and if not why (amx.zig Status, names
/// in src/ffi/library.ts AMX_STATUS): 0 enabled, 1 KILN_AMX=0, 2 not in this build, 3 no CPU
/// support, 4 no OS support, 5 permission refused, 6 self-check failed. The first call decides,
/// as the first prefill would (Linux's tile permission request, the hardware self-check).
export fn kiln_amx_status() i32 {
    return @intFromEnum(amx.status());
}

/// Whether prefill matmuls of BF16 weights use Intel AMX-BF16 tiles (TDPBF16PS, ahead of the
/// AVX512-BF16 path below, which must be enabled too), and if not why: amx.zig Status codes as
/// kiln_amx_status's (3 also when the CPU has AMX-INT8 but not AMX-BF16; 6 when the hardware
/// kernel left the f32 summation bound on its fixed problem). The first call decides.
export fn kiln_amx_bf16_status() i32 {
    return @intFromEnum(amx.bf16Status());
}

/// Whether prefill matmuls of BF16 weights use AVX512-BF16 (vdpbf16ps, activations rounded to
/// bf16), and if not why (bf16.zig Status, names in src/ffi/library.ts BF16_STATUS): 0 enabled,
/// 1 KILN_BF16=0, 2 not in this build, 3 no CPU support, 4 self-check failed. The first call
/// decides, as the first BF16 prefill would.
export fn kiln_bf16_status() i32 {
    return @intFromEnum(bf16_dot.status());
}

/// 1 when loading packs the layers' matmul weights by default on this CPU (cpu.zig packLayersFor)
/// and this build has packed layouts (the x86_64-v4 and x86_64-v3 libraries: not the baseline
/// one, which an old CPU of a packing family may load).
export fn kiln_pack_layers_default() u32 {
    return @intFromBool(cpu.packLayersDefault() and packed_rows.hasLayout(.q4_0));
}

/// Which cache hint the decode kernels' software prefetches use (cpu.zig PrefetchChoice, names in
/// src/ffi/library.ts PREFETCH_POLICIES): 0 by_level, 1 non_temporal, 2 l2 (this CPU's choice),
/// 0x100 plus the policy when KILN_PREFETCH chose it. The first call decides, as the first
/// decode would.
export fn kiln_prefetch_policy() i32 {
    return @intFromEnum(cpu.prefetchChoice());
}

export fn kiln_set_threads(n: u32) u32 {
    return @intCast(pool.setThreads(n));
}

export fn kiln_get_threads() u32 {
    return @intCast(pool.threadCount());
}

// ---- types and quantization -------------------------------------------------------------

fn typeOf(t: u32) ?quant.GgmlType {
    return quant.GgmlType.fromInt(t);
}

/// Elements per block of a type, or a negative status for an unsupported type.
export fn kiln_type_block_size(t: u32) i64 {
    const ty = typeOf(t) orelse return err_bad_type;
    return @intCast(quant.blockSize(ty));
}

export fn kiln_type_size(t: u32) i64 {
    const ty = typeOf(t) orelse return err_bad_type;
    return @intCast(quant.typeSize(ty));
}

/// Bytes of one prepared activation row of n elements for weights of type t.
export fn kiln_act_row_bytes(t: u32, n: u64) i64 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (n % quant.blockSize(ty) != 0) return err_bad_shape;
    return @intCast(quant.actRowBytes(ty, n));
}

export fn kiln_dequantize_row(t: u32, src: [*]const u8, dst: [*]f32, n: u64) i32 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (n % quant.blockSize(ty) != 0) return err_bad_shape;
    quant.dequantizeRow(ty, src, dst, n);
    return ok;
}

export fn kiln_quantize_row(t: u32, src: [*]const f32, dst: [*]u8, n: u64) i32 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (n % quant.blockSize(ty) != 0) return err_bad_shape;
    return if (quant.quantizeRow(ty, src, dst, n)) ok else err_bad_type;
}

/// Stores n positions of K or V rows into a KV cache: src holds n rows of n_kv_head·head_dim
/// f32 (position-major, as a projection writes them), and the row of (position i, head h) goes
/// to element i·dst_pos_stride + h·dst_head_stride of dst (strides in elements, as
/// kiln_flash_attention reads them), quantized to t (f32, f16 or q8_0). One call stores a
/// batch into a head-major cache, whose heads' rows are not adjacent.
export fn kiln_store_kv(t: u32, src: [*]const f32, n: u64, n_kv_head: u64, head_dim: u64, dst: [*]u8, dst_pos_stride: u64, dst_head_stride: u64) i32 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (ty != .f32 and ty != .f16 and ty != .q8_0) return err_bad_type;
    const bs = quant.blockSize(ty);
    if (head_dim == 0 or head_dim % bs != 0 or dst_pos_stride % bs != 0 or dst_head_stride % bs != 0) return err_bad_shape;
    for (0..n) |i| for (0..n_kv_head) |h| {
        const at = quant.rowBytes(ty, i * dst_pos_stride + h * dst_head_stride);
        if (!quant.quantizeRow(ty, src + (i * n_kv_head + h) * head_dim, dst + at, head_dim)) return err_bad_type;
    };
    return ok;
}

export fn kiln_get_rows(t: u32, table: [*]const u8, n_cols: u64, ids: [*]const i32, n_ids: u64, out: [*]f32) i32 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (n_cols % quant.blockSize(ty) != 0) return err_bad_shape;
    quant.getRows(ty, table, n_cols, ids, n_ids, out);
    return ok;
}

export fn kiln_quantize_act(t: u32, x: [*]const f32, x_stride: u64, m: u64, k: u64, dst: [*]u8) i32 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (k % quant.blockSize(ty) != 0 or x_stride < k) return err_bad_shape;
    quant.quantizeActivations(ty, x, x_stride, m, k, dst);
    return ok;
}

// ---- matmul and fused FFN ---------------------------------------------------------------

export fn kiln_matmul(t: u32, w: [*]const u8, n_out: u64, k: u64, xq: [*]const u8, m: u64, y: [*]f32, y_stride: u64) i32 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (k % quant.blockSize(ty) != 0 or y_stride < n_out) return err_bad_shape;
    matmul.matmulPrepared(.{ .t = ty, .w = w, .n_out = n_out, .k = k, .xq = xq, .m = m, .y = y, .y_stride = y_stride });
    return ok;
}

/// Three matrices of type t and width k (n0, n1, n2 rows) against the same m prepared activation
/// rows xq, in one thread-pool dispatch (matmul.matmul3Batched): y_i [m, n_i] = x · w_iᵀ, rows
/// n_i apart. Each output has the bits kiln_matmul gives it.
export fn kiln_matmul3(t: u32, k: u64, xq: [*]const u8, m: u64, w0: [*]const u8, n0: u64, y0: [*]f32, w1: [*]const u8, n1: u64, y1: [*]f32, w2: [*]const u8, n2: u64, y2: [*]f32) i32 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (k == 0 or k % quant.blockSize(ty) != 0 or m == 0) return err_bad_shape;
    const part = struct {
        fn f(tt: quant.GgmlType, kk: u64, x: [*]const u8, mm: u64, w: [*]const u8, n: u64, y: [*]f32) matmul.Matmul {
            return .{ .t = tt, .w = w, .n_out = n, .k = kk, .xq = x, .m = mm, .y = y, .y_stride = n };
        }
    }.f;
    matmul.matmul3Batched(.{ part(ty, k, xq, m, w0, n0, y0), part(ty, k, xq, m, w1, n1, y1), part(ty, k, xq, m, w2, n2, y2) });
    return ok;
}

export fn kiln_ffn_gated(t: u32, w_gate: [*]const u8, w_up: [*]const u8, n_ff: u64, k: u64, xq: [*]const u8, m: u64, out: [*]f32, out_stride: u64, activation: u32) i32 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (k % quant.blockSize(ty) != 0 or out_stride < n_ff) return err_bad_shape;
    const act = std.meta.intToEnum(matmul.Activation, activation) catch return err_bad_arg;
    matmul.gatedFfnPrepared(.{ .t = ty, .w_gate = w_gate, .w_up = w_up, .n_ff = n_ff, .k = k, .xq = xq, .m = m, .out = out, .out_stride = out_stride, .activation = act });
    return ok;
}

/// 1 when this build has a packed layout for type t (see packed.zig), else 0.
export fn kiln_packed_supported(t: u32) u32 {
    const ty = typeOf(t) orelse return 0;
    return @intFromBool(packed_rows.supports(ty));
}

/// A weight shape the packed layout takes: whole 16-row groups, whole blocks, k ≤ max_k.
fn packedShapeOk(ty: quant.GgmlType, n_out: u64, k: u64) bool {
    return n_out > 0 and n_out % packed_rows.rows == 0 and k > 0 and k % quant.blockSize(ty) == 0 and k <= packed_rows.max_k;
}

/// Packs w [n_out, k] into dst (dst_len = packed bytes = the tensor's bytes) for kiln_matmul_packed.
/// release_source ≠ 0 drops w's pages from the resident set as they are packed: only for w
/// inside a kiln_mmap_readonly mapping (the binding checks).
export fn kiln_pack_rows(t: u32, w: [*]const u8, n_out: u64, k: u64, dst: [*]u8, dst_len: u64, release_source: u32) i32 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (!packed_rows.supports(ty)) return err_bad_type;
    if (!packedShapeOk(ty, n_out, k)) return err_bad_shape;
    if (dst_len != packed_rows.packedBytes(ty, n_out, k)) return err_bad_shape;
    packed_rows.pack(ty, w, n_out, k, dst, release_source != 0);
    return ok;
}

/// y = x · Wᵀ for W packed by kiln_pack_rows and m prepared activation rows.
export fn kiln_matmul_packed(t: u32, p: [*]const u8, n_out: u64, k: u64, xq: [*]const u8, m: u64, y: [*]f32, y_stride: u64) i32 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (!packed_rows.supports(ty)) return err_bad_type;
    if (!packedShapeOk(ty, n_out, k) or y_stride < n_out) return err_bad_shape;
    packed_rows.matmul(ty, p, n_out, k, xq, m, y, y_stride);
    return ok;
}

/// Three matrices packed by kiln_pack_rows (types t0..t2, n0..n2 rows, one width k; the types'
/// prepared activations the same) against the same m prepared rows xq, y_i [m, n_i] rows n_i
/// apart, in one thread-pool dispatch up to 16 rows (packed.matmul3): each output has the bits
/// kiln_matmul_packed gives it.
export fn kiln_matmul3_packed(k: u64, xq: [*]const u8, m: u64, t0: u32, p0: [*]const u8, n0: u64, y0: [*]f32, t1: u32, p1: [*]const u8, n1: u64, y1: [*]f32, t2: u32, p2: [*]const u8, n2: u64, y2: [*]f32) i32 {
    const ts = [3]u32{ t0, t1, t2 };
    const ps = [3][*]const u8{ p0, p1, p2 };
    const ns = [3]u64{ n0, n1, n2 };
    const ys = [3][*]f32{ y0, y1, y2 };
    var parts: [3]packed_rows.Part = undefined;
    for (0..3) |i| {
        const ty = typeOf(ts[i]) orelse return err_bad_type;
        if (!packed_rows.supports(ty)) return err_bad_type;
        if (!packedShapeOk(ty, ns[i], k) or m == 0) return err_bad_shape;
        parts[i] = .{ .t = ty, .p = ps[i], .n_out = ns[i], .y = ys[i] };
    }
    for (parts[1..]) |q| if (quant.actKind(q.t) != quant.actKind(parts[0].t)) return err_bad_type;
    packed_rows.matmul3(parts, k, xq, m);
    return ok;
}

/// out = act(x·W_gateᵀ) ⊙ (x·W_upᵀ) for gate and up packed by kiln_pack_rows (one type, [n_ff, k]
/// each) and m prepared activation rows: bitwise two kiln_matmul_packed and the gated product.
export fn kiln_ffn_gated_packed(t: u32, p_gate: [*]const u8, p_up: [*]const u8, n_ff: u64, k: u64, xq: [*]const u8, m: u64, out: [*]f32, out_stride: u64, activation: u32) i32 {
    const ty = typeOf(t) orelse return err_bad_type;
    if (!packed_rows.supports(ty)) return err_bad_type;
    if (!packedShapeOk(ty, n_ff, k) or out_stride < n_ff) return err_bad_shape;
    const act = std.meta.intToEnum(matmul.Activation, activation) catch return err_bad_arg;
    packed_rows.gatedFfn(ty, p_gate, p_up, n_ff, k, xq, m, out, out_stride, act);
    return ok;
}

// ---- norms, elementwise, RoPE, softmax ------------------------------------------------------

/// Fused RMSNorm over `rows` rows: optionally x += residual first (x is the residual stream),
/// then out = rmsnorm(x) * weight, and optionally the prepared activations of `out` for weights
/// of type act_type (act_type < 0: none) written to act_out.
export fn kiln_rmsnorm(x: [*]f32, residual: ?[*]const f32, weight: ?[*]const f32, out: [*]f32, n: u64, rows: u64, stride: u64, eps: f32, act_type: i32, act_out: ?[*]u8) i32 {
    if (stride < n) return err_bad_shape;
    var act_ty: ?quant.GgmlType = null;
    if (act_type >= 0) {
        act_ty = typeOf(@intCast(act_type)) orelse return err_bad_type;
        if (n % quant.blockSize(act_ty.?) != 0 or act_out == null) return err_bad_shape;
    }
    activations.rmsNormFused(x, residual, weight, out, n, rows, stride, eps, act_ty, act_out);
    return ok;
}

export fn kiln_rmsnorm_heads(x: [*]f32, n_rows: u64, n_head: u64, head_dim: u64, row_stride: u64, weight: [*]const f32, eps: f32) i32 {
    if (row_stride < n_head * head_dim) return err_bad_shape;
    norm.rmsNormHeads(x, n_rows, n_head, head_dim, row_stride, weight, eps);
    return ok;
}

export fn kiln_silu_mul(gate: [*]const f32, up: [*]const f32, out: [*]f32, n: u64) void {
    norm.siluMulRow(gate, up, out, n);
}

export fn kiln_gelu_tanh_mul(gate: [*]const f32, up: [*]const f32, out: [*]f32, n: u64) void {
    norm.geluTanhMulRow(gate, up, out, n);
}

export fn kiln_add(dst: [*]f32, src: [*]const f32, n: u64) void {
    norm.addRow(dst, src, n);
}

export fn kiln_mul(dst: [*]f32, src: [*]const f32, n: u64) void {
    norm.mulRow(dst, src, n);
}

export fn kiln_scale(x: [*]f32, n: u64, s: f32) void {
    norm.scaleRow(x, n, s);
}

export fn kiln_softmax(x: [*]f32, n: u64, rows: u64, stride: u64) i32 {
    if (stride < n) return err_bad_shape;
    for (0..rows) |r| attention.softmaxRow(x + r * stride, n);
    return ok;
}

/// Index of the largest of x[0..n) (the first of equal ones, NaN never); −1 when none is above
/// −Infinity (sampling.zig argmax).
export fn kiln_argmax_f32(x: [*]const f32, n: u64) i64 {
    return sampling.argmax(x, n);
}

/// The k best of x[0..n), best first (higher logit, then lower id), into ids and vals (k entries
/// each, not overlapping x); returns how many, fewer when fewer are above −Infinity (sampling.zig topK).
export fn kiln_top_k_f32(x: [*]const f32, n: u64, k: u64, ids: [*]i32, vals: [*]f32) i64 {
    if (k == 0 or n > std.math.maxInt(i32)) return err_bad_arg;
    return @intCast(sampling.topK(x, n, k, ids, vals));
}

export fn kiln_rope(x: [*]f32, n_rows: u64, n_head: u64, head_dim: u64, row_stride: u64, head_stride: u64, positions: [*]const i32, n_rot: u64, mode: u32, freq_base: f32, freq_scale: f32, freq_factors: ?[*]const f32) i32 {
    const m = std.meta.intToEnum(rope.RopeMode, mode) catch return err_bad_arg;
    if (n_rot > head_dim or n_rot % 2 != 0) return err_bad_shape;
    rope.rope(x, n_rows, n_head, head_dim, row_stride, head_stride, positions, n_rot, m, freq_base, freq_scale, freq_factors);
    return ok;
}

/// cos/sin of kiln_rope at `positions` into table (n_rows rows of rope_table_floats_per_rot·n_rot
/// floats) for kiln_rope_apply.
export fn kiln_rope_table(positions: [*]const i32, n_rows: u64, n_rot: u64, mode: u32, freq_base: f32, freq_scale: f32, freq_factors: ?[*]const f32, table: [*]f32, table_len: u64) i32 {
    const m = std.meta.intToEnum(rope.RopeMode, mode) catch return err_bad_arg;
    if (n_rot % 2 != 0 or n_rot > rope.max_rot) return err_bad_shape;
    if (!(freq_base > 0)) return err_bad_arg;
    if (table_len < n_rows * rope.tableRowFloats(n_rot)) return err_bad_shape;
    rope.ropeTable(positions, n_rows, n_rot, m, freq_base, freq_scale, freq_factors, table);
    return ok;
}

/// kiln_rope with the cos/sin of kiln_rope_table (the same n_rot and mode, one table row per row of x).
export fn kiln_rope_apply(x: [*]f32, n_rows: u64, n_head: u64, head_dim: u64, row_stride: u64, head_stride: u64, n_rot: u64, mode: u32, table: [*]const f32, table_len: u64) i32 {
    const m = std.meta.intToEnum(rope.RopeMode, mode) catch return err_bad_arg;
    if (n_rot > head_dim or n_rot % 2 != 0 or n_rot > rope.max_rot) return err_bad_shape;
    if (table_len < n_rows * rope.tableRowFloats(n_rot)) return err_bad_shape;
    rope.ropeApply(x, n_rows, n_head, head_dim, row_stride, head_stride, n_rot, m, table);
    return ok;
}

// ---- attention -----------------------------------------------------------------------------

fn attentionArgs(q: [*]const f32, q_row_stride: u64, q_head_stride: u64, k: [*]const u8, v: [*]const u8, kv_type: u32, kv_pos_stride: u64, kv_head_stride: u64, out: [*]f32, out_row_stride: u64, out_head_stride: u64, n_q: u64, n_head: u64, n_kv_head: u64, head_dim: u64, n_kv: u64, q_pos0: u64, window: u64, scale: f32, softcap: f32) ?attention.AttentionArgs {
    const kt = std.meta.intToEnum(attention.KvType, kv_type) catch return null;
    if (n_kv_head == 0 or n_head % n_kv_head != 0 or head_dim == 0 or head_dim > attention.max_head_dim) return null;
    // Quantized K/V: rows and strides in whole blocks.
    if (kt == .q8_0 and (head_dim % attention.q8_block != 0 or kv_pos_stride % attention.q8_block != 0 or kv_head_stride % attention.q8_block != 0)) return null;
    return .{
        .q = q, .q_row_stride = q_row_stride, .q_head_stride = q_head_stride,
        .k = k, .v = v, .kv_type = kt, .kv_pos_stride = kv_pos_stride, .kv_head_stride = kv_head_stride,
        .out = out, .out_row_stride = out_row_stride, .out_head_stride = out_head_stride,
        .n_q = n_q, .n_head = n_head, .n_kv_head = n_kv_head, .head_dim = head_dim,
        .n_kv = n_kv, .q_pos0 = q_pos0, .window = window, .scale = scale, .softcap = softcap,
    };
}

export fn kiln_flash_attention(q: [*]const f32, q_row_stride: u64, q_head_stride: u64, k: [*]const u8, v: [*]const u8, kv_type: u32, kv_pos_stride: u64, kv_head_stride: u64, out: [*]f32, out_row_stride: u64, out_head_stride: u64, n_q: u64, n_head: u64, n_kv_head: u64, head_dim: u64, n_kv: u64, q_pos0: u64, window: u64, scale: f32, softcap: f32) i32 {
    const args = attentionArgs(q, q_row_stride, q_head_stride, k, v, kv_type, kv_pos_stride, kv_head_stride, out, out_row_stride, out_head_stride, n_q, n_head, n_kv_head, head_dim, n_kv, q_pos0, window, scale, softcap) orelse return err_bad_arg;
    attention.flashAttention(args);
    return ok;
}

/// The unfused path: materializes n_q × n_head × n_kv scores in `scores` (benchmarks, tests).
export fn kiln_attention_naive(q: [*]const f32, q_row_stride: u64, q_head_stride: u64, k: [*]const u8, v: [*]const u8, kv_type: u32, kv_pos_stride: u64, kv_head_stride: u64, out: [*]f32, out_row_stride: u64, out_head_stride: u64, n_q: u64, n_head: u64, n_kv_head: u64, head_dim: u64, n_kv: u64, q_pos0: u64, window: u64, scale: f32, softcap: f32, scores: [*]f32) i32 {
    const args = attentionArgs(q, q_row_stride, q_head_stride, k, v, kv_type, kv_pos_stride, kv_head_stride, out, out_row_stride, out_head_stride, n_q, n_head, n_kv_head, head_dim, n_kv, q_pos0, window, scale, softcap) orelse return err_bad_arg;
    attention.attentionNaive(args, scores);
    return ok;
}

// ---- memory and machine probes -----------------------------------------------------------

/// Maps a file read-only (PROT_READ, MAP_PRIVATE): a stray write faults instead of changing
/// the user's model on disk. Returns null on failure; out_len receives the file size.
export fn kiln_mmap_readonly(path: [*:0]const u8, out_len: *u64) ?[*]const u8 {
    return memory.mapReadOnly(path, out_len);
}

export fn kiln_munmap(addr: [*]const u8, len: u64) void {
    memory.unmap(addr, len);
}

/// Page-aligned zeroed memory for activations and caches, owned by the caller until kiln_free.
export fn kiln_alloc(len: u64) ?[*]u8 {
    return memory.alloc(len);
}

export fn kiln_free(addr: [*]u8, len: u64) void {
    memory.free(addr, len);
}

/// Best read bandwidth in bytes/s over `iterations` passes of buf[0..len] with all threads.
export fn kiln_read_bandwidth(buf: [*]const u8, len: u64, iterations: u32) f64 {
    return bandwidth.readBandwidth(buf, len, iterations);
}

// ---- CUDA: NVRTC and the driver, opened at run time (cuda_loader.zig) ---------------------
// Status: 0 ok, -3 bad argument, -4 a CUDA call failed, -5 library missing or not loaded,
// -6 NVRTC compile error (read the program log). Handles and device pointers are u64.

/// This thread's last CUDA/NVRTC error ("cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY"); returns its
/// full length, copies at most cap bytes.
export fn kiln_cuda_last_error(buf: ?[*]u8, cap: u64) u64 {
    return cuda.lastError(buf, cap);
}

export fn kiln_nvrtc_load(path: ?[*:0]const u8) i32 {
    return cuda.nvrtcLoad(path);
}

export fn kiln_nvrtc_version(major: *i32, minor: *i32) i32 {
    return cuda.nvrtcVersion(major, minor);
}

/// headers: n_headers (name, source) pairs, 2*n NUL-terminated strings in one blob; options:
/// n_options NUL-terminated strings in one blob. out: the program (free it), set on ok and -6.
export fn kiln_nvrtc_compile(src: [*]const u8, src_len: u64, name: [*:0]const u8, headers: ?[*]const u8, headers_len: u64, n_headers: u32, options: ?[*]const u8, options_len: u64, n_options: u32, out: *u64) i32 {
    return cuda.nvrtcCompile(src, src_len, name, headers, headers_len, n_headers, options, options_len, n_options, out);
}

/// The program log's size (NUL included), or a negative status; copied when cap suffices.
export fn kiln_nvrtc_log(prog: u64, buf: ?[*]u8, cap: u64) i64 {
    return cuda.nvrtcLog(prog, buf, cap);
}

/// The CUBIN's size (PTX, NUL included, for a compute_XX target), or a negative status; copied when cap suffices.
export fn kiln_nvrtc_cubin(prog: u64, buf: ?[*]u8, cap: u64) i64 {
    return cuda.nvrtcCubin(prog, buf, cap);
}

export fn kiln_nvrtc_free(prog: u64) i32 {
    return cuda.nvrtcFree(prog);
}

export fn kiln_cuda_load(path: ?[*:0]const u8) i32 {
    return cuda.cudaLoad(path);
}

export fn kiln_cuda_driver_version(out: *i32) i32 {
    return cuda.driverVersion(out);
}

export fn kiln_cuda_device_count(out: *i32) i32 {
    return cuda.deviceCount(out);
}

export fn kiln_cuda_device_info(ordinal: i32, cc_major: *i32, cc_minor: *i32, total_mem: *u64, name: [*]u8, cap: u32) i32 {
    return cuda.deviceInfo(ordinal, cc_major, cc_minor, total_mem, name, cap);
}

export fn kiln_cuda_context_retain(ordinal: i32, out: *u64) i32 {
    return cuda.contextRetain(ordinal, out);
}

export fn kiln_cuda_context_set_current(ctx: u64) i32 {
    return cuda.contextSetCurrent(ctx);
}

export fn kiln_cuda_context_release(ordinal: i32) i32 {
    return cuda.contextRelease(ordinal);
}

export fn kiln_cuda_context_synchronize() i32 {
    return cuda.contextSynchronize();
}

export fn kiln_cuda_mem_info(free_bytes: *u64, total_bytes: *u64) i32 {
    return cuda.memInfo(free_bytes, total_bytes);
}

export fn kiln_cuda_module_load(image: [*]const u8, len: u64, out: *u64) i32 {
    return cuda.moduleLoad(image, len, out);
}

export fn kiln_cuda_module_function(module: u64, name: [*:0]const u8, out: *u64) i32 {
    return cuda.moduleFunction(module, name, out);
}

export fn kiln_cuda_module_unload(module: u64) i32 {
    return cuda.moduleUnload(module);
}

/// The kernel's one parameter is the struct at args (kernelParams = {args}).
export fn kiln_cuda_launch(func: u64, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, shared_bytes: u32, stream: u64, args: ?*anyopaque) i32 {
    return cuda.launch(func, gx, gy, gz, bx, by, bz, shared_bytes, stream, args);
}

export fn kiln_cuda_malloc(bytes: u64, out: *u64) i32 {
    return cuda.malloc(bytes, out);
}

export fn kiln_cuda_free(ptr: u64) i32 {
    return cuda.free(ptr);
}

/// stream 0: the synchronous copy; else an async copy on that stream.
export fn kiln_cuda_memcpy_htod(dst: u64, src: *const anyopaque, n: u64, stream: u64) i32 {
    return cuda.memcpyHtoD(dst, src, n, stream);
}

/// stream 0: the synchronous copy; else an async copy on that stream.
export fn kiln_cuda_memcpy_dtoh(dst: *anyopaque, src: u64, n: u64, stream: u64) i32 {
    return cuda.memcpyDtoH(dst, src, n, stream);
}

export fn kiln_cuda_memcpy_dtod(dst: u64, src: u64, n: u64, stream: u64) i32 {
    return cuda.memcpyDtoD(dst, src, n, stream);
}

export fn kiln_cuda_memset(dst: u64, value: u32, n: u64, stream: u64) i32 {
    return cuda.memset(dst, value, n, stream);
}

export fn kiln_cuda_host_alloc(bytes: u64, out: *u64) i32 {
    return cuda.hostAlloc(bytes, out);
}

export fn kiln_cuda_host_free(ptr: u64) i32 {
    return cuda.hostFree(ptr);
}

export fn kiln_cuda_stream_create(out: *u64) i32 {
    return cuda.streamCreate(out);
}

export fn kiln_cuda_stream_destroy(stream: u64) i32 {
    return cuda.streamDestroy(stream);
}

export fn kiln_cuda_stream_synchronize(stream: u64) i32 {
    return cuda.streamSynchronize(stream);
}

export fn kiln_cuda_graph_begin(stream: u64) i32 {
    return cuda.graphBegin(stream);
}

export fn kiln_cuda_graph_end(stream: u64, out: *u64) i32 {
    return cuda.graphEnd(stream, out);
}

export fn kiln_cuda_graph_launch(exec: u64, stream: u64) i32 {
    return cuda.graphLaunch(exec, stream);
}

export fn kiln_cuda_graph_destroy(exec: u64) i32 {
    return cuda.graphDestroy(exec);
}
