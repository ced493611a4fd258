//! Builds kiln's kernel library once per CPU level, and its tests at every level.
//!
//!   zig build -Doptimize=ReleaseFast   → zig-out/lib/libkiln-{x86_64-baseline,x86_64-v3,x86_64-v4,aarch64}.so
//!                                        (.dylib / .dll when built on macOS / Windows), unstripped
//!   zig build prebuilt -Doptimize=ReleaseFast
//!                                      → zig-out/prebuilt/<platform>/libkiln-<level>.<so|dylib|dll>, stripped,
//!                                        for linux-x64, linux-arm64, darwin-x64, darwin-arm64, win32-x64
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

/// Where a library runs: Node's `${process.platform}-${process.arch}` name, OS and the levels.
const Platform = struct {
    name: []const u8,
    os_tag: std.Target.Os.Tag,
    /// null: the OS's default (macOS has one C ABI).
    abi: ?std.Target.Abi,
    levels: []const []const u8,
};

const x86_levels: []const []const u8 = &.{ "x86_64-baseline", "x86_64-v3", "x86_64-v4" };
const arm_levels: []const []const u8 = &.{"aarch64"};

/// What `zig build prebuilt` makes: one folder per npm platform package (@kiln/<name>).
const prebuilt_platforms = [_]Platform{
    .{ .name = "linux-x64", .os_tag = .linux, .abi = .gnu, .levels = x86_levels },
    .{ .name = "linux-arm64", .os_tag = .linux, .abi = .gnu, .levels = arm_levels },
    .{ .name = "darwin-x64", .os_tag = .macos, .abi = null, .levels = x86_levels },
    .{ .name = "darwin-arm64", .os_tag = .macos, .abi = null, .levels = arm_levels },
    .{ .name = "win32-x64", .os_tag = .windows, .abi = .gnu, .levels = x86_levels },
};

fn findLevel(name: []const u8) Level {
    for (levels()) |level| if (std.mem.eql(u8, level.name, name)) return level;
    unreachable;
}

/// The level's target query for an OS. macOS builds run from macOS 11 (the first with arm64).
fn platformQuery(level: Level, os_tag: std.Target.Os.Tag, abi: ?std.Target.Abi) std.Target.Query {
    var query = level.query;
    query.os_tag = os_tag;
    query.abi = abi;
    if (os_tag == .macos) query.os_version_min = .{ .semver = .{ .major = 11, .minor = 0, .patch = 0 } };
    return query;
}

/// File name of a level's library: libkiln-<level>.<so|dylib|dll> on every OS (Bun's `suffix`).
fn libraryFileName(b: *std.Build, level_name: []const u8, os_tag: std.Target.Os.Tag) []const u8 {
    const ext = switch (os_tag) {
        .macos => "dylib",
        .windows => "dll",
        else => "so",
    };
    return b.fmt("libkiln-{s}.{s}", .{ level_name, ext });
}

/// One level's kernel library for `query`'s OS, with exports_baseline.zig (CPU detection)
/// compiled at the architecture's baseline CPU linked in: detection must run on any CPU.
fn kernelLibrary(b: *std.Build, level_name: []const u8, query: std.Target.Query, optimize: std.builtin.OptimizeMode, strip: bool) *std.Build.Step.Compile {
    const lib = b.addLibrary(.{
        // Windows adds no "lib" prefix: the DLL's own name then matches its file name.
        .name = b.fmt("{s}kiln-{s}", .{ if (query.os_tag == .windows) "lib" else "", level_name }),
        .linkage = .dynamic,
        .root_module = b.createModule(.{
            .root_source_file = b.path("zig-kernels/exports.zig"),
            .target = b.resolveTargetQuery(query),
            .optimize = optimize,
            .link_libc = true, // dlopen of libcuda/NVRTC at run time
            .strip = strip,
        }),
    });
    var baseline = query;
    baseline.cpu_model = .baseline;
    baseline.cpu_features_add = .empty;
    lib.root_module.addObject(b.addObject(.{
        .name = b.fmt("kiln-detect-{s}", .{level_name}),
        .root_module = b.createModule(.{
            .root_source_file = b.path("zig-kernels/exports_baseline.zig"),
            .target = b.resolveTargetQuery(baseline),
            .optimize = optimize,
            .link_libc = true,
            .pic = true,
            .strip = strip,
        }),
    }));
    return lib;
}

/// The first instruction-set extension the target level uses that this machine's CPU lacks (null:
/// it can run the level). Only instruction sets count: a level's CPU model also carries tuning
/// flags (slow_3ops_lea, …) that a perfectly able CPU need not list.
fn missingIsa(target: std.Target, host: std.Target) ?[]const u8 {
    if (target.cpu.arch != .x86_64 or host.cpu.arch != .x86_64) return null;
    const F = std.Target.x86.Feature;
    const isa = [_]F{ .sse3, .ssse3, .sse4_1, .sse4_2, .popcnt, .avx, .avx2, .fma, .f16c, .bmi, .bmi2, .lzcnt, .movbe, .avx512f, .avx512bw, .avx512cd, .avx512dq, .avx512vl, .avx512vnni, .avx512bf16, .avx512fp16, .avxvnni, .amx_tile, .amx_int8, .amx_bf16 };
    for (isa) |f| {
        if (target.cpu.has(.x86, f) and !host.cpu.has(.x86, f)) return @tagName(f);
    }
    return null;
}

pub fn build(b: *std.Build) void {
    const optimize = b.standardOptimizeOption(.{});
    const test_step = b.step("test", "Run every kernel test at every CPU level");
    const prebuilt_step = b.step("prebuilt", "Stripped libraries for every platform package: zig-out/prebuilt/<platform>/libkiln-<level>.<ext>");
    // Foreign (aarch64) tests run under qemu-aarch64 when it is on PATH; otherwise they are
    // still compiled, so NEON paths never rot.
    const have_qemu = if (b.findProgram(&.{"qemu-aarch64"}, &.{})) |_| true else |_| false;
    b.enable_qemu = have_qemu;

    // The dev build: every level for this machine's OS (glibc on Linux), unstripped.
    const host_os = b.graph.host.result.os.tag;
    for (levels()) |level| {
        const lib = kernelLibrary(b, level.name, platformQuery(level, host_os, if (host_os == .linux) .gnu else null), optimize, false);
        b.getInstallStep().dependOn(&b.addInstallFileWithDir(lib.getEmittedBin(), .lib, libraryFileName(b, level.name, host_os)).step);

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
        // An x86-64 level this CPU lacks (x86_64-v4 on an AVX2-only Zen 3, say) would die of an
        // illegal instruction: it is compiled, so it never rots, and said to be not run. A
        // machine change must not fail the tests; the level's own CPU runs them.
        if (missingIsa(b.resolveTargetQuery(test_query).result, b.graph.host.result)) |lacking| {
            const note = b.addSystemCommand(&.{ "echo", b.fmt("kernel-tests-{s}: compiled, not run (this CPU, {s}, lacks {s})", .{ level.name, b.graph.host.result.cpu.model.name, lacking }) });
            note.step.dependOn(&tests.step);
            test_step.dependOn(&note.step);
            continue;
        }
        const run = b.addRunArtifact(tests);
        run.skip_foreign_checks = !have_qemu;
        test_step.dependOn(&run.step);
    }

    // build.zig's own test (missingIsa, which decides the skip above), on this machine.
    test_step.dependOn(&b.addRunArtifact(b.addTest(.{
        .name = "build-script-tests",
        .root_module = b.createModule(.{ .root_source_file = b.path("build.zig"), .target = b.graph.host, .optimize = .Debug }),
    })).step);

    // The AMX probe (zig-kernels/amx_probe.zig: the AMX kernel's speed, for machines with AMX)
    // is compiled with the tests so it never rots; scripts/gpu-check.sh runs it where AMX is.
    const probe = b.addExecutable(.{
        .name = "amx-probe",
        .root_module = b.createModule(.{
            .root_source_file = b.path("zig-kernels/amx_probe.zig"),
            .target = b.resolveTargetQuery(platformQuery(findLevel("x86_64-v4"), .linux, .musl)),
            .optimize = .ReleaseFast,
        }),
    });
    test_step.dependOn(&probe.step);

    for (prebuilt_platforms) |platform| {
        for (platform.levels) |level_name| {
            const query = platformQuery(findLevel(level_name), platform.os_tag, platform.abi);
            const lib = kernelLibrary(b, level_name, query, optimize, true);
            const dir: std.Build.InstallDir = .{ .custom = b.fmt("prebuilt/{s}", .{platform.name}) };
            prebuilt_step.dependOn(&b.addInstallFileWithDir(lib.getEmittedBin(), dir, libraryFileName(b, level_name, platform.os_tag)).step);
        }
    }
}

test "missingIsa: a level runs where the CPU has its instruction sets, whatever its tuning flags" {
    const x86 = std.Target.x86;
    const resolve = struct {
        fn f(model: *const std.Target.Cpu.Model, add: std.Target.Cpu.Feature.Set) !std.Target {
            return std.zig.system.resolveTargetQuery(.{ .cpu_arch = .x86_64, .os_tag = .linux, .abi = .gnu, .cpu_model = .{ .explicit = model }, .cpu_features_add = add });
        }
    }.f;
    const none = x86.featureSet(&.{});
    const v4 = try resolve(&x86.cpu.x86_64_v4, x86.featureSet(&.{.avx512vnni}));
    const v3 = try resolve(&x86.cpu.x86_64_v3, none);
    const baseline = try resolve(&x86.cpu.x86_64, none);
    const zen3 = try resolve(&x86.cpu.znver3, none);
    const zen4 = try resolve(&x86.cpu.znver4, none);
    const haswell = try resolve(&x86.cpu.haswell, none);
    // An AVX2-only Zen 3 lacks AVX-512 (the v4 tests died of SIGILL there) but runs v3 and
    // baseline, though its feature set is no superset of theirs (tuning flags differ).
    try std.testing.expectEqualStrings("avx512f", missingIsa(v4, zen3).?);
    try std.testing.expectEqual(@as(?[]const u8, null), missingIsa(v3, zen3));
    try std.testing.expectEqual(@as(?[]const u8, null), missingIsa(baseline, zen3));
    try std.testing.expectEqual(@as(?[]const u8, null), missingIsa(v4, zen4));
    try std.testing.expectEqualStrings("avx512f", missingIsa(v4, haswell).?);
    try std.testing.expectEqual(@as(?[]const u8, null), missingIsa(v3, haswell));
}
