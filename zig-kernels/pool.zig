//! A persistent thread pool shared by every heavy kernel.
//!
//! One job runs at a time: `parallelFor(n_tasks, ctx, func)` calls `func(ctx, i)` for every
//! i in [0, n_tasks), spread over the workers and the calling thread, and returns when all
//! are done. Workers spin briefly after a job (kernels from a decode step arrive microseconds
//! apart) and then sleep on a futex, so an idle pool burns no core.
const std = @import("std");
const Atomic = std.atomic.Value;
const Futex = std.Thread.Futex;

pub const max_threads = 256;
/// Spin iterations before a worker sleeps (roughly tens of microseconds).
const spin_limit = 20_000;

const Job = struct {
    func: *const fn (ctx: *const anyopaque, index: usize) void,
    ctx: *const anyopaque,
    n_tasks: usize,
};

var workers: [max_threads]std.Thread = undefined;
var n_workers: usize = 0; // threads besides the caller
var job: Job = undefined;
var generation = Atomic(u32).init(0); // bumped to publish a job
var next_task = Atomic(usize).init(0);
var workers_out = Atomic(u32).init(0); // workers that finished the current job
var shutting_down = Atomic(bool).init(false);
var lock: std.Thread.Mutex = .{};
var started = false;
/// Set while this thread runs tasks of a job: a kernel that calls parallelFor from inside a task
/// (a fused op reusing a parallel kernel) runs the inner loop serially instead of deadlocking.
threadlocal var inside_job: bool = false;

/// Number of threads (workers + caller) a job is spread over.
pub fn threadCount() usize {
    ensureStarted();
    return n_workers + 1;
}

fn ensureStarted() void {
    if (started) return;
    const cpus = std.Thread.getCpuCount() catch 1;
    _ = setThreadsLocked(cpus);
}

/// Sets the total thread count (>= 1, <= max_threads). Returns the count in force.
pub fn setThreads(n: usize) usize {
    lock.lock();
    defer lock.unlock();
    return setThreadsLocked(n);
}

fn setThreadsLocked(n_requested: usize) usize {
    const n = std.math.clamp(n_requested, 1, max_threads);
    stopWorkers();
    started = true;
    var spawned: usize = 0;
    while (spawned + 1 < n) : (spawned += 1) {
        workers[spawned] = std.Thread.spawn(.{ .stack_size = 1 << 20 }, workerMain, .{generation.load(.acquire)}) catch break;
    }
    n_workers = spawned;
    return n_workers + 1;
}

fn stopWorkers() void {
    if (n_workers == 0) return;
    shutting_down.store(true, .release);
    _ = generation.fetchAdd(1, .acq_rel);
    Futex.wake(&generation, std.math.maxInt(u32));
    for (workers[0..n_workers]) |t| t.join();
    n_workers = 0;
    shutting_down.store(false, .release);
}

fn workerMain(start_generation: u32) void {
    var seen = start_generation;
    while (true) {
        seen = waitForGeneration(seen);
        if (shutting_down.load(.acquire)) return;
        runTasks();
        // Check out: the caller returns only when every worker has left this job, so no
        // worker can still be reading `job` or claiming from `next_task` when the next starts.
        const out = workers_out.fetchAdd(1, .acq_rel) + 1;
        if (out == n_workers) Futex.wake(&workers_out, 1);
    }
}

/// Spins, then sleeps, until `generation` moves past `seen`; returns the new value.
fn waitForGeneration(seen: u32) u32 {
    var spins: usize = 0;
    while (spins < spin_limit) : (spins += 1) {
        const g = generation.load(.acquire);
        if (g != seen) return g;
        std.atomic.spinLoopHint();
    }
    while (true) {
        Futex.wait(&generation, seen);
        const g = generation.load(.acquire);
        if (g != seen) return g;
    }
}

fn runTasks() void {
    inside_job = true;
    defer inside_job = false;
    const j = job;
    while (true) {
        const i = next_task.fetchAdd(1, .acq_rel);
        if (i >= j.n_tasks) break;
        j.func(j.ctx, i);
    }
}

/// Runs `func(ctx, i)` for i in [0, n_tasks) on the pool and waits for all of them.
/// `ctx` must stay valid until this returns (it is on the caller's stack, which is fine).
pub fn parallelFor(n_tasks: usize, ctx: anytype, comptime func: fn (@TypeOf(ctx), usize) void) void {
    const Ctx = @TypeOf(ctx);
    const Wrap = struct {
        fn call(p: *const anyopaque, i: usize) void {
            const c: *const Ctx = @ptrCast(@alignCast(p));
            func(c.*, i);
        }
    };
    if (n_tasks == 0) return;
    if (inside_job) {
        for (0..n_tasks) |i| func(ctx, i);
        return;
    }
    lock.lock();
    defer lock.unlock();
    ensureStarted();
    if (n_tasks == 1 or n_workers == 0) {
        for (0..n_tasks) |i| func(ctx, i);
        return;
    }
    std.debug.assert(n_tasks < std.math.maxInt(u32));
    job = .{ .func = Wrap.call, .ctx = @ptrCast(&ctx), .n_tasks = n_tasks };
    next_task.store(0, .release);
    workers_out.store(0, .release);
    _ = generation.fetchAdd(1, .acq_rel);
    Futex.wake(&generation, std.math.maxInt(u32));
    runTasks();
    // Wait for every worker to check out: spin, then sleep on workers_out.
    var spins: usize = 0;
    while (true) {
        const out = workers_out.load(.acquire);
        if (out == n_workers) break;
        if (spins < spin_limit) {
            spins += 1;
            std.atomic.spinLoopHint();
        } else {
            Futex.wait(&workers_out, out);
        }
    }
}

/// Splits [0, n) into `parts` nearly equal contiguous ranges; returns range `index`.
pub fn splitRange(n: usize, parts: usize, index: usize) struct { start: usize, end: usize } {
    const base = n / parts;
    const extra = n % parts;
    const start = index * base + @min(index, extra);
    const len = base + @intFromBool(index < extra);
    return .{ .start = start, .end = start + len };
}

/// A task count that gives each thread a few chunks (for balance) of at least `min_chunk` items.
pub fn taskCount(n_items: usize, min_chunk: usize) usize {
    const threads = threadCount();
    const by_size = @max(1, n_items / @max(1, min_chunk));
    return @max(1, @min(by_size, threads * 4));
}

test "parallelFor visits every index once, at several thread counts" {
    const Ctx = struct { hits: []Atomic(u32) };
    var hits: [1000]Atomic(u32) = undefined;
    for ([_]usize{ 1, 2, 3, 8 }) |threads| {
        _ = setThreads(threads);
        for (&hits) |*h| h.* = Atomic(u32).init(0);
        parallelFor(hits.len, Ctx{ .hits = &hits }, struct {
            fn f(c: Ctx, i: usize) void {
                _ = c.hits[i].fetchAdd(1, .monotonic);
            }
        }.f);
        for (&hits) |*h| try std.testing.expectEqual(@as(u32, 1), h.load(.monotonic));
    }
    _ = setThreads(2);
}

test "a parallelFor inside a task runs serially instead of deadlocking" {
    _ = setThreads(3);
    var total = Atomic(u32).init(0);
    parallelFor(8, &total, struct {
        fn outer(t: *Atomic(u32), _: usize) void {
            parallelFor(4, t, struct {
                fn inner(t2: *Atomic(u32), _: usize) void {
                    _ = t2.fetchAdd(1, .monotonic);
                }
            }.inner);
        }
    }.outer);
    try std.testing.expectEqual(@as(u32, 32), total.load(.monotonic));
    _ = setThreads(2);
}

test "splitRange covers [0, n) exactly" {
    for ([_]usize{ 0, 1, 7, 100, 101 }) |n| {
        var covered: usize = 0;
        for (0..7) |i| {
            const r = splitRange(n, 7, i);
            try std.testing.expectEqual(covered, r.start);
            covered = r.end;
        }
        try std.testing.expectEqual(n, covered);
    }
}
