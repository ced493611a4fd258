// A stand-in for libcuda.so.1 with the entry points zig-kernels/cuda_loader.zig resolves, so the
// CUDA runtime's plumbing (handles, kernel parameters, copies, errors, graphs, teardown) is
// tested on machines without a GPU (test/cuda/fake-driver.test.ts builds it with `zig cc`).
//
// One device ("kiln fake GPU", sm_90). "Device" memory is host memory, so a device pointer is a
// host address. Kernels run on the host when their name is known:
//   kiln_t_fill(struct { float* y; float v; int n; })  y[i] = v for i < n   (any grid)
//   kiln_t_add (the same struct)                       y[i] += v
// others are accepted and do nothing. Launches on a capturing stream are recorded into the graph
// and run by cuGraphLaunch. Error codes and names are CUDA's.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
enum {
  CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_VALUE = 1, CUDA_ERROR_OUT_OF_MEMORY = 2, CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_INVALID_DEVICE = 101, CUDA_ERROR_INVALID_IMAGE = 200, CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_INVALID_HANDLE = 400, CUDA_ERROR_NOT_FOUND = 500, CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900,
};

static int initialized, ctx_refs, live_allocs, launches, modules_live, streams_live, graphs_live;
static int ctx_object;
static void* current_ctx;

#define API __attribute__((visibility("default")))
#define NEED_INIT if (!initialized) return CUDA_ERROR_NOT_INITIALIZED
#define NEED_CTX NEED_INIT; if (!current_ctx) return CUDA_ERROR_INVALID_CONTEXT

API CUresult cuGetErrorName(CUresult e, const char** out) {
  switch (e) {
    case CUDA_SUCCESS: *out = "CUDA_SUCCESS"; return 0;
    case CUDA_ERROR_INVALID_VALUE: *out = "CUDA_ERROR_INVALID_VALUE"; return 0;
    case CUDA_ERROR_OUT_OF_MEMORY: *out = "CUDA_ERROR_OUT_OF_MEMORY"; return 0;
    case CUDA_ERROR_NOT_INITIALIZED: *out = "CUDA_ERROR_NOT_INITIALIZED"; return 0;
    case CUDA_ERROR_INVALID_DEVICE: *out = "CUDA_ERROR_INVALID_DEVICE"; return 0;
    case CUDA_ERROR_INVALID_IMAGE: *out = "CUDA_ERROR_INVALID_IMAGE"; return 0;
    case CUDA_ERROR_INVALID_CONTEXT: *out = "CUDA_ERROR_INVALID_CONTEXT"; return 0;
    case CUDA_ERROR_INVALID_HANDLE: *out = "CUDA_ERROR_INVALID_HANDLE"; return 0;
    case CUDA_ERROR_NOT_FOUND: *out = "CUDA_ERROR_NOT_FOUND"; return 0;
    case CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: *out = "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"; return 0;
    default: *out = 0; return CUDA_ERROR_INVALID_VALUE;
  }
}

API CUresult cuInit(unsigned flags) { if (flags) return CUDA_ERROR_INVALID_VALUE; initialized = 1; return 0; }
API CUresult cuDriverGetVersion(int* v) { *v = 12040; return 0; }
API CUresult cuDeviceGetCount(int* n) { NEED_INIT; *n = 1; return 0; }
API CUresult cuDeviceGet(int* dev, int ordinal) { NEED_INIT; if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE; *dev = 0; return 0; }
API CUresult cuDeviceGetName(char* name, int len, int dev) {
  if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  strncpy(name, "kiln fake GPU", (size_t)len);
  name[len - 1] = 0;
  return 0;
}
API CUresult cuDeviceGetAttribute(int* v, int attr, int dev) {
  if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (attr == 75) *v = 9; else if (attr == 76) *v = 0; else return CUDA_ERROR_INVALID_VALUE;
  return 0;
}
API CUresult cuDeviceTotalMem_v2(size_t* bytes, int dev) { if (dev != 0) return CUDA_ERROR_INVALID_DEVICE; *bytes = (size_t)80 << 30; return 0; }
API CUresult cuDevicePrimaryCtxRetain(void** ctx, int dev) { NEED_INIT; if (dev != 0) return CUDA_ERROR_INVALID_DEVICE; ctx_refs++; *ctx = &ctx_object; return 0; }
API CUresult cuDevicePrimaryCtxRelease_v2(int dev) { if (dev != 0) return CUDA_ERROR_INVALID_DEVICE; if (ctx_refs == 0) return CUDA_ERROR_INVALID_CONTEXT; ctx_refs--; return 0; }
API CUresult cuCtxSetCurrent(void* ctx) { NEED_INIT; if (ctx && ctx != &ctx_object) return CUDA_ERROR_INVALID_CONTEXT; current_ctx = ctx; return 0; }
API CUresult cuCtxSynchronize(void) { NEED_CTX; return 0; }
API CUresult cuMemGetInfo_v2(size_t* f, size_t* t) { NEED_CTX; *f = (size_t)79 << 30; *t = (size_t)80 << 30; return 0; }

// ---- modules and functions
struct Function { char name[64]; int max_dynamic_smem; };
struct Module { int magic; int n; struct Function f[64]; };

API CUresult cuModuleLoadData(void** out, const void* image) {
  NEED_CTX;
  const unsigned char* b = image;
  if (!(b[0] == 0x7f && b[1] == 'E' && b[2] == 'L' && b[3] == 'F')) return CUDA_ERROR_INVALID_IMAGE;
  struct Module* m = calloc(1, sizeof *m);
  m->magic = 0x6d6f64;
  modules_live++;
  *out = m;
  return 0;
}
API CUresult cuModuleGetFunction(void** out, void* mod, const char* name) {
  NEED_CTX;
  struct Module* m = mod;
  if (!m || m->magic != 0x6d6f64) return CUDA_ERROR_INVALID_HANDLE;
  if (strncmp(name, "kiln_", 5) != 0 || strlen(name) >= 64 || m->n == 64) return CUDA_ERROR_NOT_FOUND;
  struct Function* f = &m->f[m->n++];
  strcpy(f->name, name);
  f->max_dynamic_smem = 48 * 1024;
  *out = f;
  return 0;
}
API CUresult cuModuleUnload(void* mod) {
  struct Module* m = mod;
  if (!m || m->magic != 0x6d6f64) return CUDA_ERROR_INVALID_HANDLE;
  m->magic = 0;
  free(m);
  modules_live--;
  return 0;
}
API CUresult cuFuncSetAttribute(void* fn, int attr, int value) {
  struct Function* f = fn;
  if (attr != 8 || value < 0 || value > 227 * 1024) return CUDA_ERROR_INVALID_VALUE;
  f->max_dynamic_smem = value;
  return 0;
}

// ---- streams and graphs
struct Launch { struct Function* f; unsigned grid[3], block[3]; unsigned char args[256]; };
struct Graph { int n; struct Launch l[2048]; }; // a decode step of a 1.1B model is ~300 launches
struct Stream { int magic; struct Graph* capture; };

static void run(const struct Launch* l) {
  launches++;
  struct { float* y; float v; int n; } a;
  memcpy(&a, l->args, sizeof a);
  if (strcmp(l->f->name, "kiln_t_fill") == 0) for (int i = 0; i < a.n; i++) a.y[i] = a.v;
  if (strcmp(l->f->name, "kiln_t_add") == 0) for (int i = 0; i < a.n; i++) a.y[i] += a.v;
}

API CUresult cuLaunchKernel(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                            unsigned shared, void* stream, void** params, void** extra) {
  NEED_CTX;
  struct Function* f = fn;
  if (!f || extra || !params || !params[0]) return CUDA_ERROR_INVALID_VALUE;
  if ((unsigned long long)bx * by * bz > 1024 || !gx || !gy || !gz) return CUDA_ERROR_INVALID_VALUE;
  if (shared > (unsigned)f->max_dynamic_smem) return CUDA_ERROR_INVALID_VALUE;
  struct Launch l = {f, {gx, gy, gz}, {bx, by, bz}, {0}};
  memcpy(l.args, params[0], sizeof l.args); // the one struct parameter; the driver copies it now
  struct Stream* s = stream;
  if (s && s->capture) {
    if (s->capture->n == 2048) return CUDA_ERROR_OUT_OF_MEMORY;
    s->capture->l[s->capture->n++] = l;
    return 0;
  }
  run(&l);
  return 0;
}

API CUresult cuStreamCreate(void** out, unsigned flags) {
  NEED_CTX;
  if (flags != 1) return CUDA_ERROR_INVALID_VALUE; // kiln asks for a non-blocking stream
  struct Stream* s = calloc(1, sizeof *s);
  s->magic = 0x737472;
  streams_live++;
  *out = s;
  return 0;
}
static int capturing(void* stream) { struct Stream* s = stream; return s && s->capture; }
API CUresult cuStreamDestroy_v2(void* stream) {
  struct Stream* s = stream;
  if (!s || s->magic != 0x737472) return CUDA_ERROR_INVALID_HANDLE;
  s->magic = 0;
  free(s->capture);
  free(s);
  streams_live--;
  return 0;
}
API CUresult cuStreamSynchronize(void* stream) { NEED_CTX; return capturing(stream) ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : 0; }
API CUresult cuStreamBeginCapture_v2(void* stream, int mode) {
  struct Stream* s = stream;
  if (!s || s->capture || mode != 2) return CUDA_ERROR_INVALID_VALUE;
  s->capture = calloc(1, sizeof *s->capture);
  return 0;
}
API CUresult cuStreamEndCapture(void* stream, void** graph) {
  struct Stream* s = stream;
  if (!s || !s->capture) return CUDA_ERROR_INVALID_VALUE;
  *graph = s->capture;
  s->capture = 0;
  graphs_live++;
  return 0;
}
API CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long flags) {
  if (flags) return CUDA_ERROR_INVALID_VALUE;
  struct Graph* g = malloc(sizeof *g);
  memcpy(g, graph, sizeof *g);
  graphs_live++;
  *exec = g;
  return 0;
}
API CUresult cuGraphLaunch(void* exec, void* stream) {
  NEED_CTX;
  if (capturing(stream)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  struct Graph* g = exec;
  for (int i = 0; i < g->n; i++) run(&g->l[i]);
  return 0;
}
API CUresult cuGraphExecDestroy(void* exec) { free(exec); graphs_live--; return 0; }
API CUresult cuGraphDestroy(void* graph) { free(graph); graphs_live--; return 0; }

// ---- memory (device pointers are host addresses)
API CUresult cuMemAlloc_v2(uint64_t* out, size_t bytes) {
  NEED_CTX;
  if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  if (bytes > ((size_t)1 << 40)) return CUDA_ERROR_OUT_OF_MEMORY;
  void* p = malloc(bytes);
  if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
  live_allocs++;
  *out = (uint64_t)(uintptr_t)p;
  return 0;
}
API CUresult cuMemFree_v2(uint64_t p) { NEED_CTX; free((void*)(uintptr_t)p); live_allocs--; return 0; }
API CUresult cuMemcpyHtoD_v2(uint64_t d, const void* s, size_t n) { NEED_CTX; memcpy((void*)(uintptr_t)d, s, n); return 0; }
API CUresult cuMemcpyDtoH_v2(void* d, uint64_t s, size_t n) { NEED_CTX; memcpy(d, (void*)(uintptr_t)s, n); return 0; }
API CUresult cuMemcpyHtoDAsync_v2(uint64_t d, const void* s, size_t n, void* st) { NEED_CTX; if (capturing(st)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; memcpy((void*)(uintptr_t)d, s, n); return 0; }
API CUresult cuMemcpyDtoHAsync_v2(void* d, uint64_t s, size_t n, void* st) { NEED_CTX; if (capturing(st)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; memcpy(d, (void*)(uintptr_t)s, n); return 0; }
API CUresult cuMemcpyDtoDAsync_v2(uint64_t d, uint64_t s, size_t n, void* st) { NEED_CTX; if (capturing(st)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; memmove((void*)(uintptr_t)d, (void*)(uintptr_t)s, n); return 0; }
API CUresult cuMemsetD8Async(uint64_t d, unsigned char v, size_t n, void* st) { NEED_CTX; if (capturing(st)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; memset((void*)(uintptr_t)d, v, n); return 0; }
API CUresult cuMemHostAlloc(void** p, size_t n, unsigned flags) { NEED_CTX; (void)flags; *p = malloc(n); live_allocs++; return *p ? 0 : CUDA_ERROR_OUT_OF_MEMORY; }
API CUresult cuMemFreeHost(void* p) { free(p); live_allocs--; return 0; }

// ---- what the test reads back
API int fake_state(int what) {
  switch (what) {
    case 0: return live_allocs;
    case 1: return ctx_refs;
    case 2: return launches;
    case 3: return modules_live;
    case 4: return streams_live;
    case 5: return graphs_live;
    default: return -1;
  }
}
