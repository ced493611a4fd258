//! Builds kiln's kernel library once per CPU level, and its tests at every level.
//!
//!   zig build -Doptimize=ReleaseFast   → zig-out/lib/libkiln-{x86_64-baseline,x86_64-v3,x86_64-v4,aarch64}.so
//!   zig build test                     → every kernel test at each x86-64 level on this machine,
//!                                        and the aarch64 (NEON) tests under qemu-aarch64 when it is installed
//!
//! At load time src/ffi/library.ts picks the best level the CPU supports (KILN_CPU forces one).
const std = @import("std");

const Level = struct {
    name: []const u8,
    query: std.Target.Query,
};

fn levels() [4]Level {
    const x86 = std.Target.x86;
    const arm = std.Target.aarch64;
    return .{
        .{ .name = "x86_64-baseline", .query = .{ .cpu_arch = .x86_64, .os_tag = .linux, .abi = .gnu, .cpu_model = .baseline } },
        .{ .name = "x86_64-v3", .query = .{ .cpu_arch = .x86_64, .os_tag = .linux, .abi = .gnu, .cpu_model = .{ .explicit = &x86.cpu.x86_64_v3 } } },
        .{ .name = "x86_64-v4", .query = .{
            .cpu_arch = .x86_64,
            .os_tag = .linux,
            .abi = .gnu,
            .cpu_model = .{ .explicit = &x86.cpu.x86_64_v4 },
            // VNNI (vpdpbusd) is the integer dot product the quantized matmuls want; every
            // AVX-512 core since Ice Lake / Zen 4 has it.
            .cpu_features_add = x86.featureSet(&.{.avx512vnni}),
        } },
        .{ .name = "aarch64", .query = .{
            .cpu_arch = .aarch64,
            .os_tag = .linux,
            .abi = .gnu,
            .cpu_model = .{ .explicit = &arm.cpu.generic },
            // sdot (ARMv8.2 dotprod): Apple M1+, Graviton 2+, Cortex-A76+ (Raspberry Pi 5).
            .cpu_features_add = arm.featureSet(&.{ .neon, .dotprod, .fullfp16 }),
        } },
    };
}

/// exports_baseline.zig (CPU detection) compiled for the level's architecture at its baseline
/// CPU, to be linked into the level's library: detection must run on any CPU of the arch.
fn baselineExports(b: *std.Build, level: Level, optimize: std.builtin.OptimizeMode) *std.Build.Step.Compile {
    var query = level.query;
    query.cpu_model = .baseline;
    query.cpu_features_add = .empty;
    return b.addObject(.{
        .name = b.fmt("kiln-detect-{s}", .{level.name}),
        .root_module = b.createModule(.{
            .root_source_file = b.path("zig-kernels/exports_baseline.zig"),
            .target = b.resolveTargetQuery(query),
            .optimize = optimize,
            .link_libc = true,
            .pic = true,
        }),
    });
}

pub fn build(b: *std.Build) void {
    const optimize = b.standardOptimizeOption(.{});
    const test_step = b.step("test", "Run every kernel test at every CPU level");
    // Foreign (aarch64) tests run under qemu-aarch64 when it is on PATH; otherwise they are
    // still compiled, so NEON paths never rot.
    const have_qemu = if (b.findProgram(&.{"qemu-aarch64"}, &.{})) |_| true else |_| false;
    b.enable_qemu = have_qemu;

    for (levels()) |level| {
        const target = b.resolveTargetQuery(level.query);
        const lib = b.addLibrary(.{
            .name = b.fmt("kiln-{s}", .{level.name}),
            .linkage = .dynamic,
            .root_module = b.createModule(.{
                .root_source_file = b.path("zig-kernels/exports.zig"),
                .target = target,
                .optimize = optimize,
                .link_libc = true, // dlopen of libcuda/NVRTC at run time
            }),
        });
        lib.root_module.addObject(baselineExports(b, level, optimize));
        b.installArtifact(lib);

        var test_query = level.query;
        test_query.abi = .musl; // static test binaries: qemu needs no aarch64 sysroot
        const tests = b.addTest(.{
            .name = b.fmt("kernel-tests-{s}", .{level.name}),
            .root_module = b.createModule(.{
                .root_source_file = b.path("zig-kernels/tests.zig"),
                .target = b.resolveTargetQuery(test_query),
                .optimize = optimize,
            }),
        });
        const run = b.addRunArtifact(tests);
        run.skip_foreign_checks = !have_qemu;
        test_step.dependOn(&run.step);
    }
}
