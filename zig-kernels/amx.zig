//! Prefill matmul on Intel AMX (AMX-TILE + AMX-INT8): Q8_0 and Q4_0 weights × ActQ8_0
//! activations, one TDPBSSD (signed int8 × signed int8 → int32) per 32-element block.
//!
//! Per block (K = 32): an A tile holds 16 activation rows × 32 quant bytes (loaded straight from
//! the prepared activations, act_bytes apart), a B tile the 16 weight rows of the block in the
//! VNNI layout AMX multiplies (8 rows of 64 bytes: B[k4][4n + i] = W[n][4·k4 + i], the same
//! 4-byte interleave as repack.zig's), and TDPBSSD leaves the 16 × 16 exact int32 block sums in a
//! C tile. The C tile is stored, converted to f32 and accumulated per output as
//! acc += (d_w · d_a) · sumi, with no FMA: exactly the scalar reference's operations in its order
//! (quant_legacy.zig blockDotRef), so every output equals vecDotRef.
//!
//! The tile instructions go through one small interface with two implementations: `Hw` (inline
//! asm) and `Emu` (plain arrays emulating the eight tile registers, the palette-1 configuration and
//! the documented semantics of each instruction, checking every shape rule the hardware faults
//! on). The kernel is written once over that interface. Only the x86_64-v4 Linux library compiles
//! `Hw`; every level's tests run the kernel on `Emu` against the scalar reference. On first use
//! the `Hw` kernel must equal the `Emu` kernel bit for bit on a fixed problem (`status`), else
//! AMX stays off for the process.
//!
//! Tile registers (palette 1):
//!   tmm0, tmm1  B: weight rows [0, 16) and [16, 32)       8 rows × 64 bytes
//!   tmm2, tmm3  A: activation rows [0, 16) and [16, 32)  16 rows × 32 bytes
//!   tmm4..tmm7  C: A(tmm2 + ga) × B(tmm0 + gb) → tmm(4 + 2·ga + gb), 16 rows × 64 bytes (int32)
//!
//! Encodings (Intel SDM vol. 2; checked by assembling these mnemonics with Zig's LLVM and
//! disassembling with binutils objdump):
//!   LDTILECFG m512         VEX.128.NP.0F38.W0 49 !(11):000:bbb   ldtilecfg (%rdi)  = c4 e2 78 49 07
//!   TILERELEASE            VEX.128.NP.0F38.W0 49 C0              tilerelease       = c4 e2 78 49 c0
//!   TILEZERO tmm           VEX.128.F2.0F38.W0 49 11:rrr:000      tilezero %tmm0    = c4 e2 7b 49 c0
//!   TILELOADD tmm, sibmem  VEX.128.F2.0F38.W0 4B !(11):rrr:100   tileloadd (%rsi,%rdx,1),%tmm1 = c4 e2 7b 4b 0c 16
//!   TILESTORED sibmem, tmm VEX.128.F3.0F38.W0 4B !(11):rrr:100   tilestored %tmm0,(%rsi,%rdx,1) = c4 e2 7a 4b 04 16
//!   TDPBSSD tmm1, tmm2, tmm3  VEX.128.F2.0F38.W0 5E 11:rrr:bbb (vvvv = tmm3)
//!                          tdpbssd %tmm2,%tmm1,%tmm0 (AT&T; Intel: tdpbssd tmm0, tmm1, tmm2) = c4 e2 6b 5e c1
//! LLVM's assembler takes the mnemonics without the amx-* target features, so no `.byte` is needed
//! and the v4 target is not changed (the compiler itself never emits a tile instruction).
const std = @import("std");
const builtin = @import("builtin");
const cpu = @import("cpu.zig");
const quant = @import("quant.zig");
const legacy = @import("quant_legacy.zig");

const GgmlType = quant.GgmlType;
const ActQ8_0 = legacy.ActQ8_0;

/// The hardware path exists only in the x86_64-v4 library (AVX-512 for the f32 side) on Linux
/// (the only OS whose tile-state permission request kiln implements).
pub const hw_built = cpu.is_x86 and cpu.has_vnni512 and builtin.os.tag == .linux;

/// Weight rows per kernel call (two B tiles) and activation rows (matmul.zig's act_rows_per_block).
pub const max_rows = 32;
pub const max_acts = 64;
/// Blocks packed per pass: 32 blocks × 32 rows × 32 bytes = 32 KB of B tiles on the stack.
const chunk_blocks = 32;

pub fn supports(t: GgmlType) bool {
    return t == .q8_0 or t == .q4_0;
}

// ---------------------------------------------------------------------------------------------
// Tile configuration
// ---------------------------------------------------------------------------------------------

/// LDTILECFG's 64-byte memory operand (palette 1).
pub const TileConfig = extern struct {
    palette: u8 = 0,
    start_row: u8 = 0,
    reserved: [14]u8 = @splat(0),
    colsb: [16]u16 = @splat(0),
    rows: [16]u8 = @splat(0),
};
comptime {
    std.debug.assert(@sizeOf(TileConfig) == 64);
    std.debug.assert(@offsetOf(TileConfig, "colsb") == 16);
    std.debug.assert(@offsetOf(TileConfig, "rows") == 48);
}

const tile_b0 = 0;
const tile_a0 = 2;
const tile_c0 = 4;
fn tileC(comptime ga: usize, comptime gb: usize) u3 {
    return @intCast(tile_c0 + 2 * ga + gb);
}

/// Palette 1 has 8 tiles of at most 16 rows × 64 bytes.
const palette1_tiles = 8;
const palette1_rows = 16;
const palette1_colsb = 64;

pub const config: TileConfig = blk: {
    var c: TileConfig = .{ .palette = 1 };
    for (0..2) |g| {
        c.rows[tile_b0 + g] = 8;
        c.colsb[tile_b0 + g] = 64;
        c.rows[tile_a0 + g] = 16;
        c.colsb[tile_a0 + g] = 32;
    }
    for (0..4) |g| {
        c.rows[tile_c0 + g] = 16;
        c.colsb[tile_c0 + g] = 64;
    }
    break :blk c;
};

// ---------------------------------------------------------------------------------------------
// The tile interface: Hw (the instructions) and Emu (their documented semantics)
// ---------------------------------------------------------------------------------------------

/// The instructions themselves. Only referenced (and so compiled) where hw_built.
pub const Hw = struct {
    /// LDTILECFG (also zeroes every tile).
    pub fn init(cfg: *align(64) const TileConfig) Hw {
        asm volatile ("ldtilecfg (%[cfg])"
            :
            : [cfg] "r" (cfg),
            : .{ .memory = true });
        return .{};
    }
    pub fn zero(_: *Hw, comptime t: u3) void {
        asm volatile (std.fmt.comptimePrint("tilezero %%tmm{d}", .{t}));
    }
    /// TILELOADD: tile row r ← colsb bytes at base + r·stride.
    pub fn load(_: *Hw, comptime t: u3, base: [*]const u8, stride: usize) void {
        asm volatile (std.fmt.comptimePrint("tileloadd (%[base],%[stride],1), %%tmm{d}", .{t})
            :
            : [base] "r" (base),
              [stride] "r" (stride),
            : .{ .memory = true });
    }
    /// TILESTORED: colsb bytes of tile row r → base + r·stride.
    pub fn store(_: *Hw, comptime t: u3, base: [*]u8, stride: usize) void {
        asm volatile (std.fmt.comptimePrint("tilestored %%tmm{d}, (%[base],%[stride],1)", .{t})
            :
            : [base] "r" (base),
              [stride] "r" (stride),
            : .{ .memory = true });
    }
    /// TDPBSSD c, a, b (Intel operand order): c[m][n] += Σ_k4 Σ_i sext(a[m][4·k4+i])·sext(b[k4][4n+i]).
    pub fn dpbssd(_: *Hw, comptime c: u3, comptime a: u3, comptime b: u3) void {
        asm volatile (std.fmt.comptimePrint("tdpbssd %%tmm{d}, %%tmm{d}, %%tmm{d}", .{ b, a, c }));
    }
    /// TILERELEASE: back to the init state (no tile data for the OS to save).
    pub fn release(_: *Hw) void {
        asm volatile ("tilerelease" ::: .{ .memory = true });
    }
};

/// An emulation of the eight tile registers and the instructions above, following the SDM's
/// pseudocode (rows beyond `rows` and bytes beyond `colsb` are zeroed on every write), with a
/// panic wherever the hardware would raise #GP/#UD (an invalid configuration, an unconfigured
/// tile, mismatched TDPBSSD shapes, overlapping TDPBSSD operands). `a_signed = false` is a
/// deliberately wrong TDPBSSD (A zero-extended, as TDPBUSD) that the tests must tell apart.
pub fn EmuWith(comptime a_signed: bool) type {
    return struct {
        const Self = @This();
        cfg: TileConfig,
        tiles: [palette1_tiles][palette1_rows][palette1_colsb]u8,

        pub fn init(cfg: *align(64) const TileConfig) Self {
            const s: Self = .{ .cfg = cfg.*, .tiles = std.mem.zeroes([palette1_tiles][palette1_rows][palette1_colsb]u8) };
            // LDTILECFG's #GP conditions (palette 1): reserved bytes zero, start_row 0 here, every
            // configured tile within 16 rows × 64 bytes, unused tiles all zero.
            if (cfg.palette != 1) @panic("amx emu: palette must be 1");
            for (cfg.reserved) |r| if (r != 0) @panic("amx emu: reserved config bytes must be zero");
            if (cfg.start_row != 0) @panic("amx emu: start_row must be 0");
            for (0..16) |t| {
                const rows = cfg.rows[t];
                const colsb = cfg.colsb[t];
                if (t >= palette1_tiles) {
                    if (rows != 0 or colsb != 0) @panic("amx emu: tile beyond palette 1 configured");
                    continue;
                }
                if (rows > palette1_rows or colsb > palette1_colsb) @panic("amx emu: tile larger than 16 rows × 64 bytes");
                if ((rows == 0) != (colsb == 0)) @panic("amx emu: tile half configured");
            }
            return s;
        }

        fn shape(s: *const Self, t: u3) struct { rows: usize, colsb: usize } {
            const rows = s.cfg.rows[t];
            if (rows == 0) @panic("amx emu: tile not configured");
            return .{ .rows = rows, .colsb = s.cfg.colsb[t] };
        }

        pub fn zero(s: *Self, comptime t: u3) void {
            _ = s.shape(t);
            s.tiles[t] = std.mem.zeroes([palette1_rows][palette1_colsb]u8);
        }

        pub fn load(s: *Self, comptime t: u3, base: [*]const u8, stride: usize) void {
            const sh = s.shape(t);
            s.tiles[t] = std.mem.zeroes([palette1_rows][palette1_colsb]u8);
            for (0..sh.rows) |r| @memcpy(s.tiles[t][r][0..sh.colsb], base[r * stride ..][0..sh.colsb]);
        }

        pub fn store(s: *Self, comptime t: u3, base: [*]u8, stride: usize) void {
            const sh = s.shape(t);
            for (0..sh.rows) |r| @memcpy(base[r * stride ..][0..sh.colsb], s.tiles[t][r][0..sh.colsb]);
        }

        pub fn dpbssd(s: *Self, comptime c: u3, comptime a: u3, comptime b: u3) void {
            comptime if (c == a or c == b or a == b) @compileError("TDPBSSD operands must be distinct tiles (#UD)");
            const sc = s.shape(c);
            const sa = s.shape(a);
            const sb = s.shape(b);
            // #UD unless A is rows(C) × 4·rows(B) bytes and B has colsb(C) bytes a row.
            if (sa.rows != sc.rows or sa.colsb != 4 * sb.rows or sb.colsb != sc.colsb or sc.colsb % 4 != 0 or sa.colsb % 4 != 0)
                @panic("amx emu: TDPBSSD shapes do not match");
            var out = std.mem.zeroes([palette1_rows][palette1_colsb]u8);
            for (0..sc.rows) |m| {
                for (0..sc.colsb / 4) |n| {
                    var acc = std.mem.readInt(i32, s.tiles[c][m][4 * n ..][0..4], .little);
                    for (0..sa.colsb / 4) |k4| {
                        var p: i32 = 0;
                        for (0..4) |i| {
                            const av: i32 = if (a_signed) @as(i8, @bitCast(s.tiles[a][m][4 * k4 + i])) else s.tiles[a][m][4 * k4 + i];
                            const bv: i32 = @as(i8, @bitCast(s.tiles[b][k4][4 * n + i]));
                            p +%= av * bv;
                        }
                        acc +%= p;
                    }
                    std.mem.writeInt(i32, out[m][4 * n ..][0..4], acc, .little);
                }
            }
            s.tiles[c] = out;
        }

        pub fn release(s: *Self) void {
            s.cfg = .{};
        }
    };
}

pub const Emu = EmuWith(true);

// ---------------------------------------------------------------------------------------------
// Weight packing (VNNI B layout) and the kernel
// ---------------------------------------------------------------------------------------------

/// Bytes of one B tile: 8 rows (k4 = 0..7) of 16 columns × 4 bytes.
const b_tile_bytes = 8 * 64;

const Packed = struct {
    /// q[b][g][k4·64 + 4n + i] = quant 4·k4 + i of weight row 16g + n, block b0 + b (int8).
    q: [chunk_blocks][2][b_tile_bytes]u8 align(64),
    /// d[b][g][n]: the f16 scale of that block as f32 (0 for padding rows).
    d: [chunk_blocks][2]@Vector(16, f32),
};

/// The 32 signed quants and scale of one weight block (Q4_0: nibble − 8, as the reference).
inline fn blockQuants(comptime t: GgmlType, blk: [*]const u8) struct { q: [32]i8, d: f32 } {
    const d: f32 = @floatCast(@as(f16, @bitCast(std.mem.readInt(u16, blk[0..2], .little))));
    var q: [32]i8 = undefined;
    switch (t) {
        .q8_0 => q = @bitCast(blk[2..34].*),
        .q4_0 => {
            const v: @Vector(16, u8) = blk[2..18].*;
            const eight: @Vector(16, i8) = @splat(8);
            const lo: @Vector(16, i8) = @bitCast(v & @as(@Vector(16, u8), @splat(0x0f)));
            const hi: @Vector(16, i8) = @bitCast(v >> @splat(4));
            q = std.simd.join(lo - eight, hi - eight);
        },
        else => @compileError("amx: unsupported weight type"),
    }
    return .{ .q = q, .d = d };
}

/// Packs weight rows [0, n) (n ≤ 32; rows n..31 become zero quants with scale 0) of blocks
/// [b0, b0 + nb) into p's B tiles.
fn packB(comptime t: GgmlType, w: [*]const u8, row_bytes: usize, n: usize, b0: usize, nb: usize, p: *Packed) void {
    const ts = quant.Traits(t).type_size;
    for (0..nb) |b| {
        for (0..2) |g| {
            var d: [16]f32 = @splat(0);
            const tile = &p.q[b][g];
            for (0..16) |r| {
                const j = 16 * g + r;
                if (j >= n) {
                    for (0..8) |k4| @memset(tile[k4 * 64 + 4 * r ..][0..4], 0);
                    continue;
                }
                const bq = blockQuants(t, w + j * row_bytes + (b0 + b) * ts);
                d[r] = bq.d;
                const bytes: [32]u8 = @bitCast(bq.q);
                inline for (0..8) |k4| tile[k4 * 64 + 4 * r ..][0..4].* = bytes[4 * k4 ..][0..4].*;
            }
            p.d[b][g] = d;
        }
    }
}

/// y[i·y_stride + j] = Σ_blocks (d_w[j]·d_a[i])·Σ q_w[j]·q_a[i] for weight rows j < n ≤ 32 and
/// activation rows i < m ≤ 64 (each the scalar reference's value), the tiles through `Tiles`.
pub fn kernel(comptime Tiles: type, comptime t: GgmlType, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize) void {
    std.debug.assert(k % 32 == 0 and m >= 1 and m <= max_acts and n >= 1 and n <= max_rows);
    const cfg_aligned: TileConfig align(64) = config;
    var tiles = Tiles.init(&cfg_aligned);
    defer tiles.release();

    const nb_total = k / 32;
    const n_ga = (m + 15) / 16;
    const n_gb: usize = if (n > 16) 2 else 1;
    const last_rows = m - 16 * (n_ga - 1); // rows of the last activation group (1..16)

    var acc: [max_acts][2]@Vector(16, f32) = undefined;
    for (0..m) |i| acc[i] = .{ @splat(0), @splat(0) };
    var p: Packed = undefined;
    // The last activation group when partial, zero-padded to 16 rows: tileloadd reads 16 rows.
    var stage: [chunk_blocks][16 * 32]u8 align(64) = undefined;

    var b0: usize = 0;
    while (b0 < nb_total) : (b0 += chunk_blocks) {
        const nb = @min(chunk_blocks, nb_total - b0);
        packB(t, w, row_bytes, n, b0, nb, &p);
        if (last_rows < 16) {
            const g = n_ga - 1;
            for (0..nb) |b| {
                @memset(&stage[b], 0);
                for (0..last_rows) |r| {
                    stage[b][r * 32 ..][0..32].* = (a + (16 * g + r) * act_bytes + (b0 + b) * ActQ8_0.type_size + 8)[0..32].*;
                }
            }
        }
        var ga: usize = 0;
        while (ga < n_ga) : (ga += 2) {
            const pa = @min(2, n_ga - ga);
            const ctx: StepCtx = .{ .a = a, .act_bytes = act_bytes, .m = m, .ga = ga, .n_ga = n_ga, .last_rows = last_rows, .b0 = b0, .nb = nb, .stage = &stage, .p = &p };
            switch (pa) {
                1 => if (n_gb == 1) step(Tiles, 1, 1, &tiles, ctx, &acc) else step(Tiles, 1, 2, &tiles, ctx, &acc),
                2 => if (n_gb == 1) step(Tiles, 2, 1, &tiles, ctx, &acc) else step(Tiles, 2, 2, &tiles, ctx, &acc),
                else => unreachable,
            }
        }
    }
    for (0..m) |i| {
        const row = y + i * y_stride;
        for (0..n_gb) |g| {
            const v: [16]f32 = acc[i][g];
            const cnt = @min(16, n - 16 * g);
            @memcpy(row[16 * g ..][0..cnt], v[0..cnt]);
        }
    }
}

const StepCtx = struct {
    a: [*]const u8,
    act_bytes: usize,
    m: usize,
    ga: usize, // first activation group of this step
    n_ga: usize,
    last_rows: usize,
    b0: usize,
    nb: usize,
    stage: *const [chunk_blocks][16 * 32]u8,
    p: *const Packed,
};

/// PA activation groups × PB weight tiles over the chunk's blocks: per block, load the tiles,
/// TDPBSSD into zeroed C tiles, store them and scale-accumulate in f32.
inline fn step(comptime Tiles: type, comptime PA: usize, comptime PB: usize, tiles: *Tiles, c: StepCtx, acc: *[max_acts][2]@Vector(16, f32)) void {
    var cbuf: [PA * PB][16][16]i32 align(64) = undefined;
    for (0..c.nb) |b| {
        inline for (0..PA) |ga| {
            const g = c.ga + ga;
            if (g == c.n_ga - 1 and c.last_rows < 16) {
                tiles.load(tile_a0 + ga, &c.stage[b], 32);
            } else {
                tiles.load(tile_a0 + ga, c.a + 16 * g * c.act_bytes + (c.b0 + b) * ActQ8_0.type_size + 8, c.act_bytes);
            }
        }
        inline for (0..PB) |gb| tiles.load(tile_b0 + gb, &c.p.q[b][gb], 64);
        inline for (0..PA) |ga| {
            inline for (0..PB) |gb| {
                tiles.zero(tileC(ga, gb));
                tiles.dpbssd(tileC(ga, gb), tile_a0 + ga, tile_b0 + gb);
                tiles.store(tileC(ga, gb), @ptrCast(&cbuf[ga * PB + gb]), 64);
            }
        }
        inline for (0..PA) |ga| {
            const g = c.ga + ga;
            const rows = if (g == c.n_ga - 1) c.last_rows else 16;
            for (0..rows) |r| {
                const i = 16 * g + r;
                const da: f32 = @bitCast(std.mem.readInt(u32, (c.a + i * c.act_bytes + (c.b0 + b) * ActQ8_0.type_size)[0..4], .little));
                inline for (0..PB) |gb| {
                    const sumi: @Vector(16, i32) = cbuf[ga * PB + gb][r];
                    // (d_w·d_a)·sumi, then the add: blockDotRef's operations, unfused.
                    const dd = c.p.d[b][gb] * @as(@Vector(16, f32), @splat(da));
                    acc[i][gb] = acc[i][gb] + dd * @as(@Vector(16, f32), @floatFromInt(sumi));
                }
            }
        }
    }
}

/// The kernel on the hardware tiles (only where hw_built and status() == .enabled).
pub fn matmulRows(t: GgmlType, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize) void {
    if (builtin.is_test and test_emulate) return matmulRowsEmu(t, w, row_bytes, k, a, act_bytes, m, n, y, y_stride);
    if (comptime !hw_built) unreachable;
    switch (t) {
        .q8_0 => kernel(Hw, .q8_0, w, row_bytes, k, a, act_bytes, m, n, y, y_stride),
        .q4_0 => kernel(Hw, .q4_0, w, row_bytes, k, a, act_bytes, m, n, y, y_stride),
        else => unreachable,
    }
}

/// The same kernel on the emulated tiles (tests, the self-check).
pub fn matmulRowsEmu(t: GgmlType, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize) void {
    switch (t) {
        .q8_0 => kernel(Emu, .q8_0, w, row_bytes, k, a, act_bytes, m, n, y, y_stride),
        .q4_0 => kernel(Emu, .q4_0, w, row_bytes, k, a, act_bytes, m, n, y, y_stride),
        else => unreachable,
    }
}

// ---------------------------------------------------------------------------------------------
// Run-time gating
// ---------------------------------------------------------------------------------------------

/// Why AMX is or is not used (kiln_amx_status; names mirrored in src/ffi/library.ts).
pub const Status = enum(i32) {
    enabled = 0,
    /// KILN_AMX=0 in the environment.
    disabled_by_env = 1,
    /// This library has no AMX path (only the x86_64-v4 build on Linux has one).
    not_built = 2,
    /// CPUID lacks AMX-TILE or AMX-INT8.
    no_cpu_support = 3,
    /// The OS does not enable the tile state (XCR0 bits 17 XTILECFG and 18 XTILEDATA).
    no_os_support = 4,
    /// Linux refused arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), or did not confirm it.
    permission_denied = 5,
    /// The hardware kernel differed from the emulated one on the self-check problem.
    self_check_failed = 6,
};

const unknown: i32 = -1;
var state = std.atomic.Value(i32).init(unknown);
var state_lock: std.Thread.Mutex = .{};

/// Test builds only: matmul.zig's prefill takes the AMX kernel on the emulated tiles, so its
/// wiring (task ranges, pointers, strides) is tested on machines without AMX.
pub var test_emulate: bool = false;

/// Whether matmul.zig's prefill may route type t here in this build: the x86_64-v4 Linux library
/// (and, for test_emulate, test builds).
pub fn wired(comptime t: GgmlType) bool {
    return (hw_built or builtin.is_test) and supports(t);
}

/// Whether the prefill matmuls take the AMX kernel (comptime false outside the v4 Linux build).
pub inline fn enabled() bool {
    if (builtin.is_test and test_emulate) return true;
    if (comptime !hw_built) return false;
    return status() == .enabled;
}

/// Decides once per process (environment, CPU, OS, permission, self-check) and remembers.
pub fn status() Status {
    const s = state.load(.acquire);
    if (s != unknown) return @enumFromInt(s);
    state_lock.lock();
    defer state_lock.unlock();
    const again = state.load(.acquire);
    if (again != unknown) return @enumFromInt(again);
    const decided = decide();
    state.store(@intFromEnum(decided), .release);
    return decided;
}

fn decide() Status {
    if (comptime builtin.os.tag == .linux) {
        if (std.posix.getenv("KILN_AMX")) |v| if (std.mem.eql(u8, v, "0")) return .disabled_by_env;
    }
    if (comptime !hw_built) return .not_built;
    const sup = cpu.amxSupport();
    if (!sup.tile or !sup.int8) return .no_cpu_support;
    if (!sup.os_state) return .no_os_support;
    if (!cpu.requestAmxPermission()) return .permission_denied;
    if (!selfCheck()) return .self_check_failed;
    return .enabled;
}

/// The self-check problem: 32 weight rows × 3 blocks × 33 activation rows (two whole activation
/// groups and one of a single row, both weight tiles), Q8_0 and Q4_0, from a fixed seed.
fn selfCheck() bool {
    if (comptime !hw_built) return false;
    inline for (.{ GgmlType.q8_0, GgmlType.q4_0 }) |t| {
        if (!selfCheckType(t, 32, 33)) return false;
        if (!selfCheckType(t, 21, 17)) return false;
    }
    return true;
}

fn selfCheckType(comptime t: GgmlType, n: usize, m: usize) bool {
    const k = 96;
    const rb = quant.rowBytes(t, k);
    const ab = quant.actRowBytes(t, k);
    var w: [32 * 3 * 34]u8 = undefined;
    var xq: [33 * 3 * 40]u8 = undefined;
    var x: [33 * 96]f32 = undefined;
    var prng = std.Random.DefaultPrng.init(0x4b494c4e);
    const rng = prng.random();
    for (x[0 .. n * k]) |*v| v.* = rng.floatNorm(f32);
    for (0..n) |j| _ = quant.quantizeRow(t, x[j * k ..].ptr, w[j * rb ..].ptr, k);
    for (x[0 .. m * k]) |*v| v.* = rng.floatNorm(f32);
    for (0..m) |i| ActQ8_0.quantizeRowRef(x[i * k ..].ptr, xq[i * ab ..].ptr, k);
    var hw: [33 * 32]f32 = undefined;
    var emu: [33 * 32]f32 = undefined;
    @memset(&hw, 0);
    @memset(&emu, 0);
    matmulRows(t, &w, rb, k, &xq, ab, m, n, &hw, 32);
    matmulRowsEmu(t, &w, rb, k, &xq, ab, m, n, &emu, 32);
    return std.mem.eql(u8, std.mem.sliceAsBytes(&hw), std.mem.sliceAsBytes(&emu));
}

// ---------------------------------------------------------------------------------------------
// Tests (every level runs the emulated kernel; the hardware one only where AMX is usable)
// ---------------------------------------------------------------------------------------------

const testing = std.testing;

const Problem = struct {
    w: []u8,
    xq: []u8,
    rb: usize,
    ab: usize,

    fn init(comptime t: GgmlType, rng: std.Random, n: usize, k: usize, m: usize, row_pad: usize) !Problem {
        const al = testing.allocator;
        // Rows padded apart (row_bytes > one row) so a kernel reading the wrong row shows.
        const rb = quant.rowBytes(t, k) + row_pad;
        const ab = quant.actRowBytes(t, k) + row_pad;
        const w = try al.alloc(u8, rb * n);
        errdefer al.free(w);
        const xq = try al.alloc(u8, ab * m);
        errdefer al.free(xq);
        rng.bytes(w);
        rng.bytes(xq);
        const x = try al.alloc(f32, k);
        defer al.free(x);
        for (0..n) |j| {
            for (x) |*v| v.* = rng.floatNorm(f32);
            _ = quant.quantizeRow(t, x.ptr, w[j * rb ..].ptr, k);
        }
        for (0..m) |i| {
            for (x) |*v| v.* = rng.floatNorm(f32);
            ActQ8_0.quantizeRow(x.ptr, xq[i * ab ..].ptr, k);
        }
        return .{ .w = w, .xq = xq, .rb = rb, .ab = ab };
    }
    fn deinit(p: Problem) void {
        testing.allocator.free(p.w);
        testing.allocator.free(p.xq);
    }
};

/// The kernel on `Tiles` against vecDotRef for every output (==: the same f32 operations in the
/// same order), with guards around the outputs it must not touch.
fn checkAgainstRef(comptime Tiles: type, comptime t: GgmlType, p: Problem, k: usize, m: usize, n: usize) !void {
    const al = testing.allocator;
    const stride = n + 3;
    const y = try al.alloc(f32, m * stride);
    defer al.free(y);
    @memset(y, 12345);
    kernel(Tiles, t, p.w.ptr, p.rb, k, p.xq.ptr, p.ab, m, n, y.ptr, stride);
    for (0..m) |i| {
        for (0..n) |j| {
            const want = quant.Traits(t).vecDotRef(k, p.w.ptr + j * p.rb, p.xq.ptr + i * p.ab);
            const got = y[i * stride + j];
            if (want != got) {
                std.debug.print("amx {s} k={d} m={d} n={d}: y[{d}][{d}] = {e}, reference {e}\n", .{ @tagName(t), k, m, n, i, j, got, want });
                return error.TestExpectedEqual;
            }
        }
        for (n..stride) |j| try testing.expectEqual(@as(f32, 12345), y[i * stride + j]);
    }
}

test "amx emulated kernel equals the scalar reference: Q8_0 and Q4_0, awkward shapes" {
    var prng = std.Random.DefaultPrng.init(1414);
    const rng = prng.random();
    inline for (.{ GgmlType.q8_0, GgmlType.q4_0 }) |t| {
        // One block, a few, exactly one chunk, and chunks plus a partial one.
        for ([_]usize{ 1, 3, chunk_blocks, 2 * chunk_blocks + 5 }) |nb| {
            const k = 32 * nb;
            for ([_]usize{ 1, 5, 16, 17, 31, 32 }) |n| {
                const ms = [_]usize{ 1, 15, 16, 17, 33, 48, 63, 64 };
                const p = try Problem.init(t, rng, n, k, 64, 8);
                defer p.deinit();
                for (ms) |m| try checkAgainstRef(Emu, t, p, k, m, n);
            }
        }
    }
}

test "amx emulated kernel: every m from 17 to 70 through matmul-sized calls" {
    // matmul.zig hands the kernel ≤ 64 activation rows per call; m = 17..70 splits into calls of
    // 64 + the rest exactly as the tasks do.
    var prng = std.Random.DefaultPrng.init(77);
    const rng = prng.random();
    const k = 32 * 5;
    const n = 37;
    inline for (.{ GgmlType.q8_0, GgmlType.q4_0 }) |t| {
        const p = try Problem.init(t, rng, n, k, 70, 0);
        defer p.deinit();
        const y = try testing.allocator.alloc(f32, 70 * n);
        defer testing.allocator.free(y);
        for (17..71) |m| {
            var ib: usize = 0;
            while (ib < m) : (ib += max_acts) {
                const mm = @min(max_acts, m - ib);
                var j0: usize = 0;
                while (j0 < n) : (j0 += max_rows) {
                    const nn = @min(max_rows, n - j0);
                    kernel(Emu, t, p.w.ptr + j0 * p.rb, p.rb, k, p.xq.ptr + ib * p.ab, p.ab, mm, nn, y.ptr + ib * n + j0, n);
                }
            }
            for (0..m) |i| for (0..n) |j| {
                const want = quant.Traits(t).vecDotRef(k, p.w.ptr + j * p.rb, p.xq.ptr + i * p.ab);
                try testing.expectEqual(want, y[i * n + j]);
            };
        }
    }
}

test "amx B packing: byte o of a tile is quant 4·(o / 64) + o % 4 of weight row (o % 64) / 4" {
    var prng = std.Random.DefaultPrng.init(3);
    const rng = prng.random();
    inline for (.{ GgmlType.q8_0, GgmlType.q4_0 }) |t| {
        const ts = quant.Traits(t).type_size;
        const nb = 3;
        const rb = nb * ts + 5;
        var w: [32 * (3 * 34 + 5)]u8 = undefined;
        rng.bytes(&w);
        for ([_]usize{ 32, 19, 16, 1 }) |n| {
            var p: Packed = undefined;
            packB(t, &w, rb, n, 1, 2, &p);
            for (0..2) |b| for (0..2) |g| for (0..b_tile_bytes) |o| {
                const row = 16 * g + (o % 64) / 4;
                const e = 4 * (o / 64) + o % 4;
                // The naive dequantization of element e of the row's block b + 1.
                const blk = w[row * rb + (b + 1) * ts ..];
                const want: i8 = if (row >= n) 0 else switch (t) {
                    .q8_0 => @bitCast(blk[2 + e]),
                    .q4_0 => @as(i8, @intCast(if (e < 16) blk[2 + e] & 15 else blk[2 + e - 16] >> 4)) - 8,
                    else => unreachable,
                };
                try testing.expectEqual(want, @as(i8, @bitCast(p.q[b][g][o])));
                // Random bytes make some scales NaN: compare bits.
                const d_want: f32 = if (row >= n) 0 else @floatCast(@as(f16, @bitCast(std.mem.readInt(u16, blk[0..2], .little))));
                try testing.expectEqual(@as(u32, @bitCast(d_want)), @as(u32, @bitCast(p.d[b][g][row % 16])));
            };
        }
    }
}

test "amx emulation: TDPBSSD sign-extends both operands; an unsigned-A emulation gives other results" {
    // One instruction on hand-made tiles: A = -1 everywhere, B = 1 everywhere, K = 32 bytes: each
    // C element is 32 · (−1·1) = −32; read as unsigned, A's 0xff makes 32 · 255.
    const cfg: TileConfig align(64) = config;
    var a: [16 * 32]u8 = @splat(0xff);
    var b: [8 * 64]u8 = @splat(1);
    var c: [16][16]i32 = undefined;
    var e = Emu.init(&cfg);
    e.load(tile_a0, &a, 32);
    e.load(tile_b0, &b, 64);
    e.zero(tileC(0, 0));
    e.dpbssd(tileC(0, 0), tile_a0, tile_b0);
    e.store(tileC(0, 0), @ptrCast(&c), 64);
    for (c) |row| for (row) |v| try testing.expectEqual(@as(i32, -32), v);
    var wrong = EmuWith(false).init(&cfg);
    wrong.load(tile_a0, &a, 32);
    wrong.load(tile_b0, &b, 64);
    wrong.zero(tileC(0, 0));
    wrong.dpbssd(tileC(0, 0), tile_a0, tile_b0);
    wrong.store(tileC(0, 0), @ptrCast(&c), 64);
    for (c) |row| for (row) |v| try testing.expectEqual(@as(i32, 32 * 255), v);

    // The whole kernel on the wrong emulation: checkAgainstRef must reject it, so the reference
    // test above really depends on the sign extension.
    var prng = std.Random.DefaultPrng.init(9);
    const p = try Problem.init(.q8_0, prng.random(), 20, 64, 20, 0);
    defer p.deinit();
    try checkAgainstRef(Emu, .q8_0, p, 64, 20, 20);
    std.debug.print("(expected: the unsigned-A emulation must mismatch the reference) ", .{});
    try testing.expectError(error.TestExpectedEqual, checkAgainstRef(EmuWith(false), .q8_0, p, 64, 20, 20));
}

test "amx emulation: tile loads zero what they do not fill, stores write only rows × colsb" {
    const cfg: TileConfig align(64) = config;
    var e = Emu.init(&cfg);
    var src: [16 * 64]u8 = undefined;
    for (&src, 0..) |*v, i| v.* = @truncate(i);
    e.load(tile_a0, &src, 64); // 16 rows × 32 bytes from a 64-byte stride
    for (0..16) |r| {
        for (0..32) |col| try testing.expectEqual(src[r * 64 + col], e.tiles[tile_a0][r][col]);
        for (32..64) |col| try testing.expectEqual(@as(u8, 0), e.tiles[tile_a0][r][col]);
    }
    e.load(tile_b0, &src, 64); // 8 rows
    for (8..16) |r| for (0..64) |col| try testing.expectEqual(@as(u8, 0), e.tiles[tile_b0][r][col]);
    var dst: [16 * 40]u8 = @splat(0xee);
    e.store(tile_a0, &dst, 40);
    for (0..16) |r| {
        try testing.expectEqualSlices(u8, src[r * 64 ..][0..32], dst[r * 40 ..][0..32]);
        for (32..40) |col| try testing.expectEqual(@as(u8, 0xee), dst[r * 40 + col]);
    }
}

test "amx hardware kernel equals the emulated one bit for bit (only where AMX is usable)" {
    if (comptime !hw_built) {
        std.debug.print("SKIP amx hardware test: this build has no AMX path (x86_64-v4 Linux only)\n", .{});
        return;
    }
    const s = status();
    if (s != .enabled) {
        std.debug.print("SKIP amx hardware test: AMX not usable here ({s})\n", .{@tagName(s)});
        return;
    }
    var prng = std.Random.DefaultPrng.init(55);
    const rng = prng.random();
    inline for (.{ GgmlType.q8_0, GgmlType.q4_0 }) |t| {
        for ([_]usize{ 1, 3, chunk_blocks + 3 }) |nb| {
            const k = 32 * nb;
            for ([_]usize{ 1, 16, 17, 32 }) |n| {
                const p = try Problem.init(t, rng, n, k, 64, 8);
                defer p.deinit();
                for ([_]usize{ 1, 16, 17, 33, 64 }) |m| {
                    try checkAgainstRef(Hw, t, p, k, m, n);
                }
            }
        }
    }
}

test "amx status: decided once, and consistent with the CPU" {
    const s = status();
    try testing.expectEqual(s, status());
    if (!hw_built) try testing.expect(s == .not_built or s == .disabled_by_env);
    if (hw_built and s == .enabled) {
        const sup = cpu.amxSupport();
        try testing.expect(sup.tile and sup.int8 and sup.os_state);
    }
}
