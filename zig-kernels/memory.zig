//! Memory kiln owns outside the JS heap: read-only file mappings (model weights stay in the
//! mapped file) and page-aligned buffers (activations, KV cache) that never move.
//!
//! POSIX (Linux, macOS): mmap/munmap/madvise. Windows: CreateFileMappingW + MapViewOfFile for
//! files, VirtualAlloc for buffers (declared below: Zig 0.15's std has no file-mapping calls).
const std = @import("std");
const builtin = @import("builtin");
const posix = std.posix;
const windows = std.os.windows;

const page = std.heap.page_size_min;
const is_windows = builtin.os.tag == .windows;
/// A PMD-sized (huge) page on x86-64 and arm64 with 4 KiB base pages. File mappings of at least
/// this many bytes start on a multiple of it, so the page cache's 2 MiB folios can be mapped
/// whole (one TLB entry instead of 512).
pub const huge_page_bytes = 2 << 20;

const win32 = struct {
    const FILE_MAP_READ: windows.DWORD = 0x0004; // SECTION_MAP_READ
    extern "kernel32" fn CreateFileMappingW(file: windows.HANDLE, attributes: ?*anyopaque, protect: windows.DWORD, size_high: windows.DWORD, size_low: windows.DWORD, name: ?windows.LPCWSTR) callconv(.winapi) ?windows.HANDLE;
    extern "kernel32" fn MapViewOfFile(mapping: windows.HANDLE, access: windows.DWORD, offset_high: windows.DWORD, offset_low: windows.DWORD, len: windows.SIZE_T) callconv(.winapi) ?windows.LPVOID;
    extern "kernel32" fn UnmapViewOfFile(base: windows.LPCVOID) callconv(.winapi) windows.BOOL;
    extern "kernel32" fn VirtualUnlock(addr: windows.LPVOID, len: windows.SIZE_T) callconv(.winapi) windows.BOOL;
};

/// Maps `path` PROT_READ + MAP_PRIVATE. A kernel bug that writes into a weight then faults
/// visibly, and can never reach the user's file. Null on any failure (missing file, empty
/// file, mapping refused); the caller reports the path.
pub fn mapReadOnly(path: [*:0]const u8, out_len: *u64) ?[*]const u8 {
    out_len.* = 0;
    if (is_windows) return mapReadOnlyWindows(path, out_len);
    const fd = posix.openZ(path, .{ .ACCMODE = .RDONLY, .CLOEXEC = true }, 0) catch return null;
    defer posix.close(fd);
    const st = posix.fstat(fd) catch return null;
    if (st.size <= 0) return null;
    const len: usize = @intCast(st.size);
    const mapped = mapFileAligned(fd, len) orelse return null;
    // Weights are streamed end to end every token. Read through 4 KiB page-table entries they
    // cost TLB misses: a 5632×2048 Q4_0 gate+up streamed at 39 GB/s from a mapping of a file
    // cached in small folios and 45 GB/s from one cached in 2 MiB folios (AMD EPYC Zen 5, 2
    // threads). MADV_HUGEPAGE makes the kernel read not-yet-cached parts of the file in 2 MiB
    // folios and map them whole (Linux ≥ 6.x page cache with large folios); parts already
    // cached keep their folios. Advice only: refused (THP off, old kernel), nothing changes.
    if (comptime builtin.os.tag == .linux) {
        if (len >= huge_page_bytes) posix.madvise(mapped, len, posix.MADV.HUGEPAGE) catch {};
    }
    out_len.* = len;
    return mapped;
}

/// mmap of the whole file, read-only and private, at an address that is a multiple of
/// huge_page_bytes when the file is at least that long (mapAligned). Short files map wherever
/// the kernel puts them.
fn mapFileAligned(fd: posix.fd_t, len: usize) ?[*]align(page) u8 {
    if (len < huge_page_bytes) {
        const m = posix.mmap(null, len, posix.PROT.READ, .{ .TYPE = .PRIVATE }, fd, 0) catch return null;
        return m.ptr;
    }
    return mapAligned(len, posix.PROT.READ, .{ .TYPE = .PRIVATE }, fd);
}

/// mmap of len bytes (of `fd`, or anonymous memory with fd -1) at a multiple of huge_page_bytes:
/// a range of len + huge_page_bytes is reserved (PROT_NONE), the mapping is made over its first
/// aligned address (MAP_FIXED inside our own reservation), and the unused head and tail of the
/// reservation are given back, so munmap(addr, len) later releases everything.
fn mapAligned(len: usize, prot: u32, flags: posix.MAP, fd: posix.fd_t) ?[*]align(page) u8 {
    const span = std.math.add(usize, len, huge_page_bytes) catch return null;
    const reserved = posix.mmap(null, span, posix.PROT.NONE, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0) catch return null;
    const base = @intFromPtr(reserved.ptr);
    const aligned = std.mem.alignForward(usize, base, huge_page_bytes);
    const hint: [*]align(page) u8 = @ptrFromInt(aligned);
    var fixed = flags;
    fixed.FIXED = true;
    const m = posix.mmap(hint, len, prot, fixed, fd, 0) catch {
        posix.munmap(reserved);
        return null;
    };
    const page_size = std.heap.pageSize();
    const end = std.mem.alignForward(usize, aligned + len, page_size);
    if (aligned > base) posix.munmap(@as([*]align(page) u8, @ptrFromInt(base))[0 .. aligned - base]);
    if (base + span > end) posix.munmap(@as([*]align(page) u8, @ptrFromInt(end))[0 .. base + span - end]);
    return m.ptr;
}

/// The whole file as one read-only view. The mapping object's handle is closed at once: the
/// view keeps the section alive until UnmapViewOfFile.
fn mapReadOnlyWindows(path: [*:0]const u8, out_len: *u64) ?[*]const u8 {
    const file = std.fs.cwd().openFileZ(path, .{}) catch return null; // UTF-8 path, any share mode
    defer file.close();
    const size = file.getEndPos() catch return null;
    if (size == 0 or size > std.math.maxInt(usize)) return null;
    const mapping = win32.CreateFileMappingW(file.handle, null, windows.PAGE_READONLY, 0, 0, null) orelse return null;
    defer windows.CloseHandle(mapping);
    const view = win32.MapViewOfFile(mapping, win32.FILE_MAP_READ, 0, 0, 0) orelse return null;
    out_len.* = size;
    return @ptrCast(view);
}

/// Drops this process's pages of [addr, addr + len) of a read-only FILE mapping (mapReadOnly),
/// rounded inward to whole pages: they leave the resident set, stay in the page cache, and a
/// later read maps them back from the file. (On anonymous memory this would zero the range:
/// callers pass only ranges of mapReadOnly's mappings.) Errors are ignored: it is advice.
///   Linux: MADV_DONTNEED drops the pages from the resident set at once.
///   macOS: MADV_DONTNEED only lowers the pages' priority (they leave when memory is wanted);
///          on a read-only file mapping it never loses data, like Linux's.
///   Windows: VirtualUnlock of pages that are not locked removes them from the working set
///            (documented under VirtualUnlock); it then reports ERROR_NOT_LOCKED, ignored.
pub fn releaseFilePages(addr: [*]const u8, len: usize) void {
    const page_size = std.heap.pageSize();
    const start = std.mem.alignForward(usize, @intFromPtr(addr), page_size);
    const end = std.mem.alignBackward(usize, @intFromPtr(addr) + len, page_size);
    if (end <= start) return;
    if (is_windows) {
        _ = win32.VirtualUnlock(@ptrFromInt(start), end - start);
        return;
    }
    const p: [*]align(page) u8 = @ptrFromInt(start);
    posix.madvise(p, end - start, posix.MADV.DONTNEED) catch {};
}

pub fn unmap(addr: [*]const u8, len: u64) void {
    if (is_windows) {
        _ = win32.UnmapViewOfFile(addr);
        return;
    }
    const aligned: [*]align(page) const u8 = @alignCast(addr);
    posix.munmap(aligned[0..len]);
}

/// Zeroed, page-aligned anonymous memory. Null when len is 0 or the system refuses.
pub fn alloc(len: u64) ?[*]u8 {
    if (len == 0 or len > std.math.maxInt(usize)) return null;
    if (is_windows) {
        // Committed pages are zeroed; the base is 64 KiB aligned (allocation granularity).
        const m = windows.VirtualAlloc(null, len, windows.MEM_COMMIT | windows.MEM_RESERVE, windows.PAGE_READWRITE) catch return null;
        return @ptrCast(m);
    }
    const rw = posix.PROT.READ | posix.PROT.WRITE;
    // Large buffers (packed weights, KV caches) ask for transparent huge pages: one fault and one
    // TLB entry per 2 MiB instead of 512 of each. Advice only (THP may be off). Only whole 2 MiB
    // ranges at 2 MiB boundaries can be huge pages, so these start at one: mapped wherever the
    // kernel chose, a 6.5 MB packed TinyLlama gate (Q4_0) had two huge pages of three possible,
    // and the model's packed layers as a whole were 55% huge pages.
    if (comptime builtin.os.tag == .linux) {
        if (len >= huge_page_bytes) {
            const m = mapAligned(len, rw, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1) orelse return null;
            posix.madvise(m, len, posix.MADV.HUGEPAGE) catch {};
            return m;
        }
    }
    const m = posix.mmap(null, len, rw, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0) catch return null;
    return m.ptr;
}

pub fn free(addr: [*]u8, len: u64) void {
    if (is_windows) {
        windows.VirtualFree(addr, 0, windows.MEM_RELEASE); // the whole allocation; len unused
        return;
    }
    const aligned: [*]align(page) u8 = @alignCast(addr);
    posix.munmap(aligned[0..len]);
}

test "alloc returns zeroed page-aligned memory; a missing file maps to null" {
    const p = alloc(10_000) orelse return error.TestUnexpectedResult;
    defer free(p, 10_000);
    try std.testing.expectEqual(@as(usize, 0), @intFromPtr(p) % page);
    for (p[0..10_000]) |b| try std.testing.expectEqual(@as(u8, 0), b);
    var len: u64 = 123;
    try std.testing.expectEqual(@as(?[*]const u8, null), mapReadOnly("/nonexistent/kiln-model.gguf", &len));
    try std.testing.expectEqual(@as(u64, 0), len);
    try std.testing.expectEqual(@as(?[*]u8, null), alloc(0));
}

test "alloc: buffers of 2 MiB and more start at a 2 MiB boundary and leave nothing mapped behind" {
    if (comptime builtin.os.tag != .linux) return error.SkipZigTest;
    var maps_buf: [1 << 20]u8 = undefined;
    const before = try mappedBytes(&maps_buf);
    for ([_]usize{ huge_page_bytes, huge_page_bytes + 4096, 3 * huge_page_bytes + 12345 }) |len| {
        const p = alloc(len) orelse return error.TestUnexpectedResult;
        try std.testing.expectEqual(@as(usize, 0), @intFromPtr(p) % huge_page_bytes);
        try std.testing.expectEqual(@as(u8, 0), p[0]);
        try std.testing.expectEqual(@as(u8, 0), p[len - 1]);
        p[len - 1] = 7; // writable to its last byte
        free(p, len);
    }
    try std.testing.expectEqual(before, try mappedBytes(&maps_buf));
}

/// Maps this test binary's own image (/proc files report size 0, so they cannot stand in).
fn mapSelfForTest(len: *u64) ![*]const u8 {
    var buf: [std.fs.max_path_bytes]u8 = undefined;
    const self = try std.fs.selfExePath(&buf);
    buf[self.len] = 0;
    return mapReadOnly(@ptrCast(buf[0..self.len :0]), len) orelse error.TestUnexpectedResult;
}

test "mapReadOnly sees the file's bytes" {
    var len: u64 = 0;
    const p = try mapSelfForTest(&len);
    defer unmap(p, len);
    try std.testing.expect(len > 4);
    try std.testing.expectEqualSlices(u8, "\x7fELF", p[0..4]);
}

/// The address range of a /proc/self/maps or smaps header line ("lo-hi perms offset dev inode
/// path"); null for any other line.
fn mapsRange(line: []const u8) ?struct { lo: usize, hi: usize } {
    const space = std.mem.indexOfScalar(u8, line, ' ') orelse return null;
    const dash = std.mem.indexOfScalar(u8, line[0..space], '-') orelse return null;
    const lo = std.fmt.parseInt(usize, line[0..dash], 16) catch return null;
    const hi = std.fmt.parseInt(usize, line[dash + 1 .. space], 16) catch return null;
    return .{ .lo = lo, .hi = hi };
}

/// Bytes of address space this process has mapped (/proc/self/maps, Linux).
fn mappedBytes(buf: []u8) !usize {
    const text = try std.fs.cwd().readFile("/proc/self/maps", buf);
    var total: usize = 0;
    var lines = std.mem.splitScalar(u8, text, '\n');
    while (lines.next()) |line| {
        if (mapsRange(line)) |r| total += r.hi - r.lo;
    }
    return total;
}

/// The VmFlags line of the /proc/self/smaps entry that contains addr (Linux).
fn smapsVmFlags(addr: usize, buf: []u8) ![]const u8 {
    const text = try std.fs.cwd().readFile("/proc/self/smaps", buf);
    var in_range = false;
    var lines = std.mem.splitScalar(u8, text, '\n');
    while (lines.next()) |line| {
        if (std.mem.startsWith(u8, line, "VmFlags:")) {
            if (in_range) return line;
        } else if (mapsRange(line)) |r| in_range = r.lo <= addr and addr < r.hi;
    }
    return error.NotFound;
}

test "mapReadOnly: a file of 2 MiB or more maps at a 2 MiB boundary, whole, advised for huge pages" {
    if (comptime builtin.os.tag != .linux) return error.SkipZigTest;
    const al = std.testing.allocator;
    var tmp = std.testing.tmpDir(.{});
    defer tmp.cleanup();
    // 3 MiB + 4097: not a whole number of pages, so the tail of the reservation is uneven.
    const n = 3 * (1 << 20) + 4097;
    const data = try al.alloc(u8, n);
    defer al.free(data);
    for (data, 0..) |*b, i| b.* = @truncate(i *% 2654435761 >> 13);
    try tmp.dir.writeFile(.{ .sub_path = "weights.bin", .data = data });
    var path_buf: [std.fs.max_path_bytes]u8 = undefined;
    const dir_path = try tmp.dir.realpath(".", &path_buf);
    const path = try std.fmt.allocPrintSentinel(al, "{s}/weights.bin", .{dir_path}, 0);
    defer al.free(path);

    var maps_buf: [1 << 20]u8 = undefined;
    const mapped_before = try mappedBytes(&maps_buf);
    var said = false;
    for (0..8) |_| {
        var len: u64 = 0;
        const p = mapReadOnly(path, &len) orelse return error.TestUnexpectedResult;
        defer unmap(p, len);
        try std.testing.expectEqual(@as(u64, n), len);
        try std.testing.expectEqual(@as(usize, 0), @intFromPtr(p) % huge_page_bytes);
        try std.testing.expectEqualSlices(u8, data, p[0..n]);
        var flags_buf: [1 << 20]u8 = undefined;
        // MADV_HUGEPAGE shows as "hg" in the mapping's VmFlags where the advice reaches the
        // kernel: the control is alloc's buffer, advised the same way. Under qemu-user (how
        // the aarch64 tests run here) or with THP off, neither shows it.
        const line = try smapsVmFlags(@intFromPtr(p), &flags_buf);
        const advised = std.mem.indexOf(u8, line, " hg") != null;
        const control = alloc(huge_page_bytes) orelse return error.TestUnexpectedResult;
        defer free(control, huge_page_bytes);
        const control_advised = std.mem.indexOf(u8, try smapsVmFlags(@intFromPtr(control), &flags_buf), " hg") != null;
        if (control_advised) {
            try std.testing.expect(advised);
        } else if (!advised and !said) {
            said = true;
            std.debug.print("(MADV_HUGEPAGE does not reach this kernel: the file mapping's advice is not checked) ", .{});
        }
    }

    // Nothing of the reservations' unused head and tail is left behind.
    try std.testing.expectEqual(mapped_before, try mappedBytes(&maps_buf));

    // A short file still maps (no alignment asked), with its bytes.
    try tmp.dir.writeFile(.{ .sub_path = "short.bin", .data = data[0..5000] });
    const short = try std.fmt.allocPrintSentinel(al, "{s}/short.bin", .{dir_path}, 0);
    defer al.free(short);
    var len: u64 = 0;
    const p = mapReadOnly(short, &len) orelse return error.TestUnexpectedResult;
    defer unmap(p, len);
    try std.testing.expectEqualSlices(u8, data[0..5000], p[0..5000]);
}

test "releaseFilePages: released pages of a file mapping read back the same bytes; a huge buffer stays zeroed" {
    var len: u64 = 0;
    const p = try mapSelfForTest(&len);
    defer unmap(p, len);
    const n: usize = @min(len, 256 * 1024);
    const al = std.testing.allocator;
    const before = try al.dupe(u8, p[0..n]);
    defer al.free(before);
    // An unaligned range (rounded inward), then the whole of it.
    releaseFilePages(p + 100, n - 200);
    releaseFilePages(p, n);
    try std.testing.expectEqualSlices(u8, before, p[0..n]);

    const big = alloc(huge_page_bytes + 12345) orelse return error.TestUnexpectedResult;
    defer free(big, huge_page_bytes + 12345);
    for (big[0 .. huge_page_bytes + 12345]) |b| try std.testing.expectEqual(@as(u8, 0), b);
}
