//! CPU detection that must run on every CPU of the architecture. build.zig compiles this file
//! at the architecture's baseline and links it into every level's library; exports.zig's
//! kiln_cpu_best_level / kiln_cpu_features only jump here, so a loader may ask any build (a v4
//! one included) what this CPU runs without risking an illegal instruction. The symbols are
//! hidden: visible to the link, never exported from the library.
const builtin = @import("builtin");
const cpu = @import("cpu.zig");

fn bestLevel() callconv(.c) u32 {
    return cpu.levelFor(builtin.cpu.arch, cpu.detect());
}

fn features() callconv(.c) u64 {
    return cpu.detect();
}

comptime {
    @export(&bestLevel, .{ .name = "kiln_baseline_cpu_best_level", .visibility = .hidden });
    @export(&features, .{ .name = "kiln_baseline_cpu_features", .visibility = .hidden });
}
