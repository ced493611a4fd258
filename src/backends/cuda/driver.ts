/**
 * The NVIDIA GPU as a DeviceRuntime, through libkiln's CUDA loader (zig-kernels/cuda_loader.zig:
 * libcuda.so.1 and NVRTC opened at run time, never linked).
 *
 *   probeCuda()          is there a usable GPU? (one dlopen attempt per process, cached; never throws)
 *   new CudaRuntime(i)   device i's primary context and one stream; kernels compiled from
 *                        cuda/*.cu on first launch (compile.ts, CUBINs cached on disk)
 *   rt.captureGraph(fn)  the launches fn makes, recorded once as a CUDA graph to replay
 *
 * KILN_LIBCUDA names the driver library to open instead of libcuda.so.1 (read once, at load).
 *
 * Every failure is a KilnError with code "CUDA" whose message starts with the driver call and
 * its error name ("cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY (...)").
 *
 * Ordering: everything runs on the runtime's one stream, in call order; upload from ordinary JS
 * memory returns once the driver holds the bytes (the array may be reused at once; from
 * allocPinned memory the copy is truly asynchronous: keep the bytes until synchronize()),
 * download returns when the bytes have arrived (it waits for the launches before it).
 */
import { KilnError } from "../../errors";
import { toArrayBuffer } from "bun:ffi";
import { kiln, Status } from "../../ffi/library";
import { type Arch, compileKernelFile, CUDA_DIR, kernelFiles, lastCudaError, type CompileOptions } from "./compile";
import type { DeviceBuffer, DeviceRuntime, Dim3 } from "./runtime";

/** A GPU the driver reports (probeCuda). */
export interface CudaDevice {
  /** Device ordinal ("cuda:<index>"). */
  index: number;
  /** The driver's name for it, e.g. "NVIDIA H200". */
  name: string;
  /** [major, minor], e.g. [9, 0] for Hopper. */
  computeCapability: readonly [number, number];
  /** Bytes of device memory. */
  totalMemory: number;
}

/** What the one driver probe of the process found (probeCuda). */
export interface CudaProbe {
  /** Whether a driver with at least one device was found. */
  available: boolean;
  /** Why there is no usable GPU (when available is false). */
  reason?: string;
  /** The devices, when available. */
  devices?: readonly CudaDevice[];
  /** cuDriverGetVersion: 1000 * major + 10 * minor (12040 is CUDA 12.4). */
  driverVersion?: number;
}

const dec = new TextDecoder();

function cudaError(context?: string): KilnError {
  const msg = lastCudaError();
  return new KilnError("CUDA", context ? `${msg} (${context})` : msg);
}

/** Throws KilnError CUDA with the loader's message unless status is ok. */
function check(status: number, context?: string): void {
  if (status !== Status.ok) throw cudaError(context);
}

function outU64(fn: (out: BigUint64Array) => number, context?: string): bigint {
  const out = new BigUint64Array(1);
  check(fn(out), context);
  return out[0]!;
}

/** KILN_LIBCUDA: the driver library to open instead of libcuda.so.1 (an unusual install, or the tests' fake driver). */
const env = Object.freeze({ libcuda: process.env.KILN_LIBCUDA || undefined });

let probed: CudaProbe | undefined;

/** Whether a GPU is usable, and which: the result of one attempt to load the driver, cached for the process. */
export function probeCuda(): CudaProbe {
  if (probed) return probed;
  try {
    probed = probe();
  } catch (e) {
    probed = { available: false, reason: (e as Error).message };
  }
  return Object.freeze(probed);
}

function probe(): CudaProbe {
  const s = kiln();
  const driverVersion = new Int32Array(1);
  const status = s.kiln_cuda_load(env.libcuda ? Buffer.from(env.libcuda + "\0") : null);
  const version = (): number | undefined => (s.kiln_cuda_driver_version(driverVersion) === Status.ok ? driverVersion[0]! : undefined);
  if (status !== Status.ok) return { available: false, reason: lastCudaError(), driverVersion: status === Status.cudaFailed ? version() : undefined };
  const count = new Int32Array(1);
  if (s.kiln_cuda_device_count(count) !== Status.ok) return { available: false, reason: lastCudaError(), driverVersion: version() };
  if (count[0] === 0) return { available: false, reason: "the CUDA driver reports no device", driverVersion: version(), devices: [] };
  const devices: CudaDevice[] = [];
  for (let i = 0; i < count[0]!; i++) devices.push(deviceInfo(i));
  return { available: true, devices: Object.freeze(devices), driverVersion: version() };
}

function deviceInfo(index: number): CudaDevice {
  const cc = new Int32Array(2);
  const mem = new BigUint64Array(1);
  const name = new Uint8Array(256);
  check(kiln().kiln_cuda_device_info(index, cc.subarray(0, 1), cc.subarray(1, 2), mem, name, name.byteLength), `device ${index}`);
  const end = name.indexOf(0);
  return Object.freeze({ index, name: dec.decode(name.subarray(0, end < 0 ? name.byteLength : end)), computeCapability: Object.freeze([cc[0]!, cc[1]!] as const), totalMemory: Number(mem[0]) });
}

/** The context current on this (JS) thread, as CudaRuntime last set it. */
let currentContext = 0n;

/** A recorded sequence of launches and copies, replayed on the runtime's stream by launch(). */
export interface CudaGraph {
  launch(): void;
  dispose(): void;
}

export interface CudaRuntimeOptions extends Omit<CompileOptions, "driverVersion"> {
  /**
   * The compile target; default the device's sm_XY. When NVRTC does not know the device (a GPU
   * newer than the NVRTC), kiln falls back to PTX for the newest target NVRTC has (compute_90)
   * and lets the driver finish it.
   */
  arch?: Arch;
}

interface Allocation {
  ptr: number;
  byteLength: number;
  label: string;
}

/** NVRTC's newest virtual target kiln falls back to for a GPU the NVRTC does not know. */
const PTX_FALLBACK = "compute_90";

export class CudaRuntime implements DeviceRuntime {
  readonly kind = "cuda" as const;
  readonly deviceIndex: number;
  readonly deviceName: string;
  readonly computeCapability: readonly [number, number];
  readonly totalMemory: number;
  readonly driverVersion: number;
  readonly #opts: CudaRuntimeOptions;
  readonly #ctx: bigint;
  readonly #stream: bigint;
  /** .cu file → loaded module; kernel name → CUfunction. */
  readonly #modules = new Map<string, bigint>();
  readonly #functions = new Map<string, bigint>();
  readonly #allocs = new Map<number, Allocation>();
  readonly #graphs = new Set<bigint>();
  #arch: Arch;
  #capturing = false;
  #disposed = false;

  /** Device `deviceIndex`'s primary context and a new stream; throws KilnError CUDA when there is no such GPU. */
  constructor(deviceIndex = 0, opts: CudaRuntimeOptions = {}) {
    const p = probeCuda();
    if (!p.available) throw new KilnError("CUDA", `CUDA runtime for device ${deviceIndex}: no usable GPU: ${p.reason}`);
    const dev = p.devices![deviceIndex];
    if (!Number.isSafeInteger(deviceIndex) || !dev) throw new KilnError("CUDA", `CUDA runtime: no device ${deviceIndex} (the driver reports ${p.devices!.length}: ${p.devices!.map((d) => `${d.index} ${d.name}`).join(", ")})`);
    this.deviceIndex = deviceIndex;
    this.deviceName = dev.name;
    this.computeCapability = dev.computeCapability;
    this.totalMemory = dev.totalMemory;
    this.driverVersion = p.driverVersion ?? 0;
    this.#opts = opts;
    this.#arch = opts.arch ?? dev.computeCapability[0] * 10 + dev.computeCapability[1];
    const s = kiln();
    this.#ctx = outU64((o) => s.kiln_cuda_context_retain(deviceIndex, o), `device ${deviceIndex} ${dev.name}`);
    currentContext = this.#ctx;
    try {
      this.#stream = outU64((o) => s.kiln_cuda_stream_create(o));
    } catch (e) {
      s.kiln_cuda_context_release(deviceIndex);
      throw e;
    }
  }

  /** The architecture kernels are compiled for (90 for sm_90, or the PTX fallback). */
  get arch(): Arch {
    return this.#arch;
  }

  /** Throws after dispose; makes this runtime's context current on the calling thread. */
  #use(): ReturnType<typeof kiln> {
    if (this.#disposed) throw new KilnError("DISPOSED", `CudaRuntime (device ${this.deviceIndex}): used after dispose()`);
    const s = kiln();
    if (currentContext !== this.#ctx) {
      check(s.kiln_cuda_context_set_current(this.#ctx), `device ${this.deviceIndex}`);
      currentContext = this.#ctx;
    }
    return s;
  }

  alloc(byteLength: number, label: string): DeviceBuffer {
    const s = this.#use();
    if (!Number.isSafeInteger(byteLength) || byteLength < 0) throw new KilnError("BAD_OPTION", `alloc ${label}: byteLength must be a non-negative integer, got ${byteLength}`);
    // cuMemAlloc refuses 0 bytes; a 0-byte buffer still gets its own address.
    const ptr = Number(outU64((o) => s.kiln_cuda_malloc(Math.max(byteLength, 1), o), `allocating ${byteLength} bytes for ${label} on device ${this.deviceIndex}`));
    this.#allocs.set(ptr, { ptr, byteLength, label });
    return { ptr, byteLength, label };
  }

  free(b: DeviceBuffer): void {
    const s = this.#use();
    const a = this.#allocs.get(b.ptr);
    if (!a) throw new KilnError("CUDA", `free ${b.label}: not a live allocation of this runtime (freed twice, or a sub-buffer)`);
    this.#allocs.delete(b.ptr);
    check(s.kiln_cuda_free(a.ptr), `freeing ${a.label}`);
  }

  /** Throws unless [offset, offset + len) is inside b and b inside one live allocation. */
  #checkRange(op: string, b: DeviceBuffer, offset: number, len: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + len > b.byteLength) {
      throw new KilnError("SHAPE", `${op} ${b.label}: range [${offset}, ${offset + len}) is outside its ${b.byteLength} bytes`);
    }
    const lo = b.ptr + offset;
    const hi = lo + len;
    const exact = this.#allocs.get(b.ptr);
    if (exact && hi <= exact.ptr + Math.max(exact.byteLength, 1)) return;
    for (const a of this.#allocs.values()) if (lo >= a.ptr && hi <= a.ptr + a.byteLength) return;
    throw new KilnError("CUDA", `${op} ${b.label}: its memory is not a live allocation of this runtime (freed, or from another runtime)`);
  }

  upload(dst: DeviceBuffer, src: Uint8Array, dstOffset = 0): void {
    const s = this.#use();
    this.#checkRange("upload to", dst, dstOffset, src.byteLength);
    if (src.byteLength === 0) return;
    check(s.kiln_cuda_memcpy_htod(dst.ptr + dstOffset, src, src.byteLength, this.#stream), `uploading ${src.byteLength} bytes to ${dst.label}`);
  }

  download(src: DeviceBuffer, dst: Uint8Array, srcOffset = 0): void {
    const s = this.#use();
    this.#checkRange("download from", src, srcOffset, dst.byteLength);
    if (dst.byteLength === 0) return;
    check(s.kiln_cuda_memcpy_dtoh(dst, src.ptr + srcOffset, dst.byteLength, this.#stream), `downloading ${dst.byteLength} bytes of ${src.label}`);
    check(s.kiln_cuda_stream_synchronize(this.#stream), `after downloading ${src.label}`);
  }

  /** Sets byteLength bytes of b from byteOffset to `value` (0..255), on the stream. */
  fill(b: DeviceBuffer, value: number, byteOffset = 0, byteLength = b.byteLength - byteOffset): void {
    const s = this.#use();
    this.#checkRange("fill", b, byteOffset, byteLength);
    if (byteLength === 0) return;
    check(s.kiln_cuda_memset(b.ptr + byteOffset, value & 0xff, byteLength, this.#stream), `filling ${b.label}`);
  }

  /** Copies byteLength bytes device to device, on the stream. */
  copy(dst: DeviceBuffer, src: DeviceBuffer, byteLength = src.byteLength, dstOffset = 0, srcOffset = 0): void {
    const s = this.#use();
    this.#checkRange("copy to", dst, dstOffset, byteLength);
    this.#checkRange("copy from", src, srcOffset, byteLength);
    if (byteLength === 0) return;
    check(s.kiln_cuda_memcpy_dtod(dst.ptr + dstOffset, src.ptr + srcOffset, byteLength, this.#stream), `copying ${src.label} to ${dst.label}`);
  }

  /** The module of a kernel source file, compiled (or read from the cache) and loaded on first use. */
  #module(file: string): bigint {
    const loaded = this.#modules.get(file);
    if (loaded !== undefined) return loaded;
    const s = kiln();
    const compile = (arch: Arch) => compileKernelFile(file, arch, { ...this.#opts, driverVersion: this.driverVersion });
    let image: Uint8Array;
    try {
      image = compile(this.#arch);
    } catch (e) {
      // A GPU newer than NVRTC: PTX for NVRTC's newest target, finished by the driver.
      if (!(e instanceof KilnError && /NVRTC_ERROR_INVALID_OPTION/.test(e.message)) || this.#opts.arch !== undefined) throw e;
      image = compile(PTX_FALLBACK);
      this.#arch = PTX_FALLBACK;
    }
    const mod = outU64((o) => s.kiln_cuda_module_load(image, image.byteLength, o), `loading ${file} (${image.byteLength} bytes) on device ${this.deviceIndex}`);
    this.#modules.set(file, mod);
    return mod;
  }

  #function(kernel: string): bigint {
    const f = this.#functions.get(kernel);
    if (f !== undefined) return f;
    const cudaDir = this.#opts.cudaDir ?? CUDA_DIR;
    const file = kernelFiles(cudaDir).get(kernel);
    if (!file) throw new KilnError("CUDA", `unknown kernel ${kernel}: no KILN_KERNEL(${kernel}, ...) in ${cudaDir}/*.cu`);
    const mod = this.#module(file);
    const fn = outU64((o) => kiln().kiln_cuda_module_function(mod, Buffer.from(kernel + "\0"), o), file);
    this.#functions.set(kernel, fn);
    return fn;
  }

  /** Compiles and loads the modules of `kernels` now (instead of at their first launch). */
  prepare(kernels: readonly string[]): void {
    this.#use();
    for (const k of kernels) this.#function(k);
  }

  launch(kernel: string, grid: Dim3, block: Dim3, sharedBytes: number, args: Uint8Array): void {
    const s = this.#use();
    const fn = this.#function(kernel);
    for (const [what, d] of [["grid", grid], ["block", block]] as const) {
      if (!Array.isArray(d) || d.length !== 3 || !d.every((v) => Number.isSafeInteger(v) && v >= 1 && v < 2 ** 31)) {
        throw new KilnError("CUDA", `kernel ${kernel}: ${what} must be [x, y, z] of positive integers, got ${String(d)}`);
      }
    }
    if (!Number.isSafeInteger(sharedBytes) || sharedBytes < 0 || sharedBytes >= 2 ** 32) throw new KilnError("CUDA", `kernel ${kernel}: sharedBytes must be a non-negative integer, got ${sharedBytes}`);
    const a = args.byteLength > 0 ? args : new Uint8Array(8);
    check(s.kiln_cuda_launch(fn, grid[0], grid[1], grid[2], block[0], block[1], block[2], sharedBytes, this.#stream, a), `kernel ${kernel} grid [${grid.join(", ")}] block [${block.join(", ")}] shared ${sharedBytes}`);
  }

  synchronize(): void {
    const s = this.#use();
    check(s.kiln_cuda_stream_synchronize(this.#stream), `device ${this.deviceIndex}`);
  }

  /** Free and total device memory (cuMemGetInfo). */
  memoryInfo(): { free: number; total: number } {
    const s = this.#use();
    const f = new BigUint64Array(1);
    const t = new BigUint64Array(1);
    check(s.kiln_cuda_mem_info(f, t));
    return { free: Number(f[0]), total: Number(t[0]) };
  }

  /**
   * Records the launches and device copies `fn` makes on this runtime's stream as a CUDA graph
   * (nothing runs while recording). Kernels not yet loaded are loaded during the capture. fn
   * must not download or synchronize (the driver refuses both while capturing); uploads from
   * JS arrays are not recorded reliably either: upload before capturing.
   */
  captureGraph(fn: () => void): CudaGraph {
    const s = this.#use();
    if (this.#capturing) throw new KilnError("CUDA", "captureGraph: already capturing (graphs do not nest)");
    check(s.kiln_cuda_graph_begin(this.#stream), "captureGraph");
    this.#capturing = true;
    let exec = 0n;
    try {
      fn();
    } catch (e) {
      // End the capture so the stream is usable again; the partial graph is dropped.
      const out = new BigUint64Array(1);
      if (s.kiln_cuda_graph_end(this.#stream, out) === Status.ok) s.kiln_cuda_graph_destroy(out[0]!);
      this.#capturing = false;
      throw e;
    }
    this.#capturing = false;
    exec = outU64((o) => s.kiln_cuda_graph_end(this.#stream, o), "captureGraph");
    this.#graphs.add(exec);
    let disposed = false;
    return {
      launch: () => {
        if (disposed) throw new KilnError("DISPOSED", "CudaGraph: launched after dispose()");
        check(this.#use().kiln_cuda_graph_launch(exec, this.#stream), "graph launch");
      },
      dispose: () => {
        if (disposed || this.#disposed) return;
        disposed = true;
        this.#graphs.delete(exec);
        check(this.#use().kiln_cuda_graph_destroy(exec), "graph dispose");
      },
    };
  }

  /** Waits for the stream, then frees every allocation, graph, module and the stream, and releases the context. */
  dispose(): void {
    if (this.#disposed) return;
    const s = this.#use();
    this.#disposed = true;
    // Best effort: a failing teardown call must not leave the rest behind; the first error is rethrown.
    const errors: string[] = [];
    const step = (status: number) => {
      if (status !== Status.ok) errors.push(lastCudaError());
    };
    step(s.kiln_cuda_stream_synchronize(this.#stream));
    for (const g of this.#graphs) step(s.kiln_cuda_graph_destroy(g));
    for (const a of this.#allocs.values()) step(s.kiln_cuda_free(a.ptr));
    for (const m of this.#modules.values()) step(s.kiln_cuda_module_unload(m));
    this.#graphs.clear();
    this.#allocs.clear();
    this.#modules.clear();
    this.#functions.clear();
    step(s.kiln_cuda_stream_destroy(this.#stream));
    step(s.kiln_cuda_context_release(this.deviceIndex));
    if (currentContext === this.#ctx) currentContext = 0n;
    if (errors.length) throw new KilnError("CUDA", `CudaRuntime.dispose (device ${this.deviceIndex}): ${errors.join("; ")}`);
  }
}

/** Page-locked host memory: copies from and to it run without staging. */
export interface PinnedBuffer {
  readonly bytes: Uint8Array;
  dispose(): void;
}

/** Allocates `byteLength` bytes of pinned host memory (needs a loaded driver: construct a CudaRuntime first). */
export function allocPinned(byteLength: number): PinnedBuffer {
  if (!Number.isSafeInteger(byteLength) || byteLength <= 0) throw new KilnError("BAD_OPTION", `allocPinned: byteLength must be a positive integer, got ${byteLength}`);
  const s = kiln();
  const ptr = outU64((o) => s.kiln_cuda_host_alloc(byteLength, o), `${byteLength} pinned bytes`);
  const bytes = new Uint8Array(toArrayBuffer(Number(ptr), 0, byteLength));
  let freed = false;
  return {
    bytes,
    dispose: () => {
      if (freed) return;
      freed = true;
      check(s.kiln_cuda_host_free(ptr), "freeing pinned memory");
    },
  };
}

/** The runtime tests and the backend construct: device 0 (KILN_CUDA_DEVICE picks another). */
export function createCudaRuntime(opts: CudaRuntimeOptions = {}): CudaRuntime {
  const env = process.env.KILN_CUDA_DEVICE;
  return new CudaRuntime(env ? Number(env) : 0, opts);
}
