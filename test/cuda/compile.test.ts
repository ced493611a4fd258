/**
 * The CUDA loader without a GPU: every cuda/*.cu compiles with NVRTC for sm_80 and sm_90, a
 * broken source is a CUDA_COMPILE error carrying NVRTC's log, the CUBIN cache hits, misses and
 * rejects as it should, and a machine without the driver says so (probeCuda, CudaRuntime).
 * With a GPU (probeCuda().available), the runtime's memory, launch, error and graph paths run
 * against a test kernel of its own.
 *
 * The cuda/*.cu compiles go through the ordinary CUBIN cache (KILN_CACHE_DIR or ~/.cache/kiln/cuda):
 * an entry exists only for exactly these sources, headers, options and NVRTC, once NVRTC
 * compiled them, so a hit proves the same as a compile and a rerun takes seconds, not minutes
 * (set KILN_CACHE_DIR to an empty folder to force NVRTC). The cache tests use their own folders.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KilnError } from "../../src/errors";
import { kiln, Status } from "../../src/ffi/library";
import {
  compileCounters,
  compileKernelFile,
  compileKernelSource,
  CUDA_DIR,
  cubinCacheKey,
  kernelFiles,
  kernelNames,
  loadNvrtc,
  nvrtcOptions,
  readCacheFile,
  readHeaders,
} from "../../src/backends/cuda/compile";
import { CudaRuntime, probeCuda } from "../../src/backends/cuda/driver";
import { KernelArgs } from "../../src/backends/cuda/runtime";
import { thrownKilnError } from "../helpers";

const LONG = 300_000;
const cuFiles = readdirSync(CUDA_DIR).filter((f) => f.endsWith(".cu")).sort();
const isElf = (b: Uint8Array) => b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46;

let scratch = "";
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "kiln-cuda-compile-"));
});
afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("NVRTC", () => {
  test("loads (KILN_NVRTC, .tools/nvrtc or the system) and reports a CUDA 12 version", () => {
    const info = loadNvrtc();
    expect(info.version[0]).toBeGreaterThanOrEqual(12);
    expect(loadNvrtc()).toBe(info); // once per process
  });

  test("options: the architecture, device default, C++17, and exact math (no --use_fast_math)", () => {
    const o = nvrtcOptions(90, { lineInfo: false });
    expect(o).toEqual(["--gpu-architecture=sm_90", "-default-device", "-std=c++17"]);
    expect(nvrtcOptions("compute_80")[0]).toBe("--gpu-architecture=compute_80");
    expect(nvrtcOptions(90, { lineInfo: true })).toContain("-lineinfo");
    expect(o.join(" ")).not.toMatch(/fast_math|fmad=true/);
    expect(thrownKilnError(() => nvrtcOptions("sm90; rm"))?.code).toBe("BAD_OPTION");
  });

  test("there are kernel files, each declares at least one kiln_ kernel, and names are unique across them", () => {
    expect(cuFiles.length).toBeGreaterThan(0);
    const map = kernelFiles();
    for (const f of cuFiles) {
      const names = kernelNames(readFileSync(join(CUDA_DIR, f), "utf8"));
      if (names.length === 0) throw new Error(`${f} declares no KILN_KERNEL(kiln_..., Args)`);
      for (const n of names) expect(map.get(n)).toBe(f);
    }
  });

  test("kernelNames: KILN_KERNEL and KILN_KERNEL_BOUNDS, not the ones in comments", () => {
    const src = "// KILN_KERNEL(kiln_commented, A)\n/* KILN_KERNEL(kiln_block, A) */\nKILN_KERNEL(kiln_a, AArgs) {}\nKILN_KERNEL_BOUNDS( kiln_b , BArgs, 256) {}\n";
    expect(kernelNames(src)).toEqual(["kiln_a", "kiln_b"]);
  });

  // Every kernel file must compile for the device: a failure shows NVRTC's log.
  for (const arch of [80, 90]) {
    for (const file of cuFiles) {
      test(
        `${file} compiles for sm_${arch}`,
        () => {
          let image: Uint8Array;
          try {
            image = compileKernelFile(file, arch);
          } catch (e) {
            throw new Error(`${file} does not compile for sm_${arch}:\n${(e as Error).message}`);
          }
          expect(isElf(image)).toBe(true);
          expect(image.byteLength).toBeGreaterThan(512);
        },
        LONG,
      );
    }
  }

  test(
    "a virtual target (compute_80) gives PTX with the kernel's entry",
    () => {
      const src = '#include "kiln_cuda.cuh"\nstruct A { float* y; i32 n; };\nKILN_KERNEL(kiln_t_ptx, A) { if ((int)threadIdx.x < a.n) a.y[threadIdx.x] = 1.0f; }\n';
      const ptx = compileKernelSource("ptx.cu", src, "compute_80", { cacheDir: null });
      const text = new TextDecoder().decode(ptx);
      expect(text).toContain(".entry kiln_t_ptx");
      expect(ptx[ptx.byteLength - 1]).toBe(0); // NUL-terminated, as cuModuleLoadData wants PTX
    },
    LONG,
  );

  test(
    "a broken kernel is KilnError CUDA_COMPILE naming the file, the target and the line",
    () => {
      const src = '#include "kiln_cuda.cuh"\nstruct A { float* y; };\nKILN_KERNEL(kiln_t_broken, A) {\n  a.y[0] = not_declared_anywhere;\n}\n';
      const before = compileCounters.nvrtc;
      const e = thrownKilnError(() => compileKernelSource("broken.cu", src, 90, { cacheDir: join(scratch, "broken-cache") }));
      expect(e?.code).toBe("CUDA_COMPILE");
      expect(e?.message).toStartWith("broken.cu for sm_90: ");
      expect(e?.message).toContain("broken.cu(4)");
      expect(e?.message).toContain("not_declared_anywhere");
      expect(compileCounters.nvrtc).toBe(before + 1);
      // Nothing was cached: the next try compiles (and fails) again.
      expect(thrownKilnError(() => compileKernelSource("broken.cu", src, 90, { cacheDir: join(scratch, "broken-cache") }))?.code).toBe("CUDA_COMPILE");
      expect(compileCounters.nvrtc).toBe(before + 2);
    },
    LONG,
  );

  test("an unknown architecture is refused by NVRTC with a CUDA_COMPILE error naming the option", () => {
    const e = thrownKilnError(() => compileKernelSource("x.cu", "KILN_FN void f() {}\n", 999, { cacheDir: null }));
    expect(e?.code).toBe("CUDA_COMPILE");
    expect(e?.message).toContain("x.cu for sm_999: nvrtcCompileProgram: NVRTC_ERROR_INVALID_OPTION");
  });
});

describe("CUBIN cache", () => {
  const kernel = '#include "kiln_cuda.cuh"\n#include "extra.cuh"\nstruct A { float* y; i32 n; };\nKILN_KERNEL(kiln_t_cached, A) {\n  const int i = blockIdx.x * blockDim.x + threadIdx.x;\n  if (i < a.n) a.y[i] = EXTRA_VALUE;\n}\n';
  let dir = "";
  let cache = "";
  const opts = () => ({ cudaDir: dir, cacheDir: cache, driverVersion: 12040 });
  const cacheFiles = () => readdirSync(cache).filter((f) => f.endsWith(".cubin"));

  beforeAll(() => {
    dir = join(scratch, "src");
    cache = join(scratch, "cache");
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(CUDA_DIR, "kiln_cuda.cuh"), join(dir, "kiln_cuda.cuh"));
    writeFileSync(join(dir, "extra.cuh"), "#pragma once\n#define EXTRA_VALUE 1.0f\n");
    writeFileSync(join(dir, "k.cu"), kernel);
  });

  test(
    "the second compile is a hit: no NVRTC run, the same bytes",
    () => {
      const n0 = compileCounters.nvrtc;
      const first = compileKernelFile("k.cu", 90, opts());
      expect(compileCounters.nvrtc).toBe(n0 + 1);
      expect(cacheFiles().length).toBe(1);
      const hits = compileCounters.cacheHits;
      const second = compileKernelFile("k.cu", 90, opts());
      expect(compileCounters.nvrtc).toBe(n0 + 1);
      expect(compileCounters.cacheHits).toBe(hits + 1);
      expect(Buffer.from(second).equals(Buffer.from(first))).toBe(true);
      // Another architecture or driver is another entry.
      compileKernelFile("k.cu", 80, opts());
      expect(compileCounters.nvrtc).toBe(n0 + 2);
      expect(cacheFiles().length).toBe(2);
      // No temporary files are left behind.
      expect(readdirSync(cache).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    },
    LONG,
  );

  test(
    "a changed header changes the key and is compiled",
    () => {
      const parts = { source: kernel, headers: readHeaders(dir), nvrtcVersion: loadNvrtc().version, options: nvrtcOptions(90, { lineInfo: false }), arch: 90, driverVersion: 12040 };
      const key = cubinCacheKey(parts);
      expect(cubinCacheKey({ ...parts, headers: readHeaders(dir) })).toBe(key); // stable
      writeFileSync(join(dir, "extra.cuh"), "#pragma once\n#define EXTRA_VALUE 2.0f\n");
      const changed = cubinCacheKey({ ...parts, headers: readHeaders(dir) });
      expect(changed).not.toBe(key);
      // Each other part moves the key too.
      for (const other of [{ source: kernel + " " }, { nvrtcVersion: [12, 5] as const }, { options: [...parts.options, "-lineinfo"] }, { arch: 80 }, { driverVersion: 12050 }]) {
        expect(cubinCacheKey({ ...parts, ...other })).not.toBe(key);
      }
      // Field boundaries matter: moving text between the source and a header is another key.
      expect(cubinCacheKey({ ...parts, source: "ab", headers: [{ name: "h", source: "c" }] })).not.toBe(cubinCacheKey({ ...parts, source: "a", headers: [{ name: "h", source: "bc" }] }));
      const n0 = compileCounters.nvrtc;
      compileKernelFile("k.cu", 90, opts());
      expect(compileCounters.nvrtc).toBe(n0 + 1);
    },
    LONG,
  );

  test(
    "a truncated or corrupted cache file is compiled again and replaced, never returned",
    () => {
      const good = compileKernelFile("k.cu", 90, opts()); // a hit after the previous test
      const file = join(cache, cacheFiles().find((f) => readCacheFile(join(cache, f)) && Buffer.from(readCacheFile(join(cache, f))!).equals(Buffer.from(good)))!);
      const size = readFileSync(file).byteLength;

      truncateSync(file, Math.floor(size / 2));
      expect(readCacheFile(file)).toBeNull();
      let [n0, r0] = [compileCounters.nvrtc, compileCounters.cacheRejected];
      expect(Buffer.from(compileKernelFile("k.cu", 90, opts())).equals(Buffer.from(good))).toBe(true);
      expect(compileCounters.nvrtc).toBe(n0 + 1);
      expect(compileCounters.cacheRejected).toBe(r0 + 1);
      expect(readFileSync(file).byteLength).toBe(size); // replaced

      const bytes = readFileSync(file);
      bytes[bytes.byteLength - 7]! ^= 0x40; // one payload bit
      writeFileSync(file, bytes);
      expect(readCacheFile(file)).toBeNull();
      [n0, r0] = [compileCounters.nvrtc, compileCounters.cacheRejected];
      expect(Buffer.from(compileKernelFile("k.cu", 90, opts())).equals(Buffer.from(good))).toBe(true);
      expect(compileCounters.nvrtc).toBe(n0 + 1);
      expect(compileCounters.cacheRejected).toBe(r0 + 1);

      writeFileSync(file, new Uint8Array(0)); // empty
      expect(readCacheFile(file)).toBeNull();
      compileKernelFile("k.cu", 90, opts());
      expect(readCacheFile(file)).not.toBeNull();
    },
    LONG,
  );
});

const probe = probeCuda();

describe("without a GPU", () => {
  test("probeCuda() answers without throwing, once per process", () => {
    expect(probeCuda()).toBe(probe);
    expect(typeof probe.available).toBe("boolean");
    if (probe.available) {
      expect(probe.devices!.length).toBeGreaterThan(0);
      expect(probe.driverVersion).toBeGreaterThanOrEqual(12000);
    } else {
      expect(probe.reason).toBeString();
    }
  });

  test.if(!probe.available)("on this machine: unavailable, naming the missing libcuda.so.1 (or the driver's own error)", () => {
    if (/not found/.test(probe.reason!)) expect(probe.reason).toBe("libcuda.so.1 not found (no NVIDIA driver)");
    else expect(probe.reason).toMatch(/^(cuInit: CUDA_ERROR_\w+|the CUDA driver reports no device)/);
  });

  test.if(!probe.available)("a CudaRuntime cannot be made: KilnError CUDA naming why", () => {
    const e = thrownKilnError(() => new CudaRuntime(0));
    expect(e?.code).toBe("CUDA");
    expect(e?.message).toContain("CUDA runtime for device 0: no usable GPU: ");
    expect(e?.message).toContain(probe.reason!);
  });

  test.if(!probe.available)("driver calls without a loaded driver return a status and name the call", () => {
    const out = new BigUint64Array(1);
    expect(kiln().kiln_cuda_malloc(16, out)).toBe(Status.noLibrary);
    const buf = new Uint8Array(200);
    const n = Number(kiln().kiln_cuda_last_error(buf, buf.byteLength));
    expect(new TextDecoder().decode(buf.subarray(0, n))).toBe("cuMemAlloc_v2: the CUDA driver is not loaded (kiln_cuda_load first)");
  });
});

// ---- with a GPU ------------------------------------------------------------------------------------

describe.if(probe.available)("CudaRuntime on the GPU", () => {
  let rt: CudaRuntime;
  let dir = "";
  beforeAll(() => {
    dir = join(scratch, "gpu");
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(CUDA_DIR, "kiln_cuda.cuh"), join(dir, "kiln_cuda.cuh"));
    // y[i] += alpha * x[i], staged through dynamic shared memory (a launch asks for 64 KiB of
    // it, past the 48 KiB default, to exercise cuFuncSetAttribute).
    writeFileSync(
      join(dir, "t.cu"),
      '#include "kiln_cuda.cuh"\nstruct AxpyArgs { float* y; const float* x; float alpha; i32 n; };\n' +
        "KILN_KERNEL(kiln_t_axpy, AxpyArgs) {\n  KILN_DYNAMIC_SMEM(float, s);\n  const int i = blockIdx.x * blockDim.x + threadIdx.x;\n" +
        "  s[threadIdx.x] = i < a.n ? a.x[i] : 0.0f;\n  kiln_sync();\n  if (i < a.n) a.y[i] += a.alpha * s[threadIdx.x];\n}\n",
    );
    rt = new CudaRuntime(0, { cudaDir: dir, cacheDir: join(scratch, "gpu-cache") });
  });
  afterAll(() => rt?.dispose());

  const f32 = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const axpy = (y: { ptr: number; byteLength: number; label: string }, x: typeof y, alpha: number, n: number, shared = 256 * 4) =>
    rt.launch("kiln_t_axpy", [Math.ceil(n / 256), 1, 1], [256, 1, 1], shared, new KernelArgs().ptr(y).ptr(x).f32(alpha).i32(n).bytes());

  test("the device is described", () => {
    expect(rt.kind).toBe("cuda");
    expect(rt.deviceName.length).toBeGreaterThan(0);
    expect(rt.computeCapability[0]).toBeGreaterThanOrEqual(5);
    const m = rt.memoryInfo();
    expect(m.total).toBe(rt.totalMemory);
    expect(m.free).toBeGreaterThan(0);
  });

  test("upload, fill, copy and download round-trip at offsets", () => {
    const a = rt.alloc(1000, "a");
    const b = rt.alloc(1000, "b");
    const src = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff);
    rt.upload(a, src);
    rt.fill(b, 0x5a);
    rt.copy(b, a, 300, 100, 200); // b[100..400) = a[200..500)
    const got = new Uint8Array(1000);
    rt.download(b, got);
    expect(got.subarray(0, 100).every((v) => v === 0x5a)).toBe(true);
    expect(Buffer.from(got.subarray(100, 400)).equals(Buffer.from(src.subarray(200, 500)))).toBe(true);
    expect(got.subarray(400).every((v) => v === 0x5a)).toBe(true);
    const part = new Uint8Array(10);
    rt.download(a, part, 990);
    expect([...part]).toEqual([...src.subarray(990)]);
    expect(thrownKilnError(() => rt.upload(a, new Uint8Array(10), 995))?.message).toContain("upload to a: range [995, 1005) is outside its 1000 bytes");
    rt.free(a);
    rt.free(b);
    expect(thrownKilnError(() => rt.free(a))?.message).toContain("not a live allocation");
  });

  test(
    "a kernel compiles on first launch and computes, with 64 KiB of dynamic shared memory",
    () => {
      const n = 1000; // not a multiple of the block
      const x = Float32Array.from({ length: n }, (_, i) => i * 0.5);
      const y0 = Float32Array.from({ length: n }, (_, i) => 1 - i);
      const xb = rt.alloc(n * 4, "x");
      const yb = rt.alloc(n * 4 + 64, "y");
      rt.upload(xb, f32(x));
      rt.upload(yb, new Uint8Array(n * 4 + 64).fill(0xa5));
      rt.upload(yb, f32(y0));
      axpy(yb, xb, 2, n, 64 * 1024);
      const out = new Uint8Array(n * 4 + 64);
      rt.download(yb, out);
      const y = new Float32Array(out.buffer, 0, n);
      for (let i = 0; i < n; i++) expect(y[i]).toBe(y0[i]! + 2 * x[i]!);
      expect(out.subarray(n * 4).every((v) => v === 0xa5)).toBe(true);
      rt.free(xb);
      rt.free(yb);
    },
    LONG,
  );

  test("driver errors name the call and CUDA's error", () => {
    const e = thrownKilnError(() => rt.alloc(2 ** 52, "huge"));
    expect(e?.code).toBe("CUDA");
    expect(e?.message).toStartWith("cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY");
    expect(e?.message).toContain("huge");
    const x = rt.alloc(64, "x");
    const bad = thrownKilnError(() => rt.launch("kiln_t_axpy", [1, 1, 1], [2048, 1, 1], 0, new KernelArgs().ptr(x).ptr(x).f32(1).i32(16).bytes()));
    expect(bad?.message).toStartWith("cuLaunchKernel: CUDA_ERROR_INVALID_VALUE");
    expect(thrownKilnError(() => rt.launch("kiln_no_such_kernel", [1, 1, 1], [1, 1, 1], 0, new Uint8Array(8)))?.message).toContain("unknown kernel kiln_no_such_kernel");
    rt.synchronize(); // the stream is still usable
    rt.free(x);
  });

  test("a captured graph replays its launches", () => {
    const n = 300;
    const xb = rt.alloc(n * 4, "x");
    const yb = rt.alloc(n * 4, "y");
    rt.upload(xb, f32(new Float32Array(n).fill(1)));
    rt.fill(yb, 0);
    const graph = rt.captureGraph(() => {
      axpy(yb, xb, 1, n);
      axpy(yb, xb, 2, n);
    });
    const out = new Float32Array(n);
    rt.download(yb, f32(out));
    expect(out.every((v) => v === 0)).toBe(true); // capturing runs nothing
    for (let r = 0; r < 3; r++) graph.launch();
    rt.download(yb, f32(out));
    expect(out.every((v) => v === 9)).toBe(true);
    graph.dispose();
    expect(thrownKilnError(() => graph.launch())?.code).toBe("DISPOSED");
    // A throwing capture ends the capture: the stream works afterwards.
    expect(() =>
      rt.captureGraph(() => {
        throw new Error("boom");
      }),
    ).toThrow("boom");
    axpy(yb, xb, 1, n);
    rt.download(yb, f32(out));
    expect(out.every((v) => v === 10)).toBe(true);
    rt.free(xb);
    rt.free(yb);
  });

  test("a second runtime on the same device works beside the first; use after dispose is DISPOSED", () => {
    const other = new CudaRuntime(0, { cudaDir: dir, cacheDir: join(scratch, "gpu-cache") });
    const b = other.alloc(16, "other");
    other.upload(b, new Uint8Array(16).fill(3));
    const got = new Uint8Array(16);
    other.download(b, got);
    expect(got.every((v) => v === 3)).toBe(true);
    other.dispose();
    expect(thrownKilnError(() => other.alloc(1, "late"))?.code).toBe("DISPOSED");
    const mine = rt.alloc(8, "mine"); // the first runtime's context is made current again
    rt.free(mine);
  });
});
