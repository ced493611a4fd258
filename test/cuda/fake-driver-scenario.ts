/**
 * Run by test/cuda/fake-driver.test.ts in a fresh process with KILN_LIBCUDA pointing at the fake
 * driver (fake_libcuda.c): drives CudaRuntime through every path and prints one JSON object of
 * what happened (values, or the KilnError code and message of each step that threw). The test
 * asserts on it. Arguments: <fake library> <kernel dir> <cache dir>.
 */
import { dlopen, FFIType } from "bun:ffi";
import { KilnError } from "../../src/errors";
import { allocPinned, CudaRuntime, probeCuda } from "../../src/backends/cuda/driver";
import { compileCounters } from "../../src/backends/cuda/compile";
import { KernelArgs, type DeviceBuffer } from "../../src/backends/cuda/runtime";

const [fakePath, cudaDir, cacheDir] = process.argv.slice(2) as [string, string, string];
const fake = dlopen(fakePath, { fake_state: { args: [FFIType.i32], returns: FFIType.i32 } }).symbols;
const state = () => ({ allocs: fake.fake_state(0), contexts: fake.fake_state(1), launches: fake.fake_state(2), modules: fake.fake_state(3), streams: fake.fake_state(4), graphs: fake.fake_state(5) });

const out: Record<string, unknown> = {};
function step(name: string, f: () => unknown): void {
  try {
    out[name] = { value: f() };
  } catch (e) {
    out[name] = e instanceof KilnError ? { code: e.code, message: e.message } : { error: String(e) };
  }
}

const f32 = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const args = (y: DeviceBuffer, v: number, n: number) => new KernelArgs().ptr(y).f32(v).i32(n).bytes();

step("probe", () => probeCuda());
const rt = new CudaRuntime(0, { cudaDir, cacheDir });
step("runtime", () => ({ kind: rt.kind, deviceIndex: rt.deviceIndex, deviceName: rt.deviceName, cc: rt.computeCapability, arch: rt.arch, driverVersion: rt.driverVersion, state: state() }));

const y = rt.alloc(64 * 4, "y");
step("roundtrip", () => {
  const a = rt.alloc(100, "a");
  const src = Uint8Array.from({ length: 100 }, (_, i) => i);
  rt.upload(a, src);
  rt.fill(a, 0xee, 90);
  const back = new Uint8Array(100);
  rt.download(a, back);
  rt.copy(y, a, 8, 4, 0);
  const head = new Uint8Array(12);
  rt.download(y, head);
  const live = state().allocs;
  rt.free(a);
  return { back: [...back], head: [...head], liveWhileAllocated: live, liveAfterFree: state().allocs };
});

step("launch", () => {
  rt.upload(y, f32(new Float32Array(64).fill(-1)));
  rt.launch("kiln_t_fill", [1, 1, 1], [32, 1, 1], 0, args(y, 2.5, 50)); // 50 of 64: the rest untouched
  const got = new Float32Array(64);
  rt.download(y, f32(got));
  return { values: [...got], modules: state().modules, nvrtc: compileCounters.nvrtc };
});

step("secondKernelSameModule", () => {
  rt.launch("kiln_t_add", [1, 1, 1], [32, 1, 1], 0, args(y, 1, 64));
  const got = new Float32Array(64);
  rt.download(y, f32(got));
  return { first: got[0], last: got[63], modules: state().modules, nvrtc: compileCounters.nvrtc };
});

step("bigSharedMemory", () => {
  rt.launch("kiln_t_add", [1, 1, 1], [32, 1, 1], 64 * 1024, args(y, 0, 1));
  return "ok";
});
step("blockTooLarge", () => rt.launch("kiln_t_fill", [2, 1, 1], [2048, 1, 1], 0, args(y, 0, 1)));
step("outOfMemory", () => rt.alloc(2 ** 41, "huge weights"));
step("unknownKernel", () => rt.launch("kiln_nope", [1, 1, 1], [1, 1, 1], 0, args(y, 0, 1)));
step("badGrid", () => rt.launch("kiln_t_fill", [0, 1, 1], [1, 1, 1], 0, args(y, 0, 1)));
step("outOfRange", () => rt.download(y, new Uint8Array(16), 250));
step("doubleFree", () => {
  const b = rt.alloc(8, "twice");
  rt.free(b);
  rt.free(b);
});

step("graph", () => {
  rt.upload(y, f32(new Float32Array(64).fill(0)));
  const before = state().launches;
  const g = rt.captureGraph(() => {
    rt.launch("kiln_t_add", [1, 1, 1], [64, 1, 1], 0, args(y, 1, 64));
    rt.launch("kiln_t_add", [1, 1, 1], [64, 1, 1], 0, args(y, 2, 64));
  });
  const during = state().launches - before;
  const got = new Float32Array(64);
  rt.download(y, f32(got));
  const afterCapture = got[0];
  for (let i = 0; i < 3; i++) g.launch();
  rt.download(y, f32(got));
  return { launchesWhileCapturing: during, afterCapture, afterThreeReplays: got[0], graphs: state().graphs };
});
step("downloadWhileCapturing", () => rt.captureGraph(() => rt.download(y, new Uint8Array(4))));
step("streamUsableAfterFailedCapture", () => {
  rt.launch("kiln_t_fill", [1, 1, 1], [1, 1, 1], 0, args(y, 7, 1));
  const got = new Float32Array(1);
  rt.download(y, f32(got));
  return got[0];
});

step("pinned", () => {
  const p = allocPinned(32);
  p.bytes.fill(9);
  rt.upload(y, p.bytes);
  const back = new Uint8Array(32);
  rt.download(y, back);
  p.dispose();
  return back.every((v) => v === 9);
});

step("noSuchDevice", () => new CudaRuntime(3, { cudaDir, cacheDir }));
step("second runtime", () => {
  const other = new CudaRuntime(0, { cudaDir, cacheDir });
  const b = other.alloc(4, "other");
  other.dispose();
  const mine = rt.alloc(4, "mine");
  rt.free(mine);
  return { contexts: state().contexts, freedByDispose: b.byteLength };
});

const leakedOnPurpose = rt.alloc(1000, "left for dispose");
step("beforeDispose", () => ({ ...state(), leakedOnPurpose: leakedOnPurpose.byteLength }));
rt.dispose();
step("afterDispose", () => state());
step("useAfterDispose", () => rt.alloc(4, "late"));
rt.dispose(); // twice is fine

process.stdout.write(JSON.stringify(out));
