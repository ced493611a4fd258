//! Memory kiln owns outside the JS heap: read-only file mappings (model weights stay in the
//! mapped file) and page-aligned buffers (activations, KV cache) that never move.
const std = @import("std");
const posix = std.posix;

const page = std.heap.page_size_min;
const builtin = @import("builtin");
/// Buffers from this size up get MADV_HUGEPAGE.
const huge_page_min = 4 << 20;

/// Maps `path` PROT_READ + MAP_PRIVATE. A kernel bug that writes into a weight then faults
/// visibly, and can never reach the user's file. Null on any failure (missing file, empty
/// file, mapping refused); the caller reports the path.
pub fn mapReadOnly(path: [*:0]const u8, out_len: *u64) ?[*]const u8 {
    out_len.* = 0;
    const fd = posix.openZ(path, .{ .ACCMODE = .RDONLY, .CLOEXEC = true }, 0) catch return null;
    defer posix.close(fd);
    const st = posix.fstat(fd) catch return null;
    if (st.size <= 0) return null;
    const len: usize = @intCast(st.size);
    const mapped = posix.mmap(null, len, posix.PROT.READ, .{ .TYPE = .PRIVATE }, fd, 0) catch return null;
    out_len.* = len;
    return mapped.ptr;
}

/// Drops this process's pages of [addr, addr + len) of a read-only FILE mapping (mapReadOnly),
/// rounded inward to whole pages: they leave the resident set, stay in the page cache, and a
/// later read maps them back from the file. (On anonymous memory this would zero the range:
/// callers pass only ranges of mapReadOnly's mappings.) Errors are ignored: it is advice.
pub fn releaseFilePages(addr: [*]const u8, len: usize) void {
    const start = std.mem.alignForward(usize, @intFromPtr(addr), page);
    const end = std.mem.alignBackward(usize, @intFromPtr(addr) + len, page);
    if (end <= start) return;
    const p: [*]align(page) u8 = @ptrFromInt(start);
    posix.madvise(p, end - start, posix.MADV.DONTNEED) catch {};
}

pub fn unmap(addr: [*]const u8, len: u64) void {
    const aligned: [*]align(page) const u8 = @alignCast(addr);
    posix.munmap(aligned[0..len]);
}

/// Zeroed, page-aligned anonymous memory. Null when len is 0 or the system refuses.
pub fn alloc(len: u64) ?[*]u8 {
    if (len == 0) return null;
    const m = posix.mmap(null, len, posix.PROT.READ | posix.PROT.WRITE, .{ .TYPE = .PRIVATE, .ANONYMOUS = true }, -1, 0) catch return null;
    // Large buffers (a packed output head, KV caches) ask for transparent huge pages: one fault
    // and one TLB entry per 2 MiB instead of 512 of each. Advice only (THP may be off).
    if (builtin.os.tag == .linux and len >= huge_page_min) posix.madvise(m.ptr, len, posix.MADV.HUGEPAGE) catch {};
    return m.ptr;
}

pub fn free(addr: [*]u8, len: u64) void {
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

    const big = alloc(huge_page_min + 12345) orelse return error.TestUnexpectedResult;
    defer free(big, huge_page_min + 12345);
    for (big[0 .. huge_page_min + 12345]) |b| try std.testing.expectEqual(@as(u8, 0), b);
}
