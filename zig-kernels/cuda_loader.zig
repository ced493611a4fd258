//! The NVIDIA driver API and NVRTC, opened at run time: libkiln never links CUDA, so the same
//! library runs on machines without a GPU, and `kiln_cuda_load` says why there is none.
//!
//!   NVRTC (compiles cuda/*.cu to CUBIN; needs no GPU): libnvrtc.so.12 (a given path first)
//!   driver (devices, memory, modules, launches, graphs): libcuda.so.1 (nvcuda.dll on Windows)
//!
//! Each library's entry points are resolved once into one table (`Nvrtc`, `Driver`: the field
//! names are the exported symbol names, `_v2` where cuda.h aliases the plain name to it); the
//! table is written under a mutex and published with a release store, then only read.
//!
//! Every call goes through `check`, which on failure records "<call>: <CUDA error name>" in a
//! per-thread buffer (`kiln_cuda_last_error`) and returns `err_cuda`. Handles (contexts, modules,
//! functions, streams, graphs, NVRTC programs) cross the C ABI as u64, as do device pointers.
//!
//! Copies: `memcpyHtoD`/`memcpyDtoH` with stream 0 are the synchronous driver calls (they return
//! when the copy is done); with a stream they are the `Async_v2` calls on it. From pageable host
//! memory (a JS typed array) an async host-to-device copy returns once the driver has staged the
//! bytes, and an async device-to-host copy returns only when it is complete, so the host buffer
//! may move or die after the call either way; pinned memory (`hostAlloc`) makes them truly async.
const std = @import("std");
const builtin = @import("builtin");

/// Status codes (mirrored in src/ffi/library.ts Status; -1..-3 are exports.zig's).
pub const ok: i32 = 0;
pub const err_bad_arg: i32 = -3;
/// A driver or NVRTC call failed: kiln_cuda_last_error names the call and the CUDA error.
pub const err_cuda: i32 = -4;
/// The library is missing, lacks an entry point, or was not loaded (kiln_cuda_last_error says which).
pub const err_no_library: i32 = -5;
/// NVRTC rejected the source: the program log (kiln_nvrtc_log) says why.
pub const err_compile: i32 = -6;

/// Dynamic shared memory above this needs CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
pub const default_dynamic_smem_max = 48 * 1024;
/// Limits on what a caller may hand to kiln_nvrtc_compile.
pub const max_headers = 256;
pub const max_options = 64;

const is_windows = builtin.os.tag == .windows;
const default_driver_name: [:0]const u8 = switch (builtin.os.tag) {
    .windows => "nvcuda.dll",
    .macos => "libcuda.dylib",
    else => "libcuda.so.1",
};
const default_nvrtc_names: []const [:0]const u8 = switch (builtin.os.tag) {
    .windows => &.{ "nvrtc64_120_0.dll", "nvrtc64_112_0.dll" },
    .macos => &.{"libnvrtc.dylib"},
    else => &.{ "libnvrtc.so.12", "libnvrtc.so" },
};

// ---- the last error, per thread -----------------------------------------------------------

threadlocal var last_error_buf: [640]u8 = undefined;
threadlocal var last_error_len: usize = 0;

/// Records a formatted message as this thread's last error (truncated to the buffer) and returns `status`.
fn fail(status: i32, comptime fmt: []const u8, args: anytype) i32 {
    const msg = std.fmt.bufPrint(&last_error_buf, fmt, args) catch blk: {
        const tail = "...";
        @memcpy(last_error_buf[last_error_buf.len - tail.len ..], tail);
        break :blk last_error_buf[0..];
    };
    last_error_len = msg.len;
    return status;
}

/// Copies this thread's last error message into buf (up to cap bytes); returns its full length.
pub fn lastError(buf: ?[*]u8, cap: u64) u64 {
    const n = last_error_len;
    if (buf) |b| {
        const m: usize = @intCast(@min(n, cap));
        @memcpy(b[0..m], last_error_buf[0..m]);
    }
    return n;
}

// ---- the entry-point tables ----------------------------------------------------------------

const CUresult = c_int;
const nvrtcResult = c_int;
const Handle = ?*anyopaque;

/// libnvrtc's entry points used here (field name = symbol name).
const Nvrtc = struct {
    nvrtcGetErrorString: *const fn (nvrtcResult) callconv(.c) ?[*:0]const u8,
    nvrtcVersion: *const fn (*c_int, *c_int) callconv(.c) nvrtcResult,
    nvrtcCreateProgram: *const fn (*Handle, [*:0]const u8, [*:0]const u8, c_int, ?[*]const [*:0]const u8, ?[*]const [*:0]const u8) callconv(.c) nvrtcResult,
    nvrtcCompileProgram: *const fn (Handle, c_int, ?[*]const [*:0]const u8) callconv(.c) nvrtcResult,
    nvrtcGetProgramLogSize: *const fn (Handle, *usize) callconv(.c) nvrtcResult,
    nvrtcGetProgramLog: *const fn (Handle, [*]u8) callconv(.c) nvrtcResult,
    nvrtcGetCUBINSize: *const fn (Handle, *usize) callconv(.c) nvrtcResult,
    nvrtcGetCUBIN: *const fn (Handle, [*]u8) callconv(.c) nvrtcResult,
    nvrtcGetPTXSize: *const fn (Handle, *usize) callconv(.c) nvrtcResult,
    nvrtcGetPTX: *const fn (Handle, [*]u8) callconv(.c) nvrtcResult,
    nvrtcDestroyProgram: *const fn (*Handle) callconv(.c) nvrtcResult,
};

/// libcuda's entry points used here (field name = symbol name; `_v2` where cuda.h aliases to it).
const Driver = struct {
    cuGetErrorName: *const fn (CUresult, *?[*:0]const u8) callconv(.c) CUresult,
    cuInit: *const fn (c_uint) callconv(.c) CUresult,
    cuDriverGetVersion: *const fn (*c_int) callconv(.c) CUresult,
    cuDeviceGetCount: *const fn (*c_int) callconv(.c) CUresult,
    cuDeviceGet: *const fn (*c_int, c_int) callconv(.c) CUresult,
    cuDeviceGetName: *const fn ([*]u8, c_int, c_int) callconv(.c) CUresult,
    cuDeviceGetAttribute: *const fn (*c_int, c_int, c_int) callconv(.c) CUresult,
    cuDeviceTotalMem_v2: *const fn (*usize, c_int) callconv(.c) CUresult,
    cuDevicePrimaryCtxRetain: *const fn (*Handle, c_int) callconv(.c) CUresult,
    cuDevicePrimaryCtxRelease_v2: *const fn (c_int) callconv(.c) CUresult,
    cuCtxSetCurrent: *const fn (Handle) callconv(.c) CUresult,
    cuCtxSynchronize: *const fn () callconv(.c) CUresult,
    cuMemGetInfo_v2: *const fn (*usize, *usize) callconv(.c) CUresult,
    cuModuleLoadData: *const fn (*Handle, *const anyopaque) callconv(.c) CUresult,
    cuModuleGetFunction: *const fn (*Handle, Handle, [*:0]const u8) callconv(.c) CUresult,
    cuModuleUnload: *const fn (Handle) callconv(.c) CUresult,
    cuFuncSetAttribute: *const fn (Handle, c_int, c_int) callconv(.c) CUresult,
    cuLaunchKernel: *const fn (Handle, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, Handle, ?[*]Handle, ?[*]Handle) callconv(.c) CUresult,
    cuMemAlloc_v2: *const fn (*u64, usize) callconv(.c) CUresult,
    cuMemFree_v2: *const fn (u64) callconv(.c) CUresult,
    cuMemcpyHtoD_v2: *const fn (u64, *const anyopaque, usize) callconv(.c) CUresult,
    cuMemcpyDtoH_v2: *const fn (*anyopaque, u64, usize) callconv(.c) CUresult,
    cuMemcpyHtoDAsync_v2: *const fn (u64, *const anyopaque, usize, Handle) callconv(.c) CUresult,
    cuMemcpyDtoHAsync_v2: *const fn (*anyopaque, u64, usize, Handle) callconv(.c) CUresult,
    cuMemcpyDtoDAsync_v2: *const fn (u64, u64, usize, Handle) callconv(.c) CUresult,
    cuMemsetD8Async: *const fn (u64, u8, usize, Handle) callconv(.c) CUresult,
    cuMemHostAlloc: *const fn (*Handle, usize, c_uint) callconv(.c) CUresult,
    cuMemFreeHost: *const fn (Handle) callconv(.c) CUresult,
    cuStreamCreate: *const fn (*Handle, c_uint) callconv(.c) CUresult,
    cuStreamDestroy_v2: *const fn (Handle) callconv(.c) CUresult,
    cuStreamSynchronize: *const fn (Handle) callconv(.c) CUresult,
    cuStreamBeginCapture_v2: *const fn (Handle, c_int) callconv(.c) CUresult,
    cuStreamEndCapture: *const fn (Handle, *Handle) callconv(.c) CUresult,
    cuGraphInstantiateWithFlags: *const fn (*Handle, Handle, u64) callconv(.c) CUresult,
    cuGraphLaunch: *const fn (Handle, Handle) callconv(.c) CUresult,
    cuGraphExecDestroy: *const fn (Handle) callconv(.c) CUresult,
    cuGraphDestroy: *const fn (Handle) callconv(.c) CUresult,
};

const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
const CU_STREAM_NON_BLOCKING = 1;
/// Relaxed: kernels may be loaded (cuModuleLoadData) and memory allocated while a stream captures.
const CU_STREAM_CAPTURE_MODE_RELAXED = 2;

/// A library and its table: filled once under `mutex`, then published by `ready`.
fn Loaded(comptime Table: type) type {
    return struct {
        table: Table = undefined,
        ready: std.atomic.Value(bool) = .init(false),

        fn get(self: *const @This()) ?*const Table {
            return if (self.ready.load(.acquire)) &self.table else null;
        }
    };
}

var load_mutex: std.Thread.Mutex = .{};
var nvrtc: Loaded(Nvrtc) = .{};
var driver: Loaded(Driver) = .{};
/// cuInit succeeded (the driver table alone is not enough: no device, or a broken install).
var driver_initialized = std.atomic.Value(bool).init(false);

/// dlerror()'s text where the platform has one (why a library did not open), else "".
fn openError() []const u8 {
    if (comptime @hasDecl(@FieldType(std.DynLib, "inner"), "getError")) {
        const e = std.c.dlerror() orelse return "";
        return std.mem.span(e);
    }
    return "";
}

const Opened = union(enum) {
    lib: std.DynLib,
    /// The library did not open: dlerror()'s text (may be empty).
    not_opened: []const u8,
    /// It opened but lacks this entry point.
    missing: [:0]const u8,
};

/// Opens `path` and resolves every field of `Table` into `out`.
fn openTable(comptime Table: type, path: [*:0]const u8, out: *Table) Opened {
    var lib = std.DynLib.openZ(path) catch return .{ .not_opened = openError() };
    inline for (@typeInfo(Table).@"struct".fields) |f| {
        // On a missing symbol the library stays open: closing a library that may have run
        // initializers is never worth the risk, and it happens once.
        @field(out, f.name) = lib.lookup(f.type, f.name) orelse return .{ .missing = f.name };
    }
    return .{ .lib = lib };
}

fn isNotFound(why: []const u8) bool {
    return why.len == 0 or std.mem.indexOf(u8, why, "No such file") != null or std.mem.indexOf(u8, why, "not found") != null;
}

/// Loads NVRTC from `path`, or else from the system's default names. Idempotent: once loaded,
/// later calls return ok whatever the path.
pub fn nvrtcLoad(path: ?[*:0]const u8) i32 {
    load_mutex.lock();
    defer load_mutex.unlock();
    if (nvrtc.ready.load(.acquire)) return ok;
    if (path) |p| {
        switch (openTable(Nvrtc, p, &nvrtc.table)) {
            .lib => {},
            .not_opened => |why| return fail(err_no_library, "{s}: cannot be loaded ({s})", .{ p, if (why.len > 0) why else "not found" }),
            .missing => |sym| return fail(err_no_library, "{s} lacks {s} (not NVRTC, or too old a one)", .{ p, sym }),
        }
    } else {
        const found = for (default_nvrtc_names) |name| {
            if (openTable(Nvrtc, name, &nvrtc.table) == .lib) break true;
        } else false;
        if (!found) return fail(err_no_library, "NVRTC not found (tried {s})", .{comptime joinNames(default_nvrtc_names)});
    }
    nvrtc.ready.store(true, .release);
    return ok;
}

fn joinNames(comptime names: []const [:0]const u8) []const u8 {
    var s: []const u8 = "";
    for (names, 0..) |n, i| s = s ++ (if (i == 0) "" else ", ") ++ n;
    return s;
}

/// Loads the driver (default libcuda.so.1) and runs cuInit(0). A missing library is
/// err_no_library, "libcuda.so.1 not found (no NVIDIA driver)"; cuInit's failure (no device) is
/// err_cuda naming its error. Idempotent once it succeeded; after a failure it may be retried.
pub fn cudaLoad(path: ?[*:0]const u8) i32 {
    load_mutex.lock();
    defer load_mutex.unlock();
    if (driver_initialized.load(.acquire)) return ok;
    if (!driver.ready.load(.acquire)) {
        const name: [*:0]const u8 = path orelse default_driver_name;
        switch (openTable(Driver, name, &driver.table)) {
            .lib => {},
            .not_opened => |why| {
                if (isNotFound(why)) return fail(err_no_library, "{s} not found (no NVIDIA driver)", .{name});
                return fail(err_no_library, "{s} cannot be loaded (is the NVIDIA driver installed correctly?): {s}", .{ name, why });
            },
            .missing => |sym| return fail(err_no_library, "{s} lacks {s} (the NVIDIA driver is too old: CUDA 12 drivers are needed)", .{ name, sym }),
        }
        driver.ready.store(true, .release);
    }
    if (check(.driver, "cuInit", driver.table.cuInit(0)) != ok) return err_cuda;
    driver_initialized.store(true, .release);
    return ok;
}

// ---- the one check ---------------------------------------------------------------------------

const Api = enum { driver, nvrtc };

/// The one place a CUDA result is judged: ok, or err_cuda with "<call>: <ERROR_NAME>" recorded.
fn check(comptime api: Api, comptime call: []const u8, result: c_int) i32 {
    if (result == 0) return ok;
    var name: ?[*:0]const u8 = null;
    switch (api) {
        .driver => if (driver.get()) |d| {
            if (d.cuGetErrorName(result, &name) != 0) name = null;
        },
        .nvrtc => if (nvrtc.get()) |n| {
            name = n.nvrtcGetErrorString(result);
        },
    }
    if (name) |n| return fail(err_cuda, "{s}: {s}", .{ call, std.mem.span(n) });
    return fail(err_cuda, "{s}: unknown {s} error {d}", .{ call, if (api == .driver) "CUresult" else "nvrtcResult", result });
}

fn driverTable(comptime call: []const u8) ?*const Driver {
    if (driver_initialized.load(.acquire)) return &driver.table;
    _ = fail(err_no_library, "{s}: the CUDA driver is not loaded (kiln_cuda_load first)", .{call});
    return null;
}

fn nvrtcTable(comptime call: []const u8) ?*const Nvrtc {
    if (nvrtc.get()) |t| return t;
    _ = fail(err_no_library, "{s}: NVRTC is not loaded (kiln_nvrtc_load first)", .{call});
    return null;
}

fn handle(h: u64) Handle {
    return @ptrFromInt(@as(usize, @intCast(h)));
}

fn toU64(h: Handle) u64 {
    return @intFromPtr(h);
}

// ---- NVRTC -----------------------------------------------------------------------------------

pub fn nvrtcVersion(major: *i32, minor: *i32) i32 {
    const n = nvrtcTable("nvrtcVersion") orelse return err_no_library;
    return check(.nvrtc, "nvrtcVersion", n.nvrtcVersion(major, minor));
}

/// Splits a blob of `count` NUL-terminated strings into `out`; false when the blob holds a
/// different number of strings or does not end with a NUL.
pub fn splitStrings(blob: []const u8, count: usize, out: [][*:0]const u8) bool {
    if (out.len < count) return false;
    var at: usize = 0;
    var i: usize = 0;
    while (at < blob.len) : (i += 1) {
        const end = std.mem.indexOfScalarPos(u8, blob, at, 0) orelse return false;
        if (i >= count) return false;
        out[i] = @ptrCast(blob[at..end :0].ptr);
        at = end + 1;
    }
    return i == count;
}

/// Compiles one source. headers: n_headers (name, source) pairs as 2*n NUL-terminated strings in
/// one blob (name first); options: n_options NUL-terminated strings in one blob. The program is
/// returned in `out` whenever it was created (ok or err_compile: read the log, then free it).
pub fn nvrtcCompile(src: [*]const u8, src_len: u64, name: [*:0]const u8, headers: ?[*]const u8, headers_len: u64, n_headers: u32, options: ?[*]const u8, options_len: u64, n_options: u32, out: *u64) i32 {
    out.* = 0;
    const n = nvrtcTable("nvrtcCreateProgram") orelse return err_no_library;
    if (n_headers > max_headers or n_options > max_options) return fail(err_bad_arg, "kiln_nvrtc_compile: {d} headers / {d} options (limits {d} / {d})", .{ n_headers, n_options, max_headers, max_options });
    var pairs: [2 * max_headers][*:0]const u8 = undefined;
    var names: [max_headers][*:0]const u8 = undefined;
    var sources: [max_headers][*:0]const u8 = undefined;
    var opts: [max_options][*:0]const u8 = undefined;
    const hblob: []const u8 = if (headers) |h| h[0..@intCast(headers_len)] else &.{};
    const oblob: []const u8 = if (options) |o| o[0..@intCast(options_len)] else &.{};
    if (!splitStrings(hblob, 2 * n_headers, &pairs)) return fail(err_bad_arg, "kiln_nvrtc_compile: the header blob does not hold {d} NUL-terminated (name, source) pairs", .{n_headers});
    if (!splitStrings(oblob, n_options, &opts)) return fail(err_bad_arg, "kiln_nvrtc_compile: the option blob does not hold {d} NUL-terminated options", .{n_options});
    for (0..n_headers) |i| {
        names[i] = pairs[2 * i];
        sources[i] = pairs[2 * i + 1];
    }
    const alloc = std.heap.c_allocator;
    const src_z = alloc.allocSentinel(u8, @intCast(src_len), 0) catch return fail(err_bad_arg, "kiln_nvrtc_compile: out of memory copying {d} bytes of source", .{src_len});
    defer alloc.free(src_z);
    @memcpy(src_z[0..@intCast(src_len)], src[0..@intCast(src_len)]);

    var prog: Handle = null;
    if (check(.nvrtc, "nvrtcCreateProgram", n.nvrtcCreateProgram(&prog, src_z.ptr, name, @intCast(n_headers), &sources, &names)) != ok) return err_cuda;
    out.* = toU64(prog);
    const r = n.nvrtcCompileProgram(prog, @intCast(n_options), &opts);
    if (r == 0) return ok;
    const status = check(.nvrtc, "nvrtcCompileProgram", r);
    return if (r == 6) err_compile else status; // 6: NVRTC_ERROR_COMPILATION (the log says why)
}

/// The program's log: returns the bytes it needs (NUL included); copies it when cap allows.
pub fn nvrtcLog(prog: u64, buf: ?[*]u8, cap: u64) i64 {
    const n = nvrtcTable("nvrtcGetProgramLog") orelse return err_no_library;
    var size: usize = 0;
    if (check(.nvrtc, "nvrtcGetProgramLogSize", n.nvrtcGetProgramLogSize(handle(prog), &size)) != ok) return err_cuda;
    if (buf) |b| if (size <= cap) {
        if (check(.nvrtc, "nvrtcGetProgramLog", n.nvrtcGetProgramLog(handle(prog), b)) != ok) return err_cuda;
    };
    return @intCast(size);
}

/// The compiled image: the CUBIN for a real architecture (sm_XX), the PTX (NUL included) for a
/// virtual one (compute_XX, where NVRTC makes no CUBIN). Returns its size; copies it when cap allows.
pub fn nvrtcCubin(prog: u64, buf: ?[*]u8, cap: u64) i64 {
    const n = nvrtcTable("nvrtcGetCUBIN") orelse return err_no_library;
    var size: usize = 0;
    if (check(.nvrtc, "nvrtcGetCUBINSize", n.nvrtcGetCUBINSize(handle(prog), &size)) != ok) return err_cuda;
    if (size == 0) {
        if (check(.nvrtc, "nvrtcGetPTXSize", n.nvrtcGetPTXSize(handle(prog), &size)) != ok) return err_cuda;
        if (buf) |b| if (size <= cap) {
            if (check(.nvrtc, "nvrtcGetPTX", n.nvrtcGetPTX(handle(prog), b)) != ok) return err_cuda;
        };
        return @intCast(size);
    }
    if (buf) |b| if (size <= cap) {
        if (check(.nvrtc, "nvrtcGetCUBIN", n.nvrtcGetCUBIN(handle(prog), b)) != ok) return err_cuda;
    };
    return @intCast(size);
}

pub fn nvrtcFree(prog: u64) i32 {
    const n = nvrtcTable("nvrtcDestroyProgram") orelse return err_no_library;
    if (prog == 0) return ok;
    var p = handle(prog);
    return check(.nvrtc, "nvrtcDestroyProgram", n.nvrtcDestroyProgram(&p));
}

// ---- driver: devices and contexts -----------------------------------------------------------

pub fn driverVersion(out: *i32) i32 {
    // cuDriverGetVersion works before cuInit: it answers even when there is no device.
    const d = driver.get() orelse return fail(err_no_library, "cuDriverGetVersion: the CUDA driver is not loaded (kiln_cuda_load first)", .{});
    return check(.driver, "cuDriverGetVersion", d.cuDriverGetVersion(out));
}

pub fn deviceCount(out: *i32) i32 {
    const d = driverTable("cuDeviceGetCount") orelse return err_no_library;
    return check(.driver, "cuDeviceGetCount", d.cuDeviceGetCount(out));
}

fn device(d: *const Driver, ordinal: i32, dev: *c_int) i32 {
    return check(.driver, "cuDeviceGet", d.cuDeviceGet(dev, ordinal));
}

/// Compute capability, total memory and name (NUL-terminated, truncated to cap) of a device.
pub fn deviceInfo(ordinal: i32, cc_major: *i32, cc_minor: *i32, total_mem: *u64, name_buf: [*]u8, cap: u32) i32 {
    const d = driverTable("cuDeviceGet") orelse return err_no_library;
    if (cap == 0) return fail(err_bad_arg, "kiln_cuda_device_info: empty name buffer", .{});
    var dev: c_int = 0;
    if (device(d, ordinal, &dev) != ok) return err_cuda;
    if (check(.driver, "cuDeviceGetAttribute", d.cuDeviceGetAttribute(cc_major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)) != ok) return err_cuda;
    if (check(.driver, "cuDeviceGetAttribute", d.cuDeviceGetAttribute(cc_minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)) != ok) return err_cuda;
    var mem: usize = 0;
    if (check(.driver, "cuDeviceTotalMem_v2", d.cuDeviceTotalMem_v2(&mem, dev)) != ok) return err_cuda;
    total_mem.* = mem;
    return check(.driver, "cuDeviceGetName", d.cuDeviceGetName(name_buf, @intCast(@min(cap, std.math.maxInt(c_int))), dev));
}

/// Retains the device's primary context and makes it current on this thread.
pub fn contextRetain(ordinal: i32, out: *u64) i32 {
    const d = driverTable("cuDevicePrimaryCtxRetain") orelse return err_no_library;
    var dev: c_int = 0;
    if (device(d, ordinal, &dev) != ok) return err_cuda;
    var ctx: Handle = null;
    if (check(.driver, "cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain(&ctx, dev)) != ok) return err_cuda;
    if (check(.driver, "cuCtxSetCurrent", d.cuCtxSetCurrent(ctx)) != ok) {
        _ = d.cuDevicePrimaryCtxRelease_v2(dev);
        return err_cuda;
    }
    out.* = toU64(ctx);
    return ok;
}

pub fn contextSetCurrent(ctx: u64) i32 {
    const d = driverTable("cuCtxSetCurrent") orelse return err_no_library;
    return check(.driver, "cuCtxSetCurrent", d.cuCtxSetCurrent(handle(ctx)));
}

pub fn contextRelease(ordinal: i32) i32 {
    const d = driverTable("cuDevicePrimaryCtxRelease_v2") orelse return err_no_library;
    var dev: c_int = 0;
    if (device(d, ordinal, &dev) != ok) return err_cuda;
    return check(.driver, "cuDevicePrimaryCtxRelease_v2", d.cuDevicePrimaryCtxRelease_v2(dev));
}

pub fn contextSynchronize() i32 {
    const d = driverTable("cuCtxSynchronize") orelse return err_no_library;
    return check(.driver, "cuCtxSynchronize", d.cuCtxSynchronize());
}

/// Free and total memory of the current context's device.
pub fn memInfo(free_bytes: *u64, total_bytes: *u64) i32 {
    const d = driverTable("cuMemGetInfo_v2") orelse return err_no_library;
    var f: usize = 0;
    var t: usize = 0;
    if (check(.driver, "cuMemGetInfo_v2", d.cuMemGetInfo_v2(&f, &t)) != ok) return err_cuda;
    free_bytes.* = f;
    total_bytes.* = t;
    return ok;
}

// ---- modules and launches --------------------------------------------------------------------

/// Loads a CUBIN (or NUL-terminated PTX) image into the current context.
pub fn moduleLoad(image: [*]const u8, len: u64, out: *u64) i32 {
    const d = driverTable("cuModuleLoadData") orelse return err_no_library;
    if (len < 4) return fail(err_bad_arg, "kiln_cuda_module_load: a {d}-byte image is no CUBIN", .{len});
    var m: Handle = null;
    if (check(.driver, "cuModuleLoadData", d.cuModuleLoadData(&m, image)) != ok) return err_cuda;
    out.* = toU64(m);
    return ok;
}

pub fn moduleFunction(module: u64, name: [*:0]const u8, out: *u64) i32 {
    const d = driverTable("cuModuleGetFunction") orelse return err_no_library;
    var f: Handle = null;
    const r = d.cuModuleGetFunction(&f, handle(module), name);
    if (r != 0) {
        _ = check(.driver, "cuModuleGetFunction", r);
        var copy: [last_error_buf.len]u8 = undefined;
        const msg = copy[0..last_error_len];
        @memcpy(msg, last_error_buf[0..last_error_len]);
        return fail(err_cuda, "{s} ({s})", .{ msg, std.mem.span(name) });
    }
    out.* = toU64(f);
    return ok;
}

pub fn moduleUnload(module: u64) i32 {
    const d = driverTable("cuModuleUnload") orelse return err_no_library;
    return check(.driver, "cuModuleUnload", d.cuModuleUnload(handle(module)));
}

/// Launches a kernel whose one parameter is the struct at `args` (kernelParams = {args}). Over
/// 48 KiB of dynamic shared memory the function's limit is raised first.
pub fn launch(func: u64, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, shared_bytes: u32, stream: u64, args: ?*anyopaque) i32 {
    const d = driverTable("cuLaunchKernel") orelse return err_no_library;
    if (func == 0 or args == null) return fail(err_bad_arg, "kiln_cuda_launch: null function or argument struct", .{});
    if (shared_bytes > default_dynamic_smem_max) {
        if (check(.driver, "cuFuncSetAttribute", d.cuFuncSetAttribute(handle(func), CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, @intCast(shared_bytes))) != ok) return err_cuda;
    }
    var params = [1]Handle{args};
    return check(.driver, "cuLaunchKernel", d.cuLaunchKernel(handle(func), gx, gy, gz, bx, by, bz, shared_bytes, handle(stream), &params, null));
}

// ---- memory ----------------------------------------------------------------------------------

pub fn malloc(bytes: u64, out: *u64) i32 {
    const d = driverTable("cuMemAlloc_v2") orelse return err_no_library;
    if (bytes == 0) return fail(err_bad_arg, "kiln_cuda_malloc: 0 bytes", .{});
    return check(.driver, "cuMemAlloc_v2", d.cuMemAlloc_v2(out, @intCast(bytes)));
}

pub fn free(ptr: u64) i32 {
    const d = driverTable("cuMemFree_v2") orelse return err_no_library;
    return check(.driver, "cuMemFree_v2", d.cuMemFree_v2(ptr));
}

/// Host → device: stream 0 is the synchronous copy, else an async copy on `stream`.
pub fn memcpyHtoD(dst: u64, src: *const anyopaque, n: u64, stream: u64) i32 {
    const d = driverTable("cuMemcpyHtoD_v2") orelse return err_no_library;
    if (n == 0) return ok;
    if (stream == 0) return check(.driver, "cuMemcpyHtoD_v2", d.cuMemcpyHtoD_v2(dst, src, @intCast(n)));
    return check(.driver, "cuMemcpyHtoDAsync_v2", d.cuMemcpyHtoDAsync_v2(dst, src, @intCast(n), handle(stream)));
}

/// Device → host: stream 0 is the synchronous copy, else an async copy on `stream`.
pub fn memcpyDtoH(dst: *anyopaque, src: u64, n: u64, stream: u64) i32 {
    const d = driverTable("cuMemcpyDtoH_v2") orelse return err_no_library;
    if (n == 0) return ok;
    if (stream == 0) return check(.driver, "cuMemcpyDtoH_v2", d.cuMemcpyDtoH_v2(dst, src, @intCast(n)));
    return check(.driver, "cuMemcpyDtoHAsync_v2", d.cuMemcpyDtoHAsync_v2(dst, src, @intCast(n), handle(stream)));
}

/// Device → device, on `stream` (0: the legacy default stream).
pub fn memcpyDtoD(dst: u64, src: u64, n: u64, stream: u64) i32 {
    const d = driverTable("cuMemcpyDtoDAsync_v2") orelse return err_no_library;
    if (n == 0) return ok;
    return check(.driver, "cuMemcpyDtoDAsync_v2", d.cuMemcpyDtoDAsync_v2(dst, src, @intCast(n), handle(stream)));
}

/// Sets n bytes at dst to `value`, on `stream` (0: the legacy default stream).
pub fn memset(dst: u64, value: u32, n: u64, stream: u64) i32 {
    const d = driverTable("cuMemsetD8Async") orelse return err_no_library;
    if (n == 0) return ok;
    return check(.driver, "cuMemsetD8Async", d.cuMemsetD8Async(dst, @truncate(value), @intCast(n), handle(stream)));
}

/// Page-locked host memory (DMA-able: async copies from it overlap with the host).
pub fn hostAlloc(bytes: u64, out: *u64) i32 {
    const d = driverTable("cuMemHostAlloc") orelse return err_no_library;
    if (bytes == 0) return fail(err_bad_arg, "kiln_cuda_host_alloc: 0 bytes", .{});
    var p: Handle = null;
    if (check(.driver, "cuMemHostAlloc", d.cuMemHostAlloc(&p, @intCast(bytes), 0)) != ok) return err_cuda;
    out.* = toU64(p);
    return ok;
}

pub fn hostFree(ptr: u64) i32 {
    const d = driverTable("cuMemFreeHost") orelse return err_no_library;
    return check(.driver, "cuMemFreeHost", d.cuMemFreeHost(handle(ptr)));
}

// ---- streams and graphs ----------------------------------------------------------------------

/// A non-blocking stream: it does not wait for the legacy default stream (nor it for it).
pub fn streamCreate(out: *u64) i32 {
    const d = driverTable("cuStreamCreate") orelse return err_no_library;
    var s: Handle = null;
    if (check(.driver, "cuStreamCreate", d.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING)) != ok) return err_cuda;
    out.* = toU64(s);
    return ok;
}

pub fn streamDestroy(stream: u64) i32 {
    const d = driverTable("cuStreamDestroy_v2") orelse return err_no_library;
    return check(.driver, "cuStreamDestroy_v2", d.cuStreamDestroy_v2(handle(stream)));
}

pub fn streamSynchronize(stream: u64) i32 {
    const d = driverTable("cuStreamSynchronize") orelse return err_no_library;
    return check(.driver, "cuStreamSynchronize", d.cuStreamSynchronize(handle(stream)));
}

/// Starts capturing `stream`'s work into a graph (relaxed mode).
pub fn graphBegin(stream: u64) i32 {
    const d = driverTable("cuStreamBeginCapture_v2") orelse return err_no_library;
    if (stream == 0) return fail(err_bad_arg, "kiln_cuda_graph_begin: the legacy stream cannot be captured", .{});
    return check(.driver, "cuStreamBeginCapture_v2", d.cuStreamBeginCapture_v2(handle(stream), CU_STREAM_CAPTURE_MODE_RELAXED));
}

/// Ends the capture and instantiates it; the graph itself is dropped (the executable keeps what it needs).
pub fn graphEnd(stream: u64, out: *u64) i32 {
    const d = driverTable("cuStreamEndCapture") orelse return err_no_library;
    var graph: Handle = null;
    if (check(.driver, "cuStreamEndCapture", d.cuStreamEndCapture(handle(stream), &graph)) != ok) return err_cuda;
    defer _ = d.cuGraphDestroy(graph);
    var exec: Handle = null;
    if (check(.driver, "cuGraphInstantiateWithFlags", d.cuGraphInstantiateWithFlags(&exec, graph, 0)) != ok) return err_cuda;
    out.* = toU64(exec);
    return ok;
}

pub fn graphLaunch(exec: u64, stream: u64) i32 {
    const d = driverTable("cuGraphLaunch") orelse return err_no_library;
    return check(.driver, "cuGraphLaunch", d.cuGraphLaunch(handle(exec), handle(stream)));
}

pub fn graphDestroy(exec: u64) i32 {
    const d = driverTable("cuGraphExecDestroy") orelse return err_no_library;
    return check(.driver, "cuGraphExecDestroy", d.cuGraphExecDestroy(handle(exec)));
}

// ---- tests (zig test cuda_loader.zig -lc; NVRTC from KILN_NVRTC or ../.tools/nvrtc when present) ----

const testing = std.testing;

fn lastErrorText() []const u8 {
    return last_error_buf[0..last_error_len];
}

test "splitStrings: exact counts, trailing NUL required" {
    var out: [4][*:0]const u8 = undefined;
    try testing.expect(splitStrings("a\x00bc\x00", 2, &out));
    try testing.expectEqualStrings("bc", std.mem.span(out[1]));
    try testing.expect(splitStrings("", 0, &out));
    try testing.expect(!splitStrings("a\x00bc", 2, &out)); // unterminated
    try testing.expect(!splitStrings("a\x00", 2, &out)); // too few
    try testing.expect(!splitStrings("a\x00b\x00c\x00", 2, &out)); // too many
}

test "driver calls before kiln_cuda_load fail cleanly, naming the call" {
    if (driver_initialized.load(.acquire)) return error.SkipZigTest;
    var p: u64 = 0;
    try testing.expectEqual(err_no_library, malloc(16, &p));
    try testing.expect(std.mem.startsWith(u8, lastErrorText(), "cuMemAlloc_v2: the CUDA driver is not loaded"));
    var buf: [8]u8 = undefined;
    const n = lastError(&buf, buf.len);
    try testing.expectEqual(@as(u64, lastErrorText().len), n);
    try testing.expectEqualStrings(lastErrorText()[0..8], &buf);
}

test "a missing driver library is reported by name" {
    try testing.expectEqual(err_no_library, cudaLoad("/nonexistent/libcuda.so.1"));
    try testing.expectEqualStrings("/nonexistent/libcuda.so.1 not found (no NVIDIA driver)", lastErrorText());
    // The default name: on a machine without the driver the message says so.
    const status = cudaLoad(null);
    if (status == err_no_library) {
        try testing.expectEqualStrings(default_driver_name ++ " not found (no NVIDIA driver)", lastErrorText());
    }
}

test "a library without the driver's entry points is refused, naming the first one missing" {
    if (builtin.os.tag != .linux or driver.ready.load(.acquire)) return error.SkipZigTest;
    try testing.expectEqual(err_no_library, cudaLoad("libc.so.6"));
    try testing.expect(std.mem.startsWith(u8, lastErrorText(), "libc.so.6 lacks cuGetErrorName"));
    try testing.expect(!driver.ready.load(.acquire));
}

test "the error message is truncated, never overflows" {
    const long = "x" ** 1000;
    try testing.expectEqual(err_cuda, fail(err_cuda, "{s}", .{long}));
    try testing.expectEqual(last_error_buf.len, last_error_len);
    try testing.expect(std.mem.endsWith(u8, lastErrorText(), "..."));
    try testing.expect(std.mem.startsWith(u8, lastErrorText(), "x" ** 600));
}

fn testNvrtc() !void {
    if (nvrtc.get() != null) return;
    const env = std.posix.getenv("KILN_NVRTC");
    const path: [:0]const u8 = env orelse "../.tools/nvrtc/nvidia/cuda_nvrtc/lib/libnvrtc.so.12";
    if (nvrtcLoad(path.ptr) != ok) return error.SkipZigTest;
}

fn compileOne(src: []const u8, arch_opt: [:0]const u8, prog: *u64) i32 {
    const hdr = "k.cuh\x00#define SCALE 2.0f\n\x00";
    var opts_buf: [128]u8 = undefined;
    const opts = std.fmt.bufPrint(&opts_buf, "{s}\x00-default-device\x00", .{arch_opt}) catch unreachable;
    return nvrtcCompile(src.ptr, src.len, "t.cu", hdr, hdr.len, 1, opts.ptr, opts.len, 2, prog);
}

test "NVRTC compiles a kernel with a named header to CUBIN (sm_80) and PTX (compute_80)" {
    try testNvrtc();
    var major: i32 = 0;
    var minor: i32 = 0;
    try testing.expectEqual(ok, nvrtcVersion(&major, &minor));
    try testing.expect(major >= 11);
    const src = "#include \"k.cuh\"\nextern \"C\" __global__ void k(float* o) { o[threadIdx.x] *= SCALE; }\n";
    var prog: u64 = 0;
    try testing.expectEqual(ok, compileOne(src, "--gpu-architecture=sm_80", &prog));
    defer _ = nvrtcFree(prog);
    const size = nvrtcCubin(prog, null, 0);
    try testing.expect(size > 64);
    const image = try testing.allocator.alloc(u8, @intCast(size));
    defer testing.allocator.free(image);
    try testing.expectEqual(size, nvrtcCubin(prog, image.ptr, image.len));
    try testing.expectEqualSlices(u8, "\x7fELF", image[0..4]);

    var ptx_prog: u64 = 0;
    try testing.expectEqual(ok, compileOne(src, "--gpu-architecture=compute_80", &ptx_prog));
    defer _ = nvrtcFree(ptx_prog);
    var ptx: [8192]u8 = undefined;
    const ptx_size = nvrtcCubin(ptx_prog, &ptx, ptx.len);
    try testing.expect(ptx_size > 0 and ptx_size <= ptx.len);
    try testing.expect(std.mem.indexOf(u8, ptx[0..@intCast(ptx_size)], ".entry k") != null);
}

test "a broken source is err_compile with the line in the log" {
    try testNvrtc();
    const src = "extern \"C\" __global__ void k(float* o) {\n  o[0] = undeclared_name;\n}\n";
    var prog: u64 = 0;
    try testing.expectEqual(err_compile, compileOne(src, "--gpu-architecture=sm_90", &prog));
    defer _ = nvrtcFree(prog);
    try testing.expectEqualStrings("nvrtcCompileProgram: NVRTC_ERROR_COMPILATION", lastErrorText());
    var log: [4096]u8 = undefined;
    const n = nvrtcLog(prog, &log, log.len);
    try testing.expect(n > 0 and n <= log.len);
    try testing.expect(std.mem.indexOf(u8, log[0..@intCast(n)], "t.cu(2)") != null);
    // A bad option blob is refused before NVRTC sees it.
    var p2: u64 = 0;
    try testing.expectEqual(err_bad_arg, nvrtcCompile(src.ptr, src.len, "t.cu", null, 0, 0, "x", 1, 1, &p2));
}
