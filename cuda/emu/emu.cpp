// emu.cpp — the host emulator behind cuda/kiln_cuda.cuh's KILN_HOST_EMU half.
//
// A launch runs its blocks one at a time, in order (x fastest, then y, then z), on the calling
// OS thread. Each thread of a block is a fiber with its own stack: fibers are created once with
// ucontext (getcontext/makecontext/setcontext) and switched with _setjmp/_longjmp afterwards (no
// signal-mask system call per switch). A fiber runs until it reaches a barrier or returns;
// barriers are real:
//   * sync_block releases when every thread of the block arrived, sync_warp when every lane of
//     the caller's warp did (kiln_cuda.cuh's rule: every thread reaches each kiln_sync, every
//     lane each warp collective). A thread that returned never arrives: when no fiber can run
//     and not all finished, the launch fails with "deadlock: N threads wait at a barrier, M
//     finished" (kiln_sync() under a branch, an early return before a barrier or a shuffle).
// Warp collectives (shuffles, mma) go through per-warp slots, double-buffered by the lane's count
// of warp operations, with one warp barrier each; reading a lane that does not exist (a partial
// last warp) or that published at a different collective fails the launch.
//
// Dynamic shared memory is filled with 0xFF bytes (NaN as f32) before each block, so a kernel
// reading shared memory it did not write this block gets garbage, not the last block's answer.
//
// C ABI (each libkiln-cuda-emu-<stem>.so exports it; src/backends/cuda/emulator.ts loads them):
//   kiln_emu_launch, kiln_emu_last_error, kiln_emu_kernel_count/_name/_arg_bytes,
//   kiln_emu_alloc/kiln_emu_free.
#include "kiln_cuda.cuh"

#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#define KILN_EMU_EXPORT extern "C" __attribute__((visibility("default")))

namespace kiln_emu {
namespace {

struct Kernel {
  const char* name;
  size_t argBytes;
  void (*run)(const void*);
};

std::vector<Kernel>& registry() {
  static std::vector<Kernel> r;
  return r;
}

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kGuardBytes = 4096;
constexpr unsigned kMaxThreads = 1024;
constexpr unsigned kMaxSharedBytes = 227 * 1024;  // sm_90's opt-in maximum per block

enum State : unsigned char { kNew, kRunnable, kWaitBlock, kWaitWarp, kDone };

struct Fiber {
  jmp_buf jb;
  ucontext_t uc;
  char* stack = nullptr;  // lowest usable address (a guard page lies below)
  State state = kNew;
  bool started = false;   // its context exists and it sits at the top of its run loop
  unsigned linear = 0;
  ThreadIds ids{};
  unsigned warpOps = 0;   // warp collectives this thread entered (slot parity, divergence check)
};

struct Warp {
  unsigned lanes = 0;    // lanes that exist (the last warp of a block may be partial)
  unsigned waiting = 0;  // lanes at the warp barrier
  // Collective slots, double-buffered by warpOps parity.
  u32 value[2][32];
  unsigned seq[2][32];
  u32 a[2][32][4];
  u32 b[2][32][2];
  float c[2][32][4];
};

struct Launch {
  void (*run)(const void*) = nullptr;
  const void* args = nullptr;
  Dim3 grid{}, block{};
  unsigned nthreads = 0;
  unsigned waitingBlock = 0;
  unsigned done = 0;
  bool failed = false;
  std::string error;
};

std::vector<Fiber*> g_fibers;  // grows, reused across launches
std::vector<Warp> g_warps;
Launch g_launch;
Fiber* g_cur = nullptr;
jmp_buf g_sched;
unsigned char* g_smem = nullptr;
size_t g_smemCap = 0;
std::string g_lastError;
std::mutex g_mutex;

[[noreturn]] void fiber_main();

void fail_here(const char* fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

void set_error(const char* fmt, va_list ap) {
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, ap);
  g_launch.error = buf;
  g_launch.failed = true;
}

// Fails the launch from inside a fiber: the fiber is abandoned (its context is re-created on the
// next launch) and control returns to the scheduler.
void fail_here(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_error(fmt, ap);
  va_end(ap);
  _longjmp(g_sched, 1);
}

Fiber* make_fiber() {
  const size_t total = kStackBytes + kGuardBytes;
  void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) return nullptr;
  mprotect(mem, kGuardBytes, PROT_NONE);
  Fiber* f = new Fiber();
  f->stack = static_cast<char*>(mem) + kGuardBytes;
  return f;
}

void release_warp(unsigned w) {
  Warp& wp = g_warps[w];
  const unsigned base = w * 32;
  for (unsigned l = 0; l < wp.lanes; l++) {
    Fiber* f = g_fibers[base + l];
    if (f->state == kWaitWarp) f->state = kRunnable;
  }
  wp.waiting = 0;
}

void release_block() {
  for (unsigned i = 0; i < g_launch.nthreads; i++) {
    Fiber* f = g_fibers[i];
    if (f->state == kWaitBlock) f->state = kRunnable;
  }
  g_launch.waitingBlock = 0;
}

// Parks the running fiber (its state already says what it waits for) and returns when resumed.
void park() {
  Fiber* f = g_cur;
  if (_setjmp(f->jb) == 0) _longjmp(g_sched, 1);
}

void resume(Fiber* f) {
  g_cur = f;
  if (_setjmp(g_sched) == 0) {
    if (!f->started) {
      f->started = true;
      getcontext(&f->uc);
      f->uc.uc_stack.ss_sp = f->stack;
      f->uc.uc_stack.ss_size = kStackBytes;
      f->uc.uc_link = nullptr;
      makecontext(&f->uc, reinterpret_cast<void (*)()>(fiber_main), 0);
      setcontext(&f->uc);
      std::abort();  // setcontext does not return
    }
    _longjmp(f->jb, 1);
  }
  // back from the fiber: it parked, finished, or failed the launch
}

// A thread that returned never arrives at a barrier again: nothing is released here.
void thread_exited(Fiber* f) {
  f->state = kDone;
  g_launch.done++;
}

// Each fiber loops: run the kernel for the block the scheduler set up, report done, park until
// the next block (or launch) needs this thread again.
[[noreturn]] void fiber_main() {
  for (;;) {
    g_launch.run(g_launch.args);
    Fiber* f = g_cur;
    thread_exited(f);
    park();
  }
}

// Runs one block to completion. False when the launch failed (g_launch.error says why).
bool run_block() {
  for (;;) {
    bool ran = false;
    for (unsigned i = 0; i < g_launch.nthreads; i++) {
      Fiber* f = g_fibers[i];
      if (f->state != kRunnable) continue;
      ran = true;
      resume(f);
      if (g_launch.failed) return false;
    }
    if (g_launch.done == g_launch.nthreads) return true;
    if (!ran) {
      unsigned atBlock = 0, atWarp = 0, exitedNearWarp = 0;
      for (unsigned i = 0; i < g_launch.nthreads; i++) {
        const State st = g_fibers[i]->state;
        if (st == kWaitBlock) atBlock++;
        if (st == kWaitWarp) atWarp++;
      }
      // Lanes that returned while the rest of their warp waits at a warp collective.
      for (unsigned w = 0; w * 32 < g_launch.nthreads; w++) {
        if (g_warps[w].waiting == 0) continue;
        for (unsigned l = 0; l < g_warps[w].lanes; l++) exitedNearWarp += g_fibers[w * 32 + l]->state == kDone;
      }
      const ThreadIds& first = g_fibers[0]->ids;
      char buf[640];
      snprintf(buf, sizeof buf,
               "deadlock: %u threads wait at a barrier, %u finished (block (%u,%u,%u): %u at kiln_sync, %u at a warp collective%s; "
               "every thread of a block must reach each kiln_sync and every lane of a warp each warp collective: "
               "a barrier under a branch, or a return before one, never completes)",
               atBlock + atWarp, g_launch.done, first.block.x, first.block.y, first.block.z, atBlock, atWarp,
               exitedNearWarp ? ", whose warps have lanes that returned" : "");
      g_launch.error = buf;
      g_launch.failed = true;
      return false;
    }
  }
}

Warp& my_warp() { return g_warps[g_cur->linear >> 5]; }

}  // namespace

// ---------------------------------------------------------------------------- kernel-facing API
const ThreadIds& ids() { return g_cur->ids; }
const Dim3& block_dim() { return g_launch.block; }
const Dim3& grid_dim() { return g_launch.grid; }
unsigned lane() { return g_cur->linear & 31; }
void* dynamic_smem() { return g_smem; }

void sync_block() {
  Fiber* f = g_cur;
  f->state = kWaitBlock;
  g_launch.waitingBlock++;
  if (g_launch.waitingBlock == g_launch.nthreads) {
    release_block();  // the last to arrive releases the others and goes on
    return;
  }
  park();
}

void sync_warp() {
  Fiber* f = g_cur;
  const unsigned w = f->linear >> 5;
  Warp& wp = g_warps[w];
  f->state = kWaitWarp;
  wp.waiting++;
  if (wp.waiting == wp.lanes) {
    release_warp(w);
    return;
  }
  park();
}

namespace {
// Enters a warp collective: returns the slot parity; the caller publishes, then calls sync_warp.
unsigned enter_collective() {
  Fiber* f = g_cur;
  const unsigned p = f->warpOps & 1;
  my_warp().seq[p][f->linear & 31] = f->warpOps;
  f->warpOps++;
  return p;
}

void check_source(const char* what, unsigned p, unsigned src) {
  Fiber* f = g_cur;
  Warp& wp = my_warp();
  if (src < wp.lanes && wp.seq[p][src] == f->warpOps - 1) return;
  fail_here("%s: thread %u (lane %u) reads lane %u, which %s; warp collectives need all 32 lanes of the warp", what,
            f->linear, f->linear & 31, src,
            src >= wp.lanes ? "does not exist (the block's last warp is partial)" : "is at a different warp collective");
}
}  // namespace

u32 warp_exchange(u32 v, unsigned srcLane) {
  Fiber* f = g_cur;
  const unsigned p = enter_collective();
  my_warp().value[p][f->linear & 31] = v;
  sync_warp();
  srcLane &= 31;  // __shfl_sync reads srcLane modulo the width (32)
  check_source("warp shuffle", p, srcLane);
  return my_warp().value[p][srcLane];
}

void mma_16816(float d[4], const u32 a[4], const u32 b[2], const float c[4]) {
  Fiber* f = g_cur;
  const unsigned p = enter_collective();
  const unsigned me = f->linear & 31;
  {
    Warp& wp = my_warp();
    for (int i = 0; i < 4; i++) wp.a[p][me][i] = a[i];
    for (int i = 0; i < 2; i++) wp.b[p][me][i] = b[i];
    for (int i = 0; i < 4; i++) wp.c[p][me][i] = c[i];
  }
  sync_warp();
  for (unsigned l = 0; l < 32; l++) check_source("kiln_mma_16816", p, l);
  Warp& wp = my_warp();
  // Rebuild A (16x16), B (16x8 as [k][n]) and the caller's C entries from the PTX fragment layout.
  float A[16][16], B[16][8];
  for (unsigned l = 0; l < 32; l++) {
    const unsigned g = l >> 2, t = l & 3;
    for (unsigned r = 0; r < 4; r++) {
      const u32 reg = wp.a[p][l][r];
      const unsigned row = g + ((r & 1) ? 8 : 0);
      const unsigned col = 2 * t + ((r & 2) ? 8 : 0);
      A[row][col] = kiln_f16_to_f32((u16)(reg & 0xFFFF));
      A[row][col + 1] = kiln_f16_to_f32((u16)(reg >> 16));
    }
    for (unsigned r = 0; r < 2; r++) {
      const u32 reg = wp.b[p][l][r];
      const unsigned k = 2 * t + (r ? 8 : 0);
      B[k][g] = kiln_f16_to_f32((u16)(reg & 0xFFFF));
      B[k + 1][g] = kiln_f16_to_f32((u16)(reg >> 16));
    }
  }
  const unsigned g = me >> 2, t = me & 3;
  float out[4];
  for (unsigned i = 0; i < 4; i++) {
    const unsigned row = g + (i >= 2 ? 8 : 0);
    const unsigned col = 2 * t + (i & 1);
    float acc = wp.c[p][me][i];
    for (unsigned k = 0; k < 16; k++) acc += A[row][k] * B[k][col];  // f16*f16 is exact in f32
    out[i] = acc;
  }
  for (int i = 0; i < 4; i++) d[i] = out[i];
}

Registration::Registration(const char* name, size_t argBytes, void (*run)(const void* args)) {
  registry().push_back(Kernel{name, argBytes, run});
}

}  // namespace kiln_emu

// ---------------------------------------------------------------------------- C ABI
using namespace kiln_emu;

namespace {
int launch_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
int launch_error(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  g_lastError = buf;
  return 1;
}

// After a failed launch the fibers are mid-kernel: their contexts are dropped and re-created.
void reset_fibers() {
  for (Fiber* f : g_fibers) {
    f->started = false;
    f->state = kNew;
  }
}
}  // namespace

KILN_EMU_EXPORT int kiln_emu_launch(const char* kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                    unsigned bz, unsigned sharedBytes, const void* args, unsigned long long argBytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_lastError.clear();
  if (!kernel) return launch_error("no kernel name");
  const Kernel* k = nullptr;
  for (const Kernel& r : registry())
    if (std::strcmp(r.name, kernel) == 0) k = &r;
  if (!k) return launch_error("unknown kernel %s", kernel);
  if (argBytes != k->argBytes)
    return launch_error("kernel %s takes %zu argument bytes, got %llu", kernel, k->argBytes, argBytes);
  if (gx == 0 || gy == 0 || gz == 0 || gx > 0x7FFFFFFFu || gy > 65535 || gz > 65535)
    return launch_error("kernel %s: grid (%u,%u,%u) is out of range (x in [1, 2^31), y and z in [1, 65535])", kernel, gx, gy, gz);
  if (bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || (unsigned long long)bx * by * bz > kMaxThreads)
    return launch_error("kernel %s: block (%u,%u,%u) is out of range (at most %u threads, z at most 64)", kernel, bx, by, bz, kMaxThreads);
  if (sharedBytes > kMaxSharedBytes)
    return launch_error("kernel %s: %u bytes of dynamic shared memory, more than a block can have (%u)", kernel, sharedBytes, kMaxSharedBytes);

  const unsigned n = bx * by * bz;
  while (g_fibers.size() < n) {
    Fiber* f = make_fiber();
    if (!f) return launch_error("kernel %s: cannot map a fiber stack", kernel);
    g_fibers.push_back(f);
  }
  const unsigned nwarps = (n + 31) / 32;
  if (g_warps.size() < nwarps) g_warps.resize(nwarps);
  if (sharedBytes > g_smemCap) {
    std::free(g_smem);
    g_smemCap = (sharedBytes + 4095) & ~4095u;
    g_smem = static_cast<unsigned char*>(std::aligned_alloc(64, g_smemCap));
    if (!g_smem) {
      g_smemCap = 0;
      return launch_error("kernel %s: cannot allocate %u bytes of shared memory", kernel, sharedBytes);
    }
  }
  // The argument struct, copied to an aligned buffer (the caller's bytes may be unaligned).
  alignas(16) unsigned char argCopy[512];
  std::vector<unsigned char> bigArgs;
  void* argp = argCopy;
  if (argBytes > sizeof argCopy) {
    bigArgs.resize(argBytes + 16);
    argp = bigArgs.data() + ((16 - ((uintptr_t)bigArgs.data() & 15)) & 15);
  }
  if (argBytes) std::memcpy(argp, args, argBytes);

  g_launch.run = k->run;
  g_launch.args = argp;
  g_launch.grid = Dim3{gx, gy, gz};
  g_launch.block = Dim3{bx, by, bz};
  g_launch.nthreads = n;
  g_launch.failed = false;
  g_launch.error.clear();

  for (unsigned z = 0; z < gz; z++)
    for (unsigned y = 0; y < gy; y++)
      for (unsigned x = 0; x < gx; x++) {
        g_launch.done = 0;
        g_launch.waitingBlock = 0;
        for (unsigned w = 0; w < nwarps; w++) {
          Warp& wp = g_warps[w];
          wp.lanes = (w + 1) * 32 <= n ? 32 : n - w * 32;
          wp.waiting = 0;
          std::memset(wp.seq, 0xFF, sizeof wp.seq);
        }
        for (unsigned i = 0; i < n; i++) {
          Fiber* f = g_fibers[i];
          f->linear = i;
          f->ids.thread = Dim3{i % bx, (i / bx) % by, i / (bx * by)};
          f->ids.block = Dim3{x, y, z};
          f->warpOps = 0;
          f->state = kRunnable;
        }
        if (sharedBytes) std::memset(g_smem, 0xFF, sharedBytes);
        if (!run_block()) {
          reset_fibers();
          g_cur = nullptr;
          g_lastError = std::string("kernel ") + kernel + ": " + g_launch.error;
          return 1;
        }
      }
  g_cur = nullptr;
  return 0;
}

KILN_EMU_EXPORT const char* kiln_emu_last_error() { return g_lastError.c_str(); }
KILN_EMU_EXPORT int kiln_emu_kernel_count() { return (int)registry().size(); }
KILN_EMU_EXPORT const char* kiln_emu_kernel_name(int i) {
  return i >= 0 && i < (int)registry().size() ? registry()[i].name : nullptr;
}
KILN_EMU_EXPORT unsigned long long kiln_emu_kernel_arg_bytes(int i) {
  return i >= 0 && i < (int)registry().size() ? registry()[i].argBytes : 0;
}
KILN_EMU_EXPORT void* kiln_emu_alloc(unsigned long long bytes) {
  const size_t n = (size_t)((bytes + 255) & ~255ull);
  void* p = std::aligned_alloc(256, n ? n : 256);
  if (p) std::memset(p, 0, n ? n : 256);
  return p;
}
KILN_EMU_EXPORT void kiln_emu_free(void* p) { std::free(p); }
