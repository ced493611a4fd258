/**
 * CudaRuntime against a fake libcuda (fake_libcuda.c, built here with `zig cc`): without a GPU,
 * every path of the real runtime still runs through libkiln's loader — probe, context, stream,
 * alloc/copies, kernel compile + module load on first launch, the one-struct kernel parameter,
 * the 48 KiB shared-memory opt-in, errors named by call and CUDA error, graph capture/replay,
 * pinned memory and a teardown that leaves nothing behind. The driver is process-wide, so the
 * scenario (fake-driver-scenario.ts) runs in a fresh process with KILN_LIBCUDA set.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CUDA_DIR } from "../../src/backends/cuda/compile";

const root = join(import.meta.dir, "..", "..");

/** A C compiler for the fake driver: the project's Zig (zig cc), else the system's cc; null: none. */
function cCompiler(): string[] | null {
  if (existsSync(join(root, ".tools", "zig", "ziglang"))) return ["bash", join(root, "scripts", "zig.sh"), "cc"];
  const cc = Bun.which("cc") ?? Bun.which("gcc") ?? Bun.which("clang");
  return cc ? [cc] : null;
}
const compiler = cCompiler();
if (!compiler) process.stderr.write(`[cuda] no C compiler (neither .tools/zig nor cc): ${import.meta.file} is skipped\n`);

type Step = { value?: any; code?: string; message?: string; error?: string };
let r: Record<string, Step> = {};
let tmp = "";

beforeAll(() => {
  if (!compiler) return;
  tmp = mkdtempSync(join(tmpdir(), "kiln-fake-cuda-"));
  const lib = join(tmp, "libcuda-fake.so");
  const cc = Bun.spawnSync([...compiler, "-shared", "-fPIC", "-O1", "-o", lib, join(import.meta.dir, "fake_libcuda.c")]);
  if (cc.exitCode !== 0) throw new Error(`building the fake libcuda failed:\n${cc.stderr.toString()}`);
  const dir = join(tmp, "cuda");
  mkdirSync(dir);
  copyFileSync(join(CUDA_DIR, "kiln_cuda.cuh"), join(dir, "kiln_cuda.cuh"));
  writeFileSync(
    join(dir, "t.cu"),
    '#include "kiln_cuda.cuh"\nstruct FillArgs { float* y; float v; i32 n; };\n' +
      "KILN_KERNEL(kiln_t_fill, FillArgs) { const int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < a.n) a.y[i] = a.v; }\n" +
      "KILN_KERNEL(kiln_t_add, FillArgs) { const int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < a.n) a.y[i] += a.v; }\n",
  );
  const run = Bun.spawnSync([process.execPath, join(import.meta.dir, "fake-driver-scenario.ts"), lib, dir, join(tmp, "cache")], {
    env: { ...process.env, KILN_LIBCUDA: lib } as Record<string, string>,
    cwd: root,
  });
  if (run.exitCode !== 0) throw new Error(`the fake-driver scenario failed:\n${run.stderr.toString()}`);
  r = JSON.parse(run.stdout.toString());
}, 300_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const value = (name: string) => {
  const s = r[name]!;
  if (!("value" in s)) throw new Error(`${name} threw: ${s.message ?? s.error}`);
  return s.value;
};
const thrown = (name: string) => {
  const s = r[name]!;
  if ("value" in s) throw new Error(`${name} did not throw`);
  return s;
};

describe.if(compiler !== null)("CudaRuntime on a fake driver", () => {
  test("probe: the device as the driver describes it", () => {
    expect(value("probe")).toEqual({ available: true, devices: [{ index: 0, name: "kiln fake GPU", computeCapability: [9, 0], totalMemory: 80 * 2 ** 30 }], driverVersion: 12040 });
    expect(value("runtime")).toEqual({ kind: "cuda", deviceIndex: 0, deviceName: "kiln fake GPU", cc: [9, 0], arch: 90, driverVersion: 12040, state: { allocs: 0, contexts: 1, launches: 0, modules: 0, streams: 1, graphs: 0 } });
  });

  test("upload, fill, copy, download and free", () => {
    const v = value("roundtrip");
    expect(v.back).toEqual([...Array.from({ length: 90 }, (_, i) => i), ...Array(10).fill(0xee)]);
    expect(v.head.slice(4, 12)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(v.liveWhileAllocated).toBe(2); // y and a
    expect(v.liveAfterFree).toBe(1);
  });

  test("the first launch compiles the file and loads its module; the struct reaches the kernel whole", () => {
    const v = value("launch");
    expect(v.values).toEqual([...Array(50).fill(2.5), ...Array(14).fill(-1)]);
    expect(v.modules).toBe(1);
    const second = value("secondKernelSameModule");
    expect([second.first, second.last]).toEqual([3.5, 0]);
    expect(second.modules).toBe(1); // the same file: no second module
    expect(second.nvrtc).toBe(v.nvrtc); // nor a second compile
  });

  test("more than 48 KiB of dynamic shared memory raises the function's limit first", () => {
    expect(value("bigSharedMemory")).toBe("ok");
  });

  test("failures: KilnError CUDA naming the call, CUDA's error and what was asked", () => {
    expect(thrown("blockTooLarge")).toEqual({ code: "CUDA", message: "cuLaunchKernel: CUDA_ERROR_INVALID_VALUE (kernel kiln_t_fill grid [2, 1, 1] block [2048, 1, 1] shared 0)" });
    expect(thrown("outOfMemory")).toEqual({ code: "CUDA", message: "cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY (allocating 2199023255552 bytes for huge weights on device 0)" });
    expect(thrown("unknownKernel").message).toStartWith("unknown kernel kiln_nope: no KILN_KERNEL(kiln_nope, ...) in ");
    expect(thrown("badGrid").message).toBe("kernel kiln_t_fill: grid must be [x, y, z] of positive integers, got 0,1,1");
    expect(thrown("outOfRange")).toEqual({ code: "SHAPE", message: "download from y: range [250, 266) is outside its 256 bytes" });
    expect(thrown("doubleFree").message).toBe("free twice: not a live allocation of this runtime (freed twice, or a sub-buffer)");
    expect(thrown("noSuchDevice").message).toBe("CUDA runtime: no device 3 (the driver reports 1: 0 kiln fake GPU)");
  });

  test("a captured graph runs nothing while capturing and replays its launches", () => {
    expect(value("graph")).toEqual({ launchesWhileCapturing: 0, afterCapture: 0, afterThreeReplays: 9, graphs: 1 });
    expect(thrown("downloadWhileCapturing").message).toStartWith("cuMemcpyDtoHAsync_v2: CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED");
    expect(value("streamUsableAfterFailedCapture")).toBe(7);
  });

  test("pinned host memory round-trips", () => {
    expect(value("pinned")).toBe(true);
  });

  test("a second runtime shares the primary context and gives its reference back", () => {
    expect(value("second runtime")).toEqual({ contexts: 1, freedByDispose: 4 });
  });

  test("dispose frees every allocation, graph, module and stream and releases the context", () => {
    expect(value("beforeDispose")).toMatchObject({ allocs: 2, contexts: 1, modules: 1, streams: 1, graphs: 1 });
    expect(value("afterDispose")).toMatchObject({ allocs: 0, contexts: 0, modules: 0, streams: 0, graphs: 0 });
    expect(thrown("useAfterDispose").code).toBe("DISPOSED");
  });
});
