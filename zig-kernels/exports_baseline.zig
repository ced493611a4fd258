//! The exports that must run on every CPU of the architecture. build.zig compiles this file at
//! the architecture's baseline and links it into every level's library, so a loader may ask any
//! build (a v4 one included) what this CPU runs without risking an illegal instruction.
const builtin = @import("builtin");
const cpu = @import("cpu.zig");

/// The best kiln_cpu_level() this CPU runs, or 0xffffffff when it runs none (an aarch64 core
/// without dotprod).
export fn kiln_cpu_best_level() u32 {
    return cpu.levelFor(builtin.cpu.arch, cpu.detect());
}

/// The CPU's features as a bit set (cpu.zig Feature; names in src/ffi/library.ts).
export fn kiln_cpu_features() u64 {
    return cpu.detect();
}
