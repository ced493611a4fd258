//! Prefill matmul on Intel AMX (AMX-TILE + AMX-INT8) for every quantized weight type kiln reads:
//! Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (× ActQ8_0 activations) and Q4_K, Q5_K, Q6_K (× ActQ8_K), one
//! TDPBSSD (signed int8 × signed int8 → int32) per sub-block, the sub-block being the unit the
//! type's scalar reference sums exactly in integers: the 32-element block of the legacy types,
//! the 32-element sub-block of Q5_K, the 16-element sub-block of Q6_K. Q4_K is folded instead:
//! its 6-bit sub-block scales split into two 3-bit halves multiplied into two B tiles (q·sc_lo,
//! q·sc_hi ≤ 105), so TDPBSSDs of the full K = 64 sum a whole 256-element block's
//! Σ_j sc_j·sumi_j in the C tiles as lo + 8·hi, stored once per block (Format.folded).
//!
//! Per sub-block (K = 32, or 16 for Q6_K): an A tile holds 16 activation rows × K quant bytes
//! (loaded straight from the prepared activations, act_bytes apart), a B tile the sub-block of 16
//! weight rows in the VNNI layout AMX multiplies (K/4 rows of 64 bytes: B[k4][4n + i] =
//! W[n][4·k4 + i], the same 4-byte interleave as repack.zig's), and TDPBSSD leaves the 16 × 16
//! exact int32 sums in a C tile. The B tiles are unpacked per chunk of 1024 elements onto the
//! stack holding exactly the quants the reference multiplies, each fitting int8: Q8_0's q, Q4_0's
//! q − 8, Q5_0's q − 16, Q4_1/Q5_1/Q4_K/Q5_K's unsigned q (0..31), Q6_K's q − 32. The C tile is
//! stored and finished in the reference's own operations and order:
//!   legacy (quant_legacy.zig blockDotRef): acc += (d_w·d_a)·sumi [+ m_w·s_a for Q4_1/Q5_1];
//!   Q4_K/Q5_K (quant_k.zig kDotRefMin): per block, integers sumi = Σ_j sc_j·sumi_j and
//!     summ = Σ_j m_j·bsums_j, then acc += (d·d_a)·sumi − (dmin·d_a)·summ;
//!   Q6_K (Q6_K.vecDotRef): per block, sumi = Σ_g sc_g·sumi_g, then acc += (d·d_a)·sumi;
//! each f32 operation unfused, so every output equals the type's vecDotRef bit for bit (the
//! integer sums are exact; the reference's order of integer adds cannot change them).
//!
//! The tile instructions go through one small interface with two implementations: `Hw` (inline
//! asm) and `Emu` (plain arrays emulating the eight tile registers, the palette-1 configuration and
//! the documented semantics of each instruction, checking every shape rule the hardware faults
//! on). The kernel is written once over that interface and once over the types (`Format`: how a
//! type's block unpacks into B tiles and scales). Only the x86_64-v4 Linux library compiles `Hw`;
//! every level's tests run the kernel on `Emu` against the scalar references. On first use the
//! `Hw` kernel must equal the `Emu` kernel bit for bit on a fixed problem of every type
//! (`status`), else AMX stays off for the process. Written against the emulation on an AMD EPYC;
//! on an Intel Xeon (family 6 model 207, Emerald Rapids, a 16-vCPU VM) the `Hw` kernel passed the
//! self-check and every test here, bit for bit, and ran at 80–90 MAC/ns per thread for the
//! legacy types, 69–74 for Q4_K/Q5_K, 58–64 for Q6_K (n = 32, k = 2048, m = 64; 1 thread), a
//! fraction of the tile unit's own 511 MAC/ns (TDPBSSD alone at K = 32 there): a 2048² matmul of
//! 128 rows at 2 threads was only as fast as the AVX-512 VNNI path (docs/performance.md). A call's
//! fixed cost is large — ~22 µs for 32 rows × 2048 at m = 1, ~50 µs at m = 64 — and packing the B
//! tiles is a small part of it (2.8 µs on the AMD EPYC, 1.4 µs since vnniTile); where the rest
//! goes was measured on the 2-core Emerald Rapids machine of 2026-12-05 with perf (m = 64): the B
//! packing ~10–12 µs of fixed cost per call (m = 1 costs that alone), the activation tile loads
//! from L2 ~25% of samples, the per-block f32 epilogue ~30%. Since then matmul.zig hands the kernel
//! blocks of max_acts = 256 activation rows instead of 64, so each packing serves 4× the rows:
//! there, 2 threads, m = 512 (bench/matmul-hot.ts), Q4_0 11008×4096 328 → 546 GFLOP/s, Q8_0
//! 2048² 401 → 498. Since then `step` issues a sub-block's products before their stores, finishes
//! the previous sub-block while the tile unit computes, and prefetches the activation rows it
//! loads next (docs/optimization.md, "The AMX-INT8 kernel's order of work").
//!
//! BF16 weights take a second kernel on the same interface (bf16Kernel, AMX-BF16): TDPBF16PS
//! multiplies 16 activation rows × 32 bf16 (the bf16 halves of bf16.prepareRow's rows, loaded in
//! place) by 16 weight rows' 32 bf16 (packed per chunk into the pair-interleaved B layout, the
//! same transpose as vnniTile's), and the C tiles accumulate in f32 over the whole row: no
//! per-block scales, so no stores until the end. Its outputs are not bit-exact against an
//! emulation: the hardware's order of additions inside one TDPBF16PS matched neither the SDM's
//! pseudocode nor a plain sequential or pairwise order on Emerald Rapids, so the hardware kernel
//! is held to the error bound of any f32 summation (bf16WithinBound; tests and the first-use
//! self-check), while the emulated kernel (the SDM's order) equals its scalar reference bit for
//! bit. Measured there (1 thread, 32 rows × 2048, 64 activation rows): 390 GFLOP/s against 75
//! for the AVX512-BF16 weightTile; TinyLlama-shape BF16 prefill 62 → 173 tok/s at 2 threads.
//!
//! Tile registers (palette 1; K = the type's sub-block):
//!   tmm0, tmm1  B: weight rows [0, 16) and [16, 32)       K/4 rows × 64 bytes
//!   tmm2, tmm3  A: activation rows [0, 16) and [16, 32)  16 rows × K bytes
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
const kq = @import("quant_k.zig");

const GgmlType = quant.GgmlType;
const ActQ8_0 = legacy.ActQ8_0;
const ActQ8_K = kq.ActQ8_K;

/// The hardware path exists only in the x86_64-v4 library (AVX-512 for the f32 side) on Linux
/// (the only OS whose tile-state permission request kiln implements).
pub const hw_built = cpu.is_x86 and cpu.has_vnni512 and builtin.os.tag == .linux;

/// Weight rows per kernel call (two B tiles).
pub const max_rows = 32;
/// Activation rows a call takes at most: matmul.zig gives the AMX kernel blocks of this many, so
/// each chunk's B tiles, packed once, serve 256 rows (4× the 64 of the other prefill kernels;
/// the accumulators are 32 KB of stack).
pub const max_acts = 256;
/// Elements per weight row packed per pass (32 legacy blocks, 4 K-quant blocks): 32 rows × 1024
/// bytes = 32 KB of B tiles on the stack.
const chunk_elems = 1024;

/// The weight types the kernel takes (every quantized type of quant.GgmlType).
pub const types = [_]GgmlType{ .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_k, .q5_k, .q6_k };

pub fn supports(t: GgmlType) bool {
    return switch (t) {
        .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_k, .q5_k, .q6_k => true,
        .f32, .f16, .bf16 => false,
    };
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

/// The configuration for sub-blocks of `sub` bytes (32, or 16 for Q6_K): B tiles sub/4 rows × 64
/// bytes, A tiles 16 rows × sub bytes, C tiles 16 rows × 64 bytes.
fn configFor(comptime sub: usize) TileConfig {
    var c: TileConfig = .{ .palette = 1 };
    for (0..2) |g| {
        c.rows[tile_b0 + g] = sub / 4;
        c.colsb[tile_b0 + g] = 64;
        c.rows[tile_a0 + g] = 16;
        c.colsb[tile_a0 + g] = sub;
    }
    for (0..4) |g| {
        c.rows[tile_c0 + g] = 16;
        c.colsb[tile_c0 + g] = 64;
    }
    return c;
}

pub const config: TileConfig = configFor(32);

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
    /// TDPBF16PS c, a, b (AMX-BF16, Intel operand order): c[m][n] gains a[m][2k]·b[k][2n], then
    /// a[m][2k+1]·b[k][2n+1], for k in order, each accumulation rounded (see EmuWith.dpbf16ps).
    pub fn dpbf16ps(_: *Hw, comptime c: u3, comptime a: u3, comptime b: u3) void {
        asm volatile (std.fmt.comptimePrint("tdpbf16ps %%tmm{d}, %%tmm{d}, %%tmm{d}", .{ b, a, c }));
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

        /// TDPBF16PS as the SDM's pseudocode has it: for each dword k of A's row (a bf16 pair) in
        /// order, c[m][n] += a.bf16[2k]·b[k].bf16[2n], then += a.bf16[2k+1]·b[k].bf16[2n+1], each
        /// accumulation one round to nearest even (the products of two bf16 are exact in f32),
        /// denormal inputs as zero and denormal results flushed to zero (bf16Fma).
        pub fn dpbf16ps(s: *Self, comptime c: u3, comptime a: u3, comptime b: u3) void {
            comptime if (c == a or c == b or a == b) @compileError("TDPBF16PS operands must be distinct tiles (#UD)");
            const sc = s.shape(c);
            const sa = s.shape(a);
            const sb = s.shape(b);
            if (sa.rows != sc.rows or sa.colsb != 4 * sb.rows or sb.colsb != sc.colsb or sc.colsb % 4 != 0 or sa.colsb % 4 != 0)
                @panic("amx emu: TDPBF16PS shapes do not match");
            var out = std.mem.zeroes([palette1_rows][palette1_colsb]u8);
            for (0..sc.rows) |m| {
                for (0..sc.colsb / 4) |n| {
                    var acc: f32 = @bitCast(std.mem.readInt(u32, s.tiles[c][m][4 * n ..][0..4], .little));
                    for (0..sa.colsb / 4) |k| {
                        for (0..2) |i| {
                            const av = std.mem.readInt(u16, s.tiles[a][m][4 * k + 2 * i ..][0..2], .little);
                            const bv = std.mem.readInt(u16, s.tiles[b][k][4 * n + 2 * i ..][0..2], .little);
                            acc = bf16Fma(av, bv, acc);
                        }
                    }
                    std.mem.writeInt(u32, out[m][4 * n ..][0..4], @bitCast(acc), .little);
                }
            }
            s.tiles[c] = out;
        }

        pub fn release(s: *Self) void {
            s.cfg = .{};
        }
    };
}

/// One accumulation of TDPBF16PS: acc + a·b rounded once (RNE), bf16 inputs and acc denormals as
/// zero, a denormal result flushed to a zero of its sign.
pub fn bf16Fma(a: u16, b: u16, acc: f32) f32 {
    return flushDenormal(@mulAdd(f32, flushDenormal(widenBf16(a)), flushDenormal(widenBf16(b)), flushDenormal(acc)));
}
inline fn widenBf16(h: u16) f32 {
    return @bitCast(@as(u32, h) << 16);
}
inline fn flushDenormal(x: f32) f32 {
    const u: u32 = @bitCast(x);
    return if (u & 0x7f80_0000 == 0) @bitCast(u & 0x8000_0000) else x;
}

pub const Emu = EmuWith(true);

// ---------------------------------------------------------------------------------------------
// Weight formats, packing (VNNI B layout) and the kernel
// ---------------------------------------------------------------------------------------------

const V16f = @Vector(16, f32);
const V16i = @Vector(16, i32);

inline fn f16At(p: [*]const u8) f32 {
    return @floatCast(@as(f16, @bitCast(std.mem.readInt(u16, p[0..2], .little))));
}
inline fn f32At(p: [*]const u8) f32 {
    return @bitCast(std.mem.readInt(u32, p[0..4], .little));
}

/// The kernel as the tests must tell apart from the exact one: `.drop_offset` leaves out each
/// type's zero point or min (Q4_0's −8, Q5_0's −16, Q6_K's −32; the min term of Q4_1, Q5_1, Q4_K
/// and Q5_K). Q8_0 has none, so its variant is the exact kernel.
const Variant = enum { exact, drop_offset };

/// How the kernel reads weight type t: sub-blocks of `sub` elements (one TDPBSSD's K), each
/// row-block unpacked to the quants the reference multiplies and the scales it applies.
fn Format(comptime t: GgmlType, comptime variant: Variant) type {
    return struct {
        const W = quant.Traits(t);
        const ty = t;
        const kquant = W.block_size == 256;
        const Act = if (kquant) ActQ8_K else ActQ8_0;
        /// Where an activation block's quants start.
        const act_qs: usize = if (kquant) ActQ8_K.off_qs else 8;
        const block_elems = W.block_size;
        /// Q4_K's sub-block scales are folded into its B tiles (see `folded` below).
        const folded = t == .q4_k;
        /// One TDPBSSD's K: the sub-block the reference sums exactly, or 64 where folded.
        const sub: usize = if (folded) 64 else if (t == .q6_k) 16 else 32;
        const n_sub = block_elems / sub;
        /// The K-quants' sub-block scales (and mins) per block.
        const n_scales = if (kquant) block_elems / (if (t == .q6_k) 16 else 32) else 1;
        /// Elements packed per chunk: the folded tiles are twice as many bytes per element.
        const chunk = if (folded) chunk_elems / 2 else chunk_elems;
        const chunk_blocks = chunk / block_elems;
        const chunk_subs = chunk / sub;
        /// Bytes of one B tile: sub/4 rows (k4) of 16 columns × 4 bytes.
        const tile_bytes = 16 * sub;
        /// The reference adds a min term: legacy m_w·s_a, K-quants −(dmin·d_a)·Σ m_j·bsums_j.
        const has_min = variant == .exact and switch (t) {
            .q4_1, .q5_1, .q4_k, .q5_k => true,
            else => false,
        };
        /// Subtracted from the unsigned quants (the types whose offset is in the quants).
        const zero: i8 = if (variant == .drop_offset) 0 else switch (t) {
            .q4_0 => 8,
            .q5_0 => 16,
            .q6_k => 32,
            else => 0,
        };
        const config: TileConfig = configFor(sub);

        /// One weight row's block: the reference's quants and scales (d: the block's d, m: the
        /// legacy min or the K-quant dmin; sc/mn: the K-quant sub-block scales and mins).
        const Block = struct { q: [block_elems]i8, d: f32, m: f32, sc: [n_scales]i32, mn: [n_scales]i32 };

        fn unpack(blk: [*]const u8) Block {
            var b: Block = .{ .q = undefined, .d = 0, .m = 0, .sc = @splat(0), .mn = @splat(0) };
            var u: [block_elems]u8 = undefined;
            switch (t) {
                .q8_0 => {
                    b.d = f16At(blk);
                    u = blk[2..34].*;
                },
                .q4_0, .q4_1 => {
                    const o: usize = if (t == .q4_1) 4 else 2;
                    b.d = f16At(blk);
                    if (t == .q4_1) b.m = f16At(blk + 2);
                    const v: @Vector(16, u8) = blk[o..][0..16].*;
                    u = std.simd.join(v & @as(@Vector(16, u8), @splat(0x0f)), v >> @splat(4));
                },
                .q5_0, .q5_1 => {
                    const o: usize = if (t == .q5_1) 4 else 2;
                    b.d = f16At(blk);
                    if (t == .q5_1) b.m = f16At(blk + 2);
                    u = legacy.q5Quants(blk + o, blk + o + 4);
                },
                .q4_k, .q5_k => {
                    var fs: [16]f32 = undefined;
                    var fo: [16]f32 = undefined;
                    kq.unpackRowBlock(W, blk, &u, &fs, &fo);
                    b.d = f16At(blk);
                    b.m = f16At(blk + 2);
                    for (0..8) |j| {
                        const sm = kq.getScaleMinK4(j, blk + @offsetOf(W.Block, "scales"));
                        b.sc[j] = sm.sc;
                        b.mn[j] = sm.m;
                    }
                },
                .q6_k => {
                    var fs: [16]f32 = undefined;
                    var fo: [16]f32 = undefined;
                    kq.unpackRowBlock(W, blk, &u, &fs, &fo);
                    b.d = f16At(blk + @offsetOf(W.Block, "d"));
                    for (0..16) |j| b.sc[j] = @as(i8, @bitCast(blk[@offsetOf(W.Block, "scales") + j]));
                },
                else => @compileError("amx: unsupported weight type"),
            }
            // Every value fits int8: ≤ 31 unsigned, or q − zero ∈ [−32, 31] (Q8_0: its own i8).
            b.q = @as(@Vector(block_elems, i8), @bitCast(u)) - @as(@Vector(block_elems, i8), @splat(zero));
            return b;
        }

        /// One chunk of 32 weight rows: q[s][g] the B tile of the chunk's sub-block s (counted
        /// from its first) for rows [16g, 16g + 16): q[s][g][k4·64 + 4n + i] = quant 4·k4 + i of
        /// that sub-block of row 16g + n; per block and tile the scales as 16-lane vectors (0 for
        /// padding rows).
        /// Folded (Q4_K): a sub-block scale sc ∈ [0, 63] is sc_lo + 8·sc_hi (3 bits each), q holds
        /// q·sc_lo and q_hi holds q·sc_hi (each ≤ 15·7 = 105, an int8), so the two products
        /// sum a whole block's Σ_j sc_j·sumi_j as lo + 8·hi in exact integers, K = 64 at a time
        /// (a TDPBSSD's full width) and with one store per block instead of one per sub-block.
        const Packed = struct {
            q: [chunk_subs][2][tile_bytes]u8 align(64),
            q_hi: if (folded) [chunk_subs][2][tile_bytes]u8 else void align(64),
            d: [chunk_blocks][2]V16f,
            m: [chunk_blocks][2]V16f,
            sc: if (kquant) [chunk_blocks][2][n_scales]V16i else void,
            /// Each min twice, as both 16-bit halves of its lane (minPair): minSum's operand.
            mn: if (kquant) [chunk_blocks][2][n_scales]V16i else void,
        };

        /// The quants of sub-block s of activation block `blk` in the row at `row`.
        inline fn actQuants(row: [*]const u8, blk: usize, s: usize) [*]const u8 {
            return row + blk * Act.type_size + act_qs + s * sub;
        }
    };
}

/// Packs weight rows [0, n) (n ≤ 32; rows n..31 become zero quants with scales 0) of blocks
/// [b0, b0 + nb) into p: per block and group of 16 rows, each row unpacked into a row-major
/// staging tile per sub-block, then each staged tile turned into the VNNI layout in registers
/// (vnniTile) instead of 4-byte stores scattered one row at a time.
fn packB(comptime F: type, w: [*]const u8, row_bytes: usize, n: usize, b0: usize, nb: usize, p: *F.Packed) void {
    if (F.folded) return packBFolded(F, w, row_bytes, n, b0, nb, p);
    for (0..nb) |b| {
        for (0..2) |g| {
            var d: [16]f32 = @splat(0);
            var mv: [16]f32 = @splat(0);
            var sc: [F.n_scales][16]i32 = @splat(@splat(0));
            var mn: [F.n_scales][16]i32 = @splat(@splat(0));
            // rows[s]: the 16 rows' quants of sub-block s, row-major (16 × sub bytes).
            var rows: [F.n_sub][16 * F.sub]u8 align(64) = undefined;
            for (0..16) |r| {
                const j = 16 * g + r;
                if (j >= n) {
                    for (0..F.n_sub) |s| @memset(rows[s][r * F.sub ..][0..F.sub], 0);
                    continue;
                }
                const u = F.unpack(w + j * row_bytes + (b0 + b) * F.W.type_size);
                d[r] = u.d;
                mv[r] = u.m;
                for (0..F.n_scales) |s| {
                    sc[s][r] = u.sc[s];
                    mn[s][r] = u.mn[s];
                }
                const bytes: [F.block_elems]u8 = @bitCast(u.q);
                for (0..F.n_sub) |s| rows[s][r * F.sub ..][0..F.sub].* = bytes[s * F.sub ..][0..F.sub].*;
            }
            for (0..F.n_sub) |s| p.q[b * F.n_sub + s][g] = vnniTile(F.sub, &rows[s]);
            p.d[b][g] = d;
            p.m[b][g] = mv;
            if (F.kquant) {
                for (0..F.n_scales) |s| {
                    p.sc[b][g][s] = sc[s];
                    p.mn[b][g][s] = minPair(mn[s]);
                }
            }
        }
    }
}

/// packB for the folded Q4_K Format, straight from the block bytes: a K = 64 step of a block is
/// its 32 quant bytes (low nibbles elements 0..31, high ones 32..63, sub-blocks 2s and 2s + 1),
/// transposed once into the VNNI layout, where each tile row k4 holds 4 elements of one
/// sub-block for each of the 16 weight rows; then the row is multiplied by those rows' sc_lo
/// (q) and sc_hi (q_hi) as 16-bit words (each byte's product ≤ 105 stays in its byte).
fn packBFolded(comptime F: type, w: [*]const u8, row_bytes: usize, n: usize, b0: usize, nb: usize, p: *F.Packed) void {
    comptime std.debug.assert(F.ty == .q4_k and F.sub == 64 and F.n_scales == 8);
    const V32h = @Vector(32, u16);
    const words = comptime blk: {
        var m: [32]i32 = undefined;
        for (0..32) |i| m[i] = i / 2;
        break :blk m;
    };
    for (0..nb) |b| {
        for (0..2) |g| {
            var d: [16]f32 = @splat(0);
            var mv: [16]f32 = @splat(0);
            // Per row its 8 scales then its 8 mins (zero for padding rows), transposed below.
            var scm: [16][16]u8 = @splat(@splat(0));
            var rows: [F.n_sub][16 * 64]u8 align(64) = undefined;
            for (0..16) |r| {
                const j = 16 * g + r;
                if (j >= n) {
                    for (0..F.n_sub) |s| @memset(rows[s][r * 64 ..][0..64], 0);
                    continue;
                }
                const blk = w + j * row_bytes + (b0 + b) * F.W.type_size;
                d[r] = f16At(blk);
                mv[r] = f16At(blk + 2);
                const sm = kq.unpackScalesMins(blk + @offsetOf(F.W.Block, "scales"));
                scm[r] = std.simd.join(sm.sc, sm.m);
                const qs = blk + @offsetOf(F.W.Block, "qs");
                for (0..F.n_sub) |s| {
                    const v: @Vector(32, u8) = qs[32 * s ..][0..32].*;
                    rows[s][r * 64 ..][0..64].* = std.simd.join(v & @as(@Vector(32, u8), @splat(0x0f)), v >> @splat(4));
                }
            }
            // scm_t[x][r] = scm[r][x]: scales sj = x < 8, mins x − 8, each a vector over rows.
            const transpose = comptime blk: {
                var m: [256]i32 = undefined;
                for (0..16) |x| {
                    for (0..16) |r| m[16 * x + r] = @intCast(16 * r + x);
                }
                break :blk m;
            };
            const scm_t: [16]@Vector(16, u8) = @bitCast(@shuffle(u8, @as(@Vector(256, u8), @bitCast(scm)), undefined, transpose));
            var sc: [8]V16i = undefined;
            for (0..8) |sj| {
                sc[sj] = scm_t[sj];
                p.sc[b][g][sj] = sc[sj];
                p.mn[b][g][sj] = minPair(scm_t[8 + sj]);
            }
            for (0..F.n_sub) |s| {
                const t: [16][64]u8 = @bitCast(vnniTile(64, &rows[s]));
                const si = b * F.n_sub + s;
                // Tile rows 0..7: sub-block 2s; rows 8..15: sub-block 2s + 1.
                inline for (0..2) |h| {
                    const scv: @Vector(16, u16) = @intCast(@as(V16i, sc[2 * s + h]));
                    const lo: V32h = @shuffle(u16, scv & @as(@Vector(16, u16), @splat(7)), undefined, words);
                    const hi: V32h = @shuffle(u16, scv >> @splat(3), undefined, words);
                    inline for (8 * h..8 * h + 8) |k4| {
                        const row: V32h = @bitCast(t[k4]);
                        p.q[si][g][k4 * 64 ..][0..64].* = @bitCast(row *% lo);
                        p.q_hi[si][g][k4 * 64 ..][0..64].* = @bitCast(row *% hi);
                    }
                }
            }
            p.d[b][g] = d;
            p.m[b][g] = mv;
        }
    }
}

/// A 16 × 16 matrix of u32 transposed (out[k][n] = v[n][k]) by four rounds of zips: out[2i] and
/// out[2i + 1] are the low and high interleaves of v[i] and v[i + 8], one two-source permute each.
inline fn transpose16(v0: [16]@Vector(16, u32)) [16]@Vector(16, u32) {
    const zips = comptime blk: {
        var lo: [16]i32 = undefined;
        var hi: [16]i32 = undefined;
        for (0..8) |j| {
            lo[2 * j] = @intCast(j);
            lo[2 * j + 1] = ~@as(i32, @intCast(j));
            hi[2 * j] = @intCast(j + 8);
            hi[2 * j + 1] = ~@as(i32, @intCast(j + 8));
        }
        break :blk .{ lo, hi };
    };
    var v = v0;
    inline for (0..4) |_| {
        var out: [16]@Vector(16, u32) = undefined;
        inline for (0..8) |i| {
            out[2 * i] = @shuffle(u32, v[i], v[i + 8], zips[0]);
            out[2 * i + 1] = @shuffle(u32, v[i], v[i + 8], zips[1]);
        }
        v = out;
    }
    return v;
}

/// 16 rows × sub bytes, row-major → the B tile TDPBSSD multiplies: sub/4 rows of 64 bytes,
/// B[k4][4n + i] = rows[n][4·k4 + i] (a transpose of 4-byte groups, one shuffle of the whole tile).
inline fn vnniTile(comptime sub: usize, rows: *const [16 * sub]u8) [16 * sub]u8 {
    const k4s = sub / 4;
    if (k4s == 16) return @bitCast(transpose16(@bitCast(rows.*)));
    const src: @Vector(16 * k4s, u32) = @bitCast(rows.*);
    const mask = comptime blk: {
        @setEvalBranchQuota(4 * 16 * k4s + 1000);
        var m: [16 * k4s]i32 = undefined;
        for (0..k4s) |k4| {
            for (0..16) |nn| m[k4 * 16 + nn] = @intCast(nn * k4s + k4);
        }
        break :blk m;
    };
    return @bitCast(@shuffle(u32, src, undefined, mask));
}

/// y[i·y_stride + j] = the type's vecDotRef of weight row j < n ≤ 32 and activation row
/// i < m ≤ 64, the tiles through `Tiles`.
pub fn kernel(comptime Tiles: type, comptime t: GgmlType, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize, ahead: []const u8) void {
    kernelFor(Tiles, Format(t, .exact), .rows, w, row_bytes, k, a, act_bytes, m, n, y, y_stride, ahead);
}

/// Where the kernel reads weight rows: in place (rows of the file's blocks, `row_bytes` apart), or
/// from a copy in packed.zig's 16-row layout (`w` the first 16-row group, the next group
/// `row_bytes` further: the group stride), whose blocks are the B tiles already (packBPacked).
pub const Source = enum { rows, packed16 };

/// Types the kernel reads from packed.zig's layout.
pub fn supportsPacked(t: GgmlType) bool {
    return t == .q8_0 or t == .q4_0 or t == .q4_1;
}

/// Fills p from packed.zig's layout (n ≤ 32 a multiple of 16; `group_stride` bytes between the
/// two 16-row groups): per block and group, the 16 rows × 4-byte words of the copy are the B
/// tile's rows already (row g of the tile = the copy's vector g), so a tile is 8 vector copies
/// that undo the copy's storage: Q8_0 back from +128-biased to signed, Q4_0/Q4_1's nibbles split
/// (low ones: elements 0..15 = tile rows 0..3, high ones: 16..31 = rows 4..7), Q4_0's less its
/// zero point 8, exactly Format.unpack's quants. The 16 f16 scales (and Q4_1's 16 mins) follow.
fn packBPacked(comptime F: type, w: [*]const u8, group_stride: usize, n: usize, b0: usize, nb: usize, p: *F.Packed) void {
    comptime std.debug.assert(F.n_sub == 1 and F.tile_bytes == 512);
    const V = @Vector(64, u8);
    const block_bytes = 16 * F.W.type_size;
    const q_vectors = if (F.ty == .q8_0) 8 else 4;
    const zero: V = @splat(@as(u8, @bitCast(F.zero)));
    std.debug.assert(n % 16 == 0);
    for (0..nb) |b| {
        for (0..n / 16) |g| {
            const src = w + g * group_stride + (b0 + b) * block_bytes;
            const q = &p.q[b][g];
            if (F.ty == .q8_0) {
                inline for (0..8) |r| q[r * 64 ..][0..64].* = @as(V, src[r * 64 ..][0..64].*) ^ @as(V, @splat(0x80));
            } else {
                inline for (0..4) |r| {
                    const v: V = src[r * 64 ..][0..64].*;
                    q[r * 64 ..][0..64].* = (v & @as(V, @splat(0x0f))) -% zero;
                    q[(r + 4) * 64 ..][0..64].* = (v >> @splat(4)) -% zero;
                }
            }
            const dh: @Vector(16, f16) = @bitCast(src[q_vectors * 64 ..][0..32].*);
            p.d[b][g] = @floatCast(dh);
            if (F.has_min) {
                const mh: @Vector(16, f16) = @bitCast(src[q_vectors * 64 + 32 ..][0..32].*);
                p.m[b][g] = @floatCast(mh);
            }
        }
    }
}

/// kernel() over weights in packed.zig's layout (Source.packed16): the same tiles and the same
/// per-block epilogue, so the same bits as the kernel on the rows the copy was packed from.
pub fn kernelPacked(comptime Tiles: type, comptime t: GgmlType, groups: [*]const u8, group_stride: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize, ahead: []const u8) void {
    kernelFor(Tiles, Format(t, .exact), .packed16, groups, group_stride, k, a, act_bytes, m, n, y, y_stride, ahead);
}

fn kernelFor(comptime Tiles: type, comptime F: type, comptime src: Source, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize, ahead: []const u8) void {
    std.debug.assert(k % F.block_elems == 0 and m >= 1 and m <= max_acts and n >= 1 and n <= max_rows);
    const cfg_aligned: TileConfig align(64) = F.config;
    var tiles = Tiles.init(&cfg_aligned);
    defer tiles.release();

    const nb_total = k / F.block_elems;
    const n_ga = (m + 15) / 16;
    const n_gb: usize = if (n > 16) 2 else 1;
    const last_rows = m - 16 * (n_ga - 1); // rows of the last activation group (1..16)

    var acc: [max_acts][2]V16f = undefined;
    for (0..m) |i| acc[i] = .{ @splat(0), @splat(0) };
    var p: F.Packed = undefined;
    // The last activation group when partial, zero-padded to 16 rows: tileloadd reads 16 rows.
    var stage: [F.chunk_subs][16 * F.sub]u8 align(64) = undefined;

    var pf = Ahead.init(ahead, ((n_ga + 1) / 2) * nb_total * F.n_sub * (if (F.folded) n_gb else 1));
    var b0: usize = 0;
    while (b0 < nb_total) : (b0 += F.chunk_blocks) {
        const nb = @min(F.chunk_blocks, nb_total - b0);
        switch (src) {
            .rows => packB(F, w, row_bytes, n, b0, nb, &p),
            .packed16 => packBPacked(F, w, row_bytes, n, b0, nb, &p),
        }
        if (last_rows < 16) {
            const g = n_ga - 1;
            for (0..nb * F.n_sub) |si| {
                @memset(&stage[si], 0);
                for (0..last_rows) |r| {
                    stage[si][r * F.sub ..][0..F.sub].* = F.actQuants(a + (16 * g + r) * act_bytes, b0 + si / F.n_sub, si % F.n_sub)[0..F.sub].*;
                }
            }
        }
        var ga: usize = 0;
        while (ga < n_ga) : (ga += 2) {
            const pa = @min(2, n_ga - ga);
            const ctx: StepCtx(F) = .{ .a = a, .act_bytes = act_bytes, .ga = ga, .n_ga = n_ga, .last_rows = last_rows, .b0 = b0, .nb = nb, .stage = &stage, .p = &p, .pf = &pf };
            if (F.folded) {
                for (0..n_gb) |gb| switch (pa) {
                    1 => stepFolded(Tiles, F, 1, &tiles, ctx, gb, &acc),
                    2 => stepFolded(Tiles, F, 2, &tiles, ctx, gb, &acc),
                    else => unreachable,
                };
                continue;
            }
            switch (pa) {
                1 => if (n_gb == 1) step(Tiles, F, 1, 1, &tiles, ctx, &acc) else step(Tiles, F, 1, 2, &tiles, ctx, &acc),
                2 => if (n_gb == 1) step(Tiles, F, 2, 1, &tiles, ctx, &acc) else step(Tiles, F, 2, 2, &tiles, ctx, &acc),
                else => unreachable,
            }
        }
    }
    // Whole tiles stored as vectors: a memcpy call per 16 outputs was ~15% of a K = 576 call.
    for (0..m) |i| {
        const row = y + i * y_stride;
        for (0..n_gb) |g| {
            const cnt = @min(16, n - 16 * g);
            if (cnt == 16) {
                row[16 * g ..][0..16].* = acc[i][g];
            } else {
                const v: [16]f32 = acc[i][g];
                for (0..cnt) |j| row[16 * g + j] = v[j];
            }
        }
    }
}

fn StepCtx(comptime F: type) type {
    return struct {
        a: [*]const u8,
        act_bytes: usize,
        ga: usize, // first activation group of this step
        n_ga: usize,
        last_rows: usize,
        b0: usize,
        nb: usize,
        stage: *const [F.chunk_subs][16 * F.sub]u8,
        p: *const F.Packed,
        pf: *Ahead,
    };
}

/// Prefetches bytes into L2 at once (a task's first weights, which no earlier call fetched ahead).
pub fn prefetchWeights(bytes: []const u8) void {
    var p = bytes.ptr;
    while (@intFromPtr(p) < @intFromPtr(bytes.ptr + bytes.len)) : (p += 64) @prefetch(p, .{ .locality = 2 });
}

/// The bytes a call prefetches into L2 while it computes (the weights the caller's next call
/// packs), spread evenly over the call's sub-block steps.
const Ahead = struct {
    p: [*]const u8,
    end: [*]const u8,
    per_step: usize,

    fn init(bytes: []const u8, steps: usize) Ahead {
        const lines = std.math.divCeil(usize, bytes.len, 64) catch unreachable;
        return .{ .p = bytes.ptr, .end = bytes.ptr + bytes.len, .per_step = std.math.divCeil(usize, lines, @max(1, steps)) catch unreachable };
    }

    inline fn step(self: *Ahead) void {
        var i: usize = 0;
        while (i < self.per_step and @intFromPtr(self.p) < @intFromPtr(self.end)) : (i += 1) {
            @prefetch(self.p, .{ .locality = 2 });
            self.p += 64;
        }
    }
};

/// PA activation groups × PB weight tiles over the chunk's blocks: per sub-block, load the tiles,
/// TDPBSSD into zeroed C tiles, store them, then finish the sub-block in the reference's order
/// (legacy: the f32 scale-accumulate per block; K-quants: the integer scale sums per sub-block,
/// the f32 work once per block, after its last sub-block).
inline fn step(comptime Tiles: type, comptime F: type, comptime PA: usize, comptime PB: usize, tiles: *Tiles, c: StepCtx(F), acc: *[max_acts][2]V16f) void {
    // Two sets of stored C tiles: sub-block si's tiles are computed and stored while the vector
    // units still finish si − 1 from the other set, so the tile unit and the epilogue overlap
    // instead of the epilogue's loads waiting on the stores just issued.
    var cbuf: [2][PA * PB][16][16]i32 align(64) = undefined;
    // K-quants: Σ_sub sc·sumi of the current block per activation row and weight tile.
    var isum: [PA * 16][PB]V16i = undefined;
    const n_si = c.nb * F.n_sub;
    for (0..n_si) |si| {
        loadA(Tiles, F, PA, tiles, c, si, n_si);
        inline for (0..PB) |gb| tiles.load(tile_b0 + gb, &c.p.q[si][gb], 64);
        // All products, then all stores: a store right after its product waits for that
        // product's latency, and the next product queued behind it.
        inline for (0..PA) |ga| {
            inline for (0..PB) |gb| tiles.zero(tileC(ga, gb));
        }
        inline for (0..PA) |ga| {
            inline for (0..PB) |gb| tiles.dpbssd(tileC(ga, gb), tile_a0 + ga, tile_b0 + gb);
        }
        inline for (0..PA) |ga| {
            inline for (0..PB) |gb| tiles.store(tileC(ga, gb), @ptrCast(&cbuf[si & 1][ga * PB + gb]), 64);
        }
        if (si > 0) finishSub(F, PA, PB, c, &cbuf[(si - 1) & 1], si - 1, &isum, acc);
    }
    finishSub(F, PA, PB, c, &cbuf[(n_si - 1) & 1], n_si - 1, &isum, acc);
}

/// step() for a folded Format (Q4_K): PA activation groups × weight group gb, both halves of the
/// scale. Per block, the n_sub K = 64 steps accumulate in the C tiles (C(ga, 0) the sc_lo
/// products, C(ga, 1) the sc_hi ones); the tiles are stored once per block, and the block is
/// finished while the next one's products run.
inline fn stepFolded(comptime Tiles: type, comptime F: type, comptime PA: usize, tiles: *Tiles, c: StepCtx(F), gb: usize, acc: *[max_acts][2]V16f) void {
    var cbuf: [2][PA * 2][16][16]i32 align(64) = undefined;
    const n_si = c.nb * F.n_sub;
    for (0..c.nb) |b| {
        inline for (0..PA) |ga| {
            inline for (0..2) |v| tiles.zero(tileC(ga, v));
        }
        for (0..F.n_sub) |s| {
            const si = b * F.n_sub + s;
            loadA(Tiles, F, PA, tiles, c, si, n_si);
            tiles.load(tile_b0, &c.p.q[si][gb], 64);
            tiles.load(tile_b0 + 1, &c.p.q_hi[si][gb], 64);
            inline for (0..PA) |ga| {
                inline for (0..2) |v| tiles.dpbssd(tileC(ga, v), tile_a0 + ga, tile_b0 + v);
            }
            // The previous block's epilogue, behind this block's first products.
            if (s == 0 and b > 0) finishFolded(F, PA, c, &cbuf[(b - 1) & 1], b - 1, gb, acc);
        }
        inline for (0..PA) |ga| {
            inline for (0..2) |v| tiles.store(tileC(ga, v), @ptrCast(&cbuf[b & 1][2 * ga + v]), 64);
        }
    }
    finishFolded(F, PA, c, &cbuf[(c.nb - 1) & 1], c.nb - 1, gb, acc);
}

/// Block b of the chunk for weight group gb from its stored lo/hi tiles, in kDotRefMin's
/// operations: sumi = lo + 8·hi = Σ_j sc_j·sumi_j (exact), summ = Σ_j m_j·bsums_j, then
/// acc += (d·d_a)·sumi − (dmin·d_a)·summ.
inline fn finishFolded(comptime F: type, comptime PA: usize, c: StepCtx(F), cbuf: *const [PA * 2][16][16]i32, b: usize, gb: usize, acc: *[max_acts][2]V16f) void {
    inline for (0..PA) |ga| {
        const g = c.ga + ga;
        const rows = if (g == c.n_ga - 1) c.last_rows else 16;
        for (0..rows) |r| {
            const i = 16 * g + r;
            const lo: V16i = (&cbuf[2 * ga][r]).*;
            const hi: V16i = (&cbuf[2 * ga + 1][r]).*;
            const sumi = lo +% (hi << @splat(3));
            const ab = c.a + i * c.act_bytes + (c.b0 + b) * ActQ8_K.type_size;
            const da: V16f = @splat(f32At(ab + ActQ8_K.off_d));
            var term = (c.p.d[b][gb] * da) * @as(V16f, @floatFromInt(sumi));
            if (F.has_min) term = term - (c.p.m[b][gb] * da) * @as(V16f, @floatFromInt(minSum(F, c.p, ab, b, gb)));
            acc[i][gb] = acc[i][gb] + term;
        }
    }
}

/// A K-quant sub-block min m ∈ [0, 63] in both 16-bit halves of its lane (m·0x10001), as
/// Packed.mn holds it: one VPDPWSSD then multiplies it by both 16-element bsums of the
/// sub-block at once.
inline fn minPair(m: V16i) V16i {
    return m | (m << @splat(16));
}

extern fn @"llvm.x86.avx512.vpdpwssd.512"(acc: V16i, a: V16i, b: V16i) V16i;

/// Σ_j m_j·bsums_j of activation block `ab` (its 16-element bsums paired into the 32-element
/// sub-blocks' sums) and weight group gb's mins, exact in i32 (|m·bsum| ≤ 63·32·127). With
/// AVX-512 VNNI (every build with hardware tiles) one VPDPWSSD per sub-block: the lane's two
/// 16-bit copies of m_j times the two i16 bsums of sub-block j (one 4-byte broadcast), summed
/// with the lane, m_j·bsum_2j + m_j·bsum_2j+1 (perf put the plain form, a 32-bit multiply and
/// two scalar bsum reads per sub-block, at ~16% of Q4_K's AMX matmul samples). Elsewhere (the
/// emulated kernel's other builds) the same sums in plain vectors.
inline fn minSum(comptime F: type, p: *const F.Packed, ab: [*]const u8, b: usize, gb: usize) V16i {
    var summ: V16i = @splat(0);
    inline for (0..F.n_scales) |j| {
        const bs = ab + ActQ8_K.off_bsums + 4 * j;
        if (comptime cpu.is_x86 and cpu.has_vnni512) {
            summ = @"llvm.x86.avx512.vpdpwssd.512"(summ, p.mn[b][gb][j], @splat(std.mem.readInt(i32, bs[0..4], .little)));
        } else {
            const bsum = @as(i32, std.mem.readInt(i16, bs[0..2], .little)) + std.mem.readInt(i16, bs[2..4], .little);
            summ +%= (p.mn[b][gb][j] & @as(V16i, @splat(0xffff))) *% @as(V16i, @splat(bsum));
        }
    }
    return summ;
}

/// Sub-block si's A tiles for the step's PA activation groups (a partial last group from the
/// zero-padded stage), after spreading this step's share of the weight prefetch and prefetching
/// the activation rows a_ahead sub-blocks on.
inline fn loadA(comptime Tiles: type, comptime F: type, comptime PA: usize, tiles: *Tiles, c: StepCtx(F), si: usize, n_si: usize) void {
    c.pf.step();
    if (si + a_ahead < n_si) prefetchActs(F, PA, c, si + a_ahead);
    inline for (0..PA) |ga| {
        const g = c.ga + ga;
        if (g == c.n_ga - 1 and c.last_rows < 16) {
            tiles.load(tile_a0 + ga, &c.stage[si], F.sub);
        } else {
            tiles.load(tile_a0 + ga, F.actQuants(c.a + 16 * g * c.act_bytes, c.b0 + si / F.n_sub, si % F.n_sub), c.act_bytes);
        }
    }
}

/// How many sub-blocks ahead step() prefetches the activation rows its A tiles load.
const a_ahead = 2;

/// Prefetches into L1 the activation quants of sub-block si of the chunk for the step's rows
/// (the tile loads of 16 rows act_bytes apart otherwise wait on L2 one line at a time).
inline fn prefetchActs(comptime F: type, comptime PA: usize, c: StepCtx(F), si: usize) void {
    // The step's PA groups, less a partial last group (its tile loads from the stage).
    const rows = 16 * PA - (if (c.ga + PA == c.n_ga and c.last_rows < 16) @as(usize, 16) else 0);
    var p = F.actQuants(c.a + 16 * c.ga * c.act_bytes, c.b0 + si / F.n_sub, si % F.n_sub);
    for (0..rows) |_| {
        @prefetch(p, .{ .locality = 3 });
        @prefetch(p + F.sub - 1, .{ .locality = 3 });
        p += c.act_bytes;
    }
}

/// Sub-block fi of the chunk (its C tiles in cbuf) into the accumulators, in the reference's order.
/// cbuf is read through a pointer: indexing the stored tiles as a local array value
/// (`cbuf[t][r]` on the array itself, after the asm's memory clobbers) made LLVM copy the whole
/// 2 KB array for every row read — two memcpy calls per row, which held the kernel to 9 MAC/ns
/// on an Emerald Rapids Xeon; read in place it ran at 80–90 (zig-kernels/amx_probe.zig).
inline fn finishSub(comptime F: type, comptime PA: usize, comptime PB: usize, c: StepCtx(F), cbuf: *const [PA * PB][16][16]i32, fi: usize, isum: *[PA * 16][PB]V16i, acc: *[max_acts][2]V16f) void {
    const b = fi / F.n_sub;
    const s = fi % F.n_sub;
    inline for (0..PA) |ga| {
        const g = c.ga + ga;
        const rows = if (g == c.n_ga - 1) c.last_rows else 16;
        for (0..rows) |r| {
            inline for (0..PB) |gb| {
                const sumi: V16i = (&cbuf[ga * PB + gb][r]).*; // through a pointer: no copy of cbuf
                if (F.kquant) {
                    // sumi += sc·s: exact (the reference's i32 sums never overflow).
                    const v = c.p.sc[b][gb][s] *% sumi;
                    isum[16 * ga + r][gb] = if (s == 0) v else isum[16 * ga + r][gb] +% v;
                } else {
                    const i = 16 * g + r;
                    const ab = c.a + i * c.act_bytes + (c.b0 + b) * ActQ8_0.type_size;
                    // blockDotRef: sum += (d_w·d_a)·sumi + m_w·s_a, unfused. Without a min
                    // its m is 0 and the + 0·s_a never changes a finite sum, so it is left out.
                    const dd = c.p.d[b][gb] * @as(V16f, @splat(f32At(ab)));
                    const prod = dd * @as(V16f, @floatFromInt(sumi));
                    const term = if (F.has_min) prod + c.p.m[b][gb] * @as(V16f, @splat(f32At(ab + 4))) else prod;
                    acc[i][gb] = acc[i][gb] + term;
                }
            }
        }
    }
    if (F.kquant and s == F.n_sub - 1) {
        inline for (0..PA) |ga| {
            const g = c.ga + ga;
            const rows = if (g == c.n_ga - 1) c.last_rows else 16;
            for (0..rows) |r| {
                const i = 16 * g + r;
                const ab = c.a + i * c.act_bytes + (c.b0 + b) * ActQ8_K.type_size;
                const da: V16f = @splat(f32At(ab + ActQ8_K.off_d));
                inline for (0..PB) |gb| {
                    // kDotRefMin: sum += (d·d_a)·sumi − (dmin·d_a)·summ; Q6_K: sum += (d·d_a)·sumi.
                    var term = (c.p.d[b][gb] * da) * @as(V16f, @floatFromInt(isum[16 * ga + r][gb]));
                    if (F.has_min) term = term - (c.p.m[b][gb] * da) * @as(V16f, @floatFromInt(minSum(F, c.p, ab, b, gb)));
                    acc[i][gb] = acc[i][gb] + term;
                }
            }
        }
    }
}

/// The kernel on the hardware tiles (only where hw_built and status() == .enabled). `ahead`:
/// bytes to prefetch into L2 while it computes, spread over its steps: the weights the caller's
/// next call packs (matmul.zig), whose cold reads otherwise stall packB (kernels reading the
/// file's rows have no other prefetch).
pub fn matmulRows(t: GgmlType, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize, ahead: []const u8) void {
    if (builtin.is_test and test_emulate) return matmulRowsEmu(t, w, row_bytes, k, a, act_bytes, m, n, y, y_stride, ahead);
    if (comptime !hw_built) unreachable;
    switch (t) {
        inline .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_k, .q5_k, .q6_k => |ct| kernel(Hw, ct, w, row_bytes, k, a, act_bytes, m, n, y, y_stride, ahead),
        else => unreachable,
    }
}

/// kernelPacked on the hardware tiles (emulated under test_emulate): n ≤ 32 rows, a multiple of
/// 16, of a packed.zig copy of a supportsPacked type, from the group at `groups`.
pub fn matmulPackedRows(t: GgmlType, groups: [*]const u8, group_stride: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize, ahead: []const u8) void {
    if (builtin.is_test and test_emulate) return matmulPackedRowsEmu(t, groups, group_stride, k, a, act_bytes, m, n, y, y_stride, ahead);
    if (comptime !hw_built) unreachable;
    switch (t) {
        inline .q8_0, .q4_0, .q4_1 => |ct| kernelPacked(Hw, ct, groups, group_stride, k, a, act_bytes, m, n, y, y_stride, ahead),
        else => unreachable,
    }
}

/// matmulPackedRows on the emulated tiles.
pub fn matmulPackedRowsEmu(t: GgmlType, groups: [*]const u8, group_stride: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize, ahead: []const u8) void {
    switch (t) {
        inline .q8_0, .q4_0, .q4_1 => |ct| kernelPacked(Emu, ct, groups, group_stride, k, a, act_bytes, m, n, y, y_stride, ahead),
        else => unreachable,
    }
}

/// The same kernel on the emulated tiles (tests, the self-check).
pub fn matmulRowsEmu(t: GgmlType, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize, ahead: []const u8) void {
    switch (t) {
        inline .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_k, .q5_k, .q6_k => |ct| kernel(Emu, ct, w, row_bytes, k, a, act_bytes, m, n, y, y_stride, ahead),
        else => unreachable,
    }
}

// ---------------------------------------------------------------------------------------------
// BF16 weights on AMX-BF16 (TDPBF16PS)
// ---------------------------------------------------------------------------------------------

/// BF16 elements per TDPBF16PS (K): 32 pairs of an A row's 64 bytes.
pub const bf16_step = 32;
/// Activation rows a BF16 call takes at most: four groups, one C tile each (matmul.zig's
/// activation block of 64).
pub const bf16_max_acts = 64;
/// Elements of a weight group's rows packed per pass: 16 rows × 512 × 2 bytes = 16 KB of B tiles.
const bf16_chunk = 512;
const bf16_chunk_steps = bf16_chunk / bf16_step;

/// Tile registers of the BF16 kernel (palette 1): tmm0 B (16 pairs × 16 weight rows, 64 bytes a
/// row), tmm2 and tmm3 A (16 activation rows × 32 bf16, taken in turn), tmm4..tmm7 C (16 × 16 f32,
/// one per activation group).
pub const bf16_config: TileConfig = blk: {
    var c: TileConfig = .{ .palette = 1 };
    c.rows[tile_b0] = 16;
    c.colsb[tile_b0] = 64;
    for (0..2) |g| {
        c.rows[tile_a0 + g] = 16;
        c.colsb[tile_a0 + g] = 64;
    }
    for (0..4) |g| {
        c.rows[tile_c0 + g] = 16;
        c.colsb[tile_c0 + g] = 64;
    }
    break :blk c;
};

/// y[i·y_stride + j] = Σ_e w[j][e]·x[i][e] for weight rows j < n ≤ 32 (bf16, row_bytes apart) and
/// activation rows i < m ≤ bf16_max_acts, x[i] the bf16 half of prepared row i (bf16.prepareRow: at
/// a + i·act_bytes + 4k), each sum in TDPBF16PS's order: element by element from the first,
/// every accumulation rounded (bf16DotRef), k padded with zeros to a multiple of 32. Per weight
/// group of 16 rows the four C tiles (one per activation group) stay in the tile registers over
/// the whole of k; each chunk of the group's rows is packed once into B tiles (vnniTile: the
/// bf16 pairs are the 4-byte groups of the int8 kernel's layout). Activation tiles load straight
/// from the prepared rows, except a last partial group or step, staged zero-padded.
pub fn bf16Kernel(comptime Tiles: type, w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize) void {
    std.debug.assert(k >= 1 and m >= 1 and m <= bf16_max_acts and n >= 1 and n <= max_rows);
    const cfg_aligned: TileConfig align(64) = bf16_config;
    var tiles = Tiles.init(&cfg_aligned);
    defer tiles.release();
    const xb = a + 4 * k;
    const n_ga = (m + 15) / 16;
    const last_rows = m - 16 * (n_ga - 1);
    const steps = (k + bf16_step - 1) / bf16_step;
    var bt: [bf16_chunk_steps][16 * 64]u8 align(64) = undefined;
    var gb: usize = 0;
    while (gb * 16 < n) : (gb += 1) {
        const rows_g = @min(16, n - 16 * gb);
        switch (n_ga) {
            inline 1...4 => |ng| {
                inline for (0..ng) |ga| tiles.zero(tileC(ga / 2, ga % 2));
                var s0: usize = 0;
                while (s0 < steps) : (s0 += bf16_chunk_steps) {
                    const ns = @min(bf16_chunk_steps, steps - s0);
                    for (0..ns) |s| bt[s] = bf16PackStep(w + 16 * gb * row_bytes, row_bytes, rows_g, k, (s0 + s) * bf16_step);
                    for (0..ns) |s| {
                        const e0 = (s0 + s) * bf16_step;
                        const whole_step = e0 + bf16_step <= k;
                        tiles.load(tile_b0, &bt[s], 64);
                        inline for (0..ng) |ga| {
                            const rows: usize = if (ga == ng - 1) last_rows else 16;
                            const first: usize = 16 * ga;
                            const src = xb + first * act_bytes + 2 * e0;
                            if (rows == 16 and whole_step) {
                                tiles.load(tile_a0 + ga % 2, src, act_bytes);
                            } else {
                                var stage: [16 * 64]u8 align(64) = @splat(0);
                                const len: usize = 2 * @as(usize, @min(bf16_step, k - e0));
                                for (0..rows) |r| @memcpy(stage[r * 64 ..][0..len], (src + r * act_bytes)[0..len]);
                                tiles.load(tile_a0 + ga % 2, &stage, 64);
                            }
                            tiles.dpbf16ps(tileC(ga / 2, ga % 2), tile_a0 + ga % 2, tile_b0);
                        }
                    }
                }
                inline for (0..ng) |ga| {
                    var cout: [16][16]f32 align(64) = undefined;
                    tiles.store(tileC(ga / 2, ga % 2), @ptrCast(&cout), 64);
                    const rows: usize = if (ga == ng - 1) last_rows else 16;
                    const first: usize = 16 * ga;
                    for (0..rows) |r| {
                        const row = y + (first + r) * y_stride + 16 * gb;
                        @memcpy(row[0..rows_g], cout[r][0..rows_g]);
                    }
                }
            },
            else => unreachable,
        }
    }
}

/// The B tile of step e0 (elements [e0, e0 + 32)) for `rows` ≤ 16 weight rows: rows and elements
/// beyond the matrix are zeros.
inline fn bf16PackStep(w: [*]const u8, row_bytes: usize, rows: usize, k: usize, e0: usize) [16 * 64]u8 {
    var rm: [16 * 64]u8 align(64) = undefined;
    const len: usize = 2 * @as(usize, @min(bf16_step, k - e0));
    for (0..16) |r| {
        if (r < rows and len == 64) {
            rm[r * 64 ..][0..64].* = (w + r * row_bytes + 2 * e0)[0..64].*;
        } else {
            @memset(rm[r * 64 ..][0..64], 0);
            if (r < rows) @memcpy(rm[r * 64 ..][0..len], (w + r * row_bytes + 2 * e0)[0..len]);
        }
    }
    return vnniTile(64, &rm);
}

/// bf16Kernel's sum for one pair of rows, scalar: acc = bf16Fma(w[e], x[e], acc) for e from 0 over
/// k padded with zeros to a multiple of bf16_step (w, x: bf16 values).
pub fn bf16DotRef(k: usize, w: [*]const u8, x: [*]const u8) f32 {
    var acc: f32 = 0;
    const padded = (k + bf16_step - 1) / bf16_step * bf16_step;
    for (0..padded) |e| {
        const wv: u16 = if (e < k) std.mem.readInt(u16, w[2 * e ..][0..2], .little) else 0;
        const xv: u16 = if (e < k) std.mem.readInt(u16, x[2 * e ..][0..2], .little) else 0;
        acc = bf16Fma(wv, xv, acc);
    }
    return acc;
}

/// The BF16 kernel on the hardware tiles (only where bf16Enabled()).
pub fn bf16Rows(w: [*]const u8, row_bytes: usize, k: usize, a: [*]const u8, act_bytes: usize, m: usize, n: usize, y: [*]f32, y_stride: usize) void {
    if (builtin.is_test and test_emulate) return bf16Kernel(Emu, w, row_bytes, k, a, act_bytes, m, n, y, y_stride);
    if (comptime !hw_built) unreachable;
    bf16Kernel(Hw, w, row_bytes, k, a, act_bytes, m, n, y, y_stride);
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

/// Test builds only: matmul.zig's prefill takes the AMX kernel on the emulated tiles, so its
/// wiring (task ranges, pointers, strides) is tested on machines without AMX.
pub var test_emulate: bool = false;

/// The types whose prefill matmul.zig routes here: those the kernel ran at least as fast as the
/// AVX-512 VNNI path on the one AMX machine measured (Emerald Rapids, a 2048² matmul of 128 rows
/// at 2 threads, docs/performance.md): the legacy types (Q4_0 +10–20%, Q4_1 and Q8_0 level), and
/// Q4_K since its scales are folded into the tiles (TinyLlama-shape Q4_K prefill, 64-token chunks,
/// gate+up 1027 → 860 ms against the VNNI kernels). Q6_K ran ~20% slower on AMX there (a
/// 16-element Q6_K sub-block halves each TDPBSSD, and the per-sub-block scale sums cost more than
/// the VNNI kernels' per-block ones); Q5_K is summed per sub-block as Q4_K was when it lost ~15%
/// (not measured on its own). Neither folds into int8 as Q4_K does (Q5_K's q ≤ 31, Q6_K's signed
/// scales), so both stay on VNNI; the kernel still takes and is tested on every type.
pub fn routed(t: GgmlType) bool {
    return switch (t) {
        .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_k => true,
        else => false,
    };
}

/// Whether matmul.zig's prefill may route type t here in this build: the x86_64-v4 Linux library
/// (and, for test_emulate, test builds), for the routed types.
pub fn wired(comptime t: GgmlType) bool {
    return (hw_built or builtin.is_test) and supports(t) and routed(t);
}

/// Whether the prefill matmuls take the AMX kernel (comptime false outside the v4 Linux build).
pub inline fn enabled() bool {
    if (builtin.is_test and test_emulate) return true;
    if (comptime !hw_built) return false;
    return status() == .enabled;
}

/// Decides once per process (environment, CPU, OS, permission, self-check) and remembers.
pub fn status() Status {
    return decision.get();
}
const decision = cpu.Decision(Status, decide);

fn decide() Status {
    if (cpu.disabledByEnv("KILN_AMX")) return .disabled_by_env;
    if (comptime !hw_built) return .not_built;
    const sup = cpu.amxSupport();
    if (!sup.tile or !sup.int8) return .no_cpu_support;
    if (!sup.os_state) return .no_os_support;
    if (!cpu.requestAmxPermission()) return .permission_denied;
    if (!selfCheck()) return .self_check_failed;
    return .enabled;
}

/// Why BF16 prefill does or does not take the AMX-BF16 kernel (bf16Kernel): the int8 kernel's
/// decision first (KILN_AMX=0, the build, AMX-TILE/AMX-INT8, the OS, the permission, its
/// self-check), then CPUID's AMX-BF16 and this kernel's own self-check. Decided once per process.
pub fn bf16Status() Status {
    return bf16_decision.get();
}
const bf16_decision = cpu.Decision(Status, decideBf16);

fn decideBf16() Status {
    const s = status();
    if (s != .enabled) return s;
    if (!cpu.amxSupport().bf16) return .no_cpu_support;
    if (!bf16SelfCheck()) return .self_check_failed;
    return .enabled;
}

/// Test builds only: BF16 prefill keeps off the AMX-BF16 tiles (to test the vdpbf16ps path on a
/// machine that has both).
pub var test_bf16_off: bool = false;

/// Whether BF16 prefill takes the AMX-BF16 kernel (comptime false outside the v4 Linux build).
pub inline fn bf16Enabled() bool {
    if (builtin.is_test and test_bf16_off) return false;
    if (builtin.is_test and test_emulate) return true;
    if (comptime !hw_built) return false;
    return bf16Status() == .enabled;
}

/// A fixed problem on the hardware tiles, every output within bf16WithinBound: 32 weight rows × 33
/// activation rows (two whole activation groups and a single row, both weight groups) over 77
/// elements (two whole steps and a partial one), values over 17 binary orders of magnitude with
/// mixed signs, so sums cancel and round.
fn bf16SelfCheck() bool {
    if (comptime !hw_built) return false;
    const k = 77;
    const n = 32;
    const m = 33;
    const ab = 6 * k; // a prepared row: k f32 (unread here), then k bf16
    var w: [n * k]u16 = undefined;
    var a: [m * ab]u8 = undefined;
    var prng = std.Random.DefaultPrng.init(0x4b494c4e);
    const rng = prng.random();
    for (&w) |*v| v.* = selfCheckBf16(rng);
    for (0..m) |i| {
        for (0..k) |e| std.mem.writeInt(u16, a[i * ab + 4 * k + 2 * e ..][0..2], selfCheckBf16(rng), .little);
    }
    var hw: [m * n]f32 = undefined;
    const wb = std.mem.sliceAsBytes(&w).ptr;
    bf16Kernel(Hw, wb, 2 * k, k, &a, ab, m, n, &hw, n);
    for (0..m) |i| {
        for (0..n) |j| {
            if (!bf16WithinBound(hw[i * n + j], k, wb + j * 2 * k, a[i * ab + 4 * k ..].ptr)) return false;
        }
    }
    return true;
}

/// Whether `got` is Σ_e w[e]·x[e] (bf16 values, denormals as zero) as any f32 summation could
/// give it: within (k + 1)·2^-24·Σ|w·x| of the exact sum (the bound of every order of k
/// rounded additions), plus k·2^-126 for results flushed to zero on the way. The hardware's
/// TDPBF16PS sums in an order of its own: on an Intel Xeon (family 6 model 207, Emerald Rapids)
/// a single pair matched (acc + round(w0·x0 + w1·x1)), but longer rows matched neither the
/// SDM's element order nor a sequential or pairwise order of the pair sums (a wider internal
/// sum, it seems), so the hardware kernel is held to this bound, not to Emu's bits.
pub fn bf16WithinBound(got: f32, k: usize, w: [*]const u8, x: [*]const u8) bool {
    var sum: f64 = 0;
    var abs: f64 = 0;
    for (0..k) |e| {
        const p = @as(f64, flushDenormal(widenBf16(std.mem.readInt(u16, w[2 * e ..][0..2], .little)))) *
            @as(f64, flushDenormal(widenBf16(std.mem.readInt(u16, x[2 * e ..][0..2], .little))));
        sum += p;
        abs += @abs(p);
    }
    const kf: f64 = @floatFromInt(k);
    const bound = (kf + 1) * std.math.pow(f64, 2, -24) * abs + kf * std.math.pow(f64, 2, -126);
    return @abs(@as(f64, got) - sum) <= bound;
}

fn selfCheckBf16(rng: std.Random) u16 {
    const e = rng.intRangeAtMost(i32, -8, 8);
    const v = rng.floatNorm(f32) * @as(f32, @bitCast(@as(u32, @intCast(127 + e)) << 23));
    return @truncate(@as(u32, @bitCast(v)) >> 16);
}

/// The self-check problems, every type from a fixed seed: 32 weight rows × 33 activation rows
/// (two whole activation groups and one of a single row, both weight tiles) and 21 × 17, over
/// three legacy blocks or two K-quant blocks.
fn selfCheck() bool {
    if (comptime !hw_built) return false;
    inline for (types) |t| {
        if (!selfCheckType(t, 32, 33)) return false;
        if (!selfCheckType(t, 21, 17)) return false;
    }
    return true;
}

fn selfCheckType(comptime t: GgmlType, n: usize, m: usize) bool {
    const k: usize = if (quant.blockSize(t) == 32) 96 else 512;
    const rb = quant.rowBytes(t, k);
    const ab = quant.actRowBytes(t, k);
    var w: [32 * 2 * 210]u8 = undefined; // ≥ 32 rows of rowBytes(t, k) for every type
    var xq: [33 * 2 * ActQ8_K.type_size]u8 = undefined;
    var x: [512]f32 = undefined;
    var prng = std.Random.DefaultPrng.init(0x4b494c4e);
    const rng = prng.random();
    for (0..n) |j| {
        for (x[0..k]) |*v| v.* = rng.floatNorm(f32);
        _ = quant.quantizeRow(t, &x, w[j * rb ..].ptr, k);
    }
    for (0..m) |i| {
        for (x[0..k]) |*v| v.* = rng.floatNorm(f32);
        quant.quantizeActivations(t, &x, k, 1, k, xq[i * ab ..].ptr);
    }
    var hw: [33 * 32]f32 = undefined;
    var emu: [33 * 32]f32 = undefined;
    @memset(&hw, 0);
    @memset(&emu, 0);
    matmulRows(t, &w, rb, k, &xq, ab, m, n, &hw, 32, &.{});
    matmulRowsEmu(t, &w, rb, k, &xq, ab, m, n, &emu, 32, &.{});
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
            quant.ActTraits(comptime quant.actKind(t)).quantizeRow(x.ptr, xq[i * ab ..].ptr, k);
        }
        return .{ .w = w, .xq = xq, .rb = rb, .ab = ab };
    }
    fn deinit(p: Problem) void {
        testing.allocator.free(p.w);
        testing.allocator.free(p.xq);
    }
};

/// Elements of one weight block (32 legacy, 256 K-quant) and blocks per packed chunk.
fn blockElems(comptime t: GgmlType) usize {
    return quant.Traits(t).block_size;
}
fn chunkBlocks(comptime t: GgmlType) usize {
    return Format(t, .exact).chunk_blocks;
}

/// The kernel (format F) on `Tiles` against vecDotRef for every output (==: the same f32
/// operations in the same order), with guards around the outputs it must not touch.
fn checkAgainstRef(comptime Tiles: type, comptime t: GgmlType, comptime variant: Variant, p: Problem, k: usize, m: usize, n: usize) !void {
    const al = testing.allocator;
    const stride = n + 3;
    const y = try al.alloc(f32, m * stride);
    defer al.free(y);
    @memset(y, 12345);
    kernelFor(Tiles, Format(t, variant), .rows, p.w.ptr, p.rb, k, p.xq.ptr, p.ab, m, n, y.ptr, stride, &.{});
    for (0..m) |i| {
        for (0..n) |j| {
            const want = quant.Traits(t).vecDotRef(k, p.w.ptr + j * p.rb, p.xq.ptr + i * p.ab);
            const got = y[i * stride + j];
            if (@as(u32, @bitCast(want)) != @as(u32, @bitCast(got))) {
                if (variant == .exact and Tiles == Emu)
                    std.debug.print("amx {s} k={d} m={d} n={d}: y[{d}][{d}] = {e}, reference {e}\n", .{ @tagName(t), k, m, n, i, j, got, want });
                return error.TestExpectedEqual;
            }
        }
        for (n..stride) |j| try testing.expectEqual(@as(f32, 12345), y[i * stride + j]);
    }
}

test "amx emulated kernel equals the scalar reference bit for bit: every type, awkward shapes" {
    var prng = std.Random.DefaultPrng.init(1414);
    const rng = prng.random();
    inline for (types) |t| {
        const cb = chunkBlocks(t);
        // One block, a few, exactly one chunk, and chunks plus a partial one.
        for ([_]usize{ 1, 3, cb, 2 * cb + 1 }) |nb| {
            const k = blockElems(t) * nb;
            for ([_]usize{ 1, 15, 16, 17, 31, 32 }) |n| {
                const p = try Problem.init(t, rng, n, k, 64, 8);
                defer p.deinit();
                for ([_]usize{ 1, 15, 16, 17, 33, 64 }) |m| try checkAgainstRef(Emu, t, .exact, p, k, m, n);
            }
        }
    }
}

test "amx emulated kernel: m from 17 past max_acts through matmul-sized calls, every type" {
    // matmul.zig hands the kernel ≤ max_acts activation rows per call; m past it splits into calls
    // of max_acts + the rest exactly as the tasks do.
    var prng = std.Random.DefaultPrng.init(77);
    const rng = prng.random();
    const n = 37;
    inline for (types) |t| {
        const k: usize = if (blockElems(t) == 32) 32 * 5 else 256 * 2;
        const m_max = max_acts + 44;
        const p = try Problem.init(t, rng, n, k, m_max, 0);
        defer p.deinit();
        const y = try testing.allocator.alloc(f32, m_max * n);
        defer testing.allocator.free(y);
        for ([_]usize{ 17, 33, 64, 70, 129, max_acts - 1, max_acts, max_acts + 1, m_max }) |m| {
            var ib: usize = 0;
            while (ib < m) : (ib += max_acts) {
                const mm = @min(max_acts, m - ib);
                var j0: usize = 0;
                while (j0 < n) : (j0 += max_rows) {
                    const nn = @min(max_rows, n - j0);
                    kernel(Emu, t, p.w.ptr + j0 * p.rb, p.rb, k, p.xq.ptr + ib * p.ab, p.ab, mm, nn, y.ptr + ib * n + j0, n, &.{});
                }
            }
            for (0..m) |i| for (0..n) |j| {
                const want = quant.Traits(t).vecDotRef(k, p.w.ptr + j * p.rb, p.xq.ptr + i * p.ab);
                try testing.expectEqual(want, y[i * n + j]);
            };
        }
    }
}

test "amx B packing: byte o of sub-block s's tile is quant sub·s + 4·(o / 64) + o % 4 of row (o % 64) / 4, and the packed scales rebuild dequantizeRowRef" {
    var prng = std.Random.DefaultPrng.init(3);
    const rng = prng.random();
    inline for (types) |t| {
        const F = Format(t, .exact);
        const nb: usize = @min(3, F.chunk_blocks);
        const k = F.block_elems * (nb + 1);
        const p_ = try Problem.init(t, rng, 32, k, 1, 5);
        defer p_.deinit();
        var want: [nb * 256]f32 = undefined;
        for ([_]usize{ 32, 19, 16, 1 }) |n| {
            var p: F.Packed = undefined;
            // Blocks 1..nb (a chunk not starting at the row's first block).
            packB(F, p_.w.ptr, p_.rb, n, 1, nb, &p);
            for (0..32) |row| {
                const g = row / 16;
                const r = row % 16;
                if (row < n) quant.Traits(t).dequantizeRowRef(p_.w.ptr + row * p_.rb + F.W.type_size, &want, nb * F.block_elems);
                for (0..nb) |b| {
                    for (0..F.block_elems) |e| {
                        const s = e / F.sub;
                        const o = (e % F.sub) / 4 * 64 + 4 * r + e % 4;
                        const packed_q: i8 = @bitCast(p.q[b * F.n_sub + s][g][o]);
                        if (row >= n) {
                            try testing.expectEqual(@as(i8, 0), packed_q);
                            if (F.folded) try testing.expectEqual(@as(u8, 0), p.q_hi[b * F.n_sub + s][g][o]);
                            continue;
                        }
                        // Folded: the tiles hold q·sc_lo and q·sc_hi; the quant is their
                        // scaled sum over the scale (checked against the row's own quant).
                        const q: i8 = if (F.folded) blk: {
                            const sj = p.sc[b][g][e / 32][r];
                            const u = F.unpack(p_.w.ptr + row * p_.rb + (1 + b) * F.W.type_size);
                            const uq: i32 = u.q[e];
                            try testing.expectEqual(uq * (sj & 7), @as(i32, packed_q));
                            try testing.expectEqual(uq * (sj >> 3), @as(i32, p.q_hi[b * F.n_sub + s][g][o]));
                            break :blk u.q[e];
                        } else packed_q;
                        // The reference dequantization from the packed quant and scales, in each
                        // dequantizeRowRef's operations (all exact but the last).
                        const qf: f32 = @floatFromInt(q);
                        const d = p.d[b][g][r];
                        const got = switch (t) {
                            .q8_0, .q4_0, .q5_0 => qf * d,
                            .q4_1, .q5_1 => qf * d + p.m[b][g][r],
                            .q4_k, .q5_k => blk: {
                                // Both 16-bit halves of the lane hold the min (minPair).
                                const mp = p.mn[b][g][e / 32][r];
                                try testing.expectEqual(mp >> 16, mp & 0xffff);
                                break :blk d * @as(f32, @floatFromInt(p.sc[b][g][e / 32][r])) * qf - p.m[b][g][r] * @as(f32, @floatFromInt(mp & 0xffff));
                            },
                            .q6_k => d * @as(f32, @floatFromInt(p.sc[b][g][s][r])) * qf,
                            else => unreachable,
                        };
                        try testing.expectEqual(want[b * F.block_elems + e], got);
                    }
                    if (row >= n) {
                        try testing.expectEqual(@as(f32, 0), p.d[b][g][r]);
                        try testing.expectEqual(@as(f32, 0), p.m[b][g][r]);
                    }
                }
            }
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
}

test "amx wrong kernels are caught: an unsigned-A emulation and a kernel without the zero point or min, every type" {
    // The reference test above must really depend on the sign extension and on each type's
    // offset: checkAgainstRef rejects both wrong kernels where the exact one passes.
    var prng = std.Random.DefaultPrng.init(9);
    inline for (types) |t| {
        const k = 2 * blockElems(t);
        const p = try Problem.init(t, prng.random(), 20, k, 20, 0);
        defer p.deinit();
        try checkAgainstRef(Emu, t, .exact, p, k, 20, 20);
        try testing.expectError(error.TestExpectedEqual, checkAgainstRef(EmuWith(false), t, .exact, p, k, 20, 20));
        if (t != .q8_0) try testing.expectError(error.TestExpectedEqual, checkAgainstRef(Emu, t, .drop_offset, p, k, 20, 20));
    }
}

test "amx emulation: Q6_K's 16-byte configuration (A 16 × 16 bytes, B 4 × 64) is a legal TDPBSSD" {
    const cfg: TileConfig align(64) = configFor(16);
    var a: [16 * 16]u8 = undefined;
    var b: [4 * 64]u8 = undefined;
    for (&a, 0..) |*v, i| v.* = @truncate(i *% 37);
    for (&b, 0..) |*v, i| v.* = @truncate(i *% 91 +% 5);
    var c: [16][16]i32 = undefined;
    var e = Emu.init(&cfg);
    e.load(tile_a0 + 1, &a, 16);
    e.load(tile_b0 + 1, &b, 64);
    e.zero(tileC(1, 1));
    e.dpbssd(tileC(1, 1), tile_a0 + 1, tile_b0 + 1);
    e.store(tileC(1, 1), @ptrCast(&c), 64);
    for (0..16) |m| for (0..16) |n| {
        var want: i32 = 0;
        for (0..16) |kk| want += @as(i32, @as(i8, @bitCast(a[16 * m + kk]))) * @as(i8, @bitCast(b[(kk / 4) * 64 + 4 * n + kk % 4]));
        try testing.expectEqual(want, c[m][n]);
    };
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
    if (!hardwareUsable("amx", status())) return;
    var prng = std.Random.DefaultPrng.init(55);
    const rng = prng.random();
    inline for (types) |t| {
        for ([_]usize{ 1, 3, chunkBlocks(t) + 3 }) |nb| {
            const k = blockElems(t) * nb;
            for ([_]usize{ 1, 16, 17, 32 }) |n| {
                const p = try Problem.init(t, rng, n, k, 64, 8);
                defer p.deinit();
                for ([_]usize{ 1, 16, 17, 33, 64 }) |m| {
                    try checkAgainstRef(Hw, t, .exact, p, k, m, n);
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

/// A BF16 problem: n weight rows (row_bytes apart, padded) and m prepared activation rows (their
/// bf16 halves at 4k; act_bytes apart, padded), values over many binary orders of magnitude.
const Bf16Problem = struct {
    w: []u8,
    a: []u8,
    rb: usize,
    ab: usize,

    fn init(rng: std.Random, n: usize, k: usize, m: usize) !Bf16Problem {
        const al = testing.allocator;
        const rb = 2 * k + 6; // padded apart: a kernel reading the wrong row shows
        const ab = 6 * k + 10;
        const w = try al.alloc(u8, rb * n);
        errdefer al.free(w);
        const a = try al.alloc(u8, ab * m);
        rng.bytes(w);
        rng.bytes(a);
        for (0..n) |j| for (0..k) |e| std.mem.writeInt(u16, w[j * rb + 2 * e ..][0..2], selfCheckBf16(rng), .little);
        for (0..m) |i| for (0..k) |e| std.mem.writeInt(u16, a[i * ab + 4 * k + 2 * e ..][0..2], selfCheckBf16(rng), .little);
        return .{ .w = w, .a = a, .rb = rb, .ab = ab };
    }
    fn deinit(p: Bf16Problem) void {
        testing.allocator.free(p.w);
        testing.allocator.free(p.a);
    }
};

/// How a BF16 test judges one output: equal bits to a reference sum, or inside bf16WithinBound.
const Bf16Check = union(enum) { bits: *const fn (usize, [*]const u8, [*]const u8) f32, bound };

/// bf16Kernel on `Tiles`: every output judged by `check`, and guards around the outputs it must
/// not write.
fn checkBf16(comptime Tiles: type, p: Bf16Problem, k: usize, m: usize, n: usize, check: Bf16Check) !void {
    const al = testing.allocator;
    const stride = n + 3;
    const y = try al.alloc(f32, m * stride);
    defer al.free(y);
    @memset(y, 12345);
    bf16Kernel(Tiles, p.w.ptr, p.rb, k, p.a.ptr, p.ab, m, n, y.ptr, stride);
    for (0..m) |i| {
        for (0..stride) |j| {
            const got = y[i * stride + j];
            if (j >= n) {
                try testing.expectEqual(@as(f32, 12345), got);
                continue;
            }
            const w = p.w.ptr + j * p.rb;
            const x = p.a.ptr + i * p.ab + 4 * k;
            const ok = switch (check) {
                .bits => |ref| @as(u32, @bitCast(ref(k, w, x))) == @as(u32, @bitCast(got)),
                .bound => bf16WithinBound(got, k, w, x),
            };
            if (!ok) return error.TestExpectedEqual;
        }
    }
}

/// Whether a hardware test can run here; prints why not (the build, or `s`) when it cannot.
fn hardwareUsable(comptime what: []const u8, s: Status) bool {
    if (comptime !hw_built) {
        std.debug.print("SKIP " ++ what ++ " hardware test: this build has no AMX path (x86_64-v4 Linux only)\n", .{});
        return false;
    }
    if (s != .enabled) {
        std.debug.print("SKIP " ++ what ++ " hardware test: not usable here ({s})\n", .{@tagName(s)});
        return false;
    }
    return true;
}

test "amx bf16 kernel on emulated tiles equals bf16DotRef bit for bit: m 1..64, n 1..32, k whole, partial and multi-chunk" {
    var prng = std.Random.DefaultPrng.init(77);
    const rng = prng.random();
    for ([_]usize{ 1, 31, 32, 77, bf16_chunk + 45 }) |k| {
        for ([_]usize{ 1, 15, 16, 17, 32 }) |n| {
            const p = try Bf16Problem.init(rng, n, k, 64);
            defer p.deinit();
            for ([_]usize{ 1, 16, 17, 33, 48, 64 }) |m| try checkBf16(Emu, p, k, m, n, .{ .bits = bf16DotRef });
        }
    }
}

/// A wrong order the tests must reject: each pair's odd element before its even one (what
/// VDPBF16PS does, not TDPBF16PS).
fn bf16DotOddFirst(k: usize, w: [*]const u8, x: [*]const u8) f32 {
    var acc: f32 = 0;
    const padded = (k + bf16_step - 1) / bf16_step * bf16_step;
    var e: usize = 0;
    while (e < padded) : (e += 2) {
        inline for (.{ 1, 0 }) |o| {
            const wv: u16 = if (e + o < k) std.mem.readInt(u16, w[2 * (e + o) ..][0..2], .little) else 0;
            const xv: u16 = if (e + o < k) std.mem.readInt(u16, x[2 * (e + o) ..][0..2], .little) else 0;
            acc = bf16Fma(wv, xv, acc);
        }
    }
    return acc;
}

test "amx bf16: a reference adding each pair's odd product first is told apart (the check has teeth)" {
    var prng = std.Random.DefaultPrng.init(78);
    const rng = prng.random();
    const p = try Bf16Problem.init(rng, 32, 77, 33);
    defer p.deinit();
    try checkBf16(Emu, p, 77, 33, 32, .{ .bits = bf16DotRef });
    try testing.expectError(error.TestExpectedEqual, checkBf16(Emu, p, 77, 33, 32, .{ .bits = bf16DotOddFirst }));
}

test "amx emulated TDPBF16PS: rounds each accumulation, flushes denormal inputs and results" {
    // 1 + 2^-24 is not an f32: the even product's accumulation rounds it away before the odd adds.
    try testing.expectEqual(@as(f32, 1.0), bf16Fma(0x3380, 0x3f80, 1.0)); // 2^-24·1 + 1 → 1 (tie to even)
    // A denormal bf16 input counts as zero; a denormal result becomes a zero of its sign.
    try testing.expectEqual(@as(f32, 2.0), bf16Fma(0x0001, 0x7f00, 2.0));
    const tiny = bf16Fma(0x0080, 0x3f00, 0.0); // 2^-126 · 0.5 = 2^-127, a denormal
    try testing.expectEqual(@as(u32, 0), @as(u32, @bitCast(tiny)));
}

test "amx bf16 hardware kernel within the f32 summation bound of the exact sums (only where AMX-BF16 is usable)" {
    if (!hardwareUsable("amx bf16", bf16Status())) return;
    var prng = std.Random.DefaultPrng.init(79);
    const rng = prng.random();
    for ([_]usize{ 32, 77, bf16_chunk + 45 }) |k| {
        for ([_]usize{ 1, 17, 32 }) |n| {
            const p = try Bf16Problem.init(rng, n, k, 64);
            defer p.deinit();
            for ([_]usize{ 1, 17, 64 }) |m| try checkBf16(Hw, p, k, m, n, .bound);
        }
    }
}

test "amx bf16 error bound: the emulated kernel is inside it; a sum missing one product (any over a thousandth of the largest), or with one activation element off by one bf16 step, is not" {
    var prng = std.Random.DefaultPrng.init(80);
    const rng = prng.random();
    const k = 77;
    const p = try Bf16Problem.init(rng, 17, k, 33);
    defer p.deinit();
    try checkBf16(Emu, p, k, 33, 17, .bound);
    const w = p.w.ptr;
    const x = p.a.ptr + 4 * k;
    const exact = bf16DotRef(k, w, x);
    try testing.expect(bf16WithinBound(exact, k, w, x));
    // Every product over a thousandth of the largest, left out, takes the sum out of the bound.
    var largest: f32 = 0;
    for (0..k) |e| largest = @max(largest, @abs(widenBf16(std.mem.readInt(u16, w[2 * e ..][0..2], .little)) * widenBf16(std.mem.readInt(u16, x[2 * e ..][0..2], .little))));
    var checked: usize = 0;
    for (0..k) |e| {
        const prod = widenBf16(std.mem.readInt(u16, w[2 * e ..][0..2], .little)) * widenBf16(std.mem.readInt(u16, x[2 * e ..][0..2], .little));
        if (@abs(prod) < largest / 1000) continue;
        checked += 1;
        try testing.expect(!bf16WithinBound(exact - prod, k, w, x));
    }
    try testing.expect(checked >= k / 4);
    // One activation element a bf16 step larger (x[e] → next bf16): the sum moves by w[e]·ulp.
    var xs: [2 * k]u8 = x[0 .. 2 * k].*;
    const e_big = blk: {
        var best: usize = 0;
        var mag: f32 = 0;
        for (0..k) |e| {
            const v = @abs(widenBf16(std.mem.readInt(u16, w[2 * e ..][0..2], .little)));
            if (v > mag) {
                mag = v;
                best = e;
            }
        }
        break :blk best;
    };
    std.mem.writeInt(u16, xs[2 * e_big ..][0..2], std.mem.readInt(u16, xs[2 * e_big ..][0..2], .little) + 1, .little);
    try testing.expect(!bf16WithinBound(bf16DotRef(k, w, &xs), k, w, x));
}
