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
