//! Test root: every kernel family's tests, built and run once per CPU level by `zig build test`.
test {
    _ = @import("cpu.zig");
    _ = @import("pool.zig");
    _ = @import("memory.zig");
    _ = @import("quant_legacy.zig");
    _ = @import("quant_k.zig");
    _ = @import("quant.zig");
    _ = @import("matmul.zig");
    _ = @import("repack.zig");
    _ = @import("amx.zig");
    _ = @import("amx_probe.zig");
    _ = @import("bf16.zig");
    _ = @import("packed.zig");
    _ = @import("norm.zig");
    _ = @import("activations.zig");
    _ = @import("rope.zig");
    _ = @import("attention.zig");
    _ = @import("attention_amx.zig");
    _ = @import("bandwidth.zig");
    _ = @import("sampling.zig");
}
