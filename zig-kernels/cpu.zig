//! The CPU features this copy of the library was compiled for, in one place. kiln is built
//! once per CPU level (build.zig), so every SIMD path is chosen at comptime from these flags;
//! no kernel file tests `builtin.cpu.features` itself.
const std = @import("std");
const builtin = @import("builtin");

pub const is_x86 = builtin.cpu.arch == .x86_64;
pub const is_arm64 = builtin.cpu.arch == .aarch64;

/// LLVM intrinsics exist only with the LLVM backend; Debug builds on x86-64 default to Zig's
/// self-hosted backend, which then gets the generic @Vector paths.
pub const llvm = builtin.zig_backend == .stage2_llvm;

/// An x86 feature the kernels may use through LLVM intrinsics.
fn x86Has(comptime f: std.Target.x86.Feature) bool {
    return llvm and is_x86 and std.Target.x86.featureSetHas(builtin.cpu.features, f);
}

pub const has_avx2 = x86Has(.avx2);
pub const has_avx512bw = x86Has(.avx512bw);
/// 256-bit vpdpbusd needs VNNI plus VL (every AVX-512 VNNI part has VL).
pub const has_vnni256 = x86Has(.avx512vnni) and x86Has(.avx512vl);
/// 512-bit vpdpbusd / vpdpwssd on zmm (AVX512_VNNI with AVX512BW).
pub const has_vnni512 = has_avx512bw and x86Has(.avx512vnni);
/// sdot (ARMv8.2 dotprod).
pub const has_dotprod = llvm and is_arm64 and std.Target.aarch64.featureSetHas(builtin.cpu.features, .dotprod);

/// Hardware FMA, whatever the backend: @mulAdd is a strict fused op, and without it becomes a
/// libm call per lane.
pub const has_fma = switch (builtin.cpu.arch) {
    .x86_64, .x86 => builtin.cpu.has(.x86, .fma),
    .aarch64, .aarch64_be => true,
    else => false,
};

/// The largest lane of v (NaN lanes ignored, as @reduce(.Max)), halving the vector each step.
/// LLVM lowers @reduce(.Max) on floats without fast-math flags as a chain of N scalar
/// max + NaN-select steps: a 32-lane block's amax cost ~75 cycles, most of activation
/// quantization's time (0.79 ns/element on an Emerald Rapids core; 5 vector steps instead).
/// Max is order-independent, so the result is the same value.
pub inline fn maxLanes(comptime N: usize, v: @Vector(N, f32)) f32 {
    if (N == 1) return v[0];
    const h = N / 2;
    const lo: @Vector(h, f32) = std.simd.extract(v, 0, h);
    const hi: @Vector(h, f32) = std.simd.extract(v, h, h);
    const m = maxLanes(h, @max(lo, hi));
    return if (N % 2 == 1) @max(m, v[N - 1]) else m;
}

pub const LaneOp = enum { max, add };

/// G horizontal reductions at once: lane b of the result is `op` over the G lanes of vs[b] (G a
/// power of two; max as @max, NaN lanes ignored). Each step pairs the vectors up and, with two
/// two-source shuffles and one op per pair, halves every row's partials while doubling the rows
/// a vector carries; log2(G) steps leave one vector in row order. About 3 ops per row on 16
/// lanes, where reducing each row alone takes 8 (4 extract-op steps) and leaves it in a scalar.
/// Max is order-independent and integer sums are exact, so each lane equals its row's
/// maxLanes / @reduce(.Add).
pub inline fn reduceEach(comptime T: type, comptime G: usize, comptime op: LaneOp, vs: [G]@Vector(G, T)) @Vector(G, T) {
    comptime std.debug.assert(std.math.isPowerOfTwo(G));
    return reduceFrom(T, G, G, op, vs);
}

/// g vectors, each holding G / g rows of g partials (row order kept across vectors and lanes).
inline fn reduceFrom(comptime T: type, comptime G: usize, comptime g: usize, comptime op: LaneOp, vs: [g]@Vector(G, T)) @Vector(G, T) {
    if (g == 1) return vs[0];
    const rows = G / g; // rows per input vector
    const half = g / 2;
    // lo/hi: each row's first and second half of partials, rows of the pair's first vector first.
    const masks = comptime blk: {
        var lo: [G]i32 = undefined;
        var hi: [G]i32 = undefined;
        for (0..2 * rows) |o| {
            for (0..half) |p| {
                const lane: i32 = @intCast((o % rows) * g + p);
                const upper: i32 = lane + @as(i32, @intCast(half));
                lo[o * half + p] = if (o < rows) lane else ~lane;
                hi[o * half + p] = if (o < rows) upper else ~upper;
            }
        }
        break :blk .{ lo, hi };
    };
    var next: [half]@Vector(G, T) = undefined;
    inline for (0..half) |j| {
        const a = @shuffle(T, vs[2 * j], vs[2 * j + 1], masks[0]);
        const b = @shuffle(T, vs[2 * j], vs[2 * j + 1], masks[1]);
        next[j] = switch (op) {
            .max => @max(a, b),
            .add => a + b,
        };
    }
    return reduceFrom(T, G, half, op, next);
}

/// An f16 (its bits) as f32, for loops whose accumulators live in vector registers. LLVM
/// lowers a scalar f16 load + conversion on x86 with F16C to `vpinsrw $0, mem, %xmm0, %xmmN` +
/// `vcvtph2ps`, merging the half into whatever xmm0 holds; where xmm0 is an accumulator, each
/// conversion waits for the last FMA into it, a loop-carried chain through the FMA pipe
/// (attention's Q8_0 V pass ran at 2.3x its FMA bound on Zen 5; with this, 0.8x the time).
/// vmovd from a general register zeroes the rest of the vector instead. It costs a µop more
/// and pins the value in asm, so where the scale is not in such a chain (matmul scale tables,
/// weight repacking: measured 3-5% slower with it) plain @floatCast stays. Same value.
pub inline fn f16BitsToF32(bits: u16) f32 {
    if (comptime llvm and is_x86 and builtin.cpu.has(.x86, .f16c)) {
        return asm ("vmovd %[in], %[out]\n\tvcvtph2ps %[out], %[out]"
            : [out] "=&x" (-> f32),
            : [in] "r" (@as(u32, bits)),
        );
    }
    return @floatCast(@as(f16, @bitCast(bits)));
}

/// The CPU level this build targets (kiln_cpu_level): 0 x86-64 baseline, 1 x86-64-v3,
/// 2 x86-64-v4 (AVX-512 + VNNI), 3 aarch64 (NEON + dotprod).
pub const build_level: u32 = if (is_arm64)
    3
else if (builtin.cpu.has(.x86, .avx512f))
    2
else if (builtin.cpu.has(.x86, .avx2))
    1
else
    0;

// ---------------------------------------------------------------------------------------------
// Run time: what the CPU running the library supports (kiln_cpu_features, kiln_cpu_best_level).
// This half is compiled at the architecture's baseline (exports_baseline.zig, linked into every
// level's library by build.zig), so asking any build which level the CPU runs cannot itself
// execute an instruction the CPU lacks.
// ---------------------------------------------------------------------------------------------

/// Bits of kiln_cpu_features() (names mirrored in src/ffi/library.ts CPU_FEATURES, spelled as
/// Linux's /proc/cpuinfo does). A register-state feature is reported only when the OS saves
/// that state (XGETBV): an AVX-512 CPU under an OS that does not enable it reports no avx512*.
pub const Feature = enum(u6) {
    // x86-64
    sse4_2 = 0,
    popcnt = 1,
    avx = 2,
    avx2 = 3,
    fma = 4,
    f16c = 5,
    bmi1 = 6,
    bmi2 = 7,
    lzcnt = 8,
    movbe = 9,
    avx512f = 10,
    avx512bw = 11,
    avx512dq = 12,
    avx512vl = 13,
    avx512cd = 14,
    avx512_vnni = 15,
    avx512_bf16 = 16,
    avx512_fp16 = 17,
    avx_vnni = 18,
    /// AMX tile state enabled by the OS. Linux also wants a per-process
    /// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) before the first tile instruction.
    amx_tile = 19,
    amx_int8 = 20,
    amx_bf16 = 21,
    // aarch64
    asimd = 32,
    asimddp = 33,
    asimdhp = 34,
    i8mm = 35,
    bf16 = 36,
    sve = 37,
};

pub const FeatureSet = u64;

pub fn bit(f: Feature) FeatureSet {
    return @as(FeatureSet, 1) << @intFromEnum(f);
}

fn hasAll(set: FeatureSet, comptime fs: []const Feature) bool {
    inline for (fs) |f| if (set & bit(f) == 0) return false;
    return true;
}

/// What each level's build may execute: the x86-64-v3 microarchitecture level (with v2's
/// SSE4.2/POPCNT), v4 plus VNNI (build.zig), and ARMv8.2 dotprod + fp16 (build.zig).
const x86_64_v3_needs = [_]Feature{ .sse4_2, .popcnt, .avx, .avx2, .fma, .f16c, .bmi1, .bmi2, .lzcnt, .movbe };
const x86_64_v4_needs = x86_64_v3_needs ++ [_]Feature{ .avx512f, .avx512bw, .avx512dq, .avx512vl, .avx512cd, .avx512_vnni };
const aarch64_needs = [_]Feature{ .asimd, .asimddp, .asimdhp };

/// kiln_cpu_best_level() when no build of kiln runs on this CPU (an aarch64 core without dotprod).
pub const no_level: u32 = std.math.maxInt(u32);

/// The best level a CPU with these features runs (the numbering of kiln_cpu_level).
pub fn levelFor(arch: std.Target.Cpu.Arch, set: FeatureSet) u32 {
    return switch (arch) {
        .x86_64 => if (hasAll(set, &x86_64_v4_needs)) 2 else if (hasAll(set, &x86_64_v3_needs)) 1 else 0,
        .aarch64 => if (hasAll(set, &aarch64_needs)) 3 else no_level,
        else => no_level,
    };
}

/// The features of the CPU running this code.
pub fn detect() FeatureSet {
    return switch (builtin.cpu.arch) {
        .x86_64 => detectX86(),
        .aarch64 => detectArm64(),
        else => 0,
    };
}

const Cpuid = struct { eax: u32, ebx: u32, ecx: u32, edx: u32 };

fn cpuid(leaf: u32, subleaf: u32) Cpuid {
    var eax: u32 = undefined;
    var ebx: u32 = undefined;
    var ecx: u32 = undefined;
    var edx: u32 = undefined;
    asm volatile ("cpuid"
        : [_] "={eax}" (eax),
          [_] "={ebx}" (ebx),
          [_] "={ecx}" (ecx),
          [_] "={edx}" (edx),
        : [_] "{eax}" (leaf),
          [_] "{ecx}" (subleaf),
    );
    return .{ .eax = eax, .ebx = ebx, .ecx = ecx, .edx = edx };
}

/// XCR0: the register state the OS saves on context switch (only valid when OSXSAVE is set).
fn xgetbv0() u32 {
    return asm volatile ("xgetbv"
        : [_] "={eax}" (-> u32),
        : [_] "{ecx}" (@as(u32, 0)),
        : .{ .edx = true });
}

fn on(set: *FeatureSet, f: Feature, reg: u32, bit_index: u5) void {
    if ((reg >> bit_index) & 1 != 0) set.* |= bit(f);
}

fn detectX86() FeatureSet {
    var set: FeatureSet = 0;
    const max_leaf = cpuid(0, 0).eax;
    const l1 = cpuid(1, 0);
    const osxsave = (l1.ecx >> 27) & 1 != 0;
    const xcr0: u32 = if (osxsave) xgetbv0() else 0;
    const os_avx = xcr0 & 0b110 == 0b110; // XMM and YMM state
    const os_avx512 = os_avx and (xcr0 & 0xe0 == 0xe0 or darwinAvx512()); // opmask, ZMM_Hi256, Hi16_ZMM
    const os_amx = xcr0 & (0b11 << 17) == (0b11 << 17); // XTILECFG and XTILEDATA

    on(&set, .sse4_2, l1.ecx, 20);
    on(&set, .popcnt, l1.ecx, 23);
    on(&set, .movbe, l1.ecx, 22);
    if (os_avx) {
        on(&set, .avx, l1.ecx, 28);
        on(&set, .fma, l1.ecx, 12);
        on(&set, .f16c, l1.ecx, 29);
    }
    if (max_leaf >= 7) {
        const l7 = cpuid(7, 0);
        on(&set, .bmi1, l7.ebx, 3);
        on(&set, .bmi2, l7.ebx, 8);
        if (os_avx) on(&set, .avx2, l7.ebx, 5);
        if (os_avx512) {
            on(&set, .avx512f, l7.ebx, 16);
            on(&set, .avx512dq, l7.ebx, 17);
            on(&set, .avx512cd, l7.ebx, 28);
            on(&set, .avx512bw, l7.ebx, 30);
            on(&set, .avx512vl, l7.ebx, 31);
            on(&set, .avx512_vnni, l7.ecx, 11);
            on(&set, .avx512_fp16, l7.edx, 23);
        }
        if (os_amx) {
            on(&set, .amx_bf16, l7.edx, 22);
            on(&set, .amx_tile, l7.edx, 24);
            on(&set, .amx_int8, l7.edx, 25);
        }
        if (l7.eax >= 1) {
            const l7_1 = cpuid(7, 1);
            if (os_avx) on(&set, .avx_vnni, l7_1.eax, 4);
            if (os_avx512) on(&set, .avx512_bf16, l7_1.eax, 5);
        }
    }
    if (cpuid(0x8000_0000, 0).eax >= 0x8000_0001) on(&set, .lzcnt, cpuid(0x8000_0001, 0).ecx, 5);
    return set;
}

/// AMX as the CPU and OS report it, each part separately (amx.zig says which one is missing):
/// CPUID leaf 7 subleaf 0 EDX bit 24 (AMX-TILE), 25 (AMX-INT8) and 22 (AMX-BF16), and XCR0 bits 17 (XTILECFG)
/// and 18 (XTILEDATA), the tile state the OS saves.
pub const AmxSupport = struct { tile: bool = false, int8: bool = false, bf16: bool = false, os_state: bool = false };

pub fn amxSupport() AmxSupport {
    if (comptime !is_x86) return .{};
    if (cpuid(0, 0).eax < 7) return .{};
    const l7 = cpuid(7, 0);
    const osxsave = (cpuid(1, 0).ecx >> 27) & 1 != 0;
    const xcr0: u32 = if (osxsave) xgetbv0() else 0;
    return .{
        .tile = (l7.edx >> 24) & 1 != 0,
        .int8 = (l7.edx >> 25) & 1 != 0,
        .bf16 = (l7.edx >> 22) & 1 != 0,
        .os_state = xcr0 & (0b11 << 17) == (0b11 << 17),
    };
}

/// Linux keeps the 8 KB tile data out of a process's signal frames and context switches until
/// the process asks: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), once, for every thread
/// of the process. A tile instruction before it is SIGILL. True when granted, confirmed through
/// ARCH_GET_XCOMP_PERM (the kernel refuses, e.g., when a thread's sigaltstack is too small for
/// the larger signal frame).
pub fn requestAmxPermission() bool {
    if (comptime !(is_x86 and builtin.os.tag == .linux)) return false;
    const linux = std.os.linux;
    const arch_get_xcomp_perm = 0x1022;
    const arch_req_xcomp_perm = 0x1023;
    const xfeature_xtiledata = 18;
    const rc = linux.syscall2(.arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata);
    if (linux.E.init(rc) != .SUCCESS) return false;
    var perm: u64 = 0;
    const rc2 = linux.syscall2(.arch_prctl, arch_get_xcomp_perm, @intFromPtr(&perm));
    if (linux.E.init(rc2) != .SUCCESS) return false;
    return perm & (1 << xfeature_xtiledata) != 0;
}

/// macOS enables AVX-512 register state per thread on first use, so XCR0 does not show it
/// beforehand; the kernel says whether it will through sysctl.
fn darwinAvx512() bool {
    if (comptime !builtin.os.tag.isDarwin()) return false;
    return sysctlFlag("hw.optional.avx512f");
}

fn sysctlFlag(comptime name: [:0]const u8) bool {
    if (comptime !builtin.os.tag.isDarwin()) return false;
    var value: u32 = 0;
    var len: usize = @sizeOf(u32);
    if (std.c.sysctlbyname(name, &value, &len, null, 0) != 0) return false;
    return value != 0;
}

fn detectArm64() FeatureSet {
    var set: FeatureSet = 0;
    if (comptime builtin.os.tag.isDarwin()) {
        // Every Apple silicon core (M1 on) has ARMv8.4 NEON with dotprod and fp16; macOS 11
        // names neither in sysctl, so they are not asked.
        set |= bit(.asimd) | bit(.asimddp) | bit(.asimdhp);
        if (sysctlFlag("hw.optional.arm.FEAT_I8MM")) set |= bit(.i8mm);
        if (sysctlFlag("hw.optional.arm.FEAT_BF16")) set |= bit(.bf16);
    } else if (comptime builtin.os.tag == .linux) {
        const hwcap: u64 = auxval(std.elf.AT_HWCAP);
        const hwcap2: u64 = auxval(std.elf.AT_HWCAP2);
        if (hwcap & (1 << 1) != 0) set |= bit(.asimd); // HWCAP_ASIMD
        if (hwcap & (1 << 10) != 0) set |= bit(.asimdhp); // HWCAP_ASIMDHP
        if (hwcap & (1 << 20) != 0) set |= bit(.asimddp); // HWCAP_ASIMDDP
        if (hwcap & (1 << 22) != 0) set |= bit(.sve); // HWCAP_SVE
        if (hwcap2 & (1 << 13) != 0) set |= bit(.i8mm); // HWCAP2_I8MM
        if (hwcap2 & (1 << 14) != 0) set |= bit(.bf16); // HWCAP2_BF16
    }
    return set;
}

/// The auxiliary vector: through libc in the library (a shared object has no start code of
/// Zig's to record it), from Zig's start code in the static test binaries.
fn auxval(t: usize) usize {
    if (builtin.link_libc) return std.c.getauxval(t);
    return std.os.linux.getauxval(t);
}

/// Which x86 CPU this is, from CPUID: the vendor and the display family (base family, plus the
/// extended family where the base is 0xF: AMD Zen 4 is 0x19, Zen 5 0x1A; Intel cores are 6).
pub const X86Identity = struct {
    vendor: enum { amd, intel, other } = .other,
    family: u32 = 0,
    /// AVX-512F usable (detect): within AMD family 0x19 it tells Zen 4 from Zen 3.
    avx512: bool = false,
};

pub fn x86Identity() X86Identity {
    if (comptime !is_x86) return .{};
    const l0 = cpuid(0, 0);
    const vendor: @TypeOf(@as(X86Identity, .{}).vendor) = if (l0.ebx == 0x68747541 and l0.edx == 0x69746e65 and l0.ecx == 0x444d4163)
        .amd // "Auth" "enti" "cAMD"
    else if (l0.ebx == 0x756e6547 and l0.edx == 0x49656e69 and l0.ecx == 0x6c65746e)
        .intel // "Genu" "ineI" "ntel"
    else
        .other;
    const eax = cpuid(1, 0).eax;
    const base = (eax >> 8) & 0xf;
    return .{ .vendor = vendor, .family = if (base == 0xf) base + ((eax >> 20) & 0xff) else base, .avx512 = detect() & bit(.avx512f) != 0 };
}

/// Which cache-control hint the multi-row decode kernels' software prefetches use
/// (quant_legacy.zig Prefetch; kiln_prefetch_policy, names mirrored in src/ffi/library.ts).
pub const PrefetchPolicy = enum(i32) {
    /// prefetcht0 (into L1) for the legacy types' VNNI kernels while a row group fits L1,
    /// prefetcht1 (into L2) for every other kernel: measured best on AMD Zen 4, where L1
    /// prefetches of the K-quants' many bytes per step ran out of miss buffers.
    by_level = 0,
    /// prefetchnta for every kernel: on AMD Zen 5 (EPYC family 26 model 2) it read 1.04–1.15×
    /// faster than by_level (quant_legacy.zig Prefetch has the figures).
    non_temporal = 1,
    /// prefetcht1 (into L2) for every kernel: on Intel Emerald Rapids (family 6 model 207) whole
    /// decode steps ran 1.01–1.09× faster than by_level (quant_legacy.zig Prefetch).
    l2 = 2,
};

/// The policy measured for a CPU: non_temporal on AMD family 0x1A (Zen 5) and later, l2 on
/// Intel (measured on Emerald Rapids), by_level elsewhere (Zen 4 was measured with it; aarch64
/// and other x86 not at all).
pub fn prefetchPolicyFor(id: X86Identity) PrefetchPolicy {
    if (id.vendor == .amd and id.family >= 0x1a) return .non_temporal;
    if (id.vendor == .intel) return .l2;
    return .by_level;
}

/// Whether loading copies the layers' matmul weights into packed.zig's 16-row layout by default
/// (src/runtime/model.ts LoadOptions.packLayers; only types and shapes the build packs). Intel:
/// on Emerald Rapids (family 6 model 207, 2 threads) decode from the copy ran TinyLlama-shape
/// Q8_0 1.09–1.13× and Q4_0 1.09–1.26× llama.cpp's speed (two runs) where in place it ran 0.79×
/// and 0.96×, and prefill from it on AMX is 1.03–1.07× the in-place AMX kernel's
/// (docs/performance/intel-amx.md).
/// AMD Zen 4 (family 0x19 with the AVX-512 VNNI build): once the copies were one buffer of
/// 2 MiB pages (memory.zig alloc), on a 2-thread EPYC family 25 model 17 (2026-12-07)
/// SmolLM2-135M-Instruct Q4_1 decoded 1.3× faster from them (one process, both loaded, steps
/// alternated: 4.55 → 3.48 ms/token p50; separate processes 5.2–6.0 → 3.7–4.0),
/// TinyLlama-shape Q8_0 decode the same and Q4_0 2–3% slower, and 512-token prefill 1.25×
/// (Q4_0), 1.14× (Q8_0) and 1.08–1.11× (SmolLM2) faster: the in-place 4-bit decode kernels
/// compute only ~19–22 GB/s of weights per thread there, about this host's bandwidth share, and
/// the copy's ~3× cheaper arithmetic leaves the stream the bottleneck.
/// AMD Zen 3 (family 0x19 without AVX-512: the x86_64-v3 library's copies of the legacy types,
/// read 8 rows a vector; EPYC family 25 model 1, 2 threads, 2026-12-07): the in-place AVX2 decode
/// kernels are compute-bound there (~10 cycles a Q4_0 block), the copies stream. One op over
/// every layer, in place → copy (bench/model-matmul-ab.ts T=2, p50 GB/s): TinyLlama-shape Q4_0
/// gate+up 12.3 → 24.1, ffn_down 11.8 → 21.8; SmolLM2 Q4_1 gate+up 9.7 → 25.3, ffn_down 8.6 →
/// 20.9; Gemma 3 270M's Q5_0 gate+up 9.8 → 16.3, attn_q 9.5 → 21.4; Q8_0 gate+up 25.9 → 29.4,
/// ffn_down and attn_q 4–7% slower. Whole decode, kiln ÷ llama.cpp pair by pair (`kiln bench`;
/// in place at 21:25 → copies at 23:10 and in the 23:57 suite run): TinyLlama-shape Q4_0 0.90× →
/// 1.75×, 2.08×; SmolLM2 1.25× → 2.59×, 2.06×; Gemma 3 270M 1.38× → 1.54×, 1.91×; Q8_0 1.22× →
/// 1.53×, 1.36× (docs/performance/other.md); 512-token prefill from the copies within ~5% of the in-place
/// interleaved kernels (M=512 above: Q4_0 gate+up 178 against 182–193 GFLOP/s).
/// Zen 5 and every other CPU keep the weights in the file: not measured with the copies in
/// huge pages.
pub fn packLayersFor(id: X86Identity) bool {
    return id.vendor == .intel or (id.vendor == .amd and id.family == 0x19);
}

/// How packed.zig's decode kernels fetch a task's weight stream when it is long (packed.zig
/// hardware_stream_min_bytes, for the types it names): with software prefetches ahead of the
/// block being read (every CPU but one), or leaving it to the hardware prefetchers. AMD Zen 4
/// (family 0x19; EPYC family 25 model 17, 2 threads, 2026-12-07): prefetcht1 8 KB ahead held one
/// thread's stream of packed TinyLlama-shape Q4_0 gate+up at 22.4–22.8 GB/s whatever the
/// distance (4–32 KB) or the lines' alignment, the hardware alone at 29.6–30.0
/// (bench/model-matmul-ab.ts T=1 PACKED=1, builds alternated); whole decode steps of that model
/// 15.1–15.4 → 12.9–13.0 ms/token where the host's two vCPUs were two cores (probe 65 GB/s),
/// 18.1–18.7 → 17.3–17.7 where they shared one (35 GB/s). The weights in the file's mapping
/// (4 KiB pages) are another matter: without its prefetches TinyLlama-shape Q4_K read
/// 20.5 → 11.0 GB/s on one thread. Not Zen 3 (the same family without AVX-512; EPYC family 25
/// model 1, 2026-12-07, copies read 8 rows a vector, builds alternated, T=2, p50 GB/s): hardware
/// alone → software prefetches, TinyLlama-shape Q4_0 gate+up 18.4 → 20.4, ffn_down 14.8 → 16.9,
/// attn_q 14.8 → 15.6 (Q8_0, software in both builds, moved by up to 4% between them: noise).
pub const LongStreams = enum(i32) { software_prefetch = 0, hardware_prefetch = 1 };

pub fn longStreamsFor(id: X86Identity) LongStreams {
    return if (id.vendor == .amd and id.family == 0x19 and id.avx512) .hardware_prefetch else .software_prefetch;
}

/// longStreamsFor this CPU, decided once (software_prefetch off x86).
pub fn longStreams() LongStreams {
    return long_streams_decision.get();
}
const long_streams_decision = Decision(LongStreams, struct {
    fn decide() LongStreams {
        return if (is_x86) longStreamsFor(x86Identity()) else .software_prefetch;
    }
}.decide);

/// packLayersFor this CPU (false off x86).
pub fn packLayersDefault() bool {
    if (comptime !is_x86) return false;
    return packLayersFor(x86Identity());
}

/// The process's prefetch policy and where it came from: KILN_PREFETCH=by_level|non_temporal|l2
/// (Linux; another value is ignored here and refused by src/ffi/library.ts), else this CPU's
/// (prefetchPolicyFor). kiln_prefetch_policy's code: the policy, plus prefetch_from_env when the
/// environment chose.
pub const prefetch_from_env: i32 = 0x100;
pub const PrefetchChoice = enum(i32) {
    by_level = 0,
    non_temporal = 1,
    l2 = 2,
    by_level_from_env = prefetch_from_env + 0,
    non_temporal_from_env = prefetch_from_env + 1,
    l2_from_env = prefetch_from_env + 2,

    pub fn policy(c: PrefetchChoice) PrefetchPolicy {
        return @enumFromInt(@intFromEnum(c) & (prefetch_from_env - 1));
    }
};

pub fn prefetchChoice() PrefetchChoice {
    return prefetch_decision.get();
}
const prefetch_decision = Decision(PrefetchChoice, decidePrefetch);

fn decidePrefetch() PrefetchChoice {
    if (comptime builtin.os.tag == .linux) {
        if (std.posix.getenv("KILN_PREFETCH")) |v| {
            inline for (@typeInfo(PrefetchPolicy).@"enum".fields) |f| {
                if (std.mem.eql(u8, v, f.name)) return @enumFromInt(f.value + prefetch_from_env);
            }
        }
    }
    return @enumFromInt(@intFromEnum(if (is_x86) prefetchPolicyFor(x86Identity()) else PrefetchPolicy.by_level));
}

/// Whether the environment variable `name` is "0" (KILN_AMX=0, KILN_BF16=0: a run-time path
/// turned off). Read on Linux only, the one OS whose environment std.posix reads here.
pub fn disabledByEnv(comptime name: []const u8) bool {
    if (comptime builtin.os.tag != .linux) return false;
    const v = std.posix.getenv(name) orelse return false;
    return std.mem.eql(u8, v, "0");
}

/// A run-time decision made once per process and remembered (amx.zig's and bf16.zig's status):
/// the first caller runs `decide` under a lock, later callers read the answer with one atomic load.
pub fn Decision(comptime Status: type, comptime decide: fn () Status) type {
    return struct {
        const unknown: i32 = -1;
        var state = std.atomic.Value(i32).init(unknown);
        var lock: std.Thread.Mutex = .{};

        pub fn get() Status {
            const s = state.load(.acquire);
            if (s != unknown) return @enumFromInt(s);
            lock.lock();
            defer lock.unlock();
            const again = state.load(.acquire);
            if (again != unknown) return @enumFromInt(again);
            const decided = decide();
            state.store(@intFromEnum(decided), .release);
            return decided;
        }
    };
}

test "packLayersFor: Intel and AMD Zen 3 and 4" {
    try std.testing.expect(packLayersFor(.{ .vendor = .intel, .family = 6 }));
    try std.testing.expect(packLayersFor(.{ .vendor = .amd, .family = 0x19 }));
    try std.testing.expect(packLayersFor(.{ .vendor = .amd, .family = 0x19, .avx512 = true }));
    try std.testing.expect(!packLayersFor(.{ .vendor = .amd, .family = 0x1a }));
    try std.testing.expect(!packLayersFor(.{ .vendor = .amd, .family = 0x17 }));
    try std.testing.expect(!packLayersFor(.{}));
}

test "longStreamsFor: the hardware prefetchers on AMD Zen 4 only" {
    try std.testing.expectEqual(LongStreams.hardware_prefetch, longStreamsFor(.{ .vendor = .amd, .family = 0x19, .avx512 = true }));
    try std.testing.expectEqual(LongStreams.software_prefetch, longStreamsFor(.{ .vendor = .amd, .family = 0x19 })); // Zen 3
    try std.testing.expectEqual(LongStreams.software_prefetch, longStreamsFor(.{ .vendor = .amd, .family = 0x1a }));
    try std.testing.expectEqual(LongStreams.software_prefetch, longStreamsFor(.{ .vendor = .intel, .family = 6 }));
    try std.testing.expectEqual(LongStreams.software_prefetch, longStreamsFor(.{}));
    try std.testing.expectEqual(longStreams(), longStreams());
}

test "prefetchPolicyFor: prefetchnta on AMD Zen 5 and later only" {
    try std.testing.expectEqual(PrefetchPolicy.non_temporal, prefetchPolicyFor(.{ .vendor = .amd, .family = 0x1a }));
    try std.testing.expectEqual(PrefetchPolicy.non_temporal, prefetchPolicyFor(.{ .vendor = .amd, .family = 0x1b }));
    try std.testing.expectEqual(PrefetchPolicy.by_level, prefetchPolicyFor(.{ .vendor = .amd, .family = 0x19 }));
    try std.testing.expectEqual(PrefetchPolicy.l2, prefetchPolicyFor(.{ .vendor = .intel, .family = 6 }));
    try std.testing.expectEqual(PrefetchPolicy.by_level, prefetchPolicyFor(.{}));
    try std.testing.expectEqual(PrefetchPolicy.non_temporal, PrefetchChoice.non_temporal_from_env.policy());
    try std.testing.expectEqual(PrefetchPolicy.by_level, PrefetchChoice.by_level_from_env.policy());
    try std.testing.expectEqual(PrefetchPolicy.l2, PrefetchChoice.l2_from_env.policy());
    try std.testing.expectEqual(PrefetchPolicy.l2, PrefetchChoice.l2.policy());
    // Every policy has its two choices (the CPU's and the environment's).
    inline for (@typeInfo(PrefetchPolicy).@"enum".fields) |f| {
        try std.testing.expectEqual(@as(PrefetchPolicy, @enumFromInt(f.value)), @as(PrefetchChoice, @enumFromInt(f.value + prefetch_from_env)).policy());
        try std.testing.expect(f.value < prefetch_from_env);
    }
}

test "x86Identity: this CPU's vendor string and family agree with /proc/cpuinfo" {
    if (comptime !is_x86 or builtin.os.tag != .linux) return error.SkipZigTest;
    const id = x86Identity();
    var buf: [1 << 16]u8 = undefined;
    const f = std.fs.openFileAbsolute("/proc/cpuinfo", .{}) catch return error.SkipZigTest;
    defer f.close();
    const text = buf[0..try f.readAll(&buf)];
    const want_vendor: @TypeOf(id.vendor) = if (std.mem.indexOf(u8, text, "AuthenticAMD") != null) .amd else if (std.mem.indexOf(u8, text, "GenuineIntel") != null) .intel else .other;
    try std.testing.expectEqual(want_vendor, id.vendor);
    const at = std.mem.indexOf(u8, text, "cpu family") orelse return error.SkipZigTest;
    const colon = std.mem.indexOfScalarPos(u8, text, at, ':').?;
    const eol = std.mem.indexOfScalarPos(u8, text, colon, '\n').?;
    const family = try std.fmt.parseInt(u32, std.mem.trim(u8, text[colon + 1 .. eol], " \t"), 10);
    try std.testing.expectEqual(family, id.family);
}

test "levelFor: each level needs every one of its features" {
    const x86 = std.Target.Cpu.Arch.x86_64;
    var v3: FeatureSet = 0;
    for (x86_64_v3_needs) |f| v3 |= bit(f);
    var v4 = v3;
    for (x86_64_v4_needs) |f| v4 |= bit(f);
    try std.testing.expectEqual(@as(u32, 0), levelFor(x86, 0));
    try std.testing.expectEqual(@as(u32, 1), levelFor(x86, v3));
    try std.testing.expectEqual(@as(u32, 2), levelFor(x86, v4 | bit(.amx_tile)));
    for (x86_64_v3_needs) |f| try std.testing.expectEqual(@as(u32, 0), levelFor(x86, v3 & ~bit(f)));
    for (x86_64_v4_needs[x86_64_v3_needs.len..]) |f| try std.testing.expectEqual(@as(u32, 1), levelFor(x86, v4 & ~bit(f)));
    const arm = bit(.asimd) | bit(.asimddp) | bit(.asimdhp);
    try std.testing.expectEqual(@as(u32, 3), levelFor(.aarch64, arm));
    try std.testing.expectEqual(no_level, levelFor(.aarch64, arm & ~bit(.asimddp)));
}

test "detect: the CPU running this test binary runs the level it was built for" {
    const set = detect();
    const best = levelFor(builtin.cpu.arch, set);
    if (is_arm64) try std.testing.expectEqual(@as(u32, 3), best) else try std.testing.expect(best >= build_level);
    // Every feature this binary was compiled to use is one the CPU reports.
    if (has_avx2) try std.testing.expect(set & bit(.avx2) != 0);
    if (has_vnni512) try std.testing.expect(set & bit(.avx512_vnni) != 0 and set & bit(.avx512bw) != 0);
    if (has_dotprod) try std.testing.expect(set & bit(.asimddp) != 0);
}

test "Decision: decided once, by the first caller, whatever the threads racing for it" {
    const Answer = enum(i32) { yes = 0, no = 1 };
    const D = struct {
        var calls = std.atomic.Value(u32).init(0);
        fn decide() Answer {
            _ = calls.fetchAdd(1, .monotonic);
            std.Thread.sleep(2 * std.time.ns_per_ms); // the others arrive while it decides
            return .no;
        }
    };
    const Once = Decision(Answer, D.decide);
    var threads: [4]std.Thread = undefined;
    for (&threads) |*t| t.* = try std.Thread.spawn(.{}, struct {
        fn f() void {
            std.debug.assert(Once.get() == .no);
        }
    }.f, .{});
    for (threads) |t| t.join();
    try std.testing.expectEqual(Answer.no, Once.get());
    try std.testing.expectEqual(@as(u32, 1), D.calls.load(.monotonic));
}

test "f16BitsToF32: every f16 bit pattern converts as @floatCast does" {
    var bits: u32 = 0;
    while (bits <= 0xffff) : (bits += 1) {
        const h: u16 = @intCast(bits);
        const want: f32 = @floatCast(@as(f16, @bitCast(h)));
        const got = f16BitsToF32(h);
        // NaNs compare by class (both quiet NaN, same sign); everything else bit for bit.
        if (std.math.isNan(want)) {
            try std.testing.expect(std.math.isNan(got));
            try std.testing.expectEqual(std.math.signbit(want), std.math.signbit(got));
        } else {
            try std.testing.expectEqual(@as(u32, @bitCast(want)), @as(u32, @bitCast(got)));
        }
    }
}

test "reduceEach: lane b is row b's max or sum, at every width used" {
    var prng = std.Random.DefaultPrng.init(23);
    const r = prng.random();
    inline for (.{ 1, 2, 4, 8, 16 }) |G| {
        for (0..200) |_| {
            var rows: [G]@Vector(G, f32) = undefined;
            var irows: [G]@Vector(G, i32) = undefined;
            for (0..G) |b| {
                var a: [G]f32 = undefined;
                var ia: [G]i32 = undefined;
                for (&a, &ia) |*x, *y| {
                    x.* = (r.float(f32) - 0.5) * 100;
                    y.* = r.intRangeAtMost(i32, -4096, 4096);
                }
                if (G > 2 and r.boolean()) a[r.uintLessThan(usize, G)] = std.math.nan(f32);
                rows[b] = a;
                irows[b] = ia;
            }
            const m: [G]f32 = reduceEach(f32, G, .max, rows);
            const s: [G]i32 = reduceEach(i32, G, .add, irows);
            for (0..G) |b| {
                try std.testing.expectEqual(maxLanes(G, rows[b]), m[b]);
                try std.testing.expectEqual(@reduce(.Add, irows[b]), s[b]);
            }
        }
    }
}

test "maxLanes: the value @reduce(.Max) gives, NaN lanes ignored, at every width used" {
    var prng = std.Random.DefaultPrng.init(17);
    const r = prng.random();
    inline for (.{ 1, 3, 4, 8, 16, 32 }) |n| {
        for (0..2000) |iter| {
            var a: [n]f32 = undefined;
            for (&a) |*x| x.* = (r.float(f32) - 0.5) * 100;
            // Some rows with NaN or ±inf lanes, one all NaN.
            if (iter % 7 == 1) a[r.uintLessThan(usize, n)] = std.math.nan(f32);
            if (iter % 11 == 2) a[r.uintLessThan(usize, n)] = -std.math.inf(f32);
            if (iter % 13 == 3) a[r.uintLessThan(usize, n)] = std.math.inf(f32);
            if (iter == 5) a = @splat(std.math.nan(f32));
            const v: @Vector(n, f32) = a;
            const want = @reduce(.Max, v);
            const got = maxLanes(n, v);
            if (std.math.isNan(want)) {
                try std.testing.expect(std.math.isNan(got));
            } else {
                try std.testing.expectEqual(@as(u32, @bitCast(want)), @as(u32, @bitCast(got)));
            }
        }
    }
}
