//! Fused dequantize + matmul: y[i][j] = Σ_k W[j][k] · x[i][k] with W in any supported GGUF
//! type, read in place (never dequantized to memory). Activations are first prepared in the
//! weight type's activation format (8-bit blocks for the quantized types, see quant.zig), so
//! the inner loop is an integer dot product (VNNI / maddubs / sdot).
//!
//! Also the fused gated FFN: out[i][j] = act(Wg[j]·x[i]) · (Wu[j]·x[i]) in one pass over
//! the prepared activations, with nothing but the product written.
const std = @import("std");
const pool = @import("pool.zig");
const quant = @import("quant.zig");
const norm = @import("norm.zig");
const repack = @import("repack.zig");
const amx = @import("amx.zig");
const bf16_dot = @import("bf16.zig");

const GgmlType = quant.GgmlType;
const Traits = quant.Traits;

/// Weight bytes per task for batched work: the task's rows (~70 KB: 16 rows of a 4096-wide Q8_0
/// matrix, 128 of a 640-wide one) stay in L2 while every activation row streams past them, and
/// short rows still make tasks big enough that claiming one (an atomic on a shared counter)
/// costs little beside it: 16-row tasks over Gemma's 262144-row output head were 16384 claims.
const task_bytes_batched = 64 * 1024;
const min_rows_batched = 16;
/// Below this many weight bytes a matmul runs on the calling thread (waking workers costs more).
const min_parallel_bytes = 64 * 1024;

pub const Matmul = struct {
    t: GgmlType,
    w: [*]const u8, // [n_out] rows of rowBytes(t, k)
    n_out: usize,
    k: usize,
    xq: [*]const u8, // [m] prepared activation rows of actRowBytes(t, k)
    m: usize,
    y: [*]f32, // y[i * y_stride + j]
    y_stride: usize,
};

/// Runs a matmul whose activations are already prepared (quant.quantizeActivations).
pub fn matmulPrepared(a: Matmul) void {
    switch (a.t) {
        inline else => |ct| matmulTyped(ct, a),
    }
}

/// Batches (m > 1: prefill, speculative verification) go through the type's R×C tile kernel where
/// it has one. Every type's tile kernel computes each (weight row, activation row) pair with the
/// decode kernel's exact arithmetic (tile shape never changes a bit, tests check it), so a row
/// verified in a batch is bitwise identical to decoding it alone: speculative decoding then
/// reproduces plain decoding exactly, at tile speed. Batches of more than max_invariant_rows
/// (prefill only: verification batches are at most the 16 logit rows a forward returns) may
/// instead take the interleaved kernels of repack.zig, faster but summed in another order.
pub const max_invariant_rows = 16;
fn matmulTyped(comptime t: GgmlType, a: Matmul) void {
    const T = Traits(t);
    if (a.m > max_invariant_rows and repack.supports(t)) return matmulInterleaved(t, a);
    if (comptime t == .bf16 and bf16_dot.wired) {
        if (a.m > max_invariant_rows and bf16_dot.enabled()) {
            _ = amx.bf16Enabled(); // decided (a self-check on first use) on the calling thread
            return matmulTiled(t, .prefill_bf16_dot, a);
        }
    }
    if (comptime @hasDecl(T, "prefillTile")) {
        if (a.m > max_invariant_rows) return matmulTiled(t, .prefill, a);
    }
    if (comptime @hasDecl(T, "vecDotTile")) {
        if (a.m > 1) return matmulTiled(t, .invariant, a);
    }
    const Ctx = struct { a: Matmul, rows_per_task: usize };
    const run = struct {
        fn f(c: Ctx, task: usize) void {
            const row_bytes = c.a.k / T.block_size * T.type_size;
            const act_bytes = quant.actRowBytes(t, c.a.k);
            const j0 = task * c.rows_per_task;
            const j1 = @min(c.a.n_out, j0 + c.rows_per_task);
            for (0..c.a.m) |i| {
                const x = c.a.xq + i * act_bytes;
                const y = c.a.y + i * c.a.y_stride;
                dotRows(T, c.a.k, c.a.w, row_bytes, x, y, j0, j1);
            }
        }
    }.f;
    const rows_per_task = rowsPerTask(t, a.n_out, a.k, a.m);
    const n_tasks = std.math.divCeil(usize, a.n_out, rows_per_task) catch unreachable;
    if (a.m == 1 and n_tasks > 1) return launchGuided(a.n_out, a, struct {
        fn f(c: Matmul, j0: usize, j1: usize) void {
            dotRows(T, c.k, c.w, c.k / T.block_size * T.type_size, c.xq, c.y, j0, j1);
        }
    }.f);
    const ctx = Ctx{ .a = a, .rows_per_task = rows_per_task };
    if (n_tasks == 1) run(ctx, 0) else pool.parallelFor(n_tasks, ctx, run);
}

/// Runs `rows(args, j0, j1)` over guidedSplit's ranges of n_rows rows on the pool.
fn launchGuided(n_rows: usize, args: anytype, comptime rows: fn (@TypeOf(args), usize, usize) void) void {
    const Args = @TypeOf(args);
    const Ctx = struct { args: Args, split: *const GuidedSplit };
    const split = guidedSplit(n_rows, guidedMinRows(n_rows));
    pool.parallelFor(split.n_tasks, Ctx{ .args = args, .split = &split }, struct {
        fn f(c: Ctx, task: usize) void {
            const r = c.split.range(task);
            rows(c.args, r.j0, r.j1);
        }
    }.f);
}

/// One weight matrix of a matmul3 call: n_out rows, outputs y[0..n_out].
pub const Part = struct { w: [*]const u8, n_out: usize, y: [*]f32 };

/// Three weight matrices of one type and width (attention's Q, K and V) against one prepared
/// activation row, in one dispatch of the thread pool: their rows are split into tasks as if
/// they were one matrix of n₀ + n₁ + n₂ rows. Small models' projections are too small to
/// share out well one by one (SmolLM2's 576 × 576 Q4_1 attn_q, 187 KB, runs single-threaded
/// below min_parallel_bytes, and its 192-row K and V likewise). Each output row has exactly the
/// bits matmulPrepared gives it (dotRows' per-row arithmetic does not depend on which rows share
/// a task or group: tested).
pub fn matmul3Prepared(t: GgmlType, k: usize, xq: [*]const u8, parts: [3]Part) void {
    switch (t) {
        inline else => |ct| matmul3Typed(ct, k, xq, parts),
    }
}

fn matmul3Typed(comptime t: GgmlType, k: usize, xq: [*]const u8, parts: [3]Part) void {
    const T = Traits(t);
    const total = parts[0].n_out + parts[1].n_out + parts[2].n_out;
    const Ctx = struct { parts: [3]Part, k: usize, xq: [*]const u8 };
    // Rows [j0, j1) of the three matrices stacked.
    const rows = struct {
        fn f(c: Ctx, j0: usize, j1: usize) void {
            const row_bytes = c.k / T.block_size * T.type_size;
            var base: usize = 0;
            for (c.parts) |p| {
                const lo = @max(j0, base);
                const hi = @min(j1, base + p.n_out);
                if (lo < hi) dotRows(T, c.k, p.w, row_bytes, c.xq, p.y, lo - base, hi - base);
                base += p.n_out;
            }
        }
    }.f;
    if (total == 0) return;
    const ctx = Ctx{ .parts = parts, .k = k, .xq = xq };
    if (rowsPerTask(t, total, k, 1) < total) launchGuided(total, ctx, rows) else rows(ctx, 0, total);
}

/// Activation rows per batched task: 64 prepared 4096-wide Q8_0 rows are ~280 KB, which stay in
/// L2 while the task's weight rows stream past them tile by tile.
const act_rows_per_block = 64;

/// Which R×C tile kernel a batched call takes: the type's batch-invariant one (T.vecDotTile, the
/// decode kernel's bits) or, for prefill batches beyond max_invariant_rows, T.prefillTile where
/// the type has one (the float types: one accumulator per pair, other bits), or for BF16 weights
/// where the CPU has AVX512-BF16, bf16.zig's vdpbf16ps tile (activations rounded to bf16).
const TileKind = enum { invariant, prefill, prefill_bf16_dot };

fn Tiles(comptime T: type, comptime kind: TileKind) type {
    return struct {
        pub const block_size = T.block_size;
        pub const type_size = T.type_size;
        pub const tile_r = switch (kind) {
            .invariant => T.tile_r,
            .prefill => T.prefill_tile_r,
            .prefill_bf16_dot => bf16_dot.tile_r,
        };
        pub const tile_c = switch (kind) {
            .invariant => T.tile_c,
            .prefill => T.prefill_tile_c,
            .prefill_bf16_dot => bf16_dot.tile_c,
        };
        pub fn vecDotTile(comptime R: usize, comptime C: usize, n: usize, w: [*]const u8, row_bytes: usize, x: [*]const u8, act_bytes: usize, y: [*]f32, y_stride: usize) void {
            switch (kind) {
                .invariant => T.vecDotTile(R, C, n, w, row_bytes, x, act_bytes, y, y_stride),
                .prefill => T.prefillTile(R, C, n, w, row_bytes, x, act_bytes, y, y_stride),
                .prefill_bf16_dot => bf16_dot.tile(R, C, n, w, row_bytes, x, act_bytes, y, y_stride),
            }
        }
    };
}

/// Batched matmul through an R×C tile kernel (Tiles: T.vecDotTile, or T.prefillTile). Tasks are
/// (weight row block × activation row block) pairs, activation-block major so the threads share
/// one activation block at a time; inside a task, activation tiles outer (C rows, L1-resident)
/// and weight tiles inner (R rows, from L2).
fn matmulTiled(comptime t: GgmlType, comptime kind: TileKind, a: Matmul) void {
    const T = Tiles(Traits(t), kind);
    const Ctx = struct { a: Matmul, rows_per_task: usize, n_rb: usize };
    const run = struct {
        fn f(c: Ctx, task: usize) void {
            const row_bytes = c.a.k / T.block_size * T.type_size;
            const act_bytes = quant.actRowBytes(t, c.a.k);
            const r = tiledTaskRange(task, c.n_rb, c.rows_per_task, c.a.n_out, c.a.m);
            const j0 = r.j0;
            const j1 = r.j1;
            const i_0 = r.i_0;
            const i_1 = r.i_1;
            if (kind == .prefill_bf16_dot) {
                var j = j0;
                if (amx.bf16Enabled()) {
                    comptime std.debug.assert(act_rows_per_block <= amx.bf16_max_acts);
                    while (j < j1) : (j += amx.max_rows) {
                        amx.bf16Rows(c.a.w + j * row_bytes, row_bytes, c.a.k, c.a.xq + i_0 * act_bytes, act_bytes, i_1 - i_0, @min(amx.max_rows, j1 - j), c.a.y + i_0 * c.a.y_stride + j, c.a.y_stride);
                    }
                    return;
                }
                while (j < j1) : (j += T.tile_r) {
                    bf16Rows(@min(T.tile_r, j1 - j), i_1 - i_0, c.a.k, c.a.w + j * row_bytes, row_bytes, c.a.xq + i_0 * act_bytes, act_bytes, c.a.y + i_0 * c.a.y_stride + j, c.a.y_stride);
                }
                return;
            }
            // Sub-blocks of min_rows_batched rows stay in L1 while the activation tiles pass.
            var jb = j0;
            while (jb < j1) : (jb += min_rows_batched) {
                const jb1 = @min(j1, jb + min_rows_batched);
                var i = i_0;
                while (i < i_1) : (i += T.tile_c) {
                    const cc = @min(T.tile_c, i_1 - i);
                    var j = jb;
                    while (j < jb1) : (j += T.tile_r) {
                        const rr = @min(T.tile_r, jb1 - j);
                        tileCall(T, rr, cc, c.a.k, c.a.w + j * row_bytes, row_bytes, c.a.xq + i * act_bytes, act_bytes, c.a.y + i * c.a.y_stride + j, c.a.y_stride);
                    }
                }
            }
        }
    }.f;
    const rows_per_task = rowsPerTask(t, a.n_out, a.k, a.m);
    launchTiled(Ctx, a, a.n_out, rows_per_task, run);
}

/// BF16 prefill on vdpbf16ps: rr ≤ tile_r weight rows against the task's m ≤ 64 activation rows
/// (bf16.weightTile: K in chunks, each chunk of the rows read once for all m).
inline fn bf16Rows(rr: usize, m: usize, k: usize, w: [*]const u8, row_bytes: usize, x: [*]const u8, act_bytes: usize, y: [*]f32, y_stride: usize) void {
    comptime std.debug.assert(act_rows_per_block == bf16_dot.max_act_rows);
    switch (rr) {
        inline 1...bf16_dot.tile_r => |r| bf16_dot.rows(r, m, k, w, row_bytes, x, act_bytes, y, y_stride),
        else => unreachable,
    }
}

/// Prefill through repack.zig: tasks are (weight rows × ≤ 64 activation rows) as matmulTiled's;
/// each whole group of repack.rows weight rows (16 on 512-bit VNNI, 8 on AVX2) goes through the
/// interleaved kernel, a last partial group through the tile kernel. Where AMX is enabled
/// (amx.zig: the types amx.routed() names, on the x86_64-v4 build, after its run-time checks) the
/// task's rows go through the AMX kernel instead, 32 at a time.
fn matmulInterleaved(comptime t: GgmlType, a: Matmul) void {
    const Ctx = struct { a: Matmul, rows_per_task: usize, n_rb: usize, act_block: usize = act_rows_per_block };
    const run = struct {
        fn f(c: Ctx, task: usize) void {
            interleavedTask(t, c.a, tiledTaskRangeIn(task, c.n_rb, c.rows_per_task, c.a.n_out, c.a.m, c.act_block));
        }
    }.f;
    // Decides AMX (a self-check on first use) on the calling thread, before the tasks ask.
    const on_amx = useAmx(t) and amx.enabled();
    const rows_per_task = interleavedTaskRows(on_amx, rowsPerTask(t, a.n_out, a.k, a.m));
    launchTiledIn(Ctx, a, a.n_out, rows_per_task, if (on_amx) amx.max_acts else act_rows_per_block, run);
}

/// One task of matmulInterleaved: weight rows [j0, j1) × activation rows [i_0, i_1).
inline fn interleavedTask(comptime t: GgmlType, a: Matmul, r: TaskRange) void {
    const T = Traits(t);
    const row_bytes = a.k / T.block_size * T.type_size;
    const act_bytes = quant.actRowBytes(t, a.k);
    var j = r.j0;
    if (comptime useAmx(t)) {
        if (amx.enabled()) {
            amx.prefetchWeights(a.w[j * row_bytes .. @min(r.j1, j + amx.max_rows) * row_bytes]);
            while (j < r.j1) : (j += amx.max_rows) {
                const next = @min(r.j1, j + amx.max_rows);
                const ahead = a.w[next * row_bytes .. @min(r.j1, next + amx.max_rows) * row_bytes];
                amx.matmulRows(t, a.w + j * row_bytes, row_bytes, a.k, a.xq + r.i_0 * act_bytes, act_bytes, r.i_1 - r.i_0, @min(amx.max_rows, r.j1 - j), a.y + r.i_0 * a.y_stride + j, a.y_stride, ahead);
            }
            return;
        }
    }
    while (j + repack.rows <= r.j1) : (j += repack.rows) {
        repack.rowsBlock(t, a.w + j * row_bytes, row_bytes, a.k, a.xq + r.i_0 * act_bytes, act_bytes, r.i_1 - r.i_0, a.y + r.i_0 * a.y_stride + j, a.y_stride);
    }
    if (comptime @hasDecl(T, "vecDotTile")) {
        var i = r.i_0;
        while (i < r.i_1) : (i += T.tile_c) {
            const cc = @min(T.tile_c, r.i_1 - i);
            var jt = j;
            while (jt < r.j1) : (jt += T.tile_r) {
                const rr = @min(T.tile_r, r.j1 - jt);
                tileCall(T, rr, cc, a.k, a.w + jt * row_bytes, row_bytes, a.xq + i * act_bytes, act_bytes, a.y + i * a.y_stride + jt, a.y_stride);
            }
        }
    } else unreachable;
}

/// Three batched matmuls of one type over the same prepared activations (prefill's Q, K and V)
/// in one dispatch: each keeps the tasks matmulInterleaved gives it alone (so its bits), and the
/// threads share out all of them at once instead of meeting after each. Measured within noise of
/// three calls (SmolLM2's Q/K/V at 128 and 512 rows, Emerald Rapids: docs/optimization.md).
fn matmul3Interleaved(comptime t: GgmlType, parts: [3]Matmul) void {
    const Plan = struct { rows_per_task: usize, n_rb: usize, n_tasks: usize };
    const Ctx = struct { parts: [3]Matmul, plans: [3]Plan, act_block: usize };
    const run = struct {
        fn f(c: Ctx, task: usize) void {
            var local = task;
            for (c.parts, c.plans) |p, pl| {
                if (local < pl.n_tasks) return interleavedTask(t, p, tiledTaskRangeIn(local, pl.n_rb, pl.rows_per_task, p.n_out, p.m, c.act_block));
                local -= pl.n_tasks;
            }
            unreachable;
        }
    }.f;
    const on_amx = useAmx(t) and amx.enabled();
    var ctx = Ctx{ .parts = parts, .plans = undefined, .act_block = if (on_amx) amx.max_acts else act_rows_per_block };
    var total: usize = 0;
    for (parts, &ctx.plans) |p, *pl| {
        const rows_per_task = interleavedTaskRows(on_amx, rowsPerTask(t, p.n_out, p.k, p.m));
        const n_rb = std.math.divCeil(usize, p.n_out, rows_per_task) catch unreachable;
        const n_ib = std.math.divCeil(usize, p.m, ctx.act_block) catch unreachable;
        pl.* = .{ .rows_per_task = rows_per_task, .n_rb = n_rb, .n_tasks = if (p.n_out == 0 or p.m == 0) 0 else n_rb * n_ib };
        total += pl.n_tasks;
    }
    if (total == 1) run(ctx, 0) else if (total > 1) pool.parallelFor(total, ctx, run);
}

/// matmulPrepared of three weights of type t and width k over the same m prepared activation
/// rows (kiln_matmul3): one dispatch (matmul3Prepared for one row, matmul3Interleaved for
/// prefill batches where the type has the interleaved kernels), else three matmuls. Every
/// output has matmulPrepared's bits.
pub fn matmul3Batched(parts: [3]Matmul) void {
    switch (parts[0].t) {
        inline else => |ct| {
            for (parts[1..]) |p| std.debug.assert(p.t == ct and p.k == parts[0].k and p.m == parts[0].m and p.xq == parts[0].xq);
            const m = parts[0].m;
            if (m == 1) {
                var ps: [3]Part = undefined;
                for (parts, &ps) |p, *q| q.* = .{ .w = p.w, .n_out = p.n_out, .y = p.y };
                return matmul3Typed(ct, parts[0].k, parts[0].xq, ps);
            }
            if (comptime repack.supports(ct)) {
                if (m > max_invariant_rows) return matmul3Interleaved(ct, parts);
            }
            for (parts) |p| matmulTyped(ct, p);
        },
    }
}

/// Whether type t's prefill may take the AMX kernel in this build (the run-time check is
/// amx.enabled(), decided once per process).
fn useAmx(comptime t: GgmlType) bool {
    return amx.wired(t);
}

/// Weight rows per interleaved task: whole repack.rows groups, or on AMX whole 32-row calls (a task of
/// 80 rows made calls of 32, 32 and 16, the last one paying a whole call's activation tile loads
/// for half the work).
fn interleavedTaskRows(on_amx: bool, rows: usize) usize {
    const unit: usize = if (on_amx) amx.max_rows else repack.rows;
    return (std.math.divCeil(usize, rows, unit) catch unreachable) * unit;
}


/// The fused gated FFN's prefill through repack.zig: gate and up of repack.rows rows × ≤ 64
/// activation rows into stack buffers, then the gated product (a partial last group through the
/// tiles).
fn gatedFfnInterleaved(comptime t: GgmlType, a: GatedFfn) void {
    const T = Traits(t);
    const Ctx = struct { a: GatedFfn, rows_per_task: usize, n_rb: usize, act_block: usize = act_rows_per_block };
    const run = struct {
        fn f(c: Ctx, task: usize) void {
            const row_bytes = c.a.k / T.block_size * T.type_size;
            const act_bytes = quant.actRowBytes(t, c.a.k);
            const r = tiledTaskRangeIn(task, c.n_rb, c.rows_per_task, c.a.n_ff, c.a.m, c.act_block);
            const mm = r.i_1 - r.i_0;
            const x = c.a.xq + r.i_0 * act_bytes;
            var j = r.j0;
            if (comptime useAmx(t)) {
                if (amx.enabled()) {
                    // 32 rows per call, both B tiles (the shape the kernel was measured at; 16
                    // rows would leave half of each sub-block's TDPBSSDs out for the same loads).
                    var g: [amx.max_acts * amx.max_rows]f32 = undefined;
                    var u: [amx.max_acts * amx.max_rows]f32 = undefined;
                    amx.prefetchWeights(c.a.w_gate[j * row_bytes .. @min(r.j1, j + amx.max_rows) * row_bytes]);
                    while (j < r.j1) : (j += amx.max_rows) {
                        const rr = @min(amx.max_rows, r.j1 - j);
                        // Each call prefetches the weights the next one packs: gate's the same
                        // rows of up, up's gate's next rows.
                        const next = @min(r.j1, j + amx.max_rows);
                        amx.matmulRows(t, c.a.w_gate + j * row_bytes, row_bytes, c.a.k, x, act_bytes, mm, rr, &g, amx.max_rows, c.a.w_up[j * row_bytes .. (j + rr) * row_bytes]);
                        amx.matmulRows(t, c.a.w_up + j * row_bytes, row_bytes, c.a.k, x, act_bytes, mm, rr, &u, amx.max_rows, c.a.w_gate[next * row_bytes .. @min(r.j1, next + amx.max_rows) * row_bytes]);
                        for (0..mm) |i| {
                            gatedProduct(c.a.activation, g[i * amx.max_rows ..].ptr, u[i * amx.max_rows ..].ptr, c.a.out + (r.i_0 + i) * c.a.out_stride + j, rr);
                        }
                    }
                    return;
                }
            }
            var g: [act_rows_per_block * repack.rows]f32 = undefined;
            var u: [act_rows_per_block * repack.rows]f32 = undefined;
            while (j < r.j1) : (j += repack.rows) {
                const rr = @min(repack.rows, r.j1 - j);
                if (rr == repack.rows) {
                    repack.rowsBlock(t, c.a.w_gate + j * row_bytes, row_bytes, c.a.k, x, act_bytes, mm, &g, repack.rows);
                    repack.rowsBlock(t, c.a.w_up + j * row_bytes, row_bytes, c.a.k, x, act_bytes, mm, &u, repack.rows);
                } else if (comptime @hasDecl(T, "vecDotTile")) {
                    var i: usize = 0;
                    while (i < mm) : (i += T.tile_c) {
                        const cc = @min(T.tile_c, mm - i);
                        var jt: usize = 0;
                        while (jt < rr) : (jt += T.tile_r) {
                            const rt = @min(T.tile_r, rr - jt);
                            tileCall(T, rt, cc, c.a.k, c.a.w_gate + (j + jt) * row_bytes, row_bytes, x + i * act_bytes, act_bytes, g[i * repack.rows + jt ..].ptr, repack.rows);
                            tileCall(T, rt, cc, c.a.k, c.a.w_up + (j + jt) * row_bytes, row_bytes, x + i * act_bytes, act_bytes, u[i * repack.rows + jt ..].ptr, repack.rows);
                        }
                    }
                } else unreachable;
                for (0..mm) |i| {
                    gatedProduct(c.a.activation, g[i * repack.rows ..].ptr, u[i * repack.rows ..].ptr, c.a.out + (r.i_0 + i) * c.a.out_stride + j, rr);
                }
            }
        }
    }.f;
    const on_amx = useAmx(t) and amx.enabled(); // decided on the calling thread
    const rows_per_task = interleavedTaskRows(on_amx, @max(1, rowsPerTask(t, a.n_ff, a.k, a.m) / 2));
    launchTiledIn(Ctx, a, a.n_ff, rows_per_task, if (on_amx) amx.max_acts else act_rows_per_block, run);
}

/// Runs `run` over the (weight row block × activation row block) tasks of a batched call,
/// activation-block major (see tiledTaskRange).
fn launchTiled(comptime Ctx: type, a: anytype, n_rows: usize, rows_per_task: usize, comptime run: fn (Ctx, usize) void) void {
    launchTiledIn(Ctx, a, n_rows, rows_per_task, act_rows_per_block, run);
}

/// launchTiled with activation blocks of `act_block` rows (a Ctx with an act_block field gets it;
/// the AMX kernel takes amx.max_acts rows a call, so each packing of its B tiles serves more rows).
fn launchTiledIn(comptime Ctx: type, a: anytype, n_rows: usize, rows_per_task: usize, act_block: usize, comptime run: fn (Ctx, usize) void) void {
    const n_rb = std.math.divCeil(usize, n_rows, rows_per_task) catch unreachable;
    const n_ib = std.math.divCeil(usize, a.m, act_block) catch unreachable;
    var ctx = Ctx{ .a = a, .rows_per_task = rows_per_task, .n_rb = n_rb };
    if (comptime @hasField(Ctx, "act_block")) {
        ctx.act_block = act_block;
    } else std.debug.assert(act_block == act_rows_per_block);
    const n_tasks = n_rb * n_ib;
    if (n_tasks == 1) run(ctx, 0) else pool.parallelFor(n_tasks, ctx, run);
}

/// out[q] = act(g[q])·u[q] for q < n: the gated FFN's product.
/// Through norm.zig's vector rows (bitwise its scalar silu/geluTanh): a prefill call's gated
/// product is m·n_ff activations, and one lane at a time cost as much as the two AMX matmuls.
pub inline fn gatedProduct(act: Activation, g: [*]const f32, u: [*]const f32, out: [*]f32, n: usize) void {
    switch (act) {
        .silu => norm.siluMulRow(g, u, out, n),
        .gelu_tanh => norm.geluTanhMulRow(g, u, out, n),
    }
}

/// The weight rows [j0, j1) and activation rows [i_0, i_1) of one tiled task: tasks run
/// activation-block major, so the threads work on one activation block at a time.
fn tiledTaskRange(task: usize, n_rb: usize, rows_per_task: usize, n_out: usize, m: usize) TaskRange {
    return tiledTaskRangeIn(task, n_rb, rows_per_task, n_out, m, act_rows_per_block);
}
const TaskRange = struct { j0: usize, j1: usize, i_0: usize, i_1: usize };

/// tiledTaskRange with activation blocks of `act_block` rows.
fn tiledTaskRangeIn(task: usize, n_rb: usize, rows_per_task: usize, n_out: usize, m: usize, act_block: usize) TaskRange {
    const j0 = (task % n_rb) * rows_per_task;
    const i_0 = (task / n_rb) * act_block;
    return .{ .j0 = j0, .j1 = @min(n_out, j0 + rows_per_task), .i_0 = i_0, .i_1 = @min(m, i_0 + act_block) };
}

/// T.vecDotTile with the tile shape (rr ≤ tile_r, cc ≤ tile_c) made comptime.
inline fn tileCall(comptime T: type, rr: usize, cc: usize, k: usize, w: [*]const u8, row_bytes: usize, x: [*]const u8, act_bytes: usize, y: [*]f32, y_stride: usize) void {
    switch (rr) {
        inline 1...T.tile_r => |r| switch (cc) {
            inline 1...T.tile_c => |cn| T.vecDotTile(r, cn, k, w, row_bytes, x, act_bytes, y, y_stride),
            else => unreachable,
        },
        else => unreachable,
    }
}

/// Weight rows per multi-row kernel call: the rows share activation loads and scales.
const row_group = 4;
/// Rows of each matrix the fused gated FFN's decode reads in one run before switching to the
/// other (a multiple of row_group). Alternating 4-row groups of gate and up read Q8_0 1.28× and
/// Q4_K 1.10× slower than two separate matmuls; runs of 256 rows read as fast as they do
/// (5632×2048 gate and up streamed from DRAM, one activation row, 2 threads, chunk sizes
/// interleaved call by call in one process, p10 of 400 calls each, AMD EPYC Zen 4: Q8_0 906 →
/// 716 µs against 707 unfused, Q4_K 453 → 420 against 411, Q4_0 unchanged at 383–387).
const gated_chunk = 256;

/// y[j] = row j · x for j in [j0, j1): groups of row_group rows (or the type's decode_row_group)
/// through T.vecDotRows where the type has one (shared activation loads, prefetch of the next
/// group), and the rows left over through it too, so every row gets the tile kernels' arithmetic.
/// BF16 where AVX512-BF16 is enabled: bf16.decodeRows, the rows in order on vdpbf16ps.
inline fn dotRows(comptime T: type, k: usize, w: [*]const u8, row_bytes: usize, x: [*]const u8, y: [*]f32, j0: usize, j1: usize) void {
    @setEvalBranchQuota(100_000);
    // BF16 on vdpbf16ps: the rows one after another against the prepared row's bf16 half.
    if (comptime T == Traits(.bf16) and bf16_dot.wired) {
        if (bf16_dot.enabled()) return bf16_dot.decode(k, w + j0 * row_bytes, row_bytes, x + 4 * k, y + j0, j1 - j0);
    }
    var j = j0;
    if (comptime @hasDecl(T, "vecDotRows")) {
        const g = comptime if (@hasDecl(T, "decode_row_group")) T.decode_row_group else row_group;
        while (j + g <= j1) : (j += g) {
            T.vecDotRows(g, k, w + j * row_bytes, row_bytes, x, y[j..][0..g]);
        }
        switch (j1 - j) {
            0 => {},
            inline 1...g - 1 => |r| T.vecDotRows(r, k, w + j * row_bytes, row_bytes, x, y[j..][0..r]),
            else => unreachable,
        }
        return;
    }
    while (j < j1) : (j += 1) y[j] = T.vecDot(k, w + j * row_bytes, x);
}

/// Task boundaries sit on multiples of row_group (the per-row arithmetic no longer depends on
/// the grouping, but whole groups keep the prefetch stream going).
fn roundUpGroup(rows: usize) usize {
    return (std.math.divCeil(usize, rows, row_group) catch unreachable) * row_group;
}

/// Row ranges of a decode call (one activation row), largest first ("guided" scheduling): task
/// i takes 1/(2·threads) of the rows not yet handed out, rounded up to a row group and at
/// least min_rows. The first tasks are long (a thread streams one contiguous range, its
/// prefetchers stay ahead), the last ones short, so threads that run at different speeds end
/// within a short task of each other. With launchGuided's smallest range, 1/(16·threads) of the
/// matrix, a call has about 6·threads ranges (2·threads·ln 8 shrinking ones, then about 2·threads
/// of the smallest size), so the table has room for 8 per thread at the pool's largest count; the
/// last-range fallback below only guards the array.
const max_guided_tasks = 8 * pool.max_threads;
const GuidedSplit = struct {
    start: [max_guided_tasks + 1]u32 = undefined,
    n_tasks: usize = 0,

    fn range(s: *const GuidedSplit, task: usize) struct { j0: usize, j1: usize } {
        return .{ .j0 = s.start[task], .j1 = s.start[task + 1] };
    }
};

/// launchGuided's smallest range: 1/(16·threads) of the rows, at least 8.
fn guidedMinRows(n_rows: usize) usize {
    return @max(8, n_rows / (16 * pool.threadCount()));
}

fn guidedSplit(n_rows: usize, min_rows: usize) GuidedSplit {
    var s = GuidedSplit{};
    const share = 2 * pool.threadCount();
    s.start[0] = 0;
    var j: usize = 0;
    while (j < n_rows) {
        const size = if (s.n_tasks + 1 == max_guided_tasks) n_rows - j else roundUpGroup(@max(min_rows, std.math.divCeil(usize, n_rows - j, share) catch unreachable));
        j = @min(n_rows, j + size);
        s.n_tasks += 1;
        s.start[s.n_tasks] = @intCast(j);
    }
    return s;
}

/// Rows per task: all of them below min_parallel_bytes (one thread); for decode (m == 1) a few
/// chunks per thread (the guided ranges replace them where the call goes parallel); batches use
/// small row blocks that stay cache-resident across the batch.
fn rowsPerTask(t: GgmlType, n_out: usize, k: usize, m: usize) usize {
    const total_bytes = quant.rowBytes(t, k) * n_out;
    if (total_bytes * m < min_parallel_bytes) return n_out;
    if (m > 1) {
        const by_bytes = std.math.divCeil(usize, task_bytes_batched, quant.rowBytes(t, k)) catch unreachable;
        const by_tasks = std.math.divCeil(usize, n_out, pool.threadCount() * 4) catch unreachable;
        const rows = @max(min_rows_batched, @min(by_bytes, by_tasks));
        return (std.math.divCeil(usize, rows, min_rows_batched) catch unreachable) * min_rows_batched;
    }
    const tasks = pool.threadCount() * 4;
    return roundUpGroup(@max(8, std.math.divCeil(usize, n_out, tasks) catch unreachable));
}

pub const Activation = enum(u32) { silu = 0, gelu_tanh = 1 };

pub const GatedFfn = struct {
    t: GgmlType, // gate and up share a type (and so an activation format)
    w_gate: [*]const u8,
    w_up: [*]const u8,
    n_ff: usize,
    k: usize,
    xq: [*]const u8,
    m: usize,
    out: [*]f32, // out[i * out_stride + j] = act(gate) * up
    out_stride: usize,
    activation: Activation,
};

/// Fused gate/up projections with the gated activation applied before anything is written.
pub fn gatedFfnPrepared(a: GatedFfn) void {
    switch (a.t) {
        inline else => |ct| gatedFfnTyped(ct, a),
    }
}

/// Gated FFN rows [j0, j1) of activation row i: up to gated_chunk rows of gate, the same rows of
/// up, then the gated product.
fn gatedRows(comptime t: GgmlType, a: GatedFfn, i: usize, j0: usize, j1: usize) void {
    const T = Traits(t);
    const row_bytes = a.k / T.block_size * T.type_size;
    const x = a.xq + i * quant.actRowBytes(t, a.k);
    const out = a.out + i * a.out_stride;
    var j = j0;
    while (j < j1) {
        const cnt = @min(gated_chunk, j1 - j);
        var g: [gated_chunk]f32 = undefined;
        var u: [gated_chunk]f32 = undefined;
        dotRows(T, a.k, a.w_gate + j * row_bytes, row_bytes, x, &g, 0, cnt);
        dotRows(T, a.k, a.w_up + j * row_bytes, row_bytes, x, &u, 0, cnt);
        gatedProduct(a.activation, &g, &u, out + j, cnt);
        j += cnt;
    }
}

fn gatedFfnTyped(comptime t: GgmlType, a: GatedFfn) void {
    const T = Traits(t);
    if (a.m > max_invariant_rows and repack.supports(t)) return gatedFfnInterleaved(t, a);
    if (comptime t == .bf16 and bf16_dot.wired) {
        if (a.m > max_invariant_rows and bf16_dot.enabled()) {
            _ = amx.bf16Enabled();
            return gatedFfnTiled(t, .prefill_bf16_dot, a);
        }
    }
    if (comptime @hasDecl(T, "prefillTile")) {
        if (a.m > max_invariant_rows) return gatedFfnTiled(t, .prefill, a);
    }
    if (comptime @hasDecl(T, "vecDotTile")) {
        if (a.m > 1) return gatedFfnTiled(t, .invariant, a);
    }
    const Ctx = struct { a: GatedFfn, rows_per_task: usize };
    const run = struct {
        fn f(c: Ctx, task: usize) void {
            const j0 = task * c.rows_per_task;
            const j1 = @min(c.a.n_ff, j0 + c.rows_per_task);
            for (0..c.a.m) |i| gatedRows(t, c.a, i, j0, j1);
        }
    }.f;
    // Two weight matrices are read per row, so half the rows per task keep the same footprint.
    const rows_per_task = roundUpGroup(@max(1, rowsPerTask(t, a.n_ff, a.k, a.m) / 2));
    const ctx = Ctx{ .a = a, .rows_per_task = rows_per_task };
    const n_tasks = std.math.divCeil(usize, a.n_ff, rows_per_task) catch unreachable;
    if (a.m == 1 and n_tasks > 1) return launchGuided(a.n_ff, ctx, struct {
        fn f(c: Ctx, j0: usize, j1: usize) void {
            gatedRows(t, c.a, 0, j0, j1);
        }
    }.f);
    if (n_tasks == 1) run(ctx, 0) else pool.parallelFor(n_tasks, ctx, run);
}

/// gatedFfnTyped for m > 1 through the tile kernel (the same task layout as matmulTiled). Each
/// (row, activation) pair is computed exactly as by matmulTiled, so the fused result matches
/// the unfused composition bit for bit.
fn gatedFfnTiled(comptime t: GgmlType, comptime kind: TileKind, a: GatedFfn) void {
    const T = Tiles(Traits(t), kind);
    const R = T.tile_r;
    const C = T.tile_c;
    const Ctx = struct { a: GatedFfn, rows_per_task: usize, n_rb: usize };
    const run = struct {
        fn f(c: Ctx, task: usize) void {
            const row_bytes = c.a.k / T.block_size * T.type_size;
            const act_bytes = quant.actRowBytes(t, c.a.k);
            const r = tiledTaskRange(task, c.n_rb, c.rows_per_task, c.a.n_ff, c.a.m);
            const j0 = r.j0;
            const j1 = r.j1;
            const i_0 = r.i_0;
            const i_1 = r.i_1;
            if (kind == .prefill_bf16_dot) {
                const x = c.a.xq + i_0 * act_bytes;
                var j = j0;
                if (amx.bf16Enabled()) {
                    var g: [act_rows_per_block * amx.max_rows]f32 = undefined;
                    var u: [act_rows_per_block * amx.max_rows]f32 = undefined;
                    while (j < j1) : (j += amx.max_rows) {
                        const rr = @min(amx.max_rows, j1 - j);
                        amx.bf16Rows(c.a.w_gate + j * row_bytes, row_bytes, c.a.k, x, act_bytes, i_1 - i_0, rr, &g, amx.max_rows);
                        amx.bf16Rows(c.a.w_up + j * row_bytes, row_bytes, c.a.k, x, act_bytes, i_1 - i_0, rr, &u, amx.max_rows);
                        for (0..i_1 - i_0) |i| {
                            gatedProduct(c.a.activation, g[i * amx.max_rows ..].ptr, u[i * amx.max_rows ..].ptr, c.a.out + (i_0 + i) * c.a.out_stride + j, rr);
                        }
                    }
                    return;
                }
                var g: [act_rows_per_block * R]f32 = undefined;
                var u: [act_rows_per_block * R]f32 = undefined;
                while (j < j1) : (j += R) {
                    const rr = @min(R, j1 - j);
                    bf16Rows(rr, i_1 - i_0, c.a.k, c.a.w_gate + j * row_bytes, row_bytes, x, act_bytes, &g, R);
                    bf16Rows(rr, i_1 - i_0, c.a.k, c.a.w_up + j * row_bytes, row_bytes, x, act_bytes, &u, R);
                    for (0..i_1 - i_0) |i| {
                        gatedProduct(c.a.activation, g[i * R ..].ptr, u[i * R ..].ptr, c.a.out + (i_0 + i) * c.a.out_stride + j, rr);
                    }
                }
                return;
            }
            // Sub-blocks of both matrices' rows stay in L1 while the activation tiles pass.
            var jb = j0;
            while (jb < j1) : (jb += min_rows_batched / 2) {
                const jb1 = @min(j1, jb + min_rows_batched / 2);
                var i = i_0;
                while (i < i_1) : (i += C) {
                    const cc = @min(C, i_1 - i);
                    var j = jb;
                    while (j < jb1) : (j += R) {
                        const rr = @min(R, jb1 - j);
                        var g: [C * R]f32 = undefined;
                        var u: [C * R]f32 = undefined;
                        const x = c.a.xq + i * act_bytes;
                        tileCall(T, rr, cc, c.a.k, c.a.w_gate + j * row_bytes, row_bytes, x, act_bytes, &g, R);
                        tileCall(T, rr, cc, c.a.k, c.a.w_up + j * row_bytes, row_bytes, x, act_bytes, &u, R);
                        for (0..cc) |ci| {
                            gatedProduct(c.a.activation, g[ci * R ..].ptr, u[ci * R ..].ptr, c.a.out + (i + ci) * c.a.out_stride + j, rr);
                        }
                    }
                }
            }
        }
    }.f;
    const rows_per_task = roundUpGroup(@max(1, rowsPerTask(t, a.n_ff, a.k, a.m) / 2));
    launchTiled(Ctx, a, a.n_ff, rows_per_task, run);
}

/// Scalar reference: dequantize each weight row with the reference dequantizer and dot in f64
/// against the raw f32 activations. Tests compare the fused kernels against it by NMSE.
pub fn matmulRef(t: GgmlType, w: [*]const u8, n_out: usize, k: usize, x: [*]const f32, m: usize, y: [*]f32, row: []f32) void {
    const rb = quant.rowBytes(t, k);
    for (0..n_out) |j| {
        switch (t) {
            inline else => |ct| Traits(ct).dequantizeRowRef(w + j * rb, row.ptr, k),
        }
        for (0..m) |i| {
            var s: f64 = 0;
            for (0..k) |kk| s += @as(f64, row[kk]) * @as(f64, x[i * k + kk]);
            y[i * n_out + j] = @floatCast(s);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests: every type, decode and batched shapes (odd row counts, odd block counts), 1–3 threads,
// against the f64 reference within a per-type NMSE budget; guard bytes after every output.

const testing = std.testing;

/// NMSE budget per type against the f64 reference on Gaussian data (the activation's 8-bit
/// quantization dominates for the integer paths; measured values are well below these).
fn nmseBudget(t: GgmlType) f64 {
    return switch (t) {
        .f32 => 1e-10,
        .f16 => 1e-8,
        // Prefill batches round the activations to bf16 where vdpbf16ps is in use (bf16.zig).
        .bf16 => if (bf16_dot.enabled()) bf16_dot.activation_rounding_nmse else 1e-8,
        else => 2e-4,
    };
}

/// A test problem: random gate and up weights (n_out rows of k; the matmul and tile tests use
/// the gate) and m_max random activation rows, prepared for type t (rb, ab: weight and
/// activation row bytes).
const TestProblem = struct {
    w: []u8,
    wu: []u8,
    xq: []u8,
    rb: usize,
    ab: usize,

    fn init(a: std.mem.Allocator, t: GgmlType, rng: std.Random, n_out: usize, k: usize, m_max: usize) !TestProblem {
        const rb = quant.rowBytes(t, k);
        const ab = quant.actRowBytes(t, k);
        const w = try a.alloc(u8, rb * n_out);
        errdefer a.free(w);
        const wu = try a.alloc(u8, rb * n_out);
        errdefer a.free(wu);
        const tmp = try a.alloc(f32, @max(k, m_max * k));
        defer a.free(tmp);
        randomWeights(t, rng, n_out, k, w, tmp[0..k]);
        randomWeights(t, rng, n_out, k, wu, tmp[0..k]);
        const x = tmp[0 .. m_max * k];
        for (x) |*v| v.* = rng.floatNorm(f32);
        const xq = try a.alloc(u8, ab * m_max);
        quant.quantizeActivations(t, x.ptr, k, m_max, k, xq.ptr);
        return .{ .w = w, .wu = wu, .xq = xq, .rb = rb, .ab = ab };
    }

    fn deinit(f: TestProblem, a: std.mem.Allocator) void {
        a.free(f.w);
        a.free(f.wu);
        a.free(f.xq);
    }
};

fn randomWeights(t: GgmlType, rng: std.Random, rows: usize, k: usize, buf: []u8, tmp: []f32) void {
    const rb = quant.rowBytes(t, k);
    for (0..rows) |r| {
        for (tmp[0..k]) |*v| v.* = rng.floatNorm(f32);
        if (!quant.quantizeRow(t, tmp.ptr, buf[r * rb ..].ptr, k)) {
            // Types kiln does not quantize to: random bytes with sane f16 scales.
            rng.bytes(buf[r * rb .. (r + 1) * rb]);
            fixScales(t, buf[r * rb .. (r + 1) * rb]);
        }
    }
}

/// Makes random blocks of the types kiln cannot quantize to look like real weights: small
/// finite f16 scales and offsets that centre the values on zero (an all-positive row would make
/// the dot products cancel and the NMSE meaningless).
fn fixScales(t: GgmlType, row: []u8) void {
    const ts = quant.typeSize(t);
    const f16le = struct {
        fn put(b: []u8, off: usize, v: f16) void {
            std.mem.writeInt(u16, b[off..][0..2], @bitCast(v), .little);
        }
    }.put;
    var off: usize = 0;
    while (off + ts <= row.len) : (off += ts) {
        switch (t) {
            .q4_1 => {
                f16le(row, off, 0.01);
                f16le(row, off + 2, -0.075);
            },
            .q5_1 => {
                f16le(row, off, 0.01);
                f16le(row, off + 2, -0.155);
            },
            .q5_0 => f16le(row, off, 0.01),
            .q5_k => {
                // All 12 scale bytes equal: sub-block scale == sub-block min, so d·sc·q − dmin·sc
                // is centred when dmin = 15.5·d (5-bit q).
                f16le(row, off, 0.001);
                f16le(row, off + 2, 0.0155);
                @memset(row[off + 4 .. off + 16], 0x11);
            },
            else => {},
        }
    }
}

/// Squared error and squared reference, summed: NMSE is taken over every output of a type,
/// since a single dot product of a few blocks can cancel to near zero.
const ErrorSums = struct {
    num: f64 = 0,
    den: f64 = 0,
    fn add(e: *ErrorSums, got: []const f32, want: []const f32) void {
        for (got, want) |g, w| {
            e.num += (@as(f64, g) - w) * (@as(f64, g) - w);
            e.den += @as(f64, w) * w;
        }
    }
    fn nmse(e: ErrorSums) f64 {
        return e.num / @max(e.den, 1e-30);
    }
};

const guard_byte: u8 = 0xA5;

fn checkMatmul(t: GgmlType, n_out: usize, k: usize, m: usize, rng: std.Random, err: *ErrorSums) !void {
    const a = testing.allocator;
    const rb = quant.rowBytes(t, k);
    const w = try a.alloc(u8, rb * n_out);
    defer a.free(w);
    const tmp = try a.alloc(f32, k);
    defer a.free(tmp);
    randomWeights(t, rng, n_out, k, w, tmp);
    const x = try a.alloc(f32, m * k);
    defer a.free(x);
    for (x) |*v| v.* = rng.floatNorm(f32);
    const xq = try a.alloc(u8, quant.actRowBytes(t, k) * m);
    defer a.free(xq);
    quant.quantizeActivations(t, x.ptr, k, m, k, xq.ptr);

    const y = try a.alloc(f32, m * n_out + 16);
    defer a.free(y);
    @memset(std.mem.sliceAsBytes(y), guard_byte);
    matmulPrepared(.{ .t = t, .w = w.ptr, .n_out = n_out, .k = k, .xq = xq.ptr, .m = m, .y = y.ptr, .y_stride = n_out });
    for (std.mem.sliceAsBytes(y[m * n_out ..])) |g| try testing.expectEqual(guard_byte, g);

    const want = try a.alloc(f32, m * n_out);
    defer a.free(want);
    matmulRef(t, w.ptr, n_out, k, x.ptr, m, want.ptr, tmp);
    err.add(y[0 .. m * n_out], want);

    // The fused FFN against the unfused composition from the same prepared activations.
    const up = try a.alloc(u8, rb * n_out);
    defer a.free(up);
    randomWeights(t, rng, n_out, k, up, tmp);
    const y_up = try a.alloc(f32, m * n_out);
    defer a.free(y_up);
    matmulPrepared(.{ .t = t, .w = up.ptr, .n_out = n_out, .k = k, .xq = xq.ptr, .m = m, .y = y_up.ptr, .y_stride = n_out });
    for ([_]Activation{ .silu, .gelu_tanh }) |act| {
        @memset(std.mem.sliceAsBytes(want), 0);
        const fused = try a.alloc(f32, m * n_out + 16);
        defer a.free(fused);
        @memset(std.mem.sliceAsBytes(fused), guard_byte);
        gatedFfnPrepared(.{ .t = t, .w_gate = w.ptr, .w_up = up.ptr, .n_ff = n_out, .k = k, .xq = xq.ptr, .m = m, .out = fused.ptr, .out_stride = n_out, .activation = act });
        for (std.mem.sliceAsBytes(fused[m * n_out ..])) |g| try testing.expectEqual(guard_byte, g);
        for (0..m * n_out) |i| {
            const g = y[i];
            const expect = (if (act == .silu) norm.silu(g) else norm.geluTanh(g)) * y_up[i];
            try testing.expectApproxEqAbs(expect, fused[i], 1e-5 * (1 + @abs(expect)));
        }
    }
}

test "fused matmul matches the f64 reference for every type, decode and batched" {
    var prng = std.Random.DefaultPrng.init(42);
    const rng = prng.random();
    for ([_]usize{ 1, 2, 3 }) |threads| {
        _ = pool.setThreads(threads);
        inline for (std.meta.fields(GgmlType)) |f| {
            const t: GgmlType = @enumFromInt(f.value);
            const bs = quant.blockSize(t);
            // Float types also get lengths that are not multiples of any vector width.
            const ks = if (bs == 1) [_]usize{ 1, 17, 100, 1000 } else [_]usize{ bs, bs * 3, bs * 7, bs * 11 };
            var err: ErrorSums = .{};
            for (ks) |k| {
                for ([_]usize{ 1, 5, 37 }) |n_out| {
                    for ([_]usize{ 1, 3, 20 }) |m| try checkMatmul(t, n_out, k, m, rng, &err);
                }
            }
            // A shape big enough to take the threaded paths, decode and batched.
            try checkMatmul(t, 300, bs * @max(1, 1024 / bs), 1, rng, &err);
            try checkMatmul(t, 300, bs * @max(1, 1024 / bs), 17, rng, &err);
            if (err.nmse() > nmseBudget(t)) {
                std.debug.print("matmul {s}: nmse {e} > budget {e}\n", .{ @tagName(t), err.nmse(), nmseBudget(t) });
                return error.TestExpectedApproxEq;
            }
        }
    }
    _ = pool.setThreads(2);
}

/// Each type's batched tile kernel against the scalar reference, and bit for bit against the
/// decode kernel (vecDotRows), for every tile shape up to tile_r × tile_c and block counts that
/// leave a remainder after the kernels' block groups.
fn checkTileKernel(comptime t: GgmlType, rng: std.Random) !void {
    const T = Traits(t);
    const a = testing.allocator;
    for ([_]usize{ 1, 2, 5, 7 }) |blocks| {
        const k = T.block_size * blocks;
        const p = try TestProblem.init(a, t, rng, T.tile_r, k, T.tile_c);
        defer p.deinit(a);
        const rb = p.rb;
        const ab = p.ab;
        const w = p.w;
        const xq = p.xq;
        var out: [64]f32 = undefined;
        inline for (1..T.tile_r + 1) |r| {
            inline for (1..T.tile_c + 1) |c| {
                T.vecDotTile(r, c, k, w.ptr, rb, xq.ptr, ab, &out, T.tile_r);
                for (0..c) |ci| {
                    var rows: [r]f32 = undefined;
                    T.vecDotRows(r, k, w.ptr, rb, xq.ptr + ci * ab, &rows);
                    for (0..r) |ri| {
                        const want = T.vecDotRef(k, w.ptr + ri * rb, xq.ptr + ci * ab);
                        const got = out[ci * T.tile_r + ri];
                        try testing.expectApproxEqAbs(want, got, 1e-4 * (1 + @abs(want)));
                        try testing.expectEqual(@as(u32, @bitCast(rows[ri])), @as(u32, @bitCast(got)));
                    }
                }
            }
        }
    }
}

test "float prefill tiles (f32, f16, bf16) match the f64 reference for every tile shape, lengths off every vector width" {
    const a = testing.allocator;
    var prng = std.Random.DefaultPrng.init(6);
    const rng = prng.random();
    inline for (.{ GgmlType.f32, GgmlType.f16, GgmlType.bf16 }) |t| {
        const T = Traits(t);
        for ([_]usize{ 1, 15, 16, 33, 200 }) |k| {
            // Float weights' prepared activations are the f32 rows themselves (k·4 bytes each).
            const p = try TestProblem.init(a, t, rng, T.prefill_tile_r, k, T.prefill_tile_c);
            defer p.deinit(a);
            const rb = p.rb;
            const w = p.w;
            const xb = p.xq.ptr;
            var out: [64]f32 = undefined;
            inline for (1..T.prefill_tile_r + 1) |r| {
                inline for (1..T.prefill_tile_c + 1) |c| {
                    @memset(&out, sentinel_f32);
                    T.prefillTile(r, c, k, w.ptr, rb, xb, p.ab, &out, T.prefill_tile_r);
                    for (0..T.prefill_tile_c) |ci| for (0..T.prefill_tile_r) |ri| {
                        if (ci < c and ri < r) {
                            const want = T.vecDotRef(k, w.ptr + ri * rb, xb + ci * p.ab);
                            try testing.expectApproxEqAbs(want, out[ci * T.prefill_tile_r + ri], 1e-5 * (1 + @abs(want)));
                        } else {
                            // Outside the tile nothing is written.
                            try testing.expectEqual(sentinel_f32, out[ci * T.prefill_tile_r + ri]);
                        }
                    };
                }
            }
        }
    }
}

test "batched tile kernels match the scalar reference and the decode kernel bit for bit, every tile shape" {
    var prng = std.Random.DefaultPrng.init(5);
    inline for (std.meta.fields(GgmlType)) |f| {
        const t: GgmlType = @enumFromInt(f.value);
        if (comptime @hasDecl(Traits(t), "vecDotTile")) try checkTileKernel(t, prng.random());
    }
}

test "guidedSplit: ranges cover [0, n) once, largest first, whole row groups, never the last-range fallback" {
    defer _ = pool.setThreads(2);
    for ([_]usize{ 1, 2, 3, 8, 64 }) |threads| {
        _ = pool.setThreads(threads);
        for ([_]usize{ 1, 7, 8, 37, 256, 2048, 2053, 5632, 32000, 1 << 20 }) |n| {
            for ([_]usize{ guidedMinRows(n), 8, 64 }) |min_rows| {
                const s = guidedSplit(n, min_rows);
                // Fewer ranges than the table holds: the fallback (one range taking the rest,
                // 37% of the matrix at 32 threads when the table held 64) is never taken.
                try testing.expect(s.n_tasks >= 1 and s.n_tasks < max_guided_tasks);
                try testing.expectEqual(@as(u32, 0), s.start[0]);
                try testing.expectEqual(@as(u32, @intCast(n)), s.start[s.n_tasks]);
                var prev: usize = std.math.maxInt(usize);
                for (0..s.n_tasks) |i| {
                    const r = s.range(i);
                    try testing.expect(r.j1 > r.j0);
                    // No range longer than the one before; all but the last (the remainder) whole row groups.
                    try testing.expect(r.j1 - r.j0 <= prev);
                    prev = r.j1 - r.j0;
                    if (i + 1 < s.n_tasks) try testing.expectEqual(@as(usize, 0), (r.j1 - r.j0) % row_group);
                }
                // The first task takes about 1/(2·threads) of the rows (so tasks start long).
                if (n >= 64 * threads) try testing.expect(s.range(0).j1 - s.range(0).j0 >= n / (2 * threads));
            }
        }
    }
}

test "decode on 1-3 threads (guided ranges): matmul and fused FFN rows have the bits of one serial pass, every type" {
    const a = testing.allocator;
    var prng = std.Random.DefaultPrng.init(93);
    const rng = prng.random();
    defer _ = pool.setThreads(2);
    inline for (std.meta.fields(GgmlType)) |f| {
        const t: GgmlType = @enumFromInt(f.value);
        const T = Traits(t);
        const bs = quant.blockSize(t);
        const k = bs * @max(1, 1024 / bs);
        // Above min_parallel_bytes (threaded), row counts off every group and task boundary.
        for ([_]usize{ 301, 2053 }) |n| {
            const p = try TestProblem.init(a, t, rng, n, k, 1);
            defer p.deinit(a);
            const want = try a.alloc(f32, n);
            defer a.free(want);
            const want_ffn = try a.alloc(f32, n);
            defer a.free(want_ffn);
            const got = try a.alloc(f32, n + 1);
            defer a.free(got);
            dotRows(T, k, p.w.ptr, p.rb, p.xq.ptr, want.ptr, 0, n);
            const ffn: GatedFfn = .{ .t = t, .w_gate = p.w.ptr, .w_up = p.wu.ptr, .n_ff = n, .k = k, .xq = p.xq.ptr, .m = 1, .out = want_ffn.ptr, .out_stride = n, .activation = .silu };
            gatedRows(t, ffn, 0, 0, n);
            for ([_]usize{ 1, 2, 3 }) |threads| {
                _ = pool.setThreads(threads);
                got[n] = sentinel_f32;
                matmulPrepared(.{ .t = t, .w = p.w.ptr, .n_out = n, .k = k, .xq = p.xq.ptr, .m = 1, .y = got.ptr, .y_stride = n });
                try testing.expectEqualSlices(u32, @ptrCast(want), @ptrCast(got[0..n]));
                try testing.expectEqual(sentinel_f32, got[n]);
                var g = ffn;
                g.out = got.ptr;
                gatedFfnPrepared(g);
                try testing.expectEqualSlices(u32, @ptrCast(want_ffn), @ptrCast(got[0..n]));
                try testing.expectEqual(sentinel_f32, got[n]);
            }
        }
    }
}

test "matmul3: three matrices in one dispatch give each row matmulPrepared's bits, every type, 1-3 threads" {
    const a = testing.allocator;
    var prng = std.Random.DefaultPrng.init(92);
    const rng = prng.random();
    defer _ = pool.setThreads(2);
    inline for (std.meta.fields(GgmlType)) |f| {
        const t: GgmlType = @enumFromInt(f.value);
        const bs = quant.blockSize(t);
        // Widths below and above min_parallel_bytes; row counts that split parts mid-group.
        for ([_][4]usize{ .{ 576, 576, 192, 192 }, .{ 2048, 2048, 256, 256 }, .{ 100, 37, 5, 1 }, .{ 256, 3, 130, 64 } }) |shape| {
            const k = bs * @max(1, shape[0] / bs);
            const ns = [3]usize{ shape[1], shape[2], shape[3] };
            const p = try TestProblem.init(a, t, rng, ns[0] + ns[1] + ns[2], k, 1);
            defer p.deinit(a);
            const want = try a.alloc(f32, ns[0] + ns[1] + ns[2]);
            defer a.free(want);
            const got = try a.alloc(f32, ns[0] + ns[1] + ns[2] + 3);
            defer a.free(got);
            for ([_]usize{ 1, 2, 3 }) |threads| {
                _ = pool.setThreads(threads);
                // The three matrices are consecutive row ranges of p.w, each with its own output
                // range (a guard float after each).
                var parts: [3]Part = undefined;
                var row: usize = 0;
                var out: usize = 0;
                for (0..3) |i| {
                    matmulPrepared(.{ .t = t, .w = p.w.ptr + row * p.rb, .n_out = ns[i], .k = k, .xq = p.xq.ptr, .m = 1, .y = want.ptr + row, .y_stride = ns[i] });
                    parts[i] = .{ .w = p.w.ptr + row * p.rb, .n_out = ns[i], .y = got.ptr + out };
                    got[out + ns[i]] = sentinel_f32;
                    row += ns[i];
                    out += ns[i] + 1;
                }
                matmul3Prepared(t, k, p.xq.ptr, parts);
                row = 0;
                out = 0;
                for (0..3) |i| {
                    try testing.expectEqualSlices(u32, @ptrCast(want[row..][0..ns[i]]), @ptrCast(got[out..][0..ns[i]]));
                    try testing.expectEqual(sentinel_f32, got[out + ns[i]]);
                    row += ns[i];
                    out += ns[i] + 1;
                }
            }
        }
    }
}

// The prefetch policy (cpu.PrefetchPolicy) picks cache hints only: every kernel that prefetches
// (decode rows, the invariant tiles, the fused FFN) gives the same bits under each, including
// groups past l1_prefetch_max_bytes (the L1 kernels' switch to L2) and rows of 8 KB and more.
test "prefetch policies: decode and invariant batches give the same bits under by_level, non_temporal and l2" {
    const a = testing.allocator;
    var prng = std.Random.DefaultPrng.init(91);
    const rng = prng.random();
    const legacy = @import("quant_legacy.zig");
    defer legacy.test_prefetch_policy = null;
    inline for (std.meta.fields(GgmlType)) |f| {
        const t: GgmlType = @enumFromInt(f.value);
        const bs = quant.blockSize(t);
        // 4-row groups under 8 KB, between 8 and 16 KB, and over l1_prefetch_max_bytes.
        for ([_]usize{ 1024, 4096, 8192 }) |k0| {
            const k = bs * @max(1, k0 / bs);
            const n_out = 37;
            const m_max = 3;
            const p = try TestProblem.init(a, t, rng, n_out, k, m_max);
            defer p.deinit(a);
            var got: [3][2][m_max * n_out]f32 = undefined;
            for ([_]@import("cpu.zig").PrefetchPolicy{ .by_level, .non_temporal, .l2 }, 0..) |policy, pi| {
                legacy.test_prefetch_policy = policy;
                matmulPrepared(.{ .t = t, .w = p.w.ptr, .n_out = n_out, .k = k, .xq = p.xq.ptr, .m = 1, .y = &got[pi][0], .y_stride = n_out });
                matmulPrepared(.{ .t = t, .w = p.w.ptr, .n_out = n_out, .k = k, .xq = p.xq.ptr, .m = m_max, .y = &got[pi][0], .y_stride = n_out });
                gatedFfnPrepared(.{ .t = t, .w_gate = p.w.ptr, .w_up = p.wu.ptr, .n_ff = n_out, .k = k, .xq = p.xq.ptr, .m = 1, .out = &got[pi][1], .out_stride = n_out, .activation = .silu });
            }
            try testing.expectEqualSlices(u32, @ptrCast(&got[0]), @ptrCast(&got[1]));
            try testing.expectEqualSlices(u32, @ptrCast(&got[0]), @ptrCast(&got[2]));
            // And the rows are right, not merely equal: the first against the scalar reference.
            const T = Traits(t);
            for (0..n_out) |j| {
                // BF16 decode on vdpbf16ps rounds the activations (bf16.decodeRows): Σ w·bf16(x).
                const want = if (t == .bf16 and bf16_dot.enabled()) bf16_dot.dotRef(k, p.w.ptr + j * p.rb, p.xq.ptr) else T.vecDotRef(k, p.w.ptr + j * p.rb, p.xq.ptr);
                try testing.expectApproxEqAbs(want, got[0][0][j], 1e-4 * (1 + @abs(want)) * @sqrt(@as(f32, @floatFromInt(k))));
            }
        }
    }
}

// Batch invariance (what speculative decoding relies on): each row of a batched matmul or fused
// FFN has exactly the bits of that row computed alone (m = 1), for every type, batch sizes
// below and above the tile and block sizes, row counts that are not multiples of anything,
// and 1–3 threads.
test "batch invariance: every row of a batched matmul / fused FFN equals the row alone, bit for bit" {
    const a = testing.allocator;
    var prng = std.Random.DefaultPrng.init(77);
    const rng = prng.random();
    for ([_]usize{ 1, 2, 3 }) |threads| {
        _ = pool.setThreads(threads);
        inline for (std.meta.fields(GgmlType)) |f| {
            const t: GgmlType = @enumFromInt(f.value);
            const bs = quant.blockSize(t);
            const k = if (bs == 1) 200 else bs * @max(3, 768 / bs + 1);
            for ([_]usize{ 37, 301 }) |n_out| {
                const m_max = 70;
                const p = try TestProblem.init(a, t, rng, n_out, k, m_max);
                defer p.deinit(a);
                const ab = p.ab;
                const wg = p.w;
                const wu = p.wu;
                const xq = p.xq;
                const alone = try a.alloc(f32, m_max * n_out);
                defer a.free(alone);
                const alone_ffn = try a.alloc(f32, m_max * n_out);
                defer a.free(alone_ffn);
                for (0..m_max) |i| {
                    matmulPrepared(.{ .t = t, .w = wg.ptr, .n_out = n_out, .k = k, .xq = xq.ptr + i * ab, .m = 1, .y = alone.ptr + i * n_out, .y_stride = n_out });
                    gatedFfnPrepared(.{ .t = t, .w_gate = wg.ptr, .w_up = wu.ptr, .n_ff = n_out, .k = k, .xq = xq.ptr + i * ab, .m = 1, .out = alone_ffn.ptr + i * n_out, .out_stride = n_out, .activation = .silu });
                }
                const y = try a.alloc(f32, m_max * n_out);
                defer a.free(y);
                for ([_]usize{ 2, 5, 9, 16, 17, m_max }) |m| {
                    // Bit for bit up to max_invariant_rows (and beyond for the types with no
                    // prefill kernel); the interleaved and float prefill kernels sum in another order.
                    const exact = m <= max_invariant_rows or !(repack.supports(t) or @hasDecl(Traits(t), "prefillTile"));
                    matmulPrepared(.{ .t = t, .w = wg.ptr, .n_out = n_out, .k = k, .xq = xq.ptr, .m = m, .y = y.ptr, .y_stride = n_out });
                    // BF16 prefill on vdpbf16ps rounds the activations (bf16.zig): close, not summation-order close.
                    const budget: f64 = if (t == .bf16 and bf16_dot.enabled()) bf16_dot.activation_rounding_nmse else 1e-10;
                    if (exact) try testing.expectEqualSlices(u32, @ptrCast(alone[0 .. m * n_out]), @ptrCast(y[0 .. m * n_out])) else try expectClose(alone[0 .. m * n_out], y[0 .. m * n_out], budget);
                    gatedFfnPrepared(.{ .t = t, .w_gate = wg.ptr, .w_up = wu.ptr, .n_ff = n_out, .k = k, .xq = xq.ptr, .m = m, .out = y.ptr, .out_stride = n_out, .activation = .silu });
                    if (exact) try testing.expectEqualSlices(u32, @ptrCast(alone_ffn[0 .. m * n_out]), @ptrCast(y[0 .. m * n_out])) else try expectClose(alone_ffn[0 .. m * n_out], y[0 .. m * n_out], budget);
                }
            }
        }
    }
    _ = pool.setThreads(2);
}

const sentinel_f32: f32 = 7777.0;

/// Two computations of the same outputs (in different float orders: budget 1e-10).
fn expectClose(want: []const f32, got: []const f32, budget: f64) !void {
    var e: ErrorSums = .{};
    e.add(got, want);
    if (e.nmse() > budget) {
        std.debug.print("nmse {e}\n", .{e.nmse()});
        return error.TestExpectedApproxEq;
    }
}

test "interleaved prefill kernels (Q4_0, Q5_0, Q8_0, K-quants; 512-bit VNNI and AVX2) match the scalar reference: chunks, partial row groups, 1..64 rows" {
    if (!repack.built) return; // only the x86_64-v4 and -v3 builds have them
    const a = testing.allocator;
    var prng = std.Random.DefaultPrng.init(21);
    const rng = prng.random();
    inline for (.{ GgmlType.q4_0, GgmlType.q5_0, GgmlType.q8_0, GgmlType.q4_k, GgmlType.q5_k, GgmlType.q6_k }) |t| {
        const T = Traits(t);
        // Legacy: 150 blocks (two whole 64-block chunks and a partial one); K-quants: 10 blocks
        // (two whole 4-block chunks and a partial one). 53 rows: 3 groups of 16 + 5.
        const k = if (T.block_size == 32) 32 * 150 else 256 * 10;
        const n_out = 53;
        const rb = quant.rowBytes(t, k);
        const ab = quant.actRowBytes(t, k);
        const w = try a.alloc(u8, rb * n_out);
        defer a.free(w);
        const tmp = try a.alloc(f32, k);
        defer a.free(tmp);
        randomWeights(t, rng, n_out, k, w, tmp);
        const m_max = 130;
        const x = try a.alloc(f32, m_max * k);
        defer a.free(x);
        for (x) |*v| v.* = rng.floatNorm(f32);
        const xq = try a.alloc(u8, ab * m_max);
        defer a.free(xq);
        quant.quantizeActivations(t, x.ptr, k, m_max, k, xq.ptr);
        const y = try a.alloc(f32, m_max * n_out);
        defer a.free(y);
        for ([_]usize{ 17, 64, 65, m_max }) |m| {
            matmulPrepared(.{ .t = t, .w = w.ptr, .n_out = n_out, .k = k, .xq = xq.ptr, .m = m, .y = y.ptr, .y_stride = n_out });
            var e: ErrorSums = .{};
            for (0..m) |i| for (0..n_out) |j| {
                const want = T.vecDotRef(k, w.ptr + j * rb, xq.ptr + i * ab);
                e.add(y[i * n_out + j ..][0..1], &[_]f32{want});
            };
            if (e.nmse() > 1e-10) {
                std.debug.print("{s} m={d}: nmse {e}\n", .{ @tagName(t), m, e.nmse() });
                return error.TestExpectedApproxEq;
            }
        }
    }
}

/// The BF16 wiring tests' path: the instructions where this CPU has them, else the emulation
/// (said visibly). The caller resets bf16_dot.test_emulate when done.
fn bf16HardwareOrEmulation(comptime what: []const u8) void {
    if (bf16_dot.enabled()) return;
    std.debug.print("(AVX512-BF16 not usable here: {s}; the BF16 " ++ what ++ " wiring runs on the emulation) ", .{@tagName(bf16_dot.status())});
    bf16_dot.test_emulate = true;
}

test "BF16 prefill on vdpbf16ps (the hardware where the CPU has it, else the emulation): matmul and fused FFN equal the one-pair tile bit for bit" {
    bf16HardwareOrEmulation("prefill");
    defer bf16_dot.test_emulate = false;
    amx.test_bf16_off = true; // the AMX-BF16 tiles come first where enabled; the next test has them
    defer amx.test_bf16_off = false;
    const a = testing.allocator;
    var prng = std.Random.DefaultPrng.init(1402);
    const rng = prng.random();
    // 37 rows (tiles of 8 and the 8-row halves of the FFN's sub-blocks, a partial last one), 131
    // activation rows (two whole blocks of 64, a partial tile of 3), 200 elements (a partial step)
    // and 2·chunk_k + 77 (K in three chunks, the last one ending in a partial step).
    const n_out = 37;
    for ([_]usize{ 200, 2 * bf16_dot.chunk_k + 77 }) |k| try bf16BatchesEach(a, rng, n_out, k, &prefill_batches, struct {
        fn check(p: *const TestProblem, k_: usize, i: usize, j: usize, gate: f32, up: f32, fused: f32) !void {
            // Each (row, activation) pair's arithmetic is the same in any tile shape.
            var g: f32 = undefined;
            var u: f32 = undefined;
            bf16_dot.prefillTile(bf16_dot.Emu, 1, 1, k_, p.w.ptr + j * p.rb, p.rb, p.xq.ptr + i * p.ab, p.ab, @ptrCast(&g), 1);
            bf16_dot.prefillTile(bf16_dot.Emu, 1, 1, k_, p.wu.ptr + j * p.rb, p.rb, p.xq.ptr + i * p.ab, p.ab, @ptrCast(&u), 1);
            try testing.expectEqual(g, gate);
            try testing.expectEqual(u, up);
            try testing.expectEqual(norm.silu(g) * u, fused);
        }
    }.check);
    _ = pool.setThreads(2);
}

test "BF16 decode on vdpbf16ps (the hardware where the CPU has it, else the emulation): matmul and fused FFN rows of batches up to max_invariant_rows equal decodeRow bit for bit" {
    bf16HardwareOrEmulation("decode");
    defer bf16_dot.test_emulate = false;
    const a = testing.allocator;
    var prng = std.Random.DefaultPrng.init(1404);
    const rng = prng.random();
    // 37 rows (tasks of several rows and a partial last one), 1 to max_invariant_rows activation
    // rows, 200 elements (step pairs and a partial step) and 2090 (step pairs, one whole step and
    // a partial one).
    for ([_]usize{ 200, 2090 }) |k| try bf16BatchesEach(a, rng, 37, k, &[_]usize{ 1, 2, max_invariant_rows }, struct {
        fn check(p: *const TestProblem, k_: usize, i: usize, j: usize, gate: f32, up: f32, fused: f32) !void {
            const x = p.xq.ptr + i * p.ab + 4 * k_; // the prepared row's bf16 half
            const g = bf16_dot.decodeRow(bf16_dot.Emu, k_, p.w.ptr + j * p.rb, x);
            const u = bf16_dot.decodeRow(bf16_dot.Emu, k_, p.wu.ptr + j * p.rb, x);
            try testing.expectEqual(@as(u32, @bitCast(g)), @as(u32, @bitCast(gate)));
            try testing.expectEqual(@as(u32, @bitCast(u)), @as(u32, @bitCast(up)));
            try testing.expectEqual(norm.silu(g) * u, fused);
        }
    }.check);
    _ = pool.setThreads(2);
}

/// BF16 batches of a random problem as the wiring tests run them: at 1 and 3 threads, batches of
/// `batches` rows (prefill_batches: 17, 64, 67 and m_max), the gate and up matrices each through
/// matmulPrepared and both through the fused FFN; `check` gets every (activation i, row j) pair's
/// three outputs.
const prefill_batches = [_]usize{ 17, 64, 67, 131 };
fn bf16BatchesEach(a: std.mem.Allocator, rng: std.Random, n_out: usize, k: usize, batches: []const usize, comptime check: fn (p: *const TestProblem, k: usize, i: usize, j: usize, gate: f32, up: f32, fused: f32) anyerror!void) !void {
    const m_max = std.mem.max(usize, batches);
    const p = try TestProblem.init(a, .bf16, rng, n_out, k, m_max);
    defer p.deinit(a);
    const y = try a.alloc(f32, m_max * n_out);
    defer a.free(y);
    const yu = try a.alloc(f32, m_max * n_out);
    defer a.free(yu);
    const out = try a.alloc(f32, m_max * n_out);
    defer a.free(out);
    for ([_]usize{ 1, 3 }) |threads| {
        _ = pool.setThreads(threads);
        for (batches) |m| {
            matmulPrepared(.{ .t = .bf16, .w = p.w.ptr, .n_out = n_out, .k = k, .xq = p.xq.ptr, .m = m, .y = y.ptr, .y_stride = n_out });
            matmulPrepared(.{ .t = .bf16, .w = p.wu.ptr, .n_out = n_out, .k = k, .xq = p.xq.ptr, .m = m, .y = yu.ptr, .y_stride = n_out });
            gatedFfnPrepared(.{ .t = .bf16, .w_gate = p.w.ptr, .w_up = p.wu.ptr, .n_ff = n_out, .k = k, .xq = p.xq.ptr, .m = m, .out = out.ptr, .out_stride = n_out, .activation = .silu });
            for (0..m) |i| for (0..n_out) |j| try check(&p, k, i, j, y[i * n_out + j], yu[i * n_out + j], out[i * n_out + j]);
        }
    }
}

test "BF16 prefill on AMX-BF16 tiles (the hardware where enabled, else the emulated tiles): emulated sums equal bf16DotRef bit for bit, hardware ones stay in the f32 bound; the fused FFN is silu(gate)·up of the same sums" {
    if (!repack.available) return; // AMX exists only in the x86_64-v4 build
    const hw = amx.bf16Enabled() and bf16_dot.enabled();
    if (!hw) {
        std.debug.print("(AMX-BF16 not usable here: {s}; the BF16 prefill wiring runs on the emulated tiles) ", .{@tagName(amx.bf16Status())});
        amx.test_emulate = true;
        bf16_dot.test_emulate = true;
    }
    defer amx.test_emulate = false;
    defer bf16_dot.test_emulate = false;
    const a = testing.allocator;
    var prng = std.Random.DefaultPrng.init(1403);
    const rng = prng.random();
    const n_out = 37;
    for ([_]usize{ 200, 1100 }) |k| {
        if (hw) try bf16BatchesEach(a, rng, n_out, k, &prefill_batches, Bf16AmxCheck(true).check) else try bf16BatchesEach(a, rng, n_out, k, &prefill_batches, Bf16AmxCheck(false).check);
    }
    _ = pool.setThreads(2);
}

/// The AMX-BF16 wiring test's check: on the hardware, each gate and up sum within the f32 bound of
/// the exact one; on the emulated tiles, bf16DotRef's bits. Either way the fused FFN is silu(gate)·up.
fn Bf16AmxCheck(comptime hw: bool) type {
    return struct {
        fn check(p: *const TestProblem, k: usize, i: usize, j: usize, gate: f32, up: f32, fused: f32) !void {
            const w_row = p.w.ptr + j * p.rb;
            const x_row = p.xq.ptr + i * p.ab + 4 * k; // the prepared row's bf16 half
            const wu_row = p.wu.ptr + j * p.rb;
            if (hw) {
                try testing.expect(amx.bf16WithinBound(gate, k, w_row, x_row));
                try testing.expect(amx.bf16WithinBound(up, k, wu_row, x_row));
            } else {
                try testing.expectEqual(amx.bf16DotRef(k, w_row, x_row), gate);
                try testing.expectEqual(amx.bf16DotRef(k, wu_row, x_row), up);
            }
            try testing.expectEqual(norm.silu(gate) * up, fused);
        }
    };
}

test "prefill on AMX (the hardware where enabled, else the emulated tiles): every type routed to AMX, matmul and fused FFN equal the scalar reference exactly" {
    if (!repack.available) return; // the prefill path (and AMX) exist only in the x86_64-v4 build
    if (!amx.enabled()) {
        std.debug.print("(AMX not usable here: {s}; the prefill wiring runs on the emulated tiles) ", .{@tagName(amx.status())});
        amx.test_emulate = true;
    }
    defer amx.test_emulate = false;
    const a = testing.allocator;
    var prng = std.Random.DefaultPrng.init(1401);
    const rng = prng.random();
    for ([_]usize{ 1, 3 }) |threads| {
        _ = pool.setThreads(threads);
        inline for (amx.types) |t| if (comptime amx.routed(t)) {
            const T = Traits(t);
            // Legacy: 37 blocks (a whole 32-block AMX chunk and a partial one); K-quants, should
            // amx.routed() take them again: 5 blocks (a whole 4-block chunk and a partial one).
            const k: usize = if (T.block_size == 32) 32 * 37 else 256 * 5;
            const n_out = 83;
            // Past amx.max_acts: a whole 256-row activation block and a partial one.
            const m_max = amx.max_acts + 44;
            const p = try TestProblem.init(a, t, rng, n_out, k, m_max);
            defer p.deinit(a);
            const rb = p.rb;
            const ab = p.ab;
            const w = p.w;
            const wu = p.wu;
            const xq = p.xq;
            const y = try a.alloc(f32, m_max * n_out);
            defer a.free(y);
            const out = try a.alloc(f32, m_max * n_out);
            defer a.free(out);
            for ([_]usize{ 17, 64, 65, 131, m_max }) |m| {
                matmulPrepared(.{ .t = t, .w = w.ptr, .n_out = n_out, .k = k, .xq = xq.ptr, .m = m, .y = y.ptr, .y_stride = n_out });
                gatedFfnPrepared(.{ .t = t, .w_gate = w.ptr, .w_up = wu.ptr, .n_ff = n_out, .k = k, .xq = xq.ptr, .m = m, .out = out.ptr, .out_stride = n_out, .activation = .silu });
                for (0..m) |i| for (0..n_out) |j| {
                    const g = T.vecDotRef(k, w.ptr + j * rb, xq.ptr + i * ab);
                    const u = T.vecDotRef(k, wu.ptr + j * rb, xq.ptr + i * ab);
                    try testing.expectEqual(g, y[i * n_out + j]);
                    try testing.expectEqual(norm.silu(g) * u, out[i * n_out + j]);
                };
            }
        };
    }
    _ = pool.setThreads(2);
}
