/**
 * The device runtime the CUDA backend and the kernel launchers are written against: device
 * memory, copies and kernel launches. Two implementations:
 *   - CudaRuntime (driver.ts): the NVIDIA driver through libkiln's CUDA module loader (dlopen of
 *     libcuda.so.1 and NVRTC at run time; kernels compiled from cuda/*.cu, CUBINs cached);
 *   - EmulatorRuntime (emulator.ts): the same kernel sources built for the host (cuda/emu), blocks
 *     and threads run as fibers; device addresses are host addresses. Tests run every kernel on it.
 *
 * Kernels take one argument, a struct (cuda/kiln_cuda.cuh); KernelArgs packs it with C's layout.
 */
import { KilnError } from "../../errors";

/** A range of device memory: an address and a size in bytes. */
export interface DeviceBuffer {
  /** Device address (on the emulator, a host address). */
  readonly ptr: number;
  /** Its size in bytes. */
  readonly byteLength: number;
  /** What it holds, for error messages ("blk.0.attn_q.weight", "kv cache"). */
  readonly label: string;
}

export type Dim3 = readonly [number, number, number];

/** Launches recorded once (captureGraph) and replayed together: one launch call per replay. */
export interface DeviceGraph {
  launch(): void;
  dispose(): void;
}

export interface DeviceRuntime {
  readonly kind: "cuda" | "emulator";
  /** Device ordinal (0 on the emulator). */
  readonly deviceIndex: number;
  /** Human-readable device name. */
  readonly deviceName: string;
  alloc(byteLength: number, label: string): DeviceBuffer;
  free(b: DeviceBuffer): void;
  /** Copies src into dst at dstOffset (bytes). */
  upload(dst: DeviceBuffer, src: Uint8Array, dstOffset?: number): void;
  /** Copies dst.byteLength bytes of src from srcOffset into dst. */
  download(src: DeviceBuffer, dst: Uint8Array, srcOffset?: number): void;
  /**
   * Runs `kernel` (a KILN_KERNEL name in cuda/*.cu) with one packed argument struct (a fresh
   * KernelArgs.bytes()). A runtime may keep `args` (a recording one does), so the caller must not
   * change it afterwards.
   */
  launch(kernel: string, grid: Dim3, block: Dim3, sharedBytes: number, args: Uint8Array): void;
  /** Waits for every launched kernel and copy. */
  synchronize(): void;
  /**
   * Records the launches fn makes, without running them, as a graph to replay. Argument bytes
   * are frozen at capture: what changes between replays must be read from device memory.
   * Copies and synchronize are refused while recording.
   */
  captureGraph(fn: () => void): DeviceGraph;
  /** Compiles and loads these kernels now rather than at their first launch (optional). */
  prepare?(kernels: readonly string[]): void;
  dispose(): void;
}

/** A sub-range of a buffer, bounds-checked. */
export function subBuffer(b: DeviceBuffer, byteOffset: number, byteLength: number, label = b.label): DeviceBuffer {
  if (!Number.isSafeInteger(byteOffset) || !Number.isSafeInteger(byteLength) || byteOffset < 0 || byteLength < 0 || byteOffset + byteLength > b.byteLength) {
    throw new KilnError("SHAPE", `device buffer ${b.label}: range [${byteOffset}, ${byteOffset + byteLength}) is outside its ${b.byteLength} bytes`);
  }
  return { ptr: b.ptr + byteOffset, byteLength, label };
}

/** Throws unless `b` holds at least `need` bytes (a launcher's check before a pointer crosses). */
export function expectBytes(op: string, what: string, b: DeviceBuffer, need: number): void {
  if (!Number.isSafeInteger(need) || need < 0) throw new KilnError("SHAPE", `${op}: ${what} needs an invalid byte count (${need})`);
  if (b.byteLength < need) throw new KilnError("SHAPE", `${op}: ${what} (${b.label}) has ${b.byteLength} bytes, needs ${need}`);
}

/** Throws unless n is an integer in [min, 2^31). Kernel sizes are i32. */
export function expectInt(op: string, what: string, n: number, min = 0): void {
  if (!Number.isSafeInteger(n) || n < min || n >= 2 ** 31) throw new KilnError("SHAPE", `${op}: ${what} must be an integer in [${min}, 2^31), got ${n}`);
}

/** The most bytes of arguments a kernel takes (the drivers' own limit is 4 KiB; kiln's use < 128). */
export const KERNEL_ARGS_MAX_BYTES = 256;

// One scratch buffer every KernelArgs packs into: a decode step packs ~300 argument structs,
// and a fresh ArrayBuffer + DataView each cost more than the rest of a launch's host work
// (measured against the fake driver: bench/cuda.bench.ts with KILN_LIBCUDA, docs/gpu.md).
const scratch = new ArrayBuffer(KERNEL_ARGS_MAX_BYTES);
const scratchView = new DataView(scratch);
const scratchBytes = new Uint8Array(scratch);
/** Bumped by every new KernelArgs: an older one still packing is an error, not a silent mix. */
let generation = 0;

/**
 * Packs a kernel's argument struct with C's layout: each field at its natural alignment (the gaps
 * zeroed), the whole padded to 8 bytes. Field order must be the struct's. One is packed at a
 * time: starting another before `bytes()` makes the first throw.
 */
export class KernelArgs {
  #at = 0;
  readonly #generation = ++generation;

  #align(n: number): number {
    if (this.#generation !== generation) throw new KilnError("BAD_OPTION", "KernelArgs: another KernelArgs was started before this one's bytes() (pack one struct at a time)");
    const at = (this.#at + n - 1) & ~(n - 1);
    if (at + n > KERNEL_ARGS_MAX_BYTES) throw new KilnError("BAD_OPTION", `KernelArgs: more than ${KERNEL_ARGS_MAX_BYTES} bytes of arguments`);
    scratchBytes.fill(0, this.#at, at);
    this.#at = at + n;
    return at;
  }
  #u64(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new KilnError("BAD_OPTION", `KernelArgs: ${v} is not a non-negative safe integer`);
    const at = this.#align(8);
    scratchView.setUint32(at, v % 0x1_0000_0000, true);
    scratchView.setUint32(at + 4, Math.floor(v / 0x1_0000_0000), true);
    return this;
  }
  /** A device pointer (null: 0). */
  ptr(b: DeviceBuffer | null): this {
    return this.#u64(b ? b.ptr : 0);
  }
  u64(v: number): this {
    return this.#u64(v);
  }
  i32(v: number): this {
    scratchView.setInt32(this.#align(4), v, true);
    return this;
  }
  u32(v: number): this {
    scratchView.setUint32(this.#align(4), v >>> 0, true);
    return this;
  }
  f32(v: number): this {
    scratchView.setFloat32(this.#align(4), v, true);
    return this;
  }
  /** A copy of the packed struct (its size padded to 8 with zeros). */
  bytes(): Uint8Array {
    if (this.#generation !== generation) throw new KilnError("BAD_OPTION", "KernelArgs: another KernelArgs was started before this one's bytes() (pack one struct at a time)");
    const n = Math.max((this.#at + 7) & ~7, 8);
    scratchBytes.fill(0, this.#at, n);
    const out = new Uint8Array(n); // a loop copies these few bytes faster than slice() here
    for (let i = 0; i < n; i++) out[i] = scratchBytes[i]!;
    return out;
  }
}
